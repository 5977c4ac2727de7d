"""Intra-op threads (alignment/threads.py): results and the caller's setting do not change."""

import numpy as np
import pytest
import torch

from rollingdepth_core.alignment import coalign
from rollingdepth_core.alignment.threads import ELEMENTS_PER_THREAD, intra_op_threads, threads_for

from .synthetic import cut, scene


@pytest.fixture
def caller_threads():
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_results_do_not_depend_on_the_callers_thread_count(caller_threads):
    gt = scene(40, 64, 80)  # chunks of 2^18 values: torch would split them across threads
    snippets, indices, _ = cut(gt, dilations=(1, 5), noise=0.01, seed=3)
    runs = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        runs.append(coalign(snippets, indices, border=0, subsample=1, confidence=True))
        assert torch.get_num_threads() == threads  # restored after the solve
    one, two = runs
    np.testing.assert_array_equal(one.depth, two.depth)
    np.testing.assert_array_equal(one.confidence, two.confidence)
    for a, b in zip(one.scales + one.shifts, two.scales + two.shifts, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_callers_setting_is_restored_when_a_solve_is_cancelled(caller_threads):
    gt = scene(12, 8, 8)
    snippets, indices, _ = cut(gt, noise=0.01)
    torch.set_num_threads(2)
    seen = []

    def cancel(done, total):
        seen.append(torch.get_num_threads())
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        coalign(snippets, indices, border=0, subsample=1, progress=cancel)
    assert seen == [1] and torch.get_num_threads() == 2


def test_threads_for_small_operations_is_one_and_never_above_the_setting(caller_threads):
    torch.set_num_threads(2)
    assert threads_for(484 * 644) == 1
    assert threads_for(4 * ELEMENTS_PER_THREAD) == 2
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
        assert threads_for(4 * ELEMENTS_PER_THREAD) == 1
    assert torch.get_num_threads() == 2
