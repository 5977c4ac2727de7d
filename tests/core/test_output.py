"""Depth conventions (golden values), naming, and the one writer of frames."""

import numpy as np
import pytest

from rollingdepth_core.config import OutputConfig
from rollingdepth_core.errors import ConfigError
from rollingdepth_core.exr import read_exr
from rollingdepth_core.output import (
    convert_depth,
    expand_pattern,
    sequence_pattern,
    write_depth_frames,
)

INVERSE = np.array([[-1.0, -0.5], [0.0, 1.0]], np.float32)  # clip range -1..1


def test_inverse_is_passed_through():
    out = convert_depth(INVERSE, "inverse", 1.0, 100.0, -1.0, 1.0)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, INVERSE)


def test_normalized_golden_values():
    out = convert_depth(INVERSE, "normalized", 1.0, 100.0, -1.0, 1.0)
    np.testing.assert_allclose(out, [[0.0, 0.25], [0.5, 1.0]], rtol=0, atol=1e-7)
    # the clip's range, not the frame's: a frame of one value is not stretched
    flat = convert_depth(np.full((2, 2), 0.5, np.float32), "normalized", 1, 100, -1.0, 1.0)
    np.testing.assert_allclose(flat, 0.75)


def test_depth_golden_values():
    # nearness u = 0, 0.25, 0.5, 1 -> inverse depth 1/far + u (1/near - 1/far) -> depth
    near, far = 2.0, 10.0
    out = convert_depth(INVERSE, "depth", near, far, -1.0, 1.0)
    inv = 0.1 + np.array([[0.0, 0.25], [0.5, 1.0]]) * (0.5 - 0.1)
    np.testing.assert_allclose(out, 1.0 / inv, rtol=1e-6)
    assert out[0, 0] == pytest.approx(far) and out[1, 1] == pytest.approx(near)
    assert out[0, 1] == pytest.approx(5.0)  # 1 / (0.1 + 0.1)
    assert out[1, 0] == pytest.approx(1 / 0.3)


def test_patterns():
    # the plate's padding (a video's: 4); a longer frame number gets its digits, as %04d does
    assert sequence_pattern("/out", "depth").endswith("/out/depth.####.exr")
    assert sequence_pattern("/out", "depth", 6).endswith("/out/depth.######.exr")
    assert expand_pattern(sequence_pattern("/out", "depth"), 100000).endswith("depth.100000.exr")
    assert expand_pattern("/a/depth.####.exr", -7).endswith("/a/depth.-007.exr")
    assert expand_pattern("/a/depth.@@@.exr", 7).endswith("/a/depth.007.exr")
    assert expand_pattern("/a/depth.$F5.exr", 7).endswith("/a/depth.00007.exr")
    assert expand_pattern("/a/depth.####.exr", 7).endswith("/a/depth.0007.exr")
    assert expand_pattern("depth.%05d.exr", 1001) == "depth.01001.exr"
    assert expand_pattern("depth.%d.exr", 12) == "depth.12.exr"
    assert expand_pattern("/shot_#/depth.##.exr", 3).endswith("/shot_#/depth.03.exr")
    for bad in ("depth.exr", "depth.##.##.exr"):
        with pytest.raises(ConfigError, match="frame token"):
            expand_pattern(bad, 1)


def test_writer_selects_frames_but_converts_with_the_clip_range(tmp_path):
    frames = [np.full((4, 6), v, np.float32) for v in (-1.0, 0.0, 1.0)]
    conf = [np.full((4, 6), 0.5, np.float32)] * 3
    written = write_depth_frames(
        iter(frames),
        (-1.0, 1.0),
        [1001, 1002, 1003],
        str(tmp_path / "d.####.exr"),
        OutputConfig(depth_mode="normalized", restore_res=True),
        {"source": str(tmp_path)},
        plate_size=(8, 12),
        confidence=iter(conf),
        select=[1],
    )
    assert [p.name for p in written] == ["d.1002.exr"]
    channels, meta = read_exr(written[0])
    assert channels["Z"].shape == (8, 12) and channels["confidence"].shape == (8, 12)
    np.testing.assert_allclose(channels["Z"], 0.5)
    assert meta["rollingdepth/source_frame"] == 1002
