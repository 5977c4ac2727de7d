"""The robust solver (alignment/robust.py, gauss_newton.py): exact recovery, robustness, determinism."""

import numpy as np
import pytest

from rollingdepth_core.alignment import (
    coalign,
)

from .synthetic import EXACT_RTOL, affine_fit, cut, scene


def test_robust_recovers_scales_and_shifts_exactly_up_to_the_gauge(clean):
    gt, snippets, indices, truth = clean
    result = coalign(snippets, indices, border=0, subsample=1)
    assert result.method == "robust" and result.converged and result.iterations >= 2
    # s (x - offset) + t = alpha (s_true x + t_true) + beta for one global alpha, beta
    est = np.concatenate(result.scales)
    true_s = np.concatenate([s for s, _ in truth])
    alpha = np.median(est / true_s)
    np.testing.assert_allclose(est, alpha * true_s, rtol=EXACT_RTOL)
    const = np.concatenate(result.shifts) - est * result.offset
    beta = np.median(const - alpha * np.concatenate([t for _, t in truth]))
    np.testing.assert_allclose(
        const, alpha * np.concatenate([t for _, t in truth]) + beta, atol=EXACT_RTOL * 4
    )
    a, b, worst = affine_fit(result.depth, gt)
    assert worst < EXACT_RTOL * np.abs(gt).max()
    # the gauge: median scale 1, median shift 0
    assert np.median(est) == pytest.approx(1.0, abs=1e-6)
    assert np.median(np.concatenate(result.shifts)) == pytest.approx(0.0, abs=1e-6)


def test_robust_with_the_pipelines_reduction_and_float16(clean):
    gt = scene(16, 44, 54)  # reduced: 2-pixel border off, every 10th pixel -> 4 x 5
    snippets, indices, _ = cut(gt, dilations=(1, 4))
    result = coalign([s.astype(np.float16) for s in snippets], indices)
    assert result.depth.shape == gt.shape and result.depth.dtype == np.float32
    _, _, worst = affine_fit(result.depth, gt)
    assert worst < 2e-2 * np.abs(gt).max()  # float16 snippets: about 3 significant digits


@pytest.mark.parametrize("data, tol", [("clean", 1e-3), ("noisy", 1e-2)])
@pytest.mark.parametrize("corrupt", ["flipped", "patch"])
def test_a_corrupted_snippet_does_not_move_the_others(data, tol, corrupt, request):
    gt, snippets, indices, _ = request.getfixturevalue(data)
    base = coalign(snippets, indices, border=0, subsample=1)
    bad = [s.copy() for s in snippets]
    if corrupt == "flipped":
        bad[0][10] = bad[0][10][:, ::-1, ::-1]  # an entirely wrong snippet
    else:
        bad[0][10][:, 2:7, 3:9] += 3.0  # an outlier patch
    result = coalign(bad, indices, border=0, subsample=1)
    keep = np.ones(sum(len(k) for k in indices), bool)
    keep[10] = False
    # the others, up to the gauge x -> alpha x + beta
    s0, s1 = np.concatenate(base.scales), np.concatenate(result.scales)
    c0 = np.concatenate(base.shifts) - s0 * base.offset
    c1 = np.concatenate(result.shifts) - s1 * result.offset
    alpha = np.median(s1[keep] / s0[keep])
    beta = np.median(c1[keep] - alpha * c0[keep])
    np.testing.assert_allclose(s1[keep], alpha * s0[keep], rtol=tol)
    np.testing.assert_allclose(c1[keep], alpha * c0[keep] + beta, atol=tol * np.abs(c0).max())
    # and the merged video hardly notices (the bad snippet frames get tiny weights)
    assert result.merge_weights[0][10].max() < 0.05 * np.median(result.merge_weights[0])
    np.testing.assert_allclose(
        result.depth, alpha * base.depth + beta, atol=3 * tol * np.abs(base.depth).max()
    )


def test_robust_is_deterministic_and_leaves_its_inputs_alone(noisy):
    _, snippets, indices, _ = noisy
    before = [s.copy() for s in snippets]
    runs = [coalign(snippets, indices, border=0, subsample=1, confidence=True) for _ in range(2)]
    for s, b in zip(snippets, before, strict=True):
        np.testing.assert_array_equal(s, b)
    a, b = runs
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(a.confidence, b.confidence)
    for x, y in zip(a.scales + a.shifts, b.scales + b.shifts, strict=True):
        np.testing.assert_array_equal(x, y)
    assert a.iterations == b.iterations


def test_a_single_snippet_is_left_as_it_is():
    x = scene(3, 6, 7)[None]  # one snippet covering frames 0, 1, 2: nothing to align
    result = coalign([x], [np.arange(3)[None]], border=0, subsample=1, confidence=True)
    assert result.iterations == 0 and result.converged
    np.testing.assert_array_equal(result.scales[0], [1.0])
    np.testing.assert_allclose(result.depth, x[0] - x.min(), atol=1e-6)
    assert np.all(np.isfinite(result.confidence))
