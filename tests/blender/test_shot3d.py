"""Build Shot in 3D on a depth strip whose run wrote points: the shot's camera and the plate's
points in a new scene, read by Blender's USD importer."""

from __future__ import annotations

import math

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


def _camera_usd(path) -> list:
    """An animated camera over the plate's frames (36 mm film at the plate's 4:3), exported
    with Blender's USD exporter; its matrices per frame."""
    scene = bpy.data.scenes.new("camera source")
    scene.render.resolution_y, scene.render.resolution_x = PLATE_SIZE
    scene.frame_start, scene.frame_end = FRAMES[0], FRAMES[-1]
    data = bpy.data.cameras.new("shot_cam")
    data.lens, data.sensor_width, data.sensor_fit = 30.0, 36.0, "HORIZONTAL"
    camera = bpy.data.objects.new("shot_cam", data)
    scene.collection.objects.link(camera)
    for k, frame in enumerate(FRAMES):
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
    for frame in FRAMES:
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


def test_a_depth_without_points_is_refused_in_words(built):
    scene = built["scene"]
    select_only(scene, built["plate"])
    with pytest.raises(RuntimeError, match="Select a depth strip made by RollingDepth"):
        bpy.ops.sequencer.rollingdepth_build_shot()
