"""Depth conventions (golden values), naming, and the one writer of frames."""

import numpy as np
import pytest

from rollingdepth_core.config import OutputConfig
from rollingdepth_core.errors import ConfigError, OutputError
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


def _write_frames(tmp_path, frames, heard, **options):
    return write_depth_frames(frames, (-1.0, 1.0), [1, 2, 3], str(tmp_path / "d.####.exr"),
                              OutputConfig(depth_mode="inverse"), {}, plate_size=(4, 6),
                              on_written=heard.append, **options)  # fmt: skip


def test_a_failed_write_stops_the_writer_with_its_message_and_no_half_file(tmp_path):
    """Frame 2 is written in the writer's thread while frame 3 is made: its failure (NaN)
    still stops the run with the writer's own error, frame 3 is never handed over, and
    nothing but frame 1 (complete, heard) is in the folder."""
    frames = [np.full((4, 6), v, np.float32) for v in (0.5, np.nan, 0.25)]
    heard = []
    with pytest.raises(OutputError, match=r"d\.0002\.exr: channel 'Z' holds NaN"):
        _write_frames(tmp_path, iter(frames), heard)
    assert heard == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.0001.exr"]
    np.testing.assert_array_equal(read_exr(tmp_path / "d.0001.exr")[0]["Z"], frames[0])


def test_a_failure_while_a_frame_is_written_waits_for_that_file(tmp_path, monkeypatch):
    """The caller's frames fail while frame 2 is being written in the writer's thread: the
    error reaches the caller only once frame 2's file is whole (a publisher removes its
    staging folder then; a write still running would put a file or a temporary back)."""
    import time

    from rollingdepth_core import output

    real = output.write_depth_exr

    def slow(path, *args, **kwargs):
        time.sleep(0.5)  # the caller's next frame fails well before this write ends
        real(path, *args, **kwargs)

    monkeypatch.setattr(output, "write_depth_exr", slow)

    def frames():
        yield np.full((4, 6), 0.5, np.float32)
        yield np.full((4, 6), 0.25, np.float32)
        raise RuntimeError("the store broke")

    heard = []
    with pytest.raises(RuntimeError, match="the store broke"):
        _write_frames(tmp_path, frames(), heard)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.0001.exr", "d.0002.exr"]
    assert read_exr(tmp_path / "d.0002.exr")[0]["Z"][0, 0] == np.float32(0.25)
    assert heard == [1]  # frame 2 was complete but never reported: the run failed
