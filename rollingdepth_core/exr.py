"""The one owner of EXR writing and reading: depth channels, metadata, atomic replacement."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path

import numpy as np
import OpenImageIO as oiio

from .config import HALF_MAX
from .errors import InputError, OutputError
from .timecode import RATE_ATTRIBUTE, TIMECODE_ATTRIBUTE, pack_timecode

METADATA_PREFIX = "rollingdepth/"
COMPRESSION = "zip"


Window = tuple[int, int, int, int]  # (x, y, width, height) in EXR pixel coordinates


def write_depth_exr(
    path: str | os.PathLike[str],
    depth: np.ndarray,
    *,
    channel: str = "Z",
    half: bool = False,
    metadata: Mapping[str, str | int | float] | None = None,
    extra_channels: Mapping[str, np.ndarray] | None = None,
    datetime: str | None = None,
    utc_offset: float | None = None,
    timecode: str | None = None,
    fps: Fraction | None = None,
    display_window: Window | None = None,
    data_window: Window | None = None,
    pixel_aspect: float = 1.0,
    compression: str = COMPRESSION,
) -> None:
    """Write a depth map (and optional extra channels) as a scanline EXR, zip-compressed unless
    ``compression`` (an OpenEXR compression name: ``"none"``, ``"rle"``, ``"zip"``...) says.

    ``datetime`` (``"YYYY:MM:DD HH:MM:SS"``) pins the ``DateTime`` header (OpenEXR
    ``capDate``) and ``utc_offset`` its zone (``utcOffset``); without it OpenImageIO stamps the
    time of writing, and two writes of the same data differ. ``timecode`` (``"HH:MM:SS:FF"``,
    ``;FF`` for drop-frame) and ``fps`` become OpenEXR's ``timeCode`` and ``framesPerSecond``.

    The file is written next to the target under a hidden temporary name, read back and
    compared with what was meant to be written, flushed to the disk (`os.fsync`) and only
    then moved into place with `os.replace`. A full disk or any other failure therefore
    raises and leaves the target as it was: readers never see half a file, and a file of
    an earlier run is only replaced by a complete one. (OpenImageIO reports success for a
    small file whose buffered bytes never reached a full disk; the read-back catches it.)

    Parameters
    ----------
    path : str or os.PathLike
        Target file; its folder must exist.
    depth : np.ndarray
        [H,W] finite floats covering the display window (H,W = its height and width).
    channel : str
        Name of the depth channel, e.g. ``"Z"`` or ``"depth.Z"``; it is the image's
        `z_channel`.
    half : bool
        Store every channel as 16-bit HALF instead of 32-bit FLOAT.
    metadata : Mapping, optional
        Header attributes, written as ``rollingdepth/<key>`` (str, int or float values).
    extra_channels : Mapping, optional
        More [H,W] channels by name, e.g. ``{"confidence": conf}``.
    display_window : (x, y, width, height), optional
        The frame the maps cover; default ``(0, 0, W, H)``. A plate's own window (offset
        origin included) keeps the depth lined up over the plate in a compositor.
    data_window : (x, y, width, height), optional
        The pixels stored; default the display window. Parts outside the display window
        (overscan) repeat the nearest edge pixel of the maps; a smaller window crops them.
    pixel_aspect : float
        The plate's pixel aspect ratio (``PixelAspectRatio``).
    compression : str
        The file's compression (one for all its channels); every EXR reader knows the
        lossless ones.

    Raises
    ------
    OutputError
        Bad arrays, names, windows or metadata, a missing folder, or a failed write (with
        the reason); the message names the target file.
    """
    target = Path(os.fspath(path))
    if channel in (extra_channels or {}):
        raise OutputError(f"{target}: extra channel {channel!r} has the depth channel's name")
    planes = {channel: depth, **(extra_channels or {})}
    _check_planes(target, planes, half)
    attributes = _check_metadata(target, metadata or {})
    height, width = np.shape(depth)
    display = _check_window(target, "display", display_window or (0, 0, width, height))
    data = _check_window(target, "data", data_window or display)
    if display[2:] != (width, height):
        raise OutputError(
            f"{target}: the maps are {width}x{height}, the display window {display[2]}x{display[3]}"
        )
    if not (np.isfinite(pixel_aspect) and pixel_aspect > 0):
        raise OutputError(f"{target}: pixel aspect must be a positive number; got {pixel_aspect}")
    if not target.parent.is_dir():
        raise OutputError(f"{target}: folder {target.parent} does not exist")

    # in the order the file keeps (OpenEXR sorts channels by name), so the read-back
    # compares as it comes, with no 4-byte-strided reordering copy of every pixel
    names = sorted(planes)
    pixels = np.stack(
        [reframe(np.asarray(planes[n], dtype=np.float32), display, data) for n in names], axis=-1
    )  # [data h, data w, C]

    spec = oiio.ImageSpec(data[2], data[3], len(names), "half" if half else "float")
    spec.x, spec.y = data[0], data[1]
    spec.full_x, spec.full_y, spec.full_width, spec.full_height = display
    spec.channelnames = tuple(names)
    spec.z_channel = names.index(channel)
    spec.attribute("compression", compression)
    spec.attribute("PixelAspectRatio", float(pixel_aspect))
    if datetime is not None:
        spec.attribute("DateTime", datetime)
    if utc_offset is not None:
        spec.attribute("utcOffset", float(utc_offset))
    if timecode is not None:
        try:
            packed = pack_timecode(timecode)
        except ValueError:
            raise OutputError(f"{target}: timecode must be HH:MM:SS:FF; got {timecode!r}") from None
        spec.attribute(TIMECODE_ATTRIBUTE, oiio.TypeTimeCode, packed)
    if fps is not None:
        rate = Fraction(fps)
        spec.attribute(RATE_ATTRIBUTE, oiio.TypeRational, (rate.numerator, rate.denominator))
    for key, value in attributes.items():
        spec.attribute(key, value)

    # Keep `.exr` last so OpenImageIO picks its EXR writer for the temporary name.
    temp = target.with_name(f".{target.name}.tmp{os.getpid()}-{uuid.uuid4().hex[:8]}.exr")
    try:
        _write(target, temp, spec, pixels)
        _fsync(temp)
        # What a reader gets is what was meant: stored values are the float32 (or half)
        # pixels exactly, so compare bit for bit.
        _verify(target, temp, names, pixels.astype(np.float16) if half else pixels)
        os.replace(temp, target)
        _fsync(target.parent)
    except OSError as exc:
        raise OutputError(f"{target}: cannot write EXR: {exc}") from exc
    finally:
        temp.unlink(missing_ok=True)


def reframe(plane: np.ndarray, display: Window, data: Window) -> np.ndarray:
    """A [H,W] map over the display window, cut or edge-extended to the data window."""
    if data == display:
        return plane
    rows = np.clip(np.arange(data[1], data[1] + data[3]) - display[1], 0, display[3] - 1)
    cols = np.clip(np.arange(data[0], data[0] + data[2]) - display[0], 0, display[2] - 1)
    return plane[rows[:, None], cols[None, :]]


def _check_window(target: Path, kind: str, window: Window) -> Window:
    values = tuple(window)
    if (
        len(values) != 4
        or not all(isinstance(v, int | np.integer) for v in values)
        or values[2] < 1
        or values[3] < 1
    ):
        raise OutputError(
            f"{target}: the {kind} window must be (x, y, width, height) integers with "
            f"width, height >= 1; got {window!r}"
        )
    return tuple(int(v) for v in values)


def _write(target: Path, temp: Path, spec: oiio.ImageSpec, pixels: np.ndarray) -> None:
    out = oiio.ImageOutput.create(str(temp))
    if out is None:
        raise OutputError(f"{target}: no EXR writer: {oiio_error()}")
    if not out.open(str(temp), spec):
        raise OutputError(f"{target}: cannot open for writing: {oiio_error(out)}")
    try:
        written = out.write_image(pixels)
        error = "" if written else oiio_error(out)
    finally:
        closed = out.close()
    if not written:
        raise OutputError(f"{target}: cannot write pixels: {_disk_full(temp, pixels) or error}")
    if not closed:
        raise OutputError(
            f"{target}: cannot finish the file: {_disk_full(temp, pixels) or oiio_error(out)}"
        )


def _disk_full(temp: Path, pixels: np.ndarray) -> str:
    """The plain reason when the disk has no room for ``pixels`` (OpenImageIO only says
    the write failed), else ''."""
    try:
        free = shutil.disk_usage(temp.parent).free
    except OSError:
        return ""
    if free >= pixels.nbytes:
        return ""
    return f"No space left on device ({free / 2**20:.1f} MiB free on {temp.parent})"


def _fsync(path: Path) -> None:
    """Flush a file (or a folder, for the rename) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _verify(target: Path, temp: Path, names: list[str], expected: np.ndarray) -> None:
    """OutputError unless ``temp`` reads back as exactly ``expected`` ([h,w,C] of ``names``)."""
    inp = oiio.ImageInput.open(str(temp))
    if inp is None:
        raise OutputError(f"{target}: {_unreadable(temp, oiio_error())}")
    try:
        order = list(inp.spec().channelnames)  # EXR stores channels sorted by name
        stored = inp.read_image("half" if expected.dtype == np.float16 else "float")
        error = oiio_error(inp) if stored is None else ""
    finally:
        inp.close()
    if stored is None:
        raise OutputError(f"{target}: {_unreadable(temp, error)}")
    if sorted(order) != sorted(names):
        raise OutputError(f"{target}: the written file holds channels {order}, not {names}")
    stored = np.asarray(stored).reshape(expected.shape)
    if order != names:
        stored = stored[..., [order.index(n) for n in names]]
    # NaN never reaches here (checked before writing), so equality is exact.
    if not np.array_equal(stored, expected):
        raise OutputError(f"{target}: the written file reads back different pixels")


def _unreadable(temp: Path, error: str) -> str:
    # A full disk is the usual cause, and OpenImageIO's message does not say so.
    free = shutil.disk_usage(temp.parent).free
    return (
        f"the written file does not read back ({error}); {free} bytes free on its disk, "
        f"{temp.stat().st_size} bytes written"
    )


def _check_planes(target: Path, planes: Mapping[str, np.ndarray], half: bool) -> None:
    shape = None
    for name, plane in planes.items():
        if not isinstance(name, str) or not name:
            raise OutputError(f"{target}: channel names must be non-empty strings; got {name!r}")
        array = np.asarray(plane)
        if array.ndim != 2 or 0 in array.shape:
            raise OutputError(
                f"{target}: channel {name!r} must be a non-empty [H,W] array; got shape "
                f"{array.shape}"
            )
        if shape is None:
            shape = array.shape
        elif array.shape != shape:
            raise OutputError(
                f"{target}: channel {name!r} is {array.shape}, the depth channel is {shape}"
            )
        if not np.issubdtype(array.dtype, np.floating):
            raise OutputError(f"{target}: channel {name!r} must be float; got {array.dtype}")
        if not np.isfinite(array).all():
            raise OutputError(f"{target}: channel {name!r} holds NaN or infinite values")
        if half and np.abs(array).max() > HALF_MAX:
            raise OutputError(
                f"{target}: channel {name!r} exceeds the HALF range (|x| <= {HALF_MAX:g}); "
                "write it as float"
            )


def _check_metadata(
    target: Path, metadata: Mapping[str, str | int | float]
) -> dict[str, str | int | float]:
    attributes: dict[str, str | int | float] = {}
    for key, value in metadata.items():
        # bool is an int to Python but has no faithful EXR type: say so rather than write 1/0.
        if not isinstance(key, str) or not key or isinstance(value, bool):
            raise OutputError(f"{target}: bad metadata entry {key!r}: {value!r}")
        if isinstance(value, np.generic):
            value = value.item()
        if not isinstance(value, str | int | float):
            raise OutputError(
                f"{target}: metadata {key!r} must be str, int or float; got {type(value).__name__}"
            )
        if isinstance(value, int) and not -(2**31) <= value < 2**31:
            raise OutputError(f"{target}: metadata {key!r} does not fit a 32-bit int: {value}")
        attributes[METADATA_PREFIX + key] = value
    return attributes


def read_exr(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Read every channel of an EXR's first part, and its header.

    Returns
    -------
    channels : dict of str to np.ndarray
        float32 [H,W] arrays by channel name, in file order.
    header : dict of str to object
        Every header attribute by name (``compression``, ``rollingdepth/<key>``...), plus
        ``channel_formats`` (name -> ``"half"``/``"float"``/...), ``data_window`` and
        ``display_window`` as ``(x, y, width, height)``, and ``z_channel`` (-1 if unset).

    Raises
    ------
    InputError
        The file is missing or not a readable image.
    """
    source = os.fspath(path)
    inp = oiio.ImageInput.open(source)
    if inp is None:
        raise InputError(f"{source}: cannot read EXR: {oiio_error()}")
    try:
        spec = inp.spec()
        pixels = inp.read_image("float")
        if pixels is None:
            raise InputError(f"{source}: cannot read pixels: {oiio_error(inp)}")
    finally:
        inp.close()
    names = list(spec.channelnames)
    pixels = np.asarray(pixels, dtype=np.float32).reshape(spec.height, spec.width, len(names))
    channels = {name: pixels[..., i].copy() for i, name in enumerate(names)}

    formats = list(spec.channelformats) or [spec.format] * len(names)
    header: dict[str, object] = {a.name: a.value for a in spec.extra_attribs}
    header["channel_formats"] = {n: str(f) for n, f in zip(names, formats, strict=True)}
    header["data_window"] = (spec.x, spec.y, spec.width, spec.height)
    header["display_window"] = (spec.full_x, spec.full_y, spec.full_width, spec.full_height)
    header["z_channel"] = spec.z_channel
    return channels, header


def oiio_error(handle: oiio.ImageInput | oiio.ImageOutput | None = None) -> str:
    """The pending OpenImageIO error of ``handle`` (else the global one), on one line."""
    message = (handle.geterror() if handle is not None else "") or oiio.geterror()
    return " ".join(message.split()) or "unknown OpenImageIO error"
