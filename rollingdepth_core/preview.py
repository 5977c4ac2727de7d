"""Colourised depth previews: colour maps and an h264 mp4 written atomically."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .errors import ConfigError, OutputError

COLORMAPS = ("gray", "turbo", "spectral")
DEFAULT_FPS = Fraction(24)

# Anchor colours (8-bit sRGB) at evenly spaced positions over [0, 1]; linear interpolation
# between them is close enough for a preview and needs no plotting library.
_ANCHORS = {
    # A Turbo-like rainbow: dark indigo, blue, cyan, green, yellow, orange, dark red.
    "turbo": (
        (48, 18, 59),
        (64, 64, 161),
        (69, 107, 227),
        (64, 146, 251),
        (39, 184, 235),
        (26, 217, 199),
        (40, 239, 152),
        (94, 252, 105),
        (150, 253, 62),
        (194, 241, 52),
        (228, 215, 56),
        (250, 181, 54),
        (253, 138, 38),
        (239, 92, 18),
        (212, 52, 6),
        (170, 22, 2),
        (122, 4, 3),
    ),
    # A diverging red-yellow-blue-violet ramp in the manner of ColorBrewer's "Spectral".
    "spectral": (
        (158, 1, 66),
        (213, 62, 79),
        (244, 109, 67),
        (253, 174, 97),
        (254, 224, 139),
        (255, 255, 191),
        (230, 245, 152),
        (171, 221, 164),
        (102, 194, 165),
        (50, 136, 189),
        (94, 79, 162),
    ),
    "gray": ((0, 0, 0), (255, 255, 255)),
}
_LUT_SIZE = 1024
# FFmpeg's enum values for the stream's colour tags.
_AVCOL_SPC_BT709 = 1
_AVCOL_PRI_BT709 = 1
_AVCOL_TRC_SRGB = 13
_AVCOL_RANGE_MPEG = 1


def _lookup_table(cmap: str) -> np.ndarray:
    anchors = np.asarray(_ANCHORS[cmap], dtype=np.float64)  # [K,3]
    positions = np.linspace(0.0, 1.0, len(anchors))
    samples = np.linspace(0.0, 1.0, _LUT_SIZE)
    table = np.stack([np.interp(samples, positions, anchors[:, c]) for c in range(3)], axis=-1)
    return np.rint(table).astype(np.uint8)  # [_LUT_SIZE,3]


_LUTS = {name: _lookup_table(name) for name in COLORMAPS}


def colorize(depth01: np.ndarray, cmap: str = "turbo") -> np.ndarray:
    """Map [H,W] values in [0,1] to uint8 [H,W,3] RGB.

    Values outside [0,1] are clipped and NaN shows as 0. ``"gray"`` is exact (0 -> black,
    1 -> white); ``"turbo"`` runs dark indigo -> dark red and ``"spectral"`` dark red ->
    violet.

    Raises
    ------
    ConfigError
        Unknown ``cmap``.
    ValueError
        ``depth01`` is not 2-D.
    """
    if cmap not in COLORMAPS:
        raise ConfigError(f"`cmap` must be one of {COLORMAPS}; got {cmap!r}")
    values = np.asarray(depth01, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"`depth01` must be [H,W]; got shape {values.shape}")
    values = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0)
    index = np.rint(values * (_LUT_SIZE - 1)).astype(np.intp)  # [H,W]
    return _LUTS[cmap][index]  # [H,W,3]


def write_preview_video(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    fps: Fraction | None,
    cmap: str = "turbo",
) -> None:
    """Encode colourised depth frames as an h264 yuv420p mp4.

    Odd widths/heights are padded to even by repeating the last row/column (yuv420p
    needs even sizes). The file is written under a hidden temporary name beside the
    target and moved into place when complete.

    Parameters
    ----------
    path : str or os.PathLike
        Target ``.mp4``; its folder must exist.
    frames : Iterable of np.ndarray
        [H,W] float depth in [0,1], all the same size; consumed once, one at a time.
    fps : Fraction, optional
        Exact frame rate (``Fraction(24000, 1001)`` stays 23.976); None means 24.
    cmap : str
        One of `COLORMAPS`.

    Raises
    ------
    OutputError
        No frames, frames of different sizes, a missing folder or a failed encode.
    """
    if cmap not in COLORMAPS:
        raise ConfigError(f"`cmap` must be one of {COLORMAPS}; got {cmap!r}")
    rate = DEFAULT_FPS if fps is None else Fraction(fps)
    if rate <= 0:
        raise ConfigError(f"`fps` must be positive; got {fps}")
    target = Path(os.fspath(path))
    if not target.parent.is_dir():
        raise OutputError(f"{target}: folder {target.parent} does not exist")

    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise OutputError(f"{target}: no frames to write")
    temp = target.with_name(f".{target.name}.tmp{os.getpid()}-{uuid.uuid4().hex[:8]}.mp4")
    try:
        _encode(target, temp, first, frames, rate, cmap)
        os.replace(temp, target)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise OutputError(f"{target}: cannot write preview video: {exc}") from exc
    finally:
        temp.unlink(missing_ok=True)


def _encode(
    target: Path,
    temp: Path,
    first: np.ndarray,
    rest: Iterator[np.ndarray],
    rate: Fraction,
    cmap: str,
) -> None:
    rgb = colorize(first, cmap)  # [H,W,3]
    height, width = rgb.shape[:2]
    with av.open(str(temp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width = width + width % 2
        stream.height = height + height % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "fast"}
        # Tag what the pixels are; untagged HD video is guessed as BT.601 or BT.709
        # depending on the player, which shifts the colour map's hues.
        stream.codec_context.colorspace = _AVCOL_SPC_BT709
        stream.codec_context.color_primaries = _AVCOL_PRI_BT709
        stream.codec_context.color_trc = _AVCOL_TRC_SRGB
        stream.codec_context.color_range = _AVCOL_RANGE_MPEG
        count = 0
        while rgb is not None:
            if rgb.shape[:2] != (height, width):
                raise OutputError(
                    f"{target}: preview frame {count} is {rgb.shape[1]}x{rgb.shape[0]}, "
                    f"the first was {width}x{height}"
                )
            frame = av.VideoFrame.from_ndarray(_pad_to_even(rgb), format="rgb24").reformat(
                format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG"
            )
            frame.pts = count
            frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
            count += 1
            depth = next(rest, None)
            rgb = None if depth is None else colorize(depth, cmap)
        container.mux(stream.encode(None))


def _pad_to_even(rgb: np.ndarray) -> np.ndarray:
    pad_y, pad_x = rgb.shape[0] % 2, rgb.shape[1] % 2
    if pad_y or pad_x:
        rgb = np.pad(rgb, ((0, pad_y), (0, pad_x), (0, 0)), mode="edge")
    return np.ascontiguousarray(rgb)
