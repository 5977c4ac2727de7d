"""Build Shot in 3D on a depth strip whose run wrote points: the shot's camera and the plate's
points in a new scene, read by Blender's USD importer."""

from __future__ import annotations

import math
import os

import bpy
import pytest

from .conftest import fresh_scene
from .support import (
    FAST,
    PLATE_SIZE,
    SEQUENCE_COUNT,
    SEQUENCE_FIRST,
    add_image_strip,
    engine_cli,
    select_only,
)

FRAMES = range(SEQUENCE_FIRST, SEQUENCE_FIRST + SEQUENCE_COUNT)


def _camera_usd(path, frames=FRAMES) -> list:
    """An animated camera over the plate's ``frames`` (36 mm film at the plate's 4:3),
    exported with Blender's USD exporter; its matrices per frame."""
    scene = bpy.data.scenes.new("camera source")
    scene.render.resolution_y, scene.render.resolution_x = PLATE_SIZE
    scene.frame_start, scene.frame_end = frames[0], frames[-1]
    data = bpy.data.cameras.new("shot_cam")
    data.lens, data.sensor_width, data.sensor_fit = 30.0, 36.0, "HORIZONTAL"
    camera = bpy.data.objects.new("shot_cam", data)
    scene.collection.objects.link(camera)
    for k, frame in enumerate(frames):
        camera.location = (0.1 * k, -6.0, 1.5)
        camera.rotation_euler = (math.radians(85), 0.0, math.radians(2 * k))
        camera.keyframe_insert("location", frame=frame)
        camera.keyframe_insert("rotation_euler", frame=frame)
    window = bpy.context.window_manager.windows[0]
    previous, window.scene = window.scene, scene
    try:
        bpy.ops.wm.usd_export(filepath=str(path), export_animation=True)
    finally:
        window.scene = previous
    matrices = []
    for frame in frames:
        scene.frame_set(frame)
        matrices.append(camera.matrix_world.copy())
    bpy.data.scenes.remove(scene)
    return matrices


@pytest.fixture(scope="module")
def built(tmp_path_factory, media, addon):
    folder = tmp_path_factory.mktemp("shot3d")
    matrices = _camera_usd(folder / "camera.usda")
    out = folder / "depth"
    pattern = str(media["sequence_dir"] / "plate.####.png")
    result = engine_cli(pattern, "-o", str(out), "--checkpoint", media["checkpoint"], *FAST,
                        "--restore-res", "--depth-mode", "depth", "--near", "3", "--far", "9",
                        "--camera", str(folder / "camera.usda"), "--points", "shot.usdc")  # fmt: skip
    assert result["points"] == str(out / "shot.usdc")
    scene = fresh_scene()
    names = [f"plate.{n:04d}.png" for n in FRAMES]
    plate = add_image_strip(scene, media["sequence_dir"], names, 1, 1)
    depth = add_image_strip(scene, out, [f"depth.{n:04d}.exr" for n in FRAMES], 2, 1)
    depth["rollingdepth_source"] = plate.name  # as the add-on marks the depth strips it adds
    select_only(scene, depth)
    assert bpy.ops.sequencer.rollingdepth_build_shot() == {"FINISHED"}
    return {"scene": scene, "shot": bpy.data.scenes[f"{depth.name} 3D"], "matrices": matrices,
            "folder": folder, "media": media, "plate": plate}  # fmt: skip


def test_the_shot_scene_has_the_camera_and_the_points(built):
    shot = built["shot"]
    assert shot.camera is not None and shot.camera.data.lens == pytest.approx(30.0, rel=1e-5)
    assert (shot.frame_start, shot.frame_end) == (FRAMES[0], FRAMES[-1])
    assert (shot.render.resolution_x, shot.render.resolution_y) == PLATE_SIZE[::-1]
    clouds = [o for o in shot.objects if o.type == "POINTCLOUD"]
    assert len(clouds) == 1
    for frame, expected in zip(FRAMES, built["matrices"], strict=True):
        shot.frame_set(frame)
        got = shot.camera.matrix_world
        assert max(abs(a - b) for ra, rb in zip(got, expected, strict=True)
                   for a, b in zip(ra, rb, strict=True)) < 1e-4  # fmt: skip
    data = clouds[0].evaluated_get(bpy.context.evaluated_depsgraph_get()).data
    assert len(data.attributes["position"].data) > 0
    # the edit is left as it was
    assert bpy.context.scene == built["scene"]


def test_the_points_render_through_the_camera_on_every_frame(built, tmp_path):
    """A render through the shot's camera shows the points on every frame, following the shot
    (each frame's render differs from the last), in the plate's own colours where they draw
    (the tiny random model's depth is noise: many pixels are depth edges, left 0 wide and
    transparent). Compared as both are shown: the plate's sRGB file, the render's sRGB PNG."""
    import numpy as np

    shot = built["shot"]
    shot.render.engine = "CYCLES"
    shot.cycles.samples = 1
    shot.render.image_settings.file_format = "PNG"
    shot.render.image_settings.color_mode = "RGBA"
    errors, covered, renders = [], [], []
    meshes = [o for o in shot.objects if o.type == "MESH"]
    for mesh in meshes:
        mesh.hide_render = True  # the points alone
    for frame in FRAMES:
        shot.frame_set(frame)
        shot.render.filepath = str(tmp_path / f"points.{frame}.png")
        # `render(scene=...)` renders the shot scene at the edit's frame: every frame the same
        with bpy.context.temp_override(scene=shot):
            bpy.ops.render.render(write_still=True)
        render, alpha = _pixels(shot.render.filepath, alpha=True)
        plate = _pixels(str(built["media"]["sequence_dir"] / f"plate.{frame:04d}.png"))
        drawn = alpha > 0.99  # a point covers it (the rest: 0-wide, untrusted)
        covered.append(float(drawn.mean()))
        errors.append(float(np.median(np.abs(render - plate)[drawn])))
        renders.append(render)
        if frame == FRAMES[-1] and os.environ.get("RD_SCREENSHOT_DIR"):  # to look at
            side = np.concatenate([plate, render], axis=1)
            _save(side, os.path.join(os.environ["RD_SCREENSHOT_DIR"], "shot3d_plate_render.png"))
    for mesh in meshes:
        mesh.hide_render = False
    print(f"median |render - plate| where points draw, per frame (0..1): "
          f"{[round(e, 3) for e in errors]}; share drawn: {[round(c, 3) for c in covered]}")  # fmt: skip
    assert min(covered) > 0.3, covered
    assert max(errors) < 0.01, errors  # Cycles' denoiser: 0.125 darker; AgX: 0.020
    assert all(not np.array_equal(a, b) for a, b in zip(renders, renders[1:], strict=False))


def test_the_plate_on_its_depth_mesh_renders_as_the_plate(built, tmp_path):
    """The plate on the mesh built from its depth (2.5D projection): the mesh moves with the
    shot, and a render through the camera of the mesh alone shows the plate where it covers
    the frame (all but the half cell round the edge)."""
    import numpy as np

    shot = built["shot"]
    plates = [o for o in shot.objects if o.type == "MESH"]
    assert len(plates) == 1 and plates[0].data.uv_layers
    plate_object = plates[0]
    for cloud in (o for o in shot.objects if o.type == "POINTCLOUD"):
        cloud.hide_render = True  # the mesh alone
    shot.render.engine = "CYCLES"
    shot.cycles.samples = 1
    shot.render.image_settings.file_format = "PNG"
    shot.render.image_settings.color_mode = "RGBA"
    errors, covered, shapes = [], [], []
    try:
        for frame in FRAMES:
            shot.frame_set(frame)
            graph = shot.view_layers[0].depsgraph
            evaluated = plate_object.evaluated_get(graph).data
            shapes.append(np.array([tuple(v.co) for v in evaluated.vertices[:50]]))
            shot.render.filepath = str(tmp_path / f"mesh.{frame}.png")
            with bpy.context.temp_override(scene=shot):
                bpy.ops.render.render(write_still=True)
            render, alpha = _pixels(shot.render.filepath, alpha=True)
            plate = _pixels(str(built["media"]["sequence_dir"] / f"plate.{frame:04d}.png"))
            drawn = alpha > 0.99
            covered.append(float(drawn.mean()))
            errors.append(float(np.median(np.abs(render - plate)[drawn])))
            if frame == FRAMES[5] and os.environ.get("RD_SCREENSHOT_DIR"):
                side = np.concatenate([plate, render], axis=1)
                _save(side, os.path.join(os.environ["RD_SCREENSHOT_DIR"], "shot3d_mesh.png"))
    finally:
        for cloud in (o for o in shot.objects if o.type == "POINTCLOUD"):
            cloud.hide_render = False
    print(f"plate mesh: median |render - plate| where it covers, per frame (0..1): "
          f"{[round(e, 3) for e in errors]}; share covered: {[round(c, 3) for c in covered]}")  # fmt: skip
    assert min(covered) > 0.99, covered  # the ring reaches the frame edges (0.964 without)
    assert max(errors) < 0.01, errors
    assert all(not np.allclose(a, b) for a, b in zip(shapes, shapes[1:], strict=False))


def test_a_movie_plate_on_its_depth_mesh_plays_frame_for_frame(media, addon, tmp_path):
    """A movie plate (the engine numbers its frames from 0): the mesh's texture shows movie
    frame n on the shot's frame n. Compared with the PNG frames the movie was encoded from
    (h264 moves colours a little): each frame matches its own frame best."""
    import numpy as np

    from .support import MOVIE_FRAMES

    frames = range(MOVIE_FRAMES)
    _camera_usd(tmp_path / "camera.usda", frames)
    out = tmp_path / "depth"
    engine_cli(str(media["movie"]), "-o", str(out), "--checkpoint", media["checkpoint"], *FAST,
               "--restore-res", "--depth-mode", "depth", "--near", "3", "--far", "9",
               "--camera", str(tmp_path / "camera.usda"), "--points", "shot.usdc")  # fmt: skip
    scene = fresh_scene()
    movie = scene.sequence_editor.strips.new_movie("clip", str(media["movie"]), 1, 1)
    names = sorted(p.name for p in out.glob("depth.*.exr"))
    depth = add_image_strip(scene, out, names, 2, 1)
    depth["rollingdepth_source"] = movie.name
    select_only(scene, depth)
    assert bpy.ops.sequencer.rollingdepth_build_shot() == {"FINISHED"}
    shot = bpy.data.scenes[f"{depth.name} 3D"]
    for cloud in (o for o in shot.objects if o.type == "POINTCLOUD"):
        cloud.hide_render = True
    shot.render.engine = "CYCLES"
    shot.cycles.samples = 1
    shot.render.image_settings.file_format = "PNG"
    shot.render.image_settings.color_mode = "RGBA"
    pngs = [_pixels(str(media["sequence_dir"] / f"plate.{SEQUENCE_FIRST + n:04d}.png"))
            for n in frames]  # fmt: skip
    own, shifted = [], []
    for n in (0, 5, 13):
        shot.frame_set(n)
        shot.render.filepath = str(tmp_path / f"movie.{n}.png")
        with bpy.context.temp_override(scene=shot):
            bpy.ops.render.render(write_still=True)
        render, alpha = _pixels(shot.render.filepath, alpha=True)
        drawn = alpha > 0.99
        errors = [float(np.mean(np.abs(render - png)[drawn])) for png in pngs]
        own.append(errors[n])
        shifted.append(min(e for k, e in enumerate(errors) if k != n))
    print(f"movie plate mesh: mean |render - frame| own {[round(e, 3) for e in own]}, "
          f"best other frame {[round(e, 3) for e in shifted]}")  # fmt: skip
    assert all(a < b for a, b in zip(own, shifted, strict=True)), (own, shifted)
    assert max(own) < 0.03, own


def _pixels(path: str, alpha: bool = False):
    """A PNG's pixels as stored (sRGB values / 255), top row first; and its alpha."""
    import numpy as np

    image = bpy.data.images.load(path)
    width, height = image.size
    pixels = np.array(image.pixels[:], np.float32).reshape(height, width, 4)[::-1]
    bpy.data.images.remove(image)
    return (pixels[..., :3], pixels[..., 3]) if alpha else pixels[..., :3]


def _save(rgb, path: str) -> None:
    import numpy as np

    height, width = rgb.shape[:2]
    image = bpy.data.images.new("side", width, height)
    rgba = np.concatenate([rgb, np.ones((height, width, 1), np.float32)], -1)[::-1]
    image.pixels.foreach_set(rgba.reshape(-1))
    image.filepath_raw = path
    image.file_format = "PNG"
    image.save()
    bpy.data.images.remove(image)


def test_a_mesh_that_cannot_be_built_is_said_in_words(addon, tmp_path):
    """The points grid is read back from the count of points and the depth's size; a plate
    the run read through temporary links is gone: both leave the mesh out, in words."""
    import importlib

    from .support import ADDON_MODULE

    shot3d = importlib.import_module(f"{ADDON_MODULE}.shot3d")
    assert shot3d.grid_shape(64 * 48, (64, 48)) == (48, 64, 1)
    assert shot3d.grid_shape(32 * 24, (64, 48)) == (24, 32, 2)
    assert shot3d.grid_shape(21 * 16, (64, 48)) == (16, 21, 3)  # columns 1, 4 .. 61; rows 1 .. 46
    with pytest.raises(shot3d.ShotError, match="does not match this depth's size"):
        shot3d.grid_shape(1000, (64, 48))
    with pytest.raises(shot3d.ShotError, match="is not there: the plate mesh is left out"):
        shot3d._plate_image(str(tmp_path / "gone" / "frame.####.png"))
    with pytest.raises(shot3d.ShotError, match="is not there: the plate mesh is left out"):
        shot3d._plate_image(str(tmp_path / "gone.mov"))


def test_a_depth_without_points_is_refused_in_words(built):
    scene = built["scene"]
    select_only(scene, built["plate"])
    with pytest.raises(RuntimeError, match="Select a depth strip made by RollingDepth"):
        bpy.ops.sequencer.rollingdepth_build_shot()


CHANGING_TRUST = """
import sys
import numpy as np
from rollingdepth_core.cameras import CameraRequest, load_camera
from rollingdepth_core.passes import FrameGeometry
from rollingdepth_core.points import PointCloud

# a wall 5 units in front of a fixed camera; a different share of it is untrusted per frame
# (no normal: a depth edge), so the trusted count changes from frame to frame
frames = [1, 2, 3]
track = load_camera(CameraRequest(fov=40.0), frames, (32, 48))
cloud = PointCloud(budget=48 * 32)
geometry = FrameGeometry(track, ("Z", "P", "N"), cloud)
for k, frame in enumerate(frames):
    depth = np.full((32, 48), 5.0, np.float32)
    depth[:, : 8 + 12 * k : 2] += np.float32(3.0)  # stripes: edges everywhere there
    geometry.channels(frame, depth, "depth", colour=np.ones((32, 48, 3), np.float32))
cloud.save(sys.argv[1], track)
"""


def test_points_whose_trust_changes_render_on_every_frame(tmp_path):
    """Blender 5.0.1 renders a USD point cloud whose count changes per frame on its first
    frame only. The points file keeps one point per grid cell on every frame (untrusted ones
    0 wide): every frame renders, and the 0-wide points draw nothing."""
    from .support import engine_python

    path = tmp_path / "points.usda"
    engine_python(CHANGING_TRUST, str(path))
    bpy.ops.wm.read_homefile(use_empty=True)
    assert bpy.ops.wm.usd_import(filepath=str(path)) == {"FINISHED"}
    scene = bpy.context.scene
    scene.camera = next(o for o in scene.objects if o.type == "CAMERA")
    cloud = next(o for o in scene.objects if o.type == "POINTCLOUD")
    material = bpy.data.materials.new("white")
    material.use_nodes = True
    cloud.data.materials.append(material)  # white emission: no world, nothing else lit
    tree = material.node_tree
    tree.nodes.clear()
    emission = tree.nodes.new("ShaderNodeEmission")
    out = tree.nodes.new("ShaderNodeOutputMaterial")
    tree.links.new(emission.outputs["Emission"], out.inputs["Surface"])
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 1
    scene.render.resolution_x, scene.render.resolution_y = 48, 32
    scene.render.image_settings.file_format = "PNG"
    covered, counts = [], []
    for frame in (1, 2, 3):
        scene.frame_set(frame)
        data = cloud.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
        counts.append(len(data.points))
        scene.render.filepath = str(tmp_path / f"r.{frame}.png")
        bpy.ops.render.render(write_still=True)
        image = bpy.data.images.load(scene.render.filepath)
        pixels = list(image.pixels)
        covered.append(sum(1 for i in range(0, len(pixels), 4) if pixels[i] > 0.5))
        bpy.data.images.remove(image)
    print(f"points per frame {counts}; lit pixels per frame {covered} of {48 * 32}")
    assert len(set(counts)) == 1
    assert all(c > 0 for c in covered), covered  # the bug: 0 after the first frame
    assert covered[0] > covered[1] > covered[2]  # more untrusted, 0-wide points: less covered
