"""Frame sets: every form a user writes, read as meant or refused with what is wrong, never
expanded (a huge range costs what a short one does)."""

from __future__ import annotations

import resource
import time

import pytest

from rollingdepth_core.errors import ConfigError
from rollingdepth_core.framesets import frame_set_of, parse_frames


def test_parse_frames() -> None:
    assert tuple(parse_frames("1001-1100")) == tuple(range(1001, 1101))
    assert tuple(parse_frames("1001")) == (1001,)
    assert tuple(parse_frames(" 5 - 7 ")) == (5, 6, 7)
    assert tuple(parse_frames("1001-1010x2")) == (1001, 1003, 1005, 1007, 1009)
    assert tuple(parse_frames("1001-1003,1050-1051")) == (1001, 1002, 1003, 1050, 1051)
    assert tuple(parse_frames("-3--1")) == (-3, -2, -1)
    assert tuple(parse_frames("-2-1")) == (-2, -1, 0, 1)
    # out of order and overlapping: the frames in increasing order, each once
    assert tuple(parse_frames("1005-1006,1001-1002")) == (1001, 1002, 1005, 1006)
    assert tuple(parse_frames("1-5x2,2-4,3")) == (1, 2, 3, 4, 5)
    for text in ("", "abc", "every other"):
        with pytest.raises(ConfigError, match=r"frame set like `1001-1100`") as caught:
            parse_frames(text)
        assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"frame range '10-5' starts after it ends \(10 > 5\)"):
        parse_frames("10-5")


def test_a_huge_range_is_a_valid_set_and_is_never_listed() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.process_time()
    frames = parse_frames("1-999999999")  # fileseq refuses to list more than 10 million
    big = parse_frames("-999999999999-999999999999x7,5")
    assert 500 in frames and 0 not in frames and 1000000000 not in frames
    assert frames.outside(1001, 1012) == "1-1000,1013-999999999"
    assert [len(r) for r in frames.within(1001, 1012)] == [12]
    assert big.outside(0, 10) == "-999999999999--7x7,14-999999999999x7"
    # past 2**63 frames, where `len()` of a range overflows
    vast = parse_frames("-99999999999999999999-99999999999999999999")
    assert vast.outside(1, 2) == "-99999999999999999999-0,3-99999999999999999999"
    assert [tuple(r) for r in vast.within(1, 2)] == [(1, 2)]
    # a listing of a billion frames takes seconds and GiB; ranges take neither (CPU time and
    # peak memory of this process: not the machine's speed)
    assert time.process_time() - started < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("1001-1005.5", "frame numbers are whole numbers; got 1005.5"),
        ("1.5-3", "frame numbers are whole numbers; got 1.5"),
        ("1001-1012:3", "`:3` is fileseq's staggered order, which takes every frame, only "
                        "reordered; to take one frame in 3 write `1001-1012x3`"),
        ("1-10y2", "`y` (the frames an `x` step leaves out) is not supported"),
        ("1001-1004#", "unexpected '#' in `1001-1004#`"),
        ("1001-1004@", "unexpected '@' in `1001-1004@`"),
        ("1001-1012x0", "the step after `x` is every how many frames and must be 1 or more; "
                        "got `x0`"),
        ("1001-1012x-1", "must be 1 or more; got `x-1`"),
        ("x0", "must be 1 or more; got `x0`"),
        ("x-1", "must be 1 or more; got `x-1`"),
        ("x2", "a step needs a range before it, like `1001-1100x2`"),
        ("1-10x", "`1-10x` has no step after `x`"),
        ("1001-", "`1001-` is not a frame range"),
        ("1-3,,5", "an empty item"),
        ("1-3,", "an empty item"),
    ],
)  # fmt: skip
def test_what_is_not_a_frame_set_is_named(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_frames(text)
    message = str(caught.value)
    assert says in message and repr(text) in message, message
    assert "\n" not in message and "must be a frame set" not in message


def test_frame_numbers_given_as_numbers() -> None:
    frames = frame_set_of([7, 3, 4, 5, 9, 4])
    assert tuple(frames) == (3, 4, 5, 7, 9) and frames.text == "3-5,7,9"
    assert frame_set_of([]) is None
