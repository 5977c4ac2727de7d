"""The editorial's own cut list in, a conformable timeline out (OpenTimelineIO).

`read_edit_cuts` reads an edit (``.otio``; a CMX 3600 ``.edl`` or an FCP 7 ``.xml`` through the
``otio-cmx3600-adapter`` and ``otio-fcp-adapter`` plugins) and turns the boundaries of its
clips into shot cuts of the plate. A clip's source range is matched to plate frames by source
timecode where the plate has timecode (an EXR/DPX ``smpte:TimeCode``, a video's start
timecode), else as a source frame range (the source time in frames is the plate's frame
number; a video counts from 0). Clips whose source range misses the plate are another plate's
(an edit holds many): they are left out, and an edit none of whose clips meets the plate is
refused.

`write_depth_timeline` writes ``NAME.otio`` beside the depth sequence: one clip per shot, each
an `ImageSequenceReference` to the depth EXRs whose time is the plate's (its timecode, else its
frame numbers), so an editorial or compositing tool conforms the depth to the plate's edit.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from .errors import ConfigError

EDIT_EXTENSIONS = {".otio": "otio_json", ".edl": "cmx_3600", ".xml": "fcp_xml"}
# The source rate an EDL is read at when the plate states none (CMX 3600 carries no rate).
DEFAULT_EDL_RATE = Fraction(24)


def is_edit_file(text: str) -> bool:
    return Path(text.strip()).suffix.lower() in EDIT_EXTENSIONS


def _plate_rate(info) -> Fraction | None:
    if info is None:
        return None
    if info.timecodes is not None and info.timecodes.rate:
        return info.timecodes.rate
    return info.fps


def plate_times(info, frame_numbers: Sequence[int], rate: Fraction) -> list[int]:
    """Each plate frame's source time in frames at ``rate``: its timecode's frame count where
    the plate has timecode, else its frame number."""
    timecodes = None if info is None else info.timecodes
    if timecodes is None or not timecodes.by_frame:
        return [int(n) for n in frame_numbers]
    import opentimelineio.opentime as opentime

    return [
        round(opentime.from_timecode(timecodes.of(n), float(rate)).value) for n in frame_numbers
    ]


def read_edit_cuts(path: str, frame_numbers: Sequence[int], info=None) -> list[int]:
    """Clip positions where the edit at ``path`` starts a new shot of this plate.

    Parameters
    ----------
    path : str
        ``.otio``, ``.edl`` (CMX 3600) or ``.xml`` (FCP 7 XML).
    frame_numbers : sequence of int
        The plate's frame numbers in clip order.
    info : PlateInfo, optional
        The plate: its timecodes (`PlateInfo.timecodes`) and frame rate.

    Returns
    -------
    list of int
        Sorted positions ``p`` (``0 < p < n``): each clip's first frame, and the frame after
        its last where another clip or unused plate follows.

    Raises
    ------
    ConfigError
        A missing or unreadable edit, an edit with no video clip, or one no clip of which
        references this plate's range (timecode or frames).
    """
    import opentimelineio as otio

    source = path.strip()
    suffix = Path(source).suffix.lower()
    if not os.path.isfile(source):
        raise ConfigError(f"`cuts`: no such edit file {source!r}")
    rate = _plate_rate(info)
    options = {}
    if EDIT_EXTENSIONS[suffix] == "cmx_3600":
        options["rate"] = float(rate or DEFAULT_EDL_RATE)
    try:
        timeline = otio.adapters.read_from_file(
            source, adapter_name=EDIT_EXTENSIONS[suffix], **options
        )
    except Exception as exc:  # each adapter raises its own kinds: all mean "cannot read"
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(f"`cuts`: cannot read the edit {source}: {reason}") from exc
    tracks = timeline.video_tracks() if hasattr(timeline, "video_tracks") else []
    clips = [clip for track in tracks for clip in track.find_clips()]
    if not clips:
        raise ConfigError(f"`cuts`: the edit {source} holds no video clip")

    rate = rate or Fraction(clips[0].source_range.start_time.rate).limit_denominator(1001)
    try:
        times = plate_times(info, frame_numbers, rate)
    except ValueError as exc:  # a plate whose header states no rate, counting at another
        raise ConfigError(
            f"`cuts`: the plate's timecodes do not count at the edit's {float(rate):g} fps: {exc}"
        ) from exc
    position_at = {time: position for position, time in enumerate(times)}
    first, last = times[0], times[-1]
    cuts: set[int] = set()
    used = 0
    for clip in clips:
        span = clip.source_range
        start = round(span.start_time.rescaled_to(float(rate)).value)
        stop = start + round(span.duration.rescaled_to(float(rate)).value)  # exclusive
        if stop <= first or start > last:
            continue  # another plate's clip
        used += 1
        for boundary in (start, stop):
            position = _position_from(position_at, times, boundary)
            if position is not None and 0 < position < len(times):
                cuts.add(position)
    if not used:
        raise ConfigError(
            f"`cuts`: no clip of the edit {source} references this plate: its clips' source "
            f"ranges are {_describe(clips, rate, info)}, the plate's "
            f"{_span_text(first, last + 1, rate, info)}"
        )
    return sorted(cuts)


def _position_from(position_at: dict[int, int], times: list[int], time: int) -> int | None:
    """The clip position of the first plate frame at or after source time ``time``."""
    if time in position_at:
        return position_at[time]
    later = [position for position, t in enumerate(times) if t >= time]
    return later[0] if later else None


def _uses_timecode(info) -> bool:
    return info is not None and info.timecodes is not None and bool(info.timecodes.by_frame)


def _span_text(start: int, stop: int, rate: Fraction, info) -> str:
    """Source times ``start`` .. ``stop - 1`` as timecodes, or as frames."""
    if not _uses_timecode(info):
        return f"frames {start}-{stop - 1}"
    import opentimelineio.opentime as opentime

    drop = ";" in next(iter(info.timecodes.by_frame.values()))
    fps = float(rate)

    def text(value: int) -> str:
        return opentime.to_timecode(opentime.RationalTime(value, fps), fps, drop)

    return f"{text(start)}-{text(stop - 1)}"


def _describe(clips, rate: Fraction, info) -> str:
    spans = []
    for clip in clips[:3]:
        start = round(clip.source_range.start_time.rescaled_to(float(rate)).value)
        duration = round(clip.source_range.duration.rescaled_to(float(rate)).value)
        spans.append(_span_text(start, start + duration, rate, info))
    return ", ".join(spans) + (f" (and {len(clips) - 3} more)" if len(clips) > 3 else "")


def write_depth_timeline(
    folder: str | Path, name: str, info, shots, padding: int, write_to: str | Path | None = None
) -> Path:
    """Write ``folder/NAME.otio``: the depth sequence as an edit of its shots.

    ``write_to``: the folder the file is written into when it is not ``folder`` (the
    publisher's staging folder; the media references still name ``folder``).

    Each shot is a clip whose source range is the plate's (timecode, else frame numbers) and
    whose media is an `ImageSequenceReference` to ``NAME.####.exr`` in ``folder`` (frames the
    plate lacks hold the previous one). The file is written atomically.

    Parameters
    ----------
    info : PlateInfo
        The plate (frame numbers, timecodes, frame rate, source).
    shots : sequence of Shot
        The run's shots (`cuts.Shot`), in order.
    padding : int
        Digits of the depth files' frame numbers.
    """
    import opentimelineio as otio
    from opentimelineio.opentime import RationalTime, TimeRange

    from .publish import write_text_atomic

    folder = Path(folder)
    rate = _plate_rate(info)
    # timecode needs the rate it counts at; a plate that states none is placed by frame number
    by_timecode = _uses_timecode(info) and rate is not None
    rate = rate or DEFAULT_EDL_RATE
    fps = float(rate)
    numbers = list(info.frame_numbers)
    times = plate_times(info, numbers, rate) if by_timecode else numbers
    first_time = times[0]

    def reference():
        # available: the whole depth sequence; frame numbers follow source time one to one
        return otio.schema.ImageSequenceReference(
            target_url_base=folder.resolve().as_uri() + "/",
            name_prefix=f"{name}.",
            name_suffix=".exr",
            start_frame=numbers[0],
            frame_step=1,
            rate=fps,
            frame_zero_padding=padding,
            missing_frame_policy=otio.schema.ImageSequenceReference.MissingFramePolicy.hold,
            available_range=TimeRange(
                RationalTime(first_time, fps), RationalTime(times[-1] - first_time + 1, fps)
            ),
        )

    timeline = otio.schema.Timeline(name=f"{name}: depth of {Path(info.source).name}")
    if by_timecode:
        timeline.global_start_time = RationalTime(first_time, fps)
    track = otio.schema.Track(name="depth", kind=otio.schema.TrackKind.Video)
    timeline.tracks.append(track)
    for shot in shots:
        start, stop = times[shot.start], times[shot.stop - 1] + 1
        clip = otio.schema.Clip(
            name=f"{name} shot {shot.index + 1} ({shot.first_frame}-{shot.last_frame})",
            media_reference=reference(),
            source_range=TimeRange(RationalTime(start, fps), RationalTime(stop - start, fps)),
        )
        clip.metadata["rollingdepth"] = {
            "plate": str(info.source),
            "shot": shot.index,
            "first_frame": shot.first_frame,
            "last_frame": shot.last_frame,
        }
        track.append(clip)
    path = Path(write_to or folder) / f"{name}.otio"
    write_text_atomic(path, otio.adapters.write_to_string(timeline, "otio_json"))
    return path
