"""The entry points (alignment/api.py): coalign = solve_reduced + merge_solution, inputs, progress."""

import numpy as np
import pytest
import torch

from rollingdepth_core.alignment import (
    coalign,
    merge_solution,
    reduce_maps,
    solve_reduced,
)
from rollingdepth_core.errors import ConfigError


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
