"""The strip-to-engine frame rules (frames.py) and the bundled protocol module."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from .support import ADDON_MODULE, add_image_strip


@pytest.fixture()
def frames(addon):
    return importlib.import_module(f"{ADDON_MODULE}.frames")


def test_contiguous_numbered_run_is_read_in_place(frames):
    visible = [(10 + i, f"plate.{1004 + i:04d}.exr") for i in range(5)]
    names = [f"plate.{n:04d}.exr" for n in range(1001, 1015)]
    plan = frames.plan_image_strip("/shots/a", visible, names, "/tmp/stage")
    assert plan.plate == "/shots/a/plate.####.exr"
    assert plan.frames == "1004-1008"
    assert plan.staging == ()
    assert plan.timeline == tuple((10 + i, 1004 + i) for i in range(5))
    assert plan.plays_in_order


def test_reversed_strip_maps_each_frame_to_the_file_shown(frames):
    visible = [(10 + i, f"plate.{1008 - i:04d}.exr") for i in range(5)]
    names = [f"plate.{n:04d}.exr" for n in range(1001, 1015)]
    plan = frames.plan_image_strip("/shots/a", visible, names, "/tmp/stage")
    assert plan.frames == "1004-1008"
    assert [n for _, n in plan.timeline] == [1008, 1007, 1006, 1005, 1004]
    assert not plan.plays_in_order


def test_held_frames_repeat_a_source_number(frames):
    visible = [(1, "p.0001.png"), (2, "p.0001.png"), (3, "p.0001.png"), (4, "p.0002.png")]
    plan = frames.plan_image_strip("/d", visible, ["p.0001.png", "p.0002.png"], "/s")
    assert plan.frames == "1-2" and plan.source_numbers == [1, 2]
    assert [n for _, n in plan.timeline] == [1, 1, 1, 2]
    assert not plan.plays_in_order


def test_gaps_are_read_in_place_by_their_numbers(frames):
    """A strip that skips files: the engine reads exactly those numbers in place (no
    links), so the run's record names the plate itself."""
    names = ["plate.1001.png", "plate.1003.png", "plate.1005.png", "plate.1006.png"]
    visible = list(enumerate(names, start=1))
    plan = frames.plan_image_strip("/d", visible, names, "/s")
    assert plan.plate == "/d/plate.####.png" and plan.frames == "1001,1003,1005-1006"
    assert plan.staging == ()
    assert plan.source_numbers == [1001, 1003, 1005, 1006]


def test_unnumbered_files_are_numbered_by_position(frames):
    names = ["dawn.png", "noon.png", "dusk.png"]
    visible = list(enumerate(names, start=7))
    plan = frames.plan_image_strip("/d", visible, names, "/s")
    assert plan.plate == "/s/frame.####.png"
    assert [link for _, link in plan.staging] == [
        "frame.0000.png",
        "frame.0001.png",
        "frame.0002.png",
    ]
    assert plan.timeline == ((7, 0), (8, 1), (9, 2))


def test_padding_grows_past_9999_like_printf(frames):
    names = ["p.9999.png", "p.10000.png"]
    plan = frames.plan_image_strip("/d", list(enumerate(names)), names, "/s")
    assert plan.plate == "/d/p.####.png" and plan.frames == "9999-10000"


def test_single_image_and_mixed_formats_are_refused(frames):
    with pytest.raises(frames.StripError, match="single image"):
        frames.plan_image_strip("/d", [(1, "a.png"), (2, "a.png")], ["a.png"], "/s")
    with pytest.raises(frames.StripError, match="mixes image formats"):
        frames.plan_image_strip("/d", [(1, "a.png"), (2, "b.jpg")], ["a.png", "b.jpg"], "/s")


def test_movie_plan_covers_trims_offsets_and_holds(frames):
    # content starts at timeline 5 with movie frame 1, 13 frames long; visible 8..15
    plan = frames.plan_movie_strip("/m.mov", 8, 16, 5, 1, 13)
    assert plan.frames == "4-11"
    assert plan.timeline[0] == (8, 4) and plan.timeline[-1] == (15, 11)
    # a negative start offset holds the first content frame
    held = frames.plan_movie_strip("/m.mov", 3, 8, 5, 0, 10)
    assert [n for _, n in held.timeline] == [0, 0, 0, 1, 2]


def test_numbering_follows_the_engine_rule_for_digits_in_the_extension(frames):
    """`scan.1001.jp2`: the frame number is 1001, not the 2 of the extension (the engine's
    protocol.NUMBERED_NAME), so the add-on reads the files in place like the engine does."""
    names = [f"scan.{n}.jp2" for n in range(1001, 1005)]
    plan = frames.plan_image_strip("/d", list(enumerate(names, start=1)), names, "/s")
    assert plan.plate == "/d/scan.####.jp2" and plan.frames == "1001-1004"
    assert plan.staging == ()


def test_protocol_is_bundled_not_restated(addon):
    """The add-on's protocol module is the engine's file, byte for byte."""
    from .support import REPO

    bundled = importlib.import_module(f"{ADDON_MODULE}.protocol")
    engine_file = REPO / "rollingdepth_core" / "protocol.py"
    assert engine_file.read_bytes() == Path(bundled.__file__).read_bytes()
    operators = importlib.import_module(f"{ADDON_MODULE}.operators")
    assert [key for key, *_ in operators.PRESET_ITEMS] == list(bundled.PRESETS)
    assert [key for key, *_ in operators.DEPTH_MODE_ITEMS] == list(bundled.DEPTH_MODES)
    # what the add-on reads from the engine's result message is part of the protocol
    jobs = importlib.import_module(f"{ADDON_MODULE}.jobs")
    assert set(jobs.RESULT_NEEDS) <= set(bundled.RESULT_KEYS)


def test_depth_at_processing_size_is_scaled_onto_the_plate(addon, scene, media):
    sequencer = importlib.import_module(f"{ADDON_MODULE}.sequencer")
    names = ["plate.1001.png", "plate.1002.png"]
    source = add_image_strip(scene, media["sequence_dir"], names, 1, 1)
    source.transform.scale_x = source.transform.scale_y = 0.5
    source.transform.offset_x = 7
    source.use_flip_x = True
    depth = add_image_strip(scene, media["sequence_dir"], names, 2, 1)
    sequencer._match_placement(source, depth, (32, 24))  # half the plate's 64 px width
    assert (depth.transform.scale_x, depth.transform.scale_y) == (1.0, 1.0)
    assert depth.transform.offset_x == 7 and depth.use_flip_x
