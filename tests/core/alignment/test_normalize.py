"""Normalisation of the merged video (alignment/normalize.py)."""

import numpy as np
import pytest

from rollingdepth_core.alignment import (
    normalize_depth,
)
from rollingdepth_core.errors import ConfigError


def test_normalize_depth_in_place_gives_the_same_values():
    depth = np.random.default_rng(1).uniform(-2, 5, (3, 4, 5)).astype(np.float32)
    expected = normalize_depth(depth)
    work = depth.copy()
    out = normalize_depth(work, inplace=True)
    assert np.shares_memory(out, work)
    np.testing.assert_array_equal(out, expected)
    frozen = depth.copy()
    frozen.flags.writeable = False
    with pytest.raises(ConfigError, match="read-only"):
        normalize_depth(frozen, inplace=True)


def test_normalize_depth_maps_the_video_to_minus_one_one():
    depth = np.random.default_rng(0).uniform(3, 7, (4, 5, 6)).astype(np.float32)
    out = normalize_depth(depth)
    assert out.dtype == np.float32
    assert out.min() == pytest.approx(-1.0) and out.max() == pytest.approx(1.0)
    np.testing.assert_allclose(
        out, (depth - depth.min()) / (depth.max() - depth.min()) * 2 - 1, atol=1e-6
    )
    np.testing.assert_array_equal(normalize_depth(np.full((2, 3, 3), 5.0)), np.zeros((2, 3, 3)))
