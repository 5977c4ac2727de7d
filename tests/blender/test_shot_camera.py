"""Estimate Depth with the scene's camera: the dialog writes the camera per frame of the strip
for the engine, and the run's frames carry position and normals in the scene's space, which
Blender's own camera projection puts back on their pixels."""

from __future__ import annotations

import json
import math

import bpy
import pytest

from .support import add_image_strip, engine_python, run_operator, select_only

FIRST, COUNT = 1001, 6
STRIP_START = 11  # scene frame 11 shows plate frame 1001: frames and numbers differ
PIXELS = ((0, 0), (63, 0), (0, 47), (63, 47), (31, 20), (10, 37))  # x, y from the top

READ_DEPTH = """
import json, sys
from rollingdepth_core.exr import read_exr
channels, header = read_exr(sys.argv[1])
pixels = json.loads('PIXELS')
print(json.dumps({"channels": list(channels), "Y": [float(channels["Y"][y, x]) for x, y in pixels],
                  "camera": header.get("rollingdepth/camera.file", "")}))
"""
READ_PASSES = """
import json, sys
from rollingdepth_core.exr import read_exr
out = {}
for path in sys.argv[1:]:
    channels, header = read_exr(path)
    pixels = json.loads('PIXELS')
    out[path] = {
        "channels": list(channels),
        "header": {k: v for k, v in header.items() if k.startswith("rollingdepth/camera")},
        "P": [[float(channels[f"P.{a}"][y, x]) for a in "XYZ"] for x, y in pixels],
        "N": [[float(channels[f"N.{a}"][y, x]) for a in "XYZ"] for x, y in pixels],
        "Y": [float(channels["Y"][y, x]) for x, y in pixels],
    }
print(json.dumps(out))
"""


def _shot_camera(scene, sensor_fit: str):
    """A moving, zooming camera with a sensor whose fit matters: 20 mm high, 32 mm wide, on
    a 4:3 frame (Vertical fit: 26.67 x 20 mm seen; Horizontal: 32 x 24)."""
    data = bpy.data.cameras.new("shot_cam")
    data.sensor_width, data.sensor_height, data.sensor_fit = 32.0, 20.0, sensor_fit
    camera = bpy.data.objects.new("shot_cam", data)
    scene.collection.objects.link(camera)
    camera.rotation_mode = "XYZ"
    camera.scale = (2.0, 2.0, 2.0)  # a camera's scale changes nothing it sees
    for k in range(COUNT):
        frame = STRIP_START + k
        camera.location = (0.3 * k, -6.0 + 0.2 * k, 1.5)
        camera.rotation_euler = (math.radians(80 + k), math.radians(3 * k), math.radians(5 * k))
        data.lens = 30.0 + 2.0 * k
        camera.keyframe_insert("location", frame=frame)
        camera.keyframe_insert("rotation_euler", frame=frame)
        data.keyframe_insert("lens", frame=frame)
    scene.camera = camera
    return camera


@pytest.fixture()
def plate(scene, media):
    names = [f"plate.{n:04d}.png" for n in range(FIRST, FIRST + COUNT)]
    strip = add_image_strip(scene, media["sequence_dir"], names, 1, STRIP_START)
    select_only(scene, strip)
    return strip


def _run_with_camera(tmp_path, **settings) -> dict:
    output = tmp_path / "out"
    assert run_operator(output_dir=str(output), camera="SCENE", depth_mode="depth", near=3.0,
                        far=9.0, write_points=True, **settings) == {"FINISHED"}  # fmt: skip
    paths = [str(output / f"depth.{n:04d}.exr") for n in range(FIRST, FIRST + COUNT)]
    code = READ_PASSES.replace("PIXELS", json.dumps(PIXELS))
    return {"output": output, "frames": json.loads(engine_python(code, *paths)), "paths": paths}


@pytest.mark.parametrize("sensor_fit", ["VERTICAL", "AUTO"])
def test_the_scene_camera_gives_position_and_normals_in_the_scene(
    prefs, scene, plate, tmp_path, sensor_fit
):
    from bpy_extras.object_utils import world_to_camera_view

    camera = _shot_camera(scene, sensor_fit)
    run = _run_with_camera(tmp_path, write_passes=True)
    film_height = 20.0 if sensor_fit == "VERTICAL" else 24.0
    worst_matrix, worst_pixel = 0.0, 0.0
    for k, path in enumerate(run["paths"]):
        frame = run["frames"][path]
        assert {"Y", "P.X", "P.Y", "P.Z", "N.X", "N.Y", "N.Z"} <= set(frame["channels"])
        header = frame["header"]
        assert header["rollingdepth/camera.frame"] == FIRST + k
        scene.frame_set(STRIP_START + k)  # where the strip shows this plate frame
        lens = 30.0 + 2.0 * k
        assert header["rollingdepth/camera.focal_length"] == pytest.approx(lens, rel=1e-5)
        width, height = (float(v) for v in header["rollingdepth/camera.film_back"].split())
        assert (width, height) == pytest.approx((film_height * 4 / 3, film_height), rel=1e-5)
        location, rotation, _ = camera.matrix_world.decompose()
        expected = rotation.to_matrix().to_4x4()
        expected.translation = location
        got = [float(v) for v in header["rollingdepth/camera.to_world"].split()]
        worst_matrix = max(worst_matrix, *(abs(got[4 * r + c] - expected[r][c])
                                           for r in range(4) for c in range(4)))  # fmt: skip
        # Blender's own projection puts each P back on its pixel's centre
        for (x, y), p in zip(PIXELS, frame["P"], strict=True):
            seen = world_to_camera_view(scene, camera, _vector(p))
            worst_pixel = max(worst_pixel, abs(seen.x * 64 - (x + 0.5)),
                              abs((1 - seen.y) * 48 - (y + 0.5)))  # fmt: skip
            assert seen.z > 0  # in front of the camera
        normals = [n for n in frame["N"] if any(n)]
        assert normals and all(abs(math.hypot(*n) - 1) < 1e-3 for n in normals)
    print(f"sensor fit {sensor_fit}: worst matrix difference {worst_matrix:.2e}, worst "
          f"reprojection {worst_pixel:.2e} px")  # fmt: skip
    assert worst_matrix < 1e-5
    assert worst_pixel < 1e-3
    # the points for Build Shot in 3D are written beside the depth
    assert (run["output"] / "depth_points.usdc").is_file()
    # the camera the run read stays beside the strip's kept predictions, named by its content
    used = header["rollingdepth/camera.file"]
    assert used.endswith(".usda") and ".rollingdepth-cache" in used
    # Build Shot in 3D puts the shot's camera where the scene's is (Z up, the scene's units)
    depth = scene.sequence_editor.strips[f"{plate.name} depth"]
    select_only(scene, depth)
    assert bpy.ops.sequencer.rollingdepth_build_shot() == {"FINISHED"}
    shot = bpy.data.scenes[f"{depth.name} 3D"]
    worst_shot = 0.0
    for k in range(COUNT):
        scene.frame_set(STRIP_START + k)
        location, rotation, _ = camera.matrix_world.decompose()
        shot.frame_set(FIRST + k)
        got_location, got_rotation, _ = shot.camera.matrix_world.decompose()
        worst_shot = max(worst_shot, (got_location - location).length,
                         got_rotation.rotation_difference(rotation).angle)  # fmt: skip
    bpy.data.scenes.remove(shot)
    assert worst_shot < 1e-4, worst_shot


COPY_Y_ONLY = """
import sys
from pathlib import Path
from rollingdepth_core.exr import read_exr, write_depth_exr
for path in sys.argv[2:]:
    channels, _ = read_exr(path)
    write_depth_exr(Path(sys.argv[1]) / Path(path).name, channels["Y"], channel="Y")
"""


def _render_strip(scene, frame: int, path) -> list[float]:
    """The red of every pixel of the Sequencer's picture at scene ``frame`` (16-bit PNG)."""
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_depth = "16"
    scene.render.filepath = str(path)
    scene.frame_set(frame)
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(str(path))
    red = list(image.pixels)[0::4]
    bpy.data.images.remove(image)
    return red


def test_with_position_and_normal_the_depth_strip_shows_the_depth(prefs, scene, plate, tmp_path):
    """Frames with P and N layers show their depth in the Sequencer, as depth alone does:
    rendered through the edit, the strip is the picture of the same depth written alone
    (Blender 5.0.1 showed `Y` beside layers black, and its background render crashed)."""
    _shot_camera(scene, "AUTO")
    run = _run_with_camera(tmp_path, write_passes=True)
    assert {"R", "G", "B"} <= set(run["frames"][run["paths"][2]]["channels"])
    depth = scene.sequence_editor.strips[f"{plate.name} depth"]
    plate.mute = True
    shown = _render_strip(scene, STRIP_START + 2, tmp_path / "with_passes.png")
    alone = tmp_path / "alone"
    alone.mkdir()
    engine_python(COPY_Y_ONLY, str(alone), *run["paths"])
    depth.directory = str(alone) + "/"
    expected = _render_strip(scene, STRIP_START + 2, tmp_path / "depth_alone.png")
    plate.mute = False
    assert max(expected) - min(expected) > 0.2, "the depth alone renders flat"
    worst = max(abs(a - b) for a, b in zip(shown, expected, strict=True))
    assert worst < 2e-3, f"the strip with P and N shows other values (worst {worst:.4f})"


def test_points_alone_keep_the_depth_strip_as_it_shows(prefs, scene, plate, tmp_path):
    """Without Position and Normal the frames hold the depth alone, which the Sequencer shows
    (Blender 5.0.1 shows an EXR whose depth sits beside P and N layers as black), and the
    points for Build Shot in 3D are still written with the camera."""
    _shot_camera(scene, "AUTO")
    output = tmp_path / "out"
    assert run_operator(output_dir=str(output), camera="SCENE", depth_mode="depth", near=3.0,
                        far=9.0, write_passes=False, write_points=True) == {"FINISHED"}  # fmt: skip
    path = str(output / f"depth.{FIRST + 2:04d}.exr")
    written = json.loads(engine_python(READ_DEPTH.replace("PIXELS", json.dumps(PIXELS)), path))
    assert written["channels"] == ["Y"] and written["camera"].endswith(".usda")
    image = bpy.data.images.load(path)
    shown = list(image.pixels)
    bpy.data.images.remove(image)
    for (x, y), value in zip(PIXELS, written["Y"], strict=True):
        assert shown[((47 - y) * 64 + x) * 4] == pytest.approx(value, rel=1e-4)
    assert (output / "depth_points.usdc").is_file()


def test_the_dialog_says_what_the_camera_needs_and_adds(addon, scene, plate):
    import importlib

    from .support import ADDON_MODULE
    from .test_ui import _draw

    _shot_camera(scene, "AUTO")
    cls = importlib.import_module(f"{ADDON_MODULE}.operators").SEQUENCER_OT_rollingdepth_estimate
    layout = _draw(cls, bpy.context, camera="NONE", output_dir="/x")
    props = [a[1] for name, a, _ in layout.log if name == "prop"]
    assert "camera" in props and "write_passes" not in props
    layout = _draw(cls, bpy.context, camera="SCENE", depth_mode="normalized", output_dir="/x")
    assert "set Convention to Depth" in " ".join(layout.texts("label"))  # wrapped lines
    layout = _draw(cls, bpy.context, camera="SCENE", depth_mode="depth", write_passes=True,
                   output_dir="/x")  # fmt: skip
    labels = " ".join(layout.texts("label"))
    assert "set Convention to Depth" not in labels
    # six float channels and the half-float grey copy Blender shows, 64 x 48 pixels, 6 frames
    assert "Position and Normal add 92.2 kB per frame (553.0 kB for 6 frames)" in labels
    assert "shows the depth strip black" not in labels


def _vector(values):
    from mathutils import Vector

    return Vector(values)


def test_position_needs_depth_in_scene_units(prefs, scene, plate, tmp_path):
    _shot_camera(scene, "AUTO")
    with pytest.raises(RuntimeError, match="set Convention to Depth"):
        run_operator(output_dir=str(tmp_path / "o"), camera="SCENE", depth_mode="normalized")
    assert not (tmp_path / "o").exists()


def test_a_scene_frame_not_shaped_like_the_plate_is_refused(prefs, scene, plate, tmp_path):
    _shot_camera(scene, "AUTO")
    scene.render.resolution_x, scene.render.resolution_y = 1920, 1080
    with pytest.raises(RuntimeError, match="is not shaped like the plate"):
        run_operator(output_dir=str(tmp_path / "o"), camera="SCENE", depth_mode="depth")


def test_lens_shift_is_refused(prefs, scene, plate, tmp_path):
    camera = _shot_camera(scene, "AUTO")
    camera.data.shift_x = 0.1
    with pytest.raises(RuntimeError, match="has lens shift"):
        run_operator(output_dir=str(tmp_path / "o"), camera=camera.name, depth_mode="depth")
