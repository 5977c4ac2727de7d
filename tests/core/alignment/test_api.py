"""The entry points (alignment/api.py): coalign = solve + merge, inputs, progress, holdouts."""

import numpy as np
import pytest
import torch

from rollingdepth_core.alignment import (
    coalign,
    merge_snippets,
    merge_solution,
    reduce_holdout,
    reduce_maps,
    solve_reduced,
)
from rollingdepth_core.errors import ConfigError

from .synthetic import absrel, cut, moving_region, scene, spoil


@pytest.mark.parametrize("method", ["robust", "adam"])
def test_solve_once_merge_twice_is_coalign(noisy, method):
    _, snippets, indices, _ = noisy
    options = {"iterations": 50} if method == "adam" else {}
    expected = coalign(snippets, indices, method, confidence=True, **options)
    offset = min(float(s.min()) for s in snippets)
    solution = solve_reduced([reduce_maps(s) for s in snippets], indices, offset, method, **options)
    assert solution.depth is None
    plain = merge_solution(snippets, indices, solution)
    both = merge_solution(snippets, indices, solution, confidence=True)
    assert plain.confidence is None and solution.depth is None  # a copy, not the solve
    np.testing.assert_array_equal(plain.depth, expected.depth)
    np.testing.assert_array_equal(both.depth, expected.depth)
    np.testing.assert_array_equal(both.confidence, expected.confidence)
    with pytest.raises(ConfigError, match="dilation entries"):
        merge_solution(snippets[:1], indices[:1], solution)
    with pytest.raises(ConfigError, match="snippets for entry 0"):
        merge_solution([snippets[0][1:]] + snippets[1:], [indices[0][1:]] + indices[1:], solution)


def test_numpy_and_torch_inputs_give_the_same_result(noisy):
    _, snippets, indices, _ = noisy
    ref = coalign(snippets, indices, border=0, subsample=1)
    tensors = coalign(
        [torch.from_numpy(s) for s in snippets],
        [torch.from_numpy(k) for k in indices],
        border=0,
        subsample=1,
    )
    np.testing.assert_array_equal(ref.depth, tensors.depth)
    half_np = coalign([s.astype(np.float16) for s in snippets], indices, border=0, subsample=1)
    half_t = coalign([torch.from_numpy(s).half() for s in snippets], indices, border=0, subsample=1)
    np.testing.assert_array_equal(half_np.depth, half_t.depth)


def test_progress_is_reported_and_can_cancel(clean):
    _, snippets, indices, _ = clean
    calls = []
    coalign(snippets, indices, border=0, subsample=1, progress=lambda d, t: calls.append((d, t)))
    assert calls and all(0 < d <= t for d, t in calls)

    class Stop(Exception):
        pass

    def cancel(done, total):
        raise Stop

    with pytest.raises(Stop):
        coalign(snippets, indices, border=0, subsample=1, progress=cancel)
    with pytest.raises(Stop):
        coalign(snippets, indices, "adam", border=0, subsample=1, progress=cancel)


@pytest.fixture(scope="module")
def spoiled():
    gt = scene(30, 24, 32)
    snippets, indices, _ = cut(gt, dilations=(1, 4), noise=0.01, seed=2)
    region = moving_region(*gt.shape)
    assert 0.55 < region.mean() < 0.6
    return gt, snippets, spoil(snippets, indices, region), indices, region


def test_a_holdout_keeps_a_large_garbage_region_out_of_the_alignment(spoiled):
    gt, snippets, bad, indices, region = spoiled
    clean = absrel(coalign(snippets, indices, border=0, subsample=1).depth, gt, ~region)
    plain = absrel(coalign(bad, indices, border=0, subsample=1).depth, gt, ~region)
    held = coalign(bad, indices, border=0, subsample=1, holdout=region)
    assert plain > 5 * clean  # 57 % garbage breaks any robust estimator
    assert absrel(held.depth, gt, ~region) < 1.3 * clean
    # the merge is unchanged: the held-out pixels are filled from the aligned snippets
    np.testing.assert_array_equal(
        held.depth,
        merge_snippets(bad, indices, held.scales, held.shifts, 30, weights=held.merge_weights),
    )


@pytest.mark.parametrize("method, options", [("robust", {}), ("adam", {"iterations": 30})])
def test_values_under_a_full_holdout_have_no_say(spoiled, method, options):
    _, snippets, bad, indices, region = spoiled
    run = {"border": 0, "subsample": 1, "holdout": region, **options}
    spoilt, clean = coalign(bad, indices, method, **run), coalign(snippets, indices, method, **run)
    for a, b in zip(spoilt.scales + spoilt.shifts, clean.scales + clean.shifts, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(spoilt.frame_residuals, clean.frame_residuals)
    plain = coalign(bad, indices, method, border=0, subsample=1, **options)
    assert not np.array_equal(plain.scales[0], spoilt.scales[0])


@pytest.mark.parametrize("method, options", [("robust", {}), ("adam", {"iterations": 30})])
def test_solve_reduced_takes_the_reduced_holdout(method, options):
    gt = scene(16, 44, 54)  # reduced: 4 x 5
    snippets, indices, _ = cut(gt, dilations=(1, 4), noise=0.01, seed=4)
    matte = np.random.default_rng(0).uniform(0, 1, gt.shape).astype(np.float32)
    expected = coalign(snippets, indices, method, holdout=matte, confidence=True, **options)
    offset = min(float(s.min()) for s in snippets)
    reduced = [reduce_maps(s) for s in snippets]
    solution = solve_reduced(
        reduced, indices, offset, method, holdout=reduce_holdout(matte), **options
    )
    assert reduce_holdout(matte).shape == (16, 4, 5)
    both = merge_solution(snippets, indices, solution, confidence=True)
    np.testing.assert_array_equal(both.depth, expected.depth)
    np.testing.assert_array_equal(both.confidence, expected.confidence)
    # a soft matte weights the objective: not the solve without it, close to it at zero
    plain = coalign(snippets, indices, method, **options)
    assert not np.array_equal(plain.scales[0], expected.scales[0])
    zero = coalign(snippets, indices, method, holdout=np.zeros_like(matte), **options)
    for a, b in zip(zero.scales + zero.shifts, plain.scales + plain.shifts, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
