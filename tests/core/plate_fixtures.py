"""Generate small test plates: videos through PyAV, image sequences through OpenImageIO.

Every frame is a colour gradient with a disc moving across it, so both depth and motion
differ from frame to frame. `plate_frame` gives the exact display-sRGB pixels each file
was made from.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import OpenImageIO as oiio

# Pixel formats for encoders whose first choice is not what a plate would carry.
_VIDEO_PIX_FMTS = {
    "libx264": "yuv420p",
    "libx265": "yuv420p",
    "prores_ks": "yuv422p10le",
    "prores": "yuv422p10le",
    "ffv1": "yuv444p10le",
    "libvpx-vp9": "yuv420p",
    "mpeg4": "yuv420p",
    "dnxhd": "yuv422p",
}
_CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi", ".mxf": "mxf"}
# (OIIO pixel type, extra attributes) per image extension.
_IMAGE_FORMATS = {
    "png": ("uint8", {}),
    "jpg": ("uint8", {"Compression": "jpeg:98"}),
    "jpeg": ("uint8", {"Compression": "jpeg:98"}),
    "tif": ("uint16", {}),
    "tiff": ("uint16", {}),
    "dpx": ("uint16", {"oiio:BitsPerSample": 10}),
    "exr": ("half", {"compression": "zip"}),
}


def plate_frame(index: int, width: int, height: int) -> np.ndarray:
    """Display-sRGB float32 [H,W,3] in [0.05, 0.95]: a gradient with a moving disc."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)
    rgb = np.stack([0.15 + 0.7 * u, 0.15 + 0.7 * v, 0.5 - 0.3 * u * v], axis=-1)
    cx = width * (0.25 + 0.07 * index) % width
    cy = height * (0.5 + 0.15 * np.sin(0.8 * index))
    radius = 0.25 * min(width, height)
    disc = (x - cx) ** 2 + (y - cy) ** 2 <= radius**2
    rgb[disc] = (0.9, 0.85, 0.1)
    return np.clip(rgb, 0.05, 0.95).astype(np.float32)


def srgb_to_linear(encoded: np.ndarray) -> np.ndarray:
    """The sRGB EOTF, kept here independent of the code under test."""
    encoded = np.asarray(encoded, dtype=np.float64)
    linear = np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4)
    return linear.astype(np.float32)


def make_video(
    path: str | os.PathLike[str],
    n_frames: int,
    width: int,
    height: int,
    fps: Fraction = Fraction(24000, 1001),
    codec: str = "libx264",
    *,
    gop: int | None = None,
    pts: Sequence[int] | None = None,
) -> Path:
    """Encode ``n_frames`` of `plate_frame` with ``codec`` at the exact rate ``fps``.

    ``gop`` sets the keyframe interval (to exercise seeking); sources deeper than 8 bits
    (ProRes, FFV1) are fed 16-bit RGB so their extra precision is real. ``pts``: each frame's
    time in frames of ``fps`` (default 0, 1, 2, ...); gaps make a variable-frame-rate video,
    as a phone or a screen recorder writes.
    """
    path = Path(path)
    container_format = _CONTAINERS.get(path.suffix.lower())
    pix_fmt = _VIDEO_PIX_FMTS.get(codec, "yuv420p")
    deep = max(c.bits for c in av.VideoFormat(pix_fmt).components) > 8
    with av.open(str(path), mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if gop is not None:
            stream.codec_context.gop_size = gop
        for index in range(n_frames):
            rgb = plate_frame(index, width, height)
            if deep:
                pixels = np.rint(rgb * 65535).astype(np.uint16)
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb48le")
            else:
                pixels = np.rint(rgb * 255).astype(np.uint8)
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index if pts is None else pts[index]
            frame.time_base = 1 / Fraction(fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_image(
    path: str | os.PathLike[str],
    pixels: np.ndarray,
    pixel_type: str = "float",
    attributes: Mapping[str, str | int | float] | None = None,
    channel_names: Iterable[str] | None = None,
) -> Path:
    """Write float pixels [H,W,C] (or [H,W]) with OpenImageIO as ``pixel_type``."""
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    height, width, channels = pixels.shape
    spec = oiio.ImageSpec(width, height, channels, pixel_type)
    if channel_names is not None:
        spec.channelnames = tuple(channel_names)
    for key, value in (attributes or {}).items():
        spec.attribute(key, value)
    out = oiio.ImageOutput.create(str(path))
    assert out is not None, oiio.geterror()
    assert out.open(str(path), spec), out.geterror()
    assert out.write_image(pixels), out.geterror()
    assert out.close(), out.geterror()
    return Path(path)


def make_image_sequence(
    folder: str | os.PathLike[str],
    n_frames: int,
    width: int,
    height: int,
    start: int = 1001,
    ext: str = "png",
    name: str = "plate",
    pad: int = 4,
    skip: Iterable[int] = (),
    *,
    sizes: Mapping[int, tuple[int, int]] | None = None,
) -> str:
    """Write frames ``start .. start+n_frames-1`` as ``<name>.<number>.<ext>``.

    Frame numbers in ``skip`` are left out (a gap). ``sizes`` maps a frame number to a
    different ``(width, height)`` (mixed resolutions). EXR frames are scene-linear HALF
    (the sRGB EOTF of `plate_frame`); the others hold `plate_frame` as display sRGB.

    Returns
    -------
    str
        The pattern, e.g. ``<folder>/plate.####.png``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pixel_type, attributes = _IMAGE_FORMATS[ext.lower()]
    skipped = set(skip)
    for index in range(n_frames):
        number = start + index
        if number in skipped:
            continue
        w, h = (sizes or {}).get(number, (width, height))
        rgb = plate_frame(index, w, h)
        if ext.lower() == "exr":
            rgb = srgb_to_linear(rgb)
        write_image(folder / f"{name}.{number:0{pad}d}.{ext}", rgb, pixel_type, attributes)
    return str(folder / f"{name}.{'#' * pad}.{ext}")


def make_mixed_resolution_sequence(
    folder: str | os.PathLike[str], n_frames: int = 4, width: int = 64, height: int = 48
) -> str:
    """A PNG sequence from 1001 whose third frame (1003) is 32 pixels wider."""
    return make_image_sequence(folder, n_frames, width, height, sizes={1003: (width + 32, height)})
