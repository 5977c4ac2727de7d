"""Timecode: which SMPTE timecode each plate frame has, and how it travels to the depth EXRs.

A plate's timecode comes from its files (an EXR's or DPX's ``smpte:TimeCode``, one per file)
or, for a video, from its start timecode (FFmpeg's ``timecode`` tag: the video stream's, a
``tmcd`` data stream's or the container's) plus the frame's offset. Arithmetic, drop-frame
included, is OpenTimelineIO's `opentime`. A timecode is written as ``HH:MM:SS:FF``, or
``HH:MM:SS;FF`` when it counts drop-frame.

The depth EXRs carry it in OpenEXR's standard attributes, which Nuke and Resolve read:
``timeCode`` (OpenImageIO's ``smpte:TimeCode``, SMPTE 12M packed with the drop-frame flag) and
``framesPerSecond`` (a rational; OpenImageIO 3.2 writes that name as given, so it is spelled
as the OpenEXR standard spells it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from .errors import InputError

TIMECODE_ATTRIBUTE = "smpte:TimeCode"
RATE_ATTRIBUTE = "framesPerSecond"
# How a plate's header may state its frame rate: OpenEXR's own name, OpenImageIO's, DPX's.
_RATE_ATTRIBUTES = (RATE_ATTRIBUTE, "FramesPerSecond", "dpx:FrameRate")
_DROP_FRAME_BIT = 1 << 6


@dataclass(frozen=True)
class Timecodes:
    """The timecode of each plate frame by frame number, and the rate they count at."""

    rate: Fraction | None
    by_frame: Mapping[int, str] = field(default_factory=dict)

    def of(self, number: int) -> str | None:
        return self.by_frame.get(int(number))

    def to_dict(self, frame_numbers: Sequence[int]) -> dict[str, object]:
        """For a sidecar: the rate, whether it is drop-frame, first and last timecode."""
        first = self.of(frame_numbers[0]) if frame_numbers else None
        last = self.of(frame_numbers[-1]) if frame_numbers else None
        return {
            "fps": None if self.rate is None else rate_text(self.rate),
            "drop_frame": bool(first and is_drop_frame(first)),
            "first_timecode": first,
            "last_timecode": last,
        }


def plate_timecodes(rate: Fraction | None, by_frame: Mapping[int, str]) -> Timecodes | None:
    """A plate's clock: its frames' timecodes (possibly none) and its rate; None when it
    states neither. A plate with a rate and no timecode still gives the depth its rate."""
    if rate is None and not by_frame:
        return None
    return Timecodes(rate, dict(by_frame))


def stalled_timecode_warning(
    timecodes: Timecodes | None, frame_numbers: Sequence[int]
) -> str | None:
    """A warning when the plate's timecode does not advance from one frame to the next (a
    header copied onto every file, usually); None when it does, or there is none. The depth
    still carries each frame's timecode as the plate does: it lines up with the plate."""
    if timecodes is None or not timecodes.by_frame:
        return None
    values = [timecodes.of(n) for n in frame_numbers]
    stalled = [i for i in range(1, len(values)) if values[i] == values[i - 1]]
    if not stalled:
        return None
    if len(set(values)) == 1:
        return (
            f"warning: every frame of the plate has timecode {values[0]}: its timecode does not "
            "advance, so the depth frames cannot be told apart by timecode either"
        )
    first = stalled[0]
    return (
        f"warning: the plate's timecode does not advance on {len(stalled)} of "
        f"{len(values) - 1} frame steps (first: frames {frame_numbers[first - 1]} and "
        f"{frame_numbers[first]} both have {values[first]}); the depth frames carry the same"
    )


def rate_text(rate: Fraction) -> str:
    """``24``, ``30000/1001``: a rate as JSON and the sidecar carry it."""
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"


def is_drop_frame(timecode: str) -> bool:
    return ";" in timecode


def video_timecodes(
    source: str, start: str, rate: Fraction, frame_numbers: Sequence[int]
) -> dict[int, str]:
    """The timecode of each 0-based frame of a video whose frame 0 is at ``start``.

    Raises
    ------
    InputError
        ``start`` is not a timecode at ``rate``.
    """
    import opentimelineio.opentime as opentime

    fps = float(rate)
    drop = is_drop_frame(start)
    try:
        origin = opentime.from_timecode(start, fps)
        return {
            int(n): opentime.to_timecode(origin + opentime.RationalTime(n, fps), fps, drop)
            for n in frame_numbers
        }
    except ValueError as exc:
        raise InputError(f"{source}: start timecode {start!r} at {rate} fps: {exc}") from exc


def stream_start_timecode(container, stream) -> str | None:
    """A video's start timecode as FFmpeg exposes it: a ``timecode`` tag on the video stream
    (``TIMECODE`` in Matroska), on a ``tmcd`` data stream, or on the container."""
    holders = [stream.metadata, *(s.metadata for s in container.streams.data), container.metadata]
    for tags in holders:
        for key, value in tags.items():
            if key.lower() == "timecode" and value:
                return str(value).strip()
    return None


def header_rate(spec) -> Fraction | None:
    """The frame rate an image header states (OpenImageIO `ImageSpec`), if any."""
    for name in _RATE_ATTRIBUTES:
        value = spec.getattribute(name)
        if value is None:
            continue
        if isinstance(value, tuple) and len(value) == 2 and value[1]:
            rate = Fraction(int(value[0]), int(value[1]))
        else:
            rate = Fraction(float(value)).limit_denominator(1001)
        if rate > 0:
            return rate
    return None


def header_timecode(spec) -> str | None:
    """The SMPTE timecode an image header holds (OpenImageIO `ImageSpec`), if any."""
    value = spec.getattribute(TIMECODE_ATTRIBUTE)
    if not value:
        return None
    return unpack_timecode(int(value[0]))


def timecode_fields(timecode: str) -> tuple[int, int, int, int]:
    """``"HH:MM:SS:FF"`` (``;`` before FF for drop-frame) -> (hours, minutes, seconds,
    frames); ValueError for anything else."""
    digits = timecode.replace(";", ":").split(":")
    if len(digits) != 4 or not all(d.isdigit() and len(d) <= 2 for d in digits):
        raise ValueError(f"not a timecode: {timecode!r}")
    hours, minutes, seconds, frames = (int(d) for d in digits)
    return hours, minutes, seconds, frames


def pack_timecode(timecode: str) -> tuple[int, int]:
    """``"HH:MM:SS:FF"`` (``;`` before FF for drop-frame) -> SMPTE 12M ``(time and flags,
    user bits)``, OpenImageIO's `TypeTimeCode` value: BCD digits, bit 6 the drop-frame flag."""
    hours, minutes, seconds, frames = timecode_fields(timecode)
    packed = 0
    for shift, value in ((24, hours), (16, minutes), (8, seconds), (0, frames)):
        packed |= ((value // 10) << 4 | value % 10) << shift
    if is_drop_frame(timecode):
        packed |= _DROP_FRAME_BIT
    return packed, 0


def unpack_timecode(packed: int) -> str:
    """SMPTE 12M time-and-flags -> ``"HH:MM:SS:FF"`` (``;FF`` when the drop-frame flag is set)."""

    def bcd(shift: int, tens_bits: int) -> int:
        byte = packed >> shift
        return ((byte >> 4) & ((1 << tens_bits) - 1)) * 10 + (byte & 0xF)

    hours, minutes, seconds, frames = bcd(24, 2), bcd(16, 3), bcd(8, 3), bcd(0, 2)
    separator = ";" if packed & _DROP_FRAME_BIT else ":"
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{frames:02d}"
