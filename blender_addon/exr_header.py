"""Read an OpenEXR header with the standard library: size and the engine's metadata.

Blender's image API does not expose EXR header attributes, and the add-on must not depend on
OpenImageIO, so the few fields it needs (data window, ``rollingdepth/*`` attributes) are
parsed here. Only single-part files are read: that is what the engine writes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = b"\x76\x2f\x31\x01"
MAX_HEADER_BYTES = 1 << 20


class ExrHeaderError(Exception):
    pass


@dataclass(frozen=True)
class ExrHeader:
    width: int
    height: int
    attributes: dict = field(default_factory=dict)

    def engine_value(self, key: str, default=None):
        """An attribute the engine wrote as ``rollingdepth/<key>``."""
        return self.attributes.get(f"rollingdepth/{key}", default)


def _decode(kind: str, raw: bytes):
    if kind == "box2i" and len(raw) == 16:
        return struct.unpack("<4i", raw)
    if kind == "int" and len(raw) == 4:
        return struct.unpack("<i", raw)[0]
    if kind == "float" and len(raw) == 4:
        return struct.unpack("<f", raw)[0]
    if kind == "double" and len(raw) == 8:
        return struct.unpack("<d", raw)[0]
    if kind == "string":
        return raw.decode("utf-8", errors="replace")
    return raw


def _read_cstring(data: bytes, at: int) -> tuple[str, int]:
    end = data.index(b"\0", at)
    if end - at > 255:
        raise ExrHeaderError("attribute name too long")
    return data[at:end].decode("latin-1"), end + 1


def read_exr_header(path: str | Path) -> ExrHeader:
    """Parse the header of a single-part EXR; raises ExrHeaderError on anything else."""
    with open(path, "rb") as handle:
        data = handle.read(MAX_HEADER_BYTES)
    if data[:4] != MAGIC:
        raise ExrHeaderError(f"{path} is not an OpenEXR file")
    if data[5] & 0x10:
        raise ExrHeaderError(f"{path} is a multi-part EXR")
    at = 8
    attributes: dict = {}
    try:
        while True:
            name, at = _read_cstring(data, at)
            if not name:
                break
            kind, at = _read_cstring(data, at)
            (size,) = struct.unpack_from("<i", data, at)
            at += 4
            if size < 0 or at + size > len(data):
                raise ExrHeaderError(f"{path}: attribute {name!r} runs past the header")
            attributes[name] = _decode(kind, data[at : at + size])
            at += size
    except (ValueError, struct.error) as exc:
        raise ExrHeaderError(f"{path}: truncated header") from exc
    window = attributes.get("dataWindow")
    if not isinstance(window, tuple):
        raise ExrHeaderError(f"{path}: no data window")
    xmin, ymin, xmax, ymax = window
    return ExrHeader(width=xmax - xmin + 1, height=ymax - ymin + 1, attributes=attributes)
