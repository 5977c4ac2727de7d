"""Frame sets (``--frames``): parsed and checked as ranges, never expanded.

The syntax is the common part of fileseq's, Nuke's and the farm managers': ``1001``,
``1001-1100``, every 2nd frame ``1001-1100x2``, items joined by commas, negative numbers
``-10--1``. Whole numbers only. fileseq's other forms are refused with what they would have
meant, never read silently: ``1-12:3`` (a *staggered order* of every frame, not every 3rd)
and ``1-12y3`` (the frames ``x3`` leaves out).

A set is held as Python ``range`` objects, so ``1-999999999`` costs the same as ``1-10``:
membership, bounds and the parts outside a plate are answered from the ranges.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .errors import ConfigError

EXAMPLES = "`1001-1100`, `1001-1100x2` (every 2nd frame), `1001-1020,1050-1100` or `1001`"

_NUMBER = r"-?\d+"
_ITEM = re.compile(rf"({_NUMBER})(?:-({_NUMBER})(?:x({_NUMBER}))?)?")


@dataclass(frozen=True)
class FrameSet:
    """Frame numbers as ranges, in the order written (items may overlap)."""

    text: str  # as written, for messages
    ranges: tuple[range, ...]  # each non-empty, step >= 1

    def __contains__(self, number: object) -> bool:
        return any(number in r for r in self.ranges)

    def __iter__(self) -> Iterator[int]:
        """The frames in increasing order, each once (lazily: a huge set is never listed)."""
        previous = None
        for number in heapq.merge(*self.ranges):
            if number != previous:
                yield number
            previous = number

    def within(self, first: int, last: int) -> tuple[range, ...]:
        """Each range cut to the frames within ``first..last`` (some may be empty)."""
        return tuple(r[_count_below(r, first) : _count_below(r, last + 1)] for r in self.ranges)

    def outside(self, first: int, last: int) -> str:
        """The parts of the set before ``first`` or after ``last``, as a frame-set label
        (``"1-1000,1013-999999999"``); ``""`` when the set lies within ``first..last``."""
        parts = []
        for r in sorted(self.ranges, key=lambda r: r[0]):
            below = r[: _count_below(r, first)]
            above = r[_count_below(r, last + 1) :]
            parts += [_label(part) for part in (below, above) if part]
        return ",".join(dict.fromkeys(parts))


def frame_set_of(numbers: Iterable[int]) -> FrameSet | None:
    """The frame numbers themselves as a set (runs of consecutive frames joined); None when
    there are none."""
    runs: list[range] = []
    for number in sorted(set(numbers)):
        if runs and number == runs[-1].stop:
            runs[-1] = range(runs[-1].start, number + 1)
        else:
            runs.append(range(number, number + 1))
    if not runs:
        return None
    return FrameSet(",".join(_label(r) for r in runs), tuple(runs))


def _count_below(r: range, bound: int) -> int:
    """How many members of the increasing range ``r`` are below ``bound``."""
    if bound <= r[0]:
        return 0
    # `len(r)` would overflow past 2**63 frames; a slice bound beyond the end is clipped
    return -(-(bound - r[0]) // r.step)


def _label(r: range) -> str:
    if not r[1:]:
        return str(r[0])
    if r.step > 1 and not r[2:]:
        return f"{r[0]},{r[1]}"
    return f"{r[0]}-{r[-1]}" + (f"x{r.step}" if r.step > 1 else "")


def parse_frames(text: str) -> FrameSet:
    """Parse a frame set (see the module docstring) without expanding it.

    ``"1001-1100"``, ``"1001"``, ``"1001-1100x2"`` (every 2nd), ``"1001-1020,1050-1100"``,
    negative frames ``"-10--1"``; spaces are ignored.

    Raises
    ------
    ConfigError
        Not a frame set of whole numbers; the message names what is wrong (a fraction, a
        step of 0 or less, a range that starts after it ends, `:` or another character).
    """
    compact = text.replace(" ", "")
    if not compact:
        raise ConfigError(f"frames must be a frame set like {EXAMPLES}; got {text!r}")
    ranges = tuple(_parse_item(item, text) for item in compact.split(","))
    return FrameSet(text.strip(), ranges)


def _parse_item(item: str, text: str) -> range:
    """One comma-separated item of ``text`` as a range; ConfigError naming what is wrong."""
    where = f"frames {text!r}"
    if not item:
        raise ConfigError(
            f"{where}: an empty item (a comma with nothing before or after it); write {EXAMPLES}"
        )
    if not re.search(r"\d", item) and not item.startswith("x"):
        raise ConfigError(f"frames must be a frame set like {EXAMPLES}; got {text!r}")
    if ":" in item:
        head, _, step = item.partition(":")
        raise ConfigError(
            f"{where}: `:{step}` is fileseq's staggered order, which takes every frame, only "
            f"reordered; to take one frame in {step} write `{head}x{step}`"
        )
    if "y" in item:
        raise ConfigError(
            f"{where}: `y` (the frames an `x` step leaves out) is not supported; list the "
            f"frames you want, like {EXAMPLES}"
        )
    if re.search(r"\d\.\d", item):
        fraction = re.search(r"(?:^|(?<=-))-?\d+\.\d+", item)[0]
        raise ConfigError(f"{where}: frame numbers are whole numbers; got {fraction}")
    step = re.search(rf"x({_NUMBER})$", item)
    if step and int(step[1]) < 1:
        raise ConfigError(
            f"{where}: the step after `x` is every how many frames and must be 1 or more; "
            f"got `x{step[1]}`"
        )
    if re.fullmatch(rf"{_NUMBER}-{_NUMBER}x", item):
        raise ConfigError(f"{where}: `{item}` has no step after `x`; write e.g. `{item}2`")
    if item.startswith("x"):
        raise ConfigError(
            f"{where}: a step needs a range before it, like `1001-1100{item}`; got `{item}`"
        )
    match = _ITEM.fullmatch(item)
    if match is None:
        stray = re.sub(r"[-\dx]", "", item)
        if stray:
            raise ConfigError(f"{where}: unexpected {stray[0]!r} in `{item}`; write {EXAMPLES}")
        raise ConfigError(f"{where}: `{item}` is not a frame range; write {EXAMPLES}")
    first = int(match[1])
    last = first if match[2] is None else int(match[2])
    if first > last:
        raise ConfigError(f"frame range {item!r} starts after it ends ({first} > {last})")
    return range(first, last + 1, int(match[3] or 1))
