"""An image-sequence strip with trims, a hold offset and a busy channel, end to end."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import bpy
import pytest

from .conftest import fresh_scene, point_at_engine
from .support import (
    FAST,
    SEQUENCE_COUNT,
    SEQUENCE_FIRST,
    add_image_strip,
    engine_cli,
    max_exr_difference,
    run_operator,
    select_only,
)

SOURCE_CHANNEL = 2
FRAME_START = 20
# elements 1001..1014 at 20..33; the first element skipped by the animation offset, two more
# frames trimmed at the start and three at the end: timeline 22..29 shows files 1004..1011
EXPECTED_TIMELINE = list(range(22, 30))
EXPECTED_NUMBERS = list(range(1004, 1012))


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, media, addon):
    """One operator run shared by the checks below (each engine run costs ~10 s on CPU)."""
    point_at_engine(media["checkpoint"])
    scene = fresh_scene()
    editor = scene.sequence_editor
    names = [f"plate.{SEQUENCE_FIRST + i:04d}.png" for i in range(SEQUENCE_COUNT)]
    source = add_image_strip(scene, media["sequence_dir"], names, SOURCE_CHANNEL, FRAME_START)
    source.animation_offset_start = 1
    source.frame_offset_start = 2
    source.frame_offset_end = 3
    # something already sits in the channel right above, overlapping: the depth goes higher
    blocker = editor.strips.new_image(
        "blocker", str(media["sequence_dir"] / names[0]), SOURCE_CHANNEL + 1, 25
    )
    select_only(scene, source)

    output = tmp_path_factory.mktemp("image_out")
    # the dialog's defaults: the convention is left to the add-on (what an artist gets)
    result = run_operator(output_dir=str(output))
    depth = scene.sequence_editor.strips[f"{source.name} depth"]
    return {
        "result": result,
        "scene": scene,
        "source": source,
        "blocker": blocker,
        "depth": depth,
        "output": output,
        "names": names,
    }


def test_operator_finishes(image_run):
    assert image_run["result"] == {"FINISHED"}


def test_only_the_visible_frames_are_processed(image_run):
    written = sorted(p.name for p in image_run["output"].glob("depth.*.exr"))
    assert written == [f"depth.{n:04d}.exr" for n in EXPECTED_NUMBERS]
    # no work folder, staging links or temporaries are left behind
    assert not [p for p in image_run["output"].iterdir() if p.name.startswith(".")]


def test_depth_strip_lines_up_with_the_source(image_run):
    source, depth = image_run["source"], image_run["depth"]
    assert depth.channel == source.channel + 2  # channel + 1 is taken by the blocker
    assert (depth.frame_final_start, depth.frame_final_end) == (
        source.frame_final_start,
        source.frame_final_end,
    )
    assert depth.colorspace_settings.name == "Non-Color"
    for frame in EXPECTED_TIMELINE:
        shown = source.strip_elem_from_frame(frame).filename
        number = int(shown.split(".")[1])
        assert depth.strip_elem_from_frame(frame).filename == f"depth.{number:04d}.exr"
    assert [
        int(source.strip_elem_from_frame(t).filename.split(".")[1]) for t in EXPECTED_TIMELINE
    ] == (EXPECTED_NUMBERS)


def test_exrs_equal_the_cli_output(image_run, media, tmp_path):
    pattern = str(media["sequence_dir"] / "plate.####.png")
    cli = engine_cli(
        pattern,
        "-o",
        str(tmp_path),
        "--cache",  # as the add-on runs it: with the strip's kept predictions
        str(tmp_path / ".kept"),
        "--checkpoint",
        media["checkpoint"],
        "--frames",
        f"{EXPECTED_NUMBERS[0]}-{EXPECTED_NUMBERS[-1]}",
        "--channel",
        "Y",
        "--restore-res",
        "--depth-mode",
        "normalized",
        *FAST,
    )
    assert cli["frame_numbers"] == EXPECTED_NUMBERS
    pairs = [
        (str(image_run["output"] / f"depth.{n:04d}.exr"), str(tmp_path / f"depth.{n:04d}.exr"))
        for n in EXPECTED_NUMBERS
    ]
    assert max_exr_difference(pairs) <= 1e-6


def test_first_look_is_depth_not_a_black_frame(image_run, tmp_path):
    """Render one frame of the depth strip alone, as the Sequencer shows it after the first run
    with the dialog's defaults; kept in $RD_SCREENSHOT_DIR when set.

    Inverse depth (about -1..1) renders with every value below 0 black: half the frame."""
    scene, source, depth = image_run["scene"], image_run["source"], image_run["depth"]
    image_run["blocker"].mute = True
    source.mute = True
    scene.view_settings.view_transform = "AgX"  # what a new scene shows (README pictures)
    scene.render.image_settings.file_format = "PNG"
    scene.render.resolution_percentage = 400  # 256x192: big enough to look at in the docs
    scene.frame_set(26)
    scene.render.filepath = str(tmp_path / "depth_strip.png")
    try:
        bpy.ops.render.render(write_still=True)
    finally:
        scene.render.resolution_percentage = 100
        source.mute = False
        image_run["blocker"].mute = False
    rendered = tmp_path / "depth_strip.png"
    assert rendered.is_file()
    image = bpy.data.images.load(str(rendered))
    red = list(image.pixels)[0::4]
    bpy.data.images.remove(image)
    assert max(red) - min(red) > 0.5, "the depth strip rendered flat: Blender shows no depth"
    black = sum(value <= 1 / 255 for value in red) / len(red)
    assert black < 0.05, f"{black:.0%} of the first look is clipped to black"
    if os.environ.get("RD_SCREENSHOT_DIR"):
        screenshots = Path(os.environ["RD_SCREENSHOT_DIR"])
        screenshots.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(rendered, screenshots / "blender_depth_strip.png")
    assert depth.frame_final_start <= 26 < depth.frame_final_end
