"""Which source frames a strip shows, and how the engine is asked for exactly those.

Pure functions over plain values (no bpy), so the mapping rules are readable in one place:
``sequencer.py`` gathers the values from the strip and hands them here.

Numbers carried through: a *timeline frame* is a scene frame; a *source number* is the frame
number the engine names its output with (an image file's own number, or the 0-based frame
index in a movie). The engine writes ``NAME.<source number>.exr``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .protocol import NUMBERED_NAME


class StripError(Exception):
    """The strip cannot be processed as it is; the message says what to change."""


@dataclass(frozen=True)
class NumberedName:
    head: str
    digits: str
    tail: str

    @property
    def number(self) -> int:
        return int(self.digits)


def split_numbered(filename: str) -> NumberedName | None:
    """``plate.1001.exr`` -> head ``plate.``, digits ``1001``, tail ``.exr``.

    The engine's rule (protocol.NUMBERED_NAME): the digits right before the extension, so
    ``scan.1001.jp2`` is frame 1001 and the engine finds the same frames the add-on asks for.
    """
    match = NUMBERED_NAME.match(filename)
    if match is None:
        return None
    return NumberedName(match["head"], match["digits"], match["tail"])


@dataclass(frozen=True)
class FramePlan:
    """How one strip becomes one engine run, and how its output lines up again.

    ``plate``/``frames`` are the engine's PLATE and ``--frames``. ``timeline`` pairs every
    visible timeline frame with the source number shown there (a held or repeated frame
    appears more than once). ``staging`` lists ``(source file, link name)`` when the engine
    reads a folder of links rather than the files in place.
    """

    kind: str  # "IMAGE" | "MOVIE"
    plate: str
    frames: str | None
    timeline: tuple[tuple[int, int], ...]
    staging: tuple[tuple[str, str], ...] = ()

    @property
    def source_numbers(self) -> list[int]:
        """Every source number processed, ascending, once each."""
        return sorted({number for _, number in self.timeline})

    @property
    def plays_in_order(self) -> bool:
        """True when each timeline frame shows the next source number (no holds, gaps,
        reverse or strobe): what an Image node's frame offset can express."""
        first_frame, first_number = self.timeline[0]
        return all(n - first_number == t - first_frame for t, n in self.timeline)


def sequence_numbering(names: list[str]) -> tuple[str, dict[str, int]] | None:
    """``(pattern name, number of each file)`` when ``names`` are one numbered sequence.

    The pattern uses the engine's rule for ``#`` padding (printf ``%0Nd``: 1001 is "1001",
    never "01001"; 10000 may follow 9999).
    """
    parsed = [split_numbered(name) for name in names]
    if not all(parsed) or len({(p.head, p.tail) for p in parsed if p}) != 1:
        return None
    pad = min(len(p.digits) for p in parsed if p)
    if any(p.digits != f"{p.number:0{pad}d}" for p in parsed if p):
        return None
    numbers = {name: p.number for name, p in zip(names, parsed, strict=True) if p}
    if len(set(numbers.values())) != len(names):
        return None
    first = parsed[0]
    assert first is not None
    return f"{first.head}{'#' * pad}{first.tail}", numbers


def plan_image_strip(
    directory: str,
    visible: list[tuple[int, str]],
    element_names: list[str],
    staging_dir: str,
) -> FramePlan:
    """Plan for an image strip.

    ``visible`` pairs each visible timeline frame with the file Blender shows there (Blender's
    own ``strip_elem_from_frame``, so trims, holds, reverse and strobe are already applied).
    When the files shown are one numbered sequence, the engine reads them in place with
    ``--frames`` naming exactly those numbers (``1004-1011``, or ``1001,1003,1005`` for a
    strip that skips files), so the output keeps their numbers and the run's record names the
    plate itself. Files without one common numbering are read through a staging folder of
    links named ``frame.<position in the strip>``.
    """
    if not visible:
        raise StripError("The strip shows no frames: extend its handles first.")
    names = sorted({name for _, name in visible}, key=element_names.index)
    if len(names) < 2:
        raise StripError(
            "The strip shows a single image; RollingDepth needs a clip of at least 2 frames."
        )
    numbering = sequence_numbering(names)
    if numbering is None:
        ext = os.path.splitext(names[0])[1]
        if any(os.path.splitext(n)[1].lower() != ext.lower() for n in names):
            raise StripError(
                "The strip mixes image formats; RollingDepth needs one image type per strip."
            )
        number_of = {name: element_names.index(name) for name in names}
        links = tuple(
            (os.path.join(directory, name), f"frame.{number_of[name]:04d}{ext}") for name in names
        )
        timeline = tuple((t, number_of[name]) for t, name in visible)
        plate = os.path.join(staging_dir, f"frame.####{ext}")
        return FramePlan("IMAGE", plate, None, timeline, links)

    pattern_name, number_of = numbering
    timeline = tuple((t, number_of[name]) for t, name in visible)
    plate = os.path.join(directory, pattern_name)
    return FramePlan("IMAGE", plate, frame_set(number_of.values()), timeline)


def frame_set(numbers) -> str:
    """The engine's ``--frames`` for exactly ``numbers``: ``1001-1004``, or runs joined by
    commas (``1001,1003,1005-1007``) where frames are left out."""
    ordered = sorted(set(numbers))
    runs: list[list[int]] = []
    for n in ordered:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def movie_frame(
    timeline_frame: int, frame_start: int, animation_offset_start: int, frame_duration: int
) -> int:
    """The 0-based movie frame a movie strip shows at ``timeline_frame``.

    Verified on bpy 5.0.1 by rendering a clip whose frames are numbered by grey level: the
    strip's content starts at ``frame_start`` with movie frame ``animation_offset_start``
    and runs for ``frame_duration`` frames; trims (``frame_offset_start/end``) only hide
    part of it, and frames beyond the content (negative offsets) hold the first/last one.
    """
    index = timeline_frame - frame_start
    index = min(max(index, 0), frame_duration - 1)
    return index + animation_offset_start


def plan_movie_strip(
    filepath: str,
    final_start: int,
    final_end: int,
    frame_start: int,
    animation_offset_start: int,
    frame_duration: int,
) -> FramePlan:
    """Plan for a movie strip shown on timeline frames ``final_start .. final_end - 1``."""
    timeline = tuple(
        (t, movie_frame(t, frame_start, animation_offset_start, frame_duration))
        for t in range(final_start, final_end)
    )
    if not timeline:
        raise StripError("The strip shows no frames: extend its handles first.")
    numbers = sorted({n for _, n in timeline})
    if len(numbers) < 2:
        raise StripError(
            "The strip shows a single movie frame; RollingDepth needs at least 2 frames."
        )
    return FramePlan("MOVIE", filepath, f"{numbers[0]}-{numbers[-1]}", timeline)
