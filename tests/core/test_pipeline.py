"""The pipeline's language: timecode in and out, fileseq frame sets and patterns, editorial cuts
(OTIO, CMX 3600 EDL, FCP XML) and the OTIO timeline written beside the depth, DateTime.

Real files throughout: EXR plates written by OpenImageIO with ``smpte:TimeCode``, videos written
by PyAV with a start timecode (FFmpeg's ``timecode`` tag), edits written by OpenTimelineIO's
adapters, depth written by the tiny random checkpoint and read back.
"""

import json
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import OpenImageIO as oiio
import opentimelineio as otio
import pytest
from opentimelineio.opentime import RationalTime, TimeRange, from_timecode, to_timecode

from rollingdepth_core.cli import main
from rollingdepth_core.config import OutputConfig
from rollingdepth_core.cuts import parse_cuts, shots_from_cuts
from rollingdepth_core.editorial import read_edit_cuts, write_depth_timeline
from rollingdepth_core.errors import ConfigError, InputError
from rollingdepth_core.exr import read_exr
from rollingdepth_core.output import write_depth_frames
from rollingdepth_core.plate import open_plate
from rollingdepth_core.sample import write_sample_video
from rollingdepth_core.timecode import (
    Timecodes,
    pack_timecode,
    stalled_timecode_warning,
    unpack_timecode,
)

from .plate_fixtures import make_image_sequence, plate_frame
from .test_cuts import edit_frames

FAST = ["--res", "64", "--dilations", "1", "3", "--device", "cpu", "--seed", "3"]
NTSC = Fraction(30000, 1001)


def run(*args, checkpoint) -> int:
    return main([*map(str, args), "--checkpoint", str(checkpoint), *FAST])


def write_timecoded_video(path, frames, rate: Fraction, timecode: str) -> Path:
    """A QuickTime movie whose video stream carries ``timecode`` (FFmpeg writes a tmcd track)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 80, 48, "yuv420p"
        stream.options = {"qscale": "2"}
        stream.metadata["timecode"] = timecode
        for rgb in frames:
            pixels = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode(None))
    return Path(path)


def write_timecoded_exrs(
    folder: Path, first: int, timecodes: list[str], rate: Fraction | None
) -> str:
    """An EXR sequence from ``first``, each file with its own ``smpte:TimeCode`` and the rate."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, timecode in enumerate(timecodes):
        path = folder / f"plate.{first + index:04d}.exr"
        spec = oiio.ImageSpec(64, 48, 3, "half")
        spec.attribute("smpte:TimeCode", oiio.TypeTimeCode, pack_timecode(timecode))
        if rate is not None:
            spec.attribute("FramesPerSecond", oiio.TypeRational, (rate.numerator, rate.denominator))
        out = oiio.ImageOutput.create(str(path))
        assert out.open(str(path), spec), oiio.geterror()
        assert out.write_image(plate_frame(index, 64, 48) ** 2.2)
        out.close()
    return str(folder / "plate.####.exr")


def exr_timecode(path) -> tuple[str | None, tuple | None]:
    """What a reader of the file finds: the timeCode (unpacked) and framesPerSecond."""
    header = read_exr(path)[1]
    packed = header.get("smpte:TimeCode")
    return (None if packed is None else unpack_timecode(packed[0])), header.get("framesPerSecond")


def depth_files(folder: Path, name: str = "depth") -> list[Path]:
    return sorted(
        folder.glob(f"{name}.*.exr"), key=lambda p: read_exr(p)[1]["rollingdepth/source_frame"]
    )


# ---------------------------------------------------------------------------------------------
# Timecode


def test_timecode_packing_round_trips_with_openimageio(tmp_path):
    for timecode in ("01:00:00:00", "23:59:59:23", "00:01:00;02", "10:09:08;07"):
        assert unpack_timecode(pack_timecode(timecode)[0]) == timecode
    # OpenImageIO's own reading of the packed value agrees (it prints no drop-frame flag)
    path = write_timecoded_exrs(tmp_path / "p", 1, ["12:34:56:17", "12:34:56:18"], Fraction(24))
    spec = oiio.ImageInput.open(path.replace("####", "0001")).spec()
    assert spec.get_string_attribute("smpte:TimeCode") == "12:34:56:17"


@pytest.mark.slow
def test_exr_sequence_timecodes_reach_the_depth(tmp_path, tiny_checkpoint):
    """Each file's own timecode (not a start plus an offset: the plate's clock jumps at 1005)."""
    timecodes = ["01:00:00:20", "01:00:00:21", "01:00:00:22", "01:00:00:23", "02:00:00:00",
                 "02:00:00:01", "02:00:00:02", "02:00:00:03"]  # fmt: skip
    pattern = write_timecoded_exrs(tmp_path / "plate", 1001, timecodes, Fraction(24))
    info = open_plate(pattern).info
    assert info.fps == 24 and info.timecodes.of(1005) == "02:00:00:00"

    out = tmp_path / "out"
    assert run("run", pattern, "-o", out, "--frames", "1002-1007", checkpoint=tiny_checkpoint) == 0
    files = depth_files(out)
    assert [f.name for f in files] == [f"depth.{n}.exr" for n in range(1002, 1008)]
    assert [exr_timecode(f) for f in files] == [(tc, (24, 1)) for tc in timecodes[1:7]]
    # the OpenEXR standard attribute names, as Nuke and Resolve read them
    raw = files[0].read_bytes()
    assert b"timeCode\x00timecode\x00" in raw and b"framesPerSecond\x00rational\x00" in raw

    manifest = json.loads((out / "depth_run.json").read_text())
    assert manifest["timecode"] == {"fps": "24", "drop_frame": False,
                                    "first_timecode": "01:00:00:21",
                                    "last_timecode": "02:00:00:02"}  # fmt: skip


def test_a_stalled_timecode_and_frames_beyond_the_plate_are_said(tmp_path, tiny_checkpoint, capsys):
    """The same smpte:TimeCode on every file (a header copied onto each) is carried through
    with a warning; `--frames` reaching past the plate's last frame runs the frames on disk."""
    pattern = write_timecoded_exrs(tmp_path / "plate", 1001, ["01:00:00:00"] * 8, Fraction(24))
    out = tmp_path / "out"
    args = ("run", pattern, "-o", out, "--frames", "1001-1004,1007-1022")
    assert run(*args, checkpoint=tiny_checkpoint) == 0
    err = capsys.readouterr().err
    assert "every frame of the plate has timecode 01:00:00:00: its timecode does not advance" in err
    assert (
        "frames 1009-1022 are not in the plate (its frames are 1001-1008); they are skipped" in err
    )
    assert [f.name for f in depth_files(out)] == [f"depth.{n}.exr" for n in (1001, 1002, 1003,
                                                                             1004, 1007, 1008)]  # fmt: skip
    assert {exr_timecode(f)[0] for f in depth_files(out)} == {"01:00:00:00"}


def test_a_timecode_that_stalls_somewhere_is_said_where():
    steady = Timecodes(Fraction(24), {1: "01:00:00:00", 2: "01:00:00:01", 3: "01:00:00:02"})
    assert stalled_timecode_warning(steady, (1, 2, 3)) is None
    assert stalled_timecode_warning(None, (1, 2, 3)) is None
    stuck = Timecodes(Fraction(24), {1: "01:00:00:00", 2: "01:00:00:01", 3: "01:00:00:01"})
    assert stalled_timecode_warning(stuck, (1, 2, 3)) == (
        "warning: the plate's timecode does not advance on 1 of 2 frame steps (first: frames 2 "
        "and 3 both have 01:00:00:01); the depth frames carry the same"
    )


# 24, 25 and 29.97 drop-frame: the last crosses a minute, where 00:01:00;00 and ;01 do not exist
VIDEO_TIMECODES = [
    (Fraction(24), "00:59:59:20", ["00:59:59:20", "00:59:59:21", "00:59:59:22", "00:59:59:23",
                                   "01:00:00:00", "01:00:00:01", "01:00:00:02", "01:00:00:03"]),
    (Fraction(25), "10:00:00:22", ["10:00:00:22", "10:00:00:23", "10:00:00:24", "10:00:01:00",
                                   "10:00:01:01", "10:00:01:02", "10:00:01:03", "10:00:01:04"]),
    (NTSC, "00:00:59;26", ["00:00:59;26", "00:00:59;27", "00:00:59;28", "00:00:59;29",
                           "00:01:00;02", "00:01:00;03", "00:01:00;04", "00:01:00;05"]),
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("rate", "start", "expected"), VIDEO_TIMECODES)
def test_video_start_timecode_reaches_the_depth(tmp_path, tiny_checkpoint, rate, start, expected):
    frames = list(edit_frames((8,), 48, 80))
    path = write_timecoded_video(tmp_path / "plate.mov", frames, rate, start)
    # how FFmpeg exposes it on read: a tag on the video stream and on the tmcd data stream
    with av.open(str(path)) as container:
        assert container.streams.video[0].metadata["timecode"] == start
        assert [s.metadata["timecode"] for s in container.streams.data] == [start]

    out = tmp_path / "out"
    assert run("run", path, "-o", out, "--cuts", "none", checkpoint=tiny_checkpoint) == 0
    files = depth_files(out)
    assert [f.name for f in files] == [f"depth.{n:04d}.exr" for n in range(8)]
    assert [exr_timecode(f) for f in files] == [(tc, (rate.numerator, rate.denominator))
                                                for tc in expected]  # fmt: skip
    # a frame set starting later: frame 5's timecode, not the start's
    info = open_plate(path, frames="5-7").info
    assert [info.timecodes.of(n) for n in info.frame_numbers] == expected[5:]


def test_bad_start_timecode_is_one_line(tmp_path):
    """Matroska keeps the tag as written (QuickTime's tmcd track would normalise it)."""
    path = write_timecoded_video(tmp_path / "bad.mkv", edit_frames((4,), 48, 80), Fraction(24),
                                 "01:00:00:30")  # fmt: skip
    with pytest.raises(InputError, match=r"start timecode '01:00:00:30' at 24 fps") as caught:
        open_plate(path)
    assert "\n" not in str(caught.value)


@pytest.mark.slow
def test_a_plate_with_a_rate_and_no_timecode_gives_the_depth_its_rate(tmp_path, tiny_checkpoint):
    """A video without start timecode, an EXR sequence with a rate and no timecode: the depth
    carries framesPerSecond and no timeCode; a PNG sequence (neither) carries neither."""
    video = tmp_path / "plain.mp4"
    write_sample_video(video, 6, 48, 80, 25)
    exrs = tmp_path / "exr"
    exrs.mkdir()
    for i in range(6):
        path = str(exrs / f"plate.{1001 + i}.exr")
        spec = oiio.ImageSpec(64, 48, 3, "half")
        spec.attribute("FramesPerSecond", oiio.TypeRational, (30000, 1001))
        out = oiio.ImageOutput.create(path)
        assert out.open(path, spec), oiio.geterror()
        assert out.write_image(plate_frame(i, 64, 48))
        out.close()
    pngs = make_image_sequence(tmp_path / "png", 6, 48, 64, start=1)
    cases = [(video, (25, 1), "25"), (exrs / "plate.####.exr", (30000, 1001), "30000/1001"),
             (pngs, None, None)]  # fmt: skip
    for plate, rate, text in cases:
        out = tmp_path / f"out-{len(str(rate))}"
        assert run("run", plate, "-o", out, "--cuts", "none", checkpoint=tiny_checkpoint) == 0
        files = depth_files(out)
        assert len(files) == 6
        assert {exr_timecode(f) for f in files} == {(None, rate)}, plate
        manifest = json.loads((out / "depth_run.json").read_text())
        expected = None if text is None else {
            "fps": text, "drop_frame": False, "first_timecode": None, "last_timecode": None}  # fmt: skip
        assert manifest.get("timecode") == expected, plate


# ---------------------------------------------------------------------------------------------
# Frame sets and patterns (fileseq)


def test_frame_set_forms(tmp_path):
    pattern = make_image_sequence(tmp_path / "seq", 20, 16, 16, start=1001, skip=(1012,))
    folder = Path(pattern).parent
    assert open_plate(pattern, frames="1001-1010x2").info.frame_numbers == (
        1001, 1003, 1005, 1007, 1009)  # fmt: skip
    picked = open_plate(pattern, frames="1001-1003,1011-1013")
    # a frame the set asks for that is not on disk is missing (reported, skipped); frames the
    # set leaves out are simply not part of the plate
    assert picked.info.frame_numbers == (1001, 1002, 1003, 1011, 1013)
    assert picked.info.missing_frames == (1012,)
    for form in ("plate.####.png", "plate.@@@@.png", "plate.%04d.png", "plate.$F4.png",
                 "plate.1005.png", ""):  # fmt: skip
        info = open_plate(folder / form if form else folder, frames="1001-1004").info
        assert info.frame_numbers == (1001, 1002, 1003, 1004) and info.padding == 4, form

    # frames the set asks for that are not on disk are skipped whether they fall in a gap or
    # beyond the plate's ends; those beyond are told apart (`frames_outside`), not refused
    beyond = open_plate(pattern, frames="990-1003,1019-1030x2").info
    assert beyond.frame_numbers == (990 + 11, 1002, 1003, 1019)
    assert (beyond.frames_outside, beyond.plate_span) == ("990-1000,1021-1029x2", (1001, 1020))
    huge = open_plate(pattern, frames="1-999999999").info  # fast and small: see test_framesets
    assert huge.frame_numbers == open_plate(pattern).info.frame_numbers
    assert huge.frames_outside == "1-1000,1021-999999999" and huge.missing_frames == (1012,)
    with pytest.raises(InputError, match="at least 2 frames; got 1$"):
        open_plate(pattern, frames="1012-1013")
    with pytest.raises(InputError, match=r"frames '1020-1030' hold 1 frame\(s\) of the plate "
                                         r"\(its frame range is 1001-1020\)"):  # fmt: skip
        open_plate(pattern, frames="1020-1030")
    with pytest.raises(ConfigError, match=r"frame set like .* got 'every other'"):
        open_plate(pattern, frames="every other")


def test_negative_frames_and_padding(tmp_path):
    """printf numbering, as fileseq, Nuke and Houdini write it: -3 at 4 digits is `-003`."""
    folder = tmp_path / "neg"
    for number in range(-3, 3):
        make_image_sequence(folder, 1, 16, 16, start=number, pad=4)
    assert sorted(p.name for p in folder.iterdir())[:3] == [
        "plate.-001.png", "plate.-002.png", "plate.-003.png"]  # fmt: skip
    assert open_plate(folder / "plate.####.png").info.frame_numbers == (-3, -2, -1, 0, 1, 2)
    assert open_plate(folder).info.frame_numbers == (-3, -2, -1, 0, 1, 2)
    assert open_plate(folder / "plate.-002.png", frames="-2--1").info.frame_numbers == (-2, -1)


@pytest.mark.slow
def test_cli_frame_set_and_plate_padding(tmp_path, tiny_checkpoint, capsys):
    pattern = make_image_sequence(tmp_path / "pad6", 12, 64, 48, start=-4, pad=6)
    out = tmp_path / "out"
    assert run("run", pattern, "-o", out, "--frames=-4--1,3-6", checkpoint=tiny_checkpoint) == 0
    names = sorted(p.name for p in out.glob("depth.*.exr"))
    # six digits like the plate's, printf's sign: -4 -> -00004
    assert names == sorted(f"depth.{n:06d}.exr" for n in (-4, -3, -2, -1, 3, 4, 5, 6))
    capsys.readouterr()
    assert run("run", pattern, "-o", tmp_path / "bad", "--frames", "1-x",
               checkpoint=tiny_checkpoint) == 1  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rollingdepth: error: frames '1-x': `1-x` is not a frame range")


# ---------------------------------------------------------------------------------------------
# Editorial cuts


SHOTS = (12, 10, 14)  # the generated edit's shots: cuts at positions 12 and 22


def plate_edit(media_url: str, start: str, rate: Fraction, lengths=SHOTS, offset: int = 0):
    """The editorial's timeline of the plate: one clip per shot, source ranges by timecode."""
    fps = float(rate)
    origin = from_timecode(start, fps) + RationalTime(offset, fps)
    timeline = otio.schema.Timeline(name="reel 1")
    track = otio.schema.Track(kind=otio.schema.TrackKind.Video)
    timeline.tracks.append(track)
    media = otio.schema.ExternalReference(
        target_url=media_url, available_range=TimeRange(origin, RationalTime(sum(lengths), fps))
    )
    position = 0
    for index, length in enumerate(lengths):
        track.append(otio.schema.Clip(
            name=f"sh{index + 1:03d}", media_reference=media.clone(),
            source_range=TimeRange(origin + RationalTime(position, fps), RationalTime(length, fps)),
        ))  # fmt: skip
        position += length
    return timeline


@pytest.fixture(scope="module")
def edited_plate(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edit")
    return write_timecoded_video(folder / "edit.mov", edit_frames(SHOTS, 48, 80), NTSC,
                                 "00:59:59;20")  # fmt: skip


@pytest.mark.parametrize("suffix", [".edl", ".xml", ".otio"])
def test_edit_cuts_equal_the_shot_boundaries(edited_plate, tmp_path, suffix):
    edit = tmp_path / f"edit{suffix}"
    otio.adapters.write_to_file(plate_edit(edited_plate.as_uri(), "00:59:59;20", NTSC), str(edit))
    info = open_plate(edited_plate).info
    assert read_edit_cuts(str(edit), info.frame_numbers, info) == [12, 22]
    assert parse_cuts(str(edit), info.frame_numbers, plate=info) == [12, 22]
    # a trimmed plate: the cut at 22 is position 22 - 5 of the frames 5..35
    trimmed = open_plate(edited_plate, frames="5-35").info
    assert parse_cuts(str(edit), trimmed.frame_numbers, plate=trimmed) == [7, 17]


def test_edit_of_another_range_is_refused(edited_plate, tmp_path):
    edit = tmp_path / "other.edl"
    otio.adapters.write_to_file(plate_edit("file:///x.mov", "02:00:00;00", NTSC), str(edit))
    info = open_plate(edited_plate).info
    with pytest.raises(ConfigError, match=r"no clip of the edit .* references this plate") as e:
        parse_cuts(str(edit), info.frame_numbers, plate=info)
    message = str(e.value)
    assert "\n" not in message and "02:00:00;00-02:00:00;11" in message
    # 36 frames; 01:00:00 is a tenth minute, where drop-frame skips no number
    assert "the plate's 00:59:59;20-01:00:00;25" in message
    with pytest.raises(ConfigError, match="no such edit file"):
        parse_cuts(str(tmp_path / "missing.edl"), info.frame_numbers, plate=info)
    (tmp_path / "broken.xml").write_text("<xmeml><nope")
    with pytest.raises(ConfigError, match=r"cannot read the edit .*broken\.xml"):
        parse_cuts(str(tmp_path / "broken.xml"), info.frame_numbers, plate=info)


def test_edit_by_frame_range_for_a_plate_without_timecode(tmp_path):
    """No timecode on the plate: the clips' source time in frames is the plate frame number."""
    pattern = make_image_sequence(tmp_path / "seq", 36, 16, 16, start=1001)
    info = open_plate(pattern).info
    assert info.timecodes is None
    edit = tmp_path / "edit.otio"
    # source frame 1001 at 24 fps is 00:00:41:17
    otio.adapters.write_to_file(plate_edit("file:///seq", "00:00:41:17", Fraction(24)), str(edit))
    assert parse_cuts(str(edit), info.frame_numbers, plate=info) == [12, 22]


@pytest.mark.slow
def test_run_with_an_edl_writes_a_conforming_timeline(edited_plate, tmp_path, tiny_checkpoint):
    edit = tmp_path / "edit.edl"
    otio.adapters.write_to_file(plate_edit(edited_plate.as_uri(), "00:59:59;20", NTSC), str(edit))
    out = tmp_path / "out"
    assert run("run", edited_plate, "-o", out, "--cuts", edit, checkpoint=tiny_checkpoint) == 0
    files = depth_files(out)
    assert len(files) == sum(SHOTS)
    shot_of = [read_exr(f)[1]["rollingdepth/shot"] for f in files]
    assert shot_of == [0] * 12 + [1] * 10 + [2] * 14

    timeline = otio.adapters.read_from_file(str(out / "depth.otio"))
    clips = list(timeline.find_clips())
    assert len(clips) == 3
    fps = float(NTSC)
    for index, clip in enumerate(clips):
        reference = clip.media_reference
        assert isinstance(reference, otio.schema.ImageSequenceReference)
        span = clip.source_range
        assert round(span.duration.value) == SHOTS[index]
        for k in range(round(span.duration.value)):
            moment = span.start_time + RationalTime(k, fps)
            number = reference.frame_for_time(moment)
            url = reference.target_url_for_image_number(number - reference.start_frame)
            path = Path(url.removeprefix("file://"))
            assert path.is_file(), url
            _, header = read_exr(path)
            assert header["rollingdepth/shot"] == index
            # the timeline's time is the plate's timecode, and the file carries the same
            tc, rate = exr_timecode(path)
            assert tc == to_timecode(moment, fps, True) and rate == (30000, 1001)
    # the timeline lines up with the edit it came from: same record cut points
    edit_clips = list(otio.adapters.read_from_file(str(edit), rate=fps).find_clips())
    for ours, theirs in zip(clips, edit_clips, strict=True):
        assert ours.source_range.start_time.value == theirs.source_range.start_time.value
        assert ours.source_range.duration.value == theirs.source_range.duration.value


# ---------------------------------------------------------------------------------------------
# DateTime


def test_datetime_is_the_time_of_writing_unless_pinned(tmp_path, monkeypatch):
    frames = [np.full((4, 6), v, np.float32) for v in (0.0, 0.5)]

    def write(folder):
        folder.mkdir()
        return write_depth_frames(iter(frames), (0.0, 1.0), [1, 2], str(folder / "d.####.exr"),
                                  OutputConfig(), {"source": "plate.mov"}, (4, 6))  # fmt: skip

    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    before = time.time()
    header = read_exr(write(tmp_path / "now")[0])[1]
    stamp = time.mktime(time.strptime(header["DateTime"], "%Y:%m:%d %H:%M:%S"))
    assert before - 1 <= stamp <= time.time() + 1  # local time of writing...
    assert header["utcOffset"] == -time.localtime(stamp).tm_gmtoff  # ...and its zone

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    a, b = write(tmp_path / "a"), write(tmp_path / "b")
    assert read_exr(a[0])[1]["DateTime"] == "2023:11:14 22:13:20"  # UTC
    assert read_exr(a[0])[1]["utcOffset"] == 0.0
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ConfigError, match="SOURCE_DATE_EPOCH must be whole seconds"):
        write(tmp_path / "c")


def test_timeline_of_a_plate_whose_timecode_has_no_rate(tmp_path):
    """EXRs with a timecode but no frame rate (25 fps numbers): the timeline places the depth
    by frame number rather than guess a rate its timecodes may not count at."""
    timecodes = ["01:00:00:23", "01:00:00:24", "01:00:01:00", "01:00:01:01"]
    info = open_plate(write_timecoded_exrs(tmp_path / "p", 1001, timecodes, None)).info
    assert info.fps is None and info.timecodes.of(1002) == "01:00:00:24"
    path = write_depth_timeline(
        tmp_path, "depth", info, shots_from_cuts(info.frame_numbers, [2]), 4
    )
    clips = list(otio.adapters.read_from_file(str(path)).find_clips())
    assert [round(c.source_range.start_time.value) for c in clips] == [1001, 1003]
    assert [c.media_reference.frame_for_time(c.source_range.start_time) for c in clips] == [
        1001, 1003]  # fmt: skip
