"""Timecode in Blender: the depth under the playhead carries the source timecode of the plate
frame Blender shows there, for a trimmed EXR sequence whose clock jumps and a trimmed 29.97
drop-frame movie; the sidebar shows it, and a plate without timecode still gives its rate."""

from __future__ import annotations

import importlib
import json

import pytest

from .conftest import fresh_scene, point_at_engine
from .support import ADDON_MODULE, add_image_strip, engine_python, run_operator, select_only

# the EXR plate's clock jumps after its fifth file (a new take on the same reel)
EXR_TIMECODES = ["01:00:00:20", "01:00:00:21", "01:00:00:22", "01:00:00:23", "02:00:00:00",
                 "02:00:00:01", "02:00:00:02", "02:00:00:03", "02:00:00:04"]  # fmt: skip
MOVIE_START = "00:00:59;26"  # 29.97 drop-frame: 00:01:00;00 and ;01 do not exist
MOVIE_FRAMES = 10

WRITE_MEDIA = """
import sys
from fractions import Fraction
from pathlib import Path
import av, numpy as np
import OpenImageIO as oiio
from rollingdepth_core.sample import sample_frame
from rollingdepth_core.timecode import pack_timecode
root, timecodes = Path(sys.argv[1]), sys.argv[2].split(",")
(root / "exr").mkdir()
for i, tc in enumerate(timecodes):
    path = str(root / "exr" / f"plate.{1001 + i:04d}.exr")
    spec = oiio.ImageSpec(64, 48, 3, "half")
    spec.attribute("smpte:TimeCode", oiio.TypeTimeCode, pack_timecode(tc))
    spec.attribute("FramesPerSecond", oiio.TypeRational, (24, 1))
    out = oiio.ImageOutput.create(path)
    assert out.open(path, spec), oiio.geterror()
    out.write_image(sample_frame(i, len(timecodes), 48, 64) ** 2.2)
    out.close()
with av.open(str(root / "clip.mov"), mode="w") as container:
    stream = container.add_stream("mpeg4", rate=Fraction(30000, 1001))
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    stream.metadata["timecode"] = sys.argv[3]
    for i in range(int(sys.argv[4])):
        rgb = (sample_frame(i, int(sys.argv[4]), 48, 64) * 255 + 0.5).astype(np.uint8)
        container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
    container.mux(stream.encode(None))
"""

# What a reader of the files finds, independently of the add-on: each EXR's timeCode header
# (plate and depth alike), and a movie frame's timecode from the start (OpenTimelineIO).
READ_TIMECODES = """
import json, sys
import OpenImageIO as oiio
import opentimelineio.opentime as ot
from rollingdepth_core.timecode import unpack_timecode
files, start, frames = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
found = {}
for path in files:
    spec = oiio.ImageInput.open(path).spec()
    packed = spec.getattribute("smpte:TimeCode")
    found[path] = unpack_timecode(int(packed[0])) if packed else None
rate = 30000 / 1001
origin = ot.from_timecode(start, rate)
movie = {n: ot.to_timecode(origin + ot.RationalTime(n, rate), rate, True) for n in frames}
print(json.dumps({"files": found, "movie": movie}))
"""


def _read_timecodes(files, movie_frames=()) -> dict:
    args = (json.dumps([str(f) for f in files]), MOVIE_START, json.dumps(list(movie_frames)))
    found = json.loads(engine_python(READ_TIMECODES, *args))
    return {"files": found["files"], "movie": {int(k): v for k, v in found["movie"].items()}}


@pytest.fixture(scope="module")
def timed_media(tmp_path_factory, media):
    root = tmp_path_factory.mktemp("timed")
    engine_python(WRITE_MEDIA, str(root), ",".join(EXR_TIMECODES), MOVIE_START, str(MOVIE_FRAMES))
    return root


@pytest.fixture()
def sequencer_module(addon):
    return importlib.import_module(f"{ADDON_MODULE}.sequencer")


def _panel_line(scene, strip, frame):
    panels = importlib.import_module(f"{ADDON_MODULE}.panels")
    scene.frame_current = frame
    scene.sequence_editor.active_strip = strip
    return panels.timecode_line(scene, strip)


def test_exr_plate_depth_carries_each_frames_timecode(
    timed_media, media, tmp_path, sequencer_module
):
    point_at_engine(media["checkpoint"])
    scene = fresh_scene()
    names = [f"plate.{1001 + i:04d}.exr" for i in range(len(EXR_TIMECODES))]
    source = add_image_strip(scene, timed_media / "exr", names, 1, 40)
    source.frame_offset_start, source.frame_offset_end = 2, 1  # shows 1003 .. 1008 at 42 .. 47
    select_only(scene, source)
    assert run_operator(output_dir=str(tmp_path)) == {"FINISHED"}
    depth = scene.sequence_editor.strips[f"{source.name} depth"]

    timeline = range(source.frame_final_start, source.frame_final_end)
    plate_files = [timed_media / "exr" / source.strip_elem_from_frame(t).filename for t in timeline]
    depth_files = [tmp_path / depth.strip_elem_from_frame(t).filename for t in timeline]
    read = _read_timecodes(plate_files + depth_files)["files"]
    plate_tc = [read[str(f)] for f in plate_files]
    assert plate_tc == EXR_TIMECODES[2:8]  # the jump at 1005 included
    # at every timeline frame: the depth file's own header, and what the add-on shows
    assert [read[str(f)] for f in depth_files] == plate_tc
    shown = [sequencer_module.timecode_at(depth, t) for t in timeline]
    assert shown == [(tc, "24") for tc in plate_tc]
    assert _panel_line(scene, source, 44) == "Frame 44: 02:00:00:00 (24 fps)"
    assert _panel_line(scene, depth, 43) == "Frame 43: 01:00:00:23 (24 fps)"
    assert _panel_line(scene, depth, 48) is None  # past the strip's end


def test_drop_frame_movie_depth_carries_each_frames_timecode(
    timed_media, media, tmp_path, sequencer_module
):
    point_at_engine(media["checkpoint"])
    scene = fresh_scene()
    source = scene.sequence_editor.strips.new_movie("clip", str(timed_media / "clip.mov"), 1, 5)
    source.animation_offset_start = 1
    source.frame_offset_start, source.frame_offset_end = 1, 1  # shows movie frames 2 .. 8
    select_only(scene, source)
    assert run_operator(output_dir=str(tmp_path)) == {"FINISHED"}
    depth = scene.sequence_editor.strips[f"{source.name} depth"]

    timeline = list(range(source.frame_final_start, source.frame_final_end))
    movie_frames = [t - 5 + 1 for t in timeline]  # Blender's movie frame at t (test_movie_strip)
    assert movie_frames == list(range(2, 9))
    depth_files = [tmp_path / depth.strip_elem_from_frame(t).filename for t in timeline]
    read = _read_timecodes(depth_files, movie_frames)
    expected = [read["movie"][n] for n in movie_frames]
    assert expected[:4] == ["00:00:59;28", "00:00:59;29", "00:01:00;02", "00:01:00;03"]
    assert [read["files"][str(f)] for f in depth_files] == expected
    shown = [sequencer_module.timecode_at(depth, t) for t in timeline]
    assert shown == [(tc, "30000/1001") for tc in expected]
    assert _panel_line(scene, source, timeline[2]) == (
        f"Frame {timeline[2]}: 00:01:00;02 (30000/1001 fps)"
    )


def test_a_plate_without_timecode_still_gives_its_rate(media, tmp_path, sequencer_module):
    """The h264 test movie has a rate (24) and no timecode."""
    point_at_engine(media["checkpoint"])
    scene = fresh_scene()
    source = scene.sequence_editor.strips.new_movie("clip", str(media["movie"]), 1, 1)
    source.frame_final_duration = 6
    select_only(scene, source)
    assert run_operator(output_dir=str(tmp_path)) == {"FINISHED"}
    depth = scene.sequence_editor.strips[f"{source.name} depth"]
    assert sequencer_module.timecode_at(depth, 3) == (None, "24")
    assert _panel_line(scene, depth, 3) == "Frame 3: no timecode (24 fps)"
    assert sequencer_module.TIMECODES_KEY not in depth
