"""The one owner of EXR writing and reading: depth channels, metadata, atomic replacement."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import OpenImageIO as oiio

from .errors import InputError, OutputError

METADATA_PREFIX = "rollingdepth/"
COMPRESSION = "zip"
_HALF_MAX = 65504.0


def write_depth_exr(
    path: str | os.PathLike[str],
    depth: np.ndarray,
    *,
    channel: str = "Z",
    half: bool = False,
    metadata: Mapping[str, str | int | float] | None = None,
    extra_channels: Mapping[str, np.ndarray] | None = None,
    datetime: str | None = None,
) -> None:
    """Write a depth map (and optional extra channels) as a zip-compressed scanline EXR.

    ``datetime`` (``"YYYY:MM:DD HH:MM:SS"``) pins the ``DateTime`` header; without it
    OpenImageIO stamps the time of writing, and two writes of the same data differ.

    The file is written next to the target under a hidden temporary name and moved into
    place with `os.replace`, so readers never see half a file and an existing file is
    only replaced by a complete one.

    Parameters
    ----------
    path : str or os.PathLike
        Target file; its folder must exist.
    depth : np.ndarray
        [H,W] finite floats.
    channel : str
        Name of the depth channel, e.g. ``"Z"`` or ``"depth.Z"``; it is the image's
        `z_channel`.
    half : bool
        Store every channel as 16-bit HALF instead of 32-bit FLOAT.
    metadata : Mapping, optional
        Header attributes, written as ``rollingdepth/<key>`` (str, int or float values).
    extra_channels : Mapping, optional
        More [H,W] channels by name, e.g. ``{"confidence": conf}``.

    Raises
    ------
    OutputError
        Bad arrays, names or metadata, a missing folder, or a failed write (with
        OpenImageIO's message).
    """
    target = Path(os.fspath(path))
    if channel in (extra_channels or {}):
        raise OutputError(f"{target}: extra channel {channel!r} has the depth channel's name")
    planes = {channel: depth, **(extra_channels or {})}
    _check_planes(target, planes, half)
    attributes = _check_metadata(target, metadata or {})
    if not target.parent.is_dir():
        raise OutputError(f"{target}: folder {target.parent} does not exist")

    height, width = np.shape(depth)
    names = list(planes)
    pixels = np.stack([np.asarray(planes[n], dtype=np.float32) for n in names], axis=-1)

    spec = oiio.ImageSpec(width, height, len(names), "half" if half else "float")
    spec.channelnames = tuple(names)
    spec.z_channel = 0
    spec.full_x, spec.full_y, spec.full_width, spec.full_height = 0, 0, width, height
    spec.attribute("compression", COMPRESSION)
    if datetime is not None:
        spec.attribute("DateTime", datetime)
    for key, value in attributes.items():
        spec.attribute(key, value)

    # Keep `.exr` last so OpenImageIO picks its EXR writer for the temporary name.
    temp = target.with_name(f".{target.name}.tmp{os.getpid()}-{uuid.uuid4().hex[:8]}.exr")
    try:
        _write(target, temp, spec, pixels)
        os.replace(temp, target)
    except OSError as exc:
        raise OutputError(f"{target}: cannot write EXR: {exc}") from exc
    finally:
        temp.unlink(missing_ok=True)


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
        raise OutputError(f"{target}: cannot write pixels: {error}")
    if not closed:
        raise OutputError(f"{target}: cannot finish the file: {oiio_error(out)}")


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
        if half and np.abs(array).max() > _HALF_MAX:
            raise OutputError(
                f"{target}: channel {name!r} exceeds the HALF range (|x| <= {_HALF_MAX:g}); "
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
