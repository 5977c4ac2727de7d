"""EXR round trips: channels, pixel types, metadata, windows, compression, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from rollingdepth_core.errors import InputError, OutputError
from rollingdepth_core.exr import read_exr, write_depth_exr

H, W = 12, 20


@pytest.fixture
def depth() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0.5, 80.0, size=(H, W)).astype(np.float32)


def test_float_round_trip_with_metadata(tmp_path: Path, depth: np.ndarray) -> None:
    path = tmp_path / "depth.1001.exr"
    metadata = {"checkpoint": "prs-eth/rollingdepth-v1-0", "frame": 1001, "scale": 0.25}
    write_depth_exr(path, depth, metadata=metadata)

    channels, header = read_exr(path)
    assert list(channels) == ["Z"]
    assert channels["Z"].dtype == np.float32 and channels["Z"].shape == (H, W)
    np.testing.assert_array_equal(channels["Z"], depth)
    assert header["channel_formats"] == {"Z": "float"}
    assert header["compression"] == "zip"
    assert header["z_channel"] == 0
    assert header["data_window"] == header["display_window"] == (0, 0, W, H)
    assert header["rollingdepth/checkpoint"] == "prs-eth/rollingdepth-v1-0"
    assert header["rollingdepth/frame"] == 1001 and isinstance(header["rollingdepth/frame"], int)
    assert header["rollingdepth/scale"] == pytest.approx(0.25)


def test_half_round_trip(tmp_path: Path, depth: np.ndarray) -> None:
    path = tmp_path / "half.exr"
    write_depth_exr(path, depth, half=True)
    write_depth_exr(tmp_path / "float.exr", depth)
    channels, header = read_exr(path)
    assert header["channel_formats"] == {"Z": "half"}
    assert channels["Z"].dtype == np.float32
    np.testing.assert_allclose(channels["Z"], depth, rtol=1e-3)
    assert path.stat().st_size < (tmp_path / "float.exr").stat().st_size


def test_named_depth_channel_and_extra_channels(tmp_path: Path, depth: np.ndarray) -> None:
    path = tmp_path / "layers.exr"
    confidence = np.linspace(0, 1, H * W, dtype=np.float32).reshape(H, W)
    write_depth_exr(path, depth, channel="depth.Z", extra_channels={"confidence": confidence})
    channels, header = read_exr(path)
    assert set(channels) == {"depth.Z", "confidence"}
    np.testing.assert_array_equal(channels["depth.Z"], depth)
    np.testing.assert_array_equal(channels["confidence"], confidence)
    assert header["channel_formats"] == {"depth.Z": "float", "confidence": "float"}
    # The file orders channels by name; `z_channel` points at the depth channel there.
    assert list(channels)[header["z_channel"]] == "depth.Z"


def test_write_leaves_no_temporary_files_and_replaces(tmp_path: Path, depth: np.ndarray) -> None:
    path = tmp_path / "depth.exr"
    write_depth_exr(path, depth)
    write_depth_exr(path, depth * 2)
    assert os.listdir(tmp_path) == ["depth.exr"]
    np.testing.assert_array_equal(read_exr(path)[0]["Z"], depth * 2)


def test_missing_folder_is_an_output_error(tmp_path: Path, depth: np.ndarray) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        write_depth_exr(tmp_path / "nowhere" / "depth.exr", depth)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_failed_write_reports_openimageio_error(depth: np.ndarray) -> None:
    # /proc refuses new files even to root, so the failure comes from the writer itself.
    with pytest.raises(OutputError, match="cannot open for writing"):
        write_depth_exr("/proc/depth.exr", depth)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_unwritable_folder_keeps_existing_file(tmp_path: Path, depth: np.ndarray) -> None:
    path = tmp_path / "depth.exr"
    write_depth_exr(path, depth)
    before = path.read_bytes()
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(OutputError):
            write_depth_exr(path, depth * 2)
    finally:
        tmp_path.chmod(0o700)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["depth.exr"]


def test_rejected_write_keeps_existing_file(tmp_path: Path, depth: np.ndarray) -> None:
    path = tmp_path / "depth.exr"
    write_depth_exr(path, depth)
    before = path.read_bytes()
    bad = depth.copy()
    bad[3, 4] = np.nan
    with pytest.raises(OutputError, match="NaN"):
        write_depth_exr(path, bad)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["depth.exr"]


def test_target_that_is_a_folder(tmp_path: Path, depth: np.ndarray) -> None:
    (tmp_path / "depth.exr").mkdir()
    (tmp_path / "depth.exr" / "keep").write_text("x")
    with pytest.raises(OutputError, match="depth.exr"):
        write_depth_exr(tmp_path / "depth.exr", depth)
    assert sorted(os.listdir(tmp_path)) == ["depth.exr"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": np.zeros((2, 3, 1), np.float32)}, r"\[H,W\]"),
        ({"depth": np.zeros((2, 3), np.int32)}, "must be float"),
        ({"depth": np.full((2, 3), np.inf, np.float32)}, "NaN or infinite"),
        ({"half": True, "depth": np.full((2, 3), 1e6, np.float32)}, "HALF range"),
        ({"extra_channels": {"confidence": np.zeros((3, 3), np.float32)}}, "confidence"),
        ({"channel": ""}, "non-empty"),
        ({"extra_channels": {"Z": np.ones((2, 3), np.float32)}}, "depth channel's name"),
        ({"metadata": {"flag": True}}, "flag"),
        ({"metadata": {"list": [1, 2]}}, "str, int or float"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    arguments = {"depth": np.ones((2, 3), np.float32), **kwargs}
    with pytest.raises(OutputError, match=message):
        write_depth_exr(tmp_path / "bad.exr", **arguments)
    assert os.listdir(tmp_path) == []


def test_read_missing_exr_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="missing.exr"):
        read_exr(tmp_path / "missing.exr")
