import numpy as np
import pytest

from rollingdepth_core.errors import ConfigError, InputError
from rollingdepth_core.snippets import (
    cap_dilation,
    refine_dilations,
    resolve_dilations,
    snippet_indices,
)


def test_snippet_indices_hand_worked():
    np.testing.assert_array_equal(
        snippet_indices(6, 3, 1), [[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5]]
    )
    np.testing.assert_array_equal(snippet_indices(7, 3, 3), [[0, 3, 6]])
    np.testing.assert_array_equal(snippet_indices(5, 2, 2), [[0, 2], [1, 3], [2, 4]])


def test_every_frame_covered_after_capping():
    for n in range(6, 80, 7):
        for d in (1, 10, 25):
            idx = snippet_indices(n, 3, cap_dilation(n, 3, d))
            assert set(idx.ravel()) == set(range(n))


def test_capping_30_frames_keeps_duplicates():
    assert resolve_dilations(30, 3, (1, 10, 25), cap=True) == [1, 9, 9]
    assert resolve_dilations(250, 3, (1, 10, 25), cap=True) == [1, 10, 25]


def test_capping_short_clip_keeps_dilation_one():
    assert cap_dilation(4, 3, 25) == 1
    assert resolve_dilations(4, 3, (1, 25), cap=True) == [1, 1]


def test_uncapped_too_long_dilation_is_a_clear_error():
    with pytest.raises(ConfigError, match="dilation 25"):
        resolve_dilations(30, 3, (1, 10, 25), cap=False)


def test_clip_too_short():
    with pytest.raises(InputError, match="at least 2 frames"):
        resolve_dilations(1, 3, (1,), cap=True)
    with pytest.raises(InputError, match="snippet-len 2"):
        resolve_dilations(2, 3, (1,), cap=True)


def test_refine_schedule():
    # docs/method.md step 10: 12 frames, R=2: start 6 is capped to 3, dilations 3 then 2
    assert refine_dilations(12, 3, 6, 2, cap=True) == [3, 2]
    # the reference's float expression: (1 - 8/10) * 5 = 0.99999... -> gap 0 at step 8
    assert refine_dilations(250, 3, 6, 10, cap=True) == [6, 5, 5, 4, 4, 3, 3, 2, 1, 1]
