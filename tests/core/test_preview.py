"""Colour maps and the preview mp4, decoded back with PyAV."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

from rollingdepth_core.errors import ConfigError, OutputError
from rollingdepth_core.preview import COLORMAPS, colorize, write_preview_video

H, W, N = 48, 64, 8
ENDPOINTS = {
    "gray": ((0, 0, 0), (255, 255, 255)),
    "turbo": ((48, 18, 59), (122, 4, 3)),
    "spectral": ((158, 1, 66), (94, 79, 162)),
}


def _ramp_frames(n: int, height: int, width: int) -> list[np.ndarray]:
    ramp = np.linspace(0, 1, width, dtype=np.float32)[None, :].repeat(height, axis=0)
    return [np.clip(ramp + 0.05 * i, 0, 1) for i in range(n)]


def _probe(path: Path) -> tuple[SimpleNamespace, list[np.ndarray]]:
    """The stream's facts, read while the file is open (PyAV 18.1 refuses a closed stream)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        codec = stream.codec_context
        facts = SimpleNamespace(
            codec_context=SimpleNamespace(
                name=codec.name, pix_fmt=codec.pix_fmt, colorspace=codec.colorspace
            ),
            width=stream.width,
            height=stream.height,
            average_rate=stream.average_rate,
        )
        return facts, frames


@pytest.mark.parametrize("cmap", COLORMAPS)
def test_colorize_shape_dtype_endpoints(cmap: str) -> None:
    depth = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    rgb = colorize(depth, cmap)
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    low, high = ENDPOINTS[cmap]
    assert tuple(rgb[0, 0]) == low and tuple(rgb[-1, -1]) == high
    # Out-of-range values clip to the ends; NaN shows as the low end.
    wild = colorize(np.array([[-3.0, 7.0, np.nan]], np.float32), cmap)
    assert [tuple(c) for c in wild[0]] == [low, high, low]


def test_colour_maps_change_smoothly() -> None:
    values = np.linspace(0, 1, 512, dtype=np.float32)[None, :]
    grey = colorize(values, "gray")[0, :, 0].astype(int)
    assert np.all(np.diff(grey) >= 0)
    for cmap in ("turbo", "spectral"):
        steps = np.abs(np.diff(colorize(values, cmap)[0].astype(int), axis=0))
        assert steps.max() <= 8, cmap


def test_colorize_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="cmap"):
        colorize(np.zeros((2, 2)), "jet")
    with pytest.raises(ValueError, match=r"\[H,W\]"):
        colorize(np.zeros((2, 2, 1)))


def test_preview_decodes_back(tmp_path: Path) -> None:
    path = tmp_path / "depth_preview.mp4"
    write_preview_video(path, iter(_ramp_frames(N, H, W)), Fraction(24000, 1001))
    assert os.listdir(tmp_path) == ["depth_preview.mp4"]

    stream, frames = _probe(path)
    assert stream.codec_context.name == "h264"
    assert stream.codec_context.pix_fmt == "yuv420p"
    assert (stream.width, stream.height) == (W, H)
    assert stream.average_rate == Fraction(24000, 1001)
    assert len(frames) == N
    assert np.abs(frames[0][H // 2, -1].astype(int) - ENDPOINTS["turbo"][1]).max() <= 10


@pytest.mark.parametrize("cmap", ["turbo", "spectral"])
def test_preview_colours_survive_the_encode(tmp_path: Path, cmap: str) -> None:
    path = tmp_path / "flat.mp4"
    flat = [np.full((H, W), value, np.float32) for value in (0.0, 0.3, 0.7, 1.0)]
    write_preview_video(path, flat, None, cmap=cmap)
    stream, frames = _probe(path)
    assert stream.codec_context.colorspace == 1  # tagged BT.709
    for depth, decoded in zip(flat, frames, strict=True):
        expected = colorize(depth, cmap)[0, 0].astype(int)
        assert np.abs(decoded[H // 2, W // 2].astype(int) - expected).max() <= 6, depth[0, 0]


def test_preview_odd_size_and_default_rate(tmp_path: Path) -> None:
    path = tmp_path / "odd.mp4"
    write_preview_video(path, _ramp_frames(3, 47, 63), None, cmap="gray")
    stream, frames = _probe(path)
    assert (stream.width, stream.height) == (64, 48)
    assert stream.average_rate == Fraction(24)
    assert len(frames) == 3


def test_preview_failures_leave_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="no frames"):
        write_preview_video(tmp_path / "empty.mp4", [], None)
    mixed = [np.zeros((8, 8), np.float32), np.zeros((8, 10), np.float32)]
    with pytest.raises(OutputError, match="8x8"):
        write_preview_video(tmp_path / "mixed.mp4", mixed, None)
    with pytest.raises(OutputError, match="does not exist"):
        write_preview_video(tmp_path / "nowhere" / "p.mp4", [np.zeros((8, 8))], None)
    with pytest.raises(ConfigError, match="cmap"):
        write_preview_video(tmp_path / "p.mp4", [np.zeros((8, 8))], None, cmap="jet")
    assert os.listdir(tmp_path) == []


def test_preview_keeps_existing_file_when_encoding_fails(tmp_path: Path) -> None:
    path = tmp_path / "preview.mp4"
    write_preview_video(path, _ramp_frames(2, 8, 8), None)
    before = path.read_bytes()
    with pytest.raises(OutputError):
        write_preview_video(path, [np.zeros((8, 8)), np.zeros((4, 4))], None)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["preview.mp4"]
