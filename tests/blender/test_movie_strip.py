"""A movie strip with trims and an animation offset: timeline frames -> 0-based movie frames."""

from __future__ import annotations

import os
from pathlib import Path

import bpy
import pytest

from .conftest import fresh_scene, point_at_engine
from .support import ADDON_MODULE, FAST, engine_cli, engine_python, max_exr_difference, run_operator
from .test_ui import _draw

FRAME_START = 5
# 14 movie frames at 5..18; animation offset 1 drops movie frame 0; trims of 3 and 2 leave
# timeline 8..15 showing movie frames 4..11
EXPECTED_TIMELINE = list(range(8, 16))
EXPECTED_MOVIE_FRAMES = list(range(4, 12))


def _trimmed_movie(scene, path):
    strip = scene.sequence_editor.strips.new_movie("clip", str(path), 1, FRAME_START)
    strip.animation_offset_start = 1
    strip.frame_offset_start = 3
    strip.frame_offset_end = 2
    scene.sequence_editor.active_strip = strip
    return strip


@pytest.fixture(scope="module")
def movie_run(tmp_path_factory, media, addon):
    point_at_engine(media["checkpoint"])
    scene = fresh_scene()
    source = _trimmed_movie(scene, media["movie"])
    output = tmp_path_factory.mktemp("movie_out")
    result = run_operator(output_dir=str(output), defocus=True)
    return {
        "result": result,
        "scene": scene,
        "source": source,
        # a name outlives the strip's Python reference (adding strips may move strips)
        "source_name": source.name,
        "depth": scene.sequence_editor.strips[f"{source.name} depth"],
        "output": output,
    }


def test_operator_finishes(movie_run):
    assert movie_run["result"] == {"FINISHED"}
    assert (movie_run["source"].frame_final_start, movie_run["source"].frame_final_end) == (8, 16)


def test_only_the_visible_movie_frames_are_processed(movie_run):
    written = sorted(p.name for p in movie_run["output"].glob("depth.*.exr"))
    assert written == [f"depth.{n:04d}.exr" for n in EXPECTED_MOVIE_FRAMES]


def test_depth_strip_lines_up_with_the_movie(movie_run):
    source, depth = movie_run["source"], movie_run["depth"]
    assert depth.channel == source.channel + 1
    assert (depth.frame_final_start, depth.frame_final_end) == (8, 16)
    assert depth.colorspace_settings.name == "Non-Color"
    shown = [depth.strip_elem_from_frame(t).filename for t in EXPECTED_TIMELINE]
    assert shown == [f"depth.{n:04d}.exr" for n in EXPECTED_MOVIE_FRAMES]


def test_exrs_equal_the_cli_output(movie_run, media, tmp_path):
    cli = engine_cli(
        str(media["movie"]),
        "-o",
        str(tmp_path),
        "--cache",  # as the add-on runs it: with the strip's kept predictions
        str(tmp_path / ".kept"),
        "--checkpoint",
        media["checkpoint"],
        "--frames",
        f"{EXPECTED_MOVIE_FRAMES[0]}-{EXPECTED_MOVIE_FRAMES[-1]}",
        "--channel",
        "Y",
        "--restore-res",
        "--depth-mode",
        "normalized",
        *FAST,
    )
    assert cli["frame_numbers"] == EXPECTED_MOVIE_FRAMES
    pairs = [
        (str(movie_run["output"] / f"depth.{n:04d}.exr"), str(tmp_path / f"depth.{n:04d}.exr"))
        for n in EXPECTED_MOVIE_FRAMES
    ]
    assert max_exr_difference(pairs) <= 1e-6


def test_defocus_scene_feeds_the_depth_into_defocus(movie_run, tmp_path):
    defocus_scene = bpy.data.scenes[f"{movie_run['source_name']} Defocus"]
    if hasattr(defocus_scene, "compositing_node_group"):  # Blender 5.0
        tree = defocus_scene.compositing_node_group
    else:  # 4.5
        tree = defocus_scene.node_tree
    defocus = next(n for n in tree.nodes if n.bl_idname == "CompositorNodeDefocus")
    z_link = defocus.inputs["Z"].links[0]
    # Z <- |nearness - focus| <- nearness <- the depth sequence's Image node
    node = z_link.from_node
    while node.bl_idname != "CompositorNodeImage":
        node = node.inputs[0].links[0].from_node
    assert node.image.colorspace_settings.name == "Non-Color"
    assert node.image.source == "SEQUENCE"
    assert bpy.path.basename(node.image.filepath) == "depth.0004.exr"
    plate = defocus.inputs["Image"].links[0].from_node
    assert plate.image.source == "MOVIE"
    assert (defocus_scene.frame_start, defocus_scene.frame_end) == (8, 15)

    # focus starts on the subject: the depth under the frame centre, not a fixed 0.5
    compositing = __import__(f"{ADDON_MODULE}.compositing", fromlist=["defocus_controls"])
    focus, node = compositing.defocus_controls(defocus_scene)
    assert node == defocus and 0.0 <= focus.default_value <= 1.0
    assert abs(focus.default_value - 0.5) > 1e-3
    assert defocus.z_scale >= compositing.MIN_BLUR_PX

    # the result must look defocused: compare with the same render, Defocus muted
    sharp = _render(defocus_scene, tmp_path / "sharp.png", mute=defocus)
    blurred = _render(defocus_scene, tmp_path / "defocus.png")
    assert sum(blurred) / len(blurred) > 0.05, "the Defocus output is black: no plate arrived"
    change = sum(abs(a - b) for a, b in zip(sharp, blurred, strict=True)) / len(sharp)
    assert change > 0.01, f"Defocus changed the plate by {change:.4f} on average: looks sharp"
    if os.environ.get("RD_SCREENSHOT_DIR"):
        screenshots = Path(os.environ["RD_SCREENSHOT_DIR"])
        screenshots.mkdir(parents=True, exist_ok=True)
        for name, path in (("blender_defocus", "defocus"), ("blender_defocus_sharp", "sharp")):
            _enlarged_copy(tmp_path / f"{path}.png", screenshots / f"{name}.png")


def _enlarged_copy(source: Path, target: Path, factor: int = 4) -> None:
    """The tiny test plate, 4x larger for the docs (Image nodes ignore the render percentage)."""
    image = bpy.data.images.load(str(source))
    image.scale(image.size[0] * factor, image.size[1] * factor)
    image.save(filepath=str(target))
    bpy.data.images.remove(image)


def _render(scene, path: Path, mute=None) -> list[float]:
    """Render frame 10 of ``scene`` to ``path``; the red channel's values."""
    if mute is not None:
        mute.mute = True
    try:
        with bpy.context.temp_override(scene=scene):
            scene.frame_set(10)
            scene.render.image_settings.file_format = "PNG"
            scene.render.filepath = str(path)
            bpy.ops.render.render(write_still=True, scene=scene.name)
    finally:
        if mute is not None:
            mute.mute = False
    image = bpy.data.images.load(str(path))
    red = list(image.pixels)[0::4]
    bpy.data.images.remove(image)
    return red


def test_sidebar_edits_focus_and_blur(movie_run):
    """With the plate or its depth strip active, the sidebar shows the Defocus scene's Focus
    and Blur, bound to the compositor's own values."""
    panels = __import__(f"{ADDON_MODULE}.panels", fromlist=["SEQUENCER_PT_rollingdepth"])
    compositing = __import__(f"{ADDON_MODULE}.compositing", fromlist=["defocus_controls"])
    focus, defocus = compositing.defocus_controls(
        bpy.data.scenes[f"{movie_run['source_name']} Defocus"]
    )
    for strip in (movie_run["source"], movie_run["depth"]):
        movie_run["scene"].sequence_editor.active_strip = strip
        layout = _draw(panels.SEQUENCER_PT_rollingdepth, bpy.context)
        bound = [(args[0], args[1]) for name, args, _ in layout.log if name == "prop"]
        assert bound == [(focus, "default_value"), (defocus, "z_scale")]


def test_movie_frame_formula_matches_what_blender_shows(addon, tmp_path, engine_ready):
    """Ground truth for frames.movie_frame: render a movie whose frame i is grey level 20+10i."""
    movie = tmp_path / "grey.mp4"
    engine_python(
        "import sys\n"
        "from fractions import Fraction\n"
        "import av, numpy as np\n"
        "with av.open(sys.argv[1], 'w') as c:\n"
        "    s = c.add_stream('libx264', rate=Fraction(24))\n"
        "    s.width, s.height, s.pix_fmt, s.options = 64, 32, 'yuv444p', {'qp': '0'}\n"
        "    for i in range(20):\n"
        "        a = np.full((32, 64, 3), 20 + 10 * i, np.uint8)\n"
        "        c.mux(s.encode(av.VideoFrame.from_ndarray(a, format='rgb24')))\n"
        "    c.mux(s.encode(None))\n",
        str(movie),
    )
    frames = __import__(f"{ADDON_MODULE}.frames", fromlist=["movie_frame"])
    scene = fresh_scene()
    scene.render.resolution_x, scene.render.resolution_y = 64, 32
    scene.view_settings.view_transform = "Standard"
    scene.render.image_settings.file_format = "PNG"
    strip = scene.sequence_editor.strips.new_movie("grey", str(movie), 1, 10)
    strip.animation_offset_start = 4
    strip.frame_offset_start = 3
    strip.frame_offset_end = 2
    for t in (strip.frame_final_start, strip.frame_final_start + 5, strip.frame_final_end - 1):
        scene.frame_set(t)
        scene.render.filepath = str(tmp_path / f"grey_{t}.png")
        bpy.ops.render.render(write_still=True)
        image = bpy.data.images.load(scene.render.filepath)
        shown = round((image.pixels[0] * 255 - 20) / 10)
        bpy.data.images.remove(image)
        expected = frames.movie_frame(
            t, int(strip.frame_start), strip.animation_offset_start, strip.frame_duration
        )
        assert shown == expected, f"timeline {t}: Blender shows movie frame {shown}"


ONE_STEP = 1.5 / 255  # one 8-bit step, with room for float rounding


def _red(path: Path) -> list[float]:
    image = bpy.data.images.load(str(path))
    red = list(image.pixels)[0::4]
    bpy.data.images.remove(image)
    return red


def _largest_difference(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def test_the_defocus_scene_follows_the_frames_when_rendered_from_the_edit(movie_run, tmp_path):
    """Rendered from the edit scene (the window's scene, not the Defocus one), the Defocus
    scene shows the plate's frame of each frame: an animation render, a Scene strip of it in
    the edit, and a still render at the edit's current frame (Blender's render operator
    renders a still of another scene at the window scene's frame) agree frame for frame, and
    the frames differ from one another (not one plate frame on every frame)."""
    edit = movie_run["scene"]
    defocus = bpy.data.scenes[f"{movie_run['source_name']} Defocus"]
    assert bpy.context.scene == edit
    first, last = defocus.frame_start, defocus.frame_end
    defocus.render.image_settings.file_format = "PNG"
    defocus.render.filepath = str(tmp_path / "anim_")
    bpy.ops.render.render(animation=True, scene=defocus.name)
    animation = {f: _red(tmp_path / f"anim_{f:04d}.png") for f in range(first, last + 1)}
    steps = [_largest_difference(animation[f], animation[f + 1]) for f in range(first, last)]
    assert min(steps) > 0.01, f"consecutive frames look the same: {steps}"

    picked = (first + 1, last - 1)
    for frame in picked:  # a still render of the Defocus scene from the edit
        edit.frame_set(frame)
        defocus.render.filepath = str(tmp_path / f"still_{frame}.png")
        bpy.ops.render.render(write_still=True, scene=defocus.name)
        still = _red(tmp_path / f"still_{frame}.png")
        assert _largest_difference(still, animation[frame]) <= ONE_STEP

    strips = edit.sequence_editor.strips
    channel = max(s.channel for s in edit.sequence_editor.strips_all) + 1
    strip = strips.new_scene("defocus shot", defocus, channel, first)
    try:
        edit.render.image_settings.file_format = "PNG"
        # the edit renders at its own size and view: the Defocus scene's, to compare pixel
        # for pixel (another test of the module may have changed the edit's)
        for setting in ("resolution_x", "resolution_y", "resolution_percentage"):
            setattr(edit.render, setting, getattr(defocus.render, setting))
        for setting in ("view_transform", "look", "exposure", "gamma"):
            setattr(edit.view_settings, setting, getattr(defocus.view_settings, setting))
        edit.display_settings.display_device = defocus.display_settings.display_device
        edit.sequencer_colorspace_settings.name = defocus.sequencer_colorspace_settings.name
        for frame in picked:  # the Defocus scene as a Scene strip in the edit
            edit.frame_set(frame)
            edit.render.filepath = str(tmp_path / f"strip_{frame}.png")
            bpy.ops.render.render(write_still=True)
            shown = _red(tmp_path / f"strip_{frame}.png")
            # the sequencer's own colour round trip may move a value by one 8-bit step
            assert _largest_difference(shown, animation[frame]) <= ONE_STEP
    finally:
        strips.remove(strip)
