"""Anchors from a real camera solve: Blender's own tracker and solver on rendered frames.

A small scene (textured floor, wall and boxes; emission shaders, so frames are noise-free) is
rendered with Cycles from a moving camera to plate.1001.png ...; the frames are loaded as a
Movie Clip, features are detected and tracked and the camera is solved, all with Blender's
operators in background mode. The anchors' depths are checked against the true planar depth of
the scene at the anchor's pixel (a ray cast from the true camera).
"""

from __future__ import annotations

import importlib
import math

import pytest

bpy = pytest.importorskip("bpy")
from mathutils import Vector  # noqa: E402

from .support import ADDON_MODULE, engine_python  # noqa: E402

FRAMES = 16
FIRST = 1001
SIZE = (320, 180)  # W, H
LENS, SENSOR = 30.0, 36.0


def emission_material(name: str, scale: float):
    """High-contrast blobs (noise through a hard ramp) that the tracker locks onto."""
    material = bpy.data.materials.new(name)
    nodes, links = material.node_tree.nodes, material.node_tree.links
    nodes.clear()
    noise = nodes.new("ShaderNodeTexNoise")
    noise.inputs["Scale"].default_value = scale
    noise.inputs["Detail"].default_value = 4.0
    ramp = nodes.new("ShaderNodeValToRGB")
    ramp.color_ramp.elements[0].position = 0.45
    ramp.color_ramp.elements[1].position = 0.55
    emission = nodes.new("ShaderNodeEmission")
    output = nodes.new("ShaderNodeOutputMaterial")
    links.new(noise.outputs["Fac"], ramp.inputs["Fac"])
    links.new(ramp.outputs["Color"], emission.inputs["Color"])
    links.new(emission.outputs["Emission"], output.inputs["Surface"])
    return material


def build_scene():
    scene = bpy.data.scenes.new("solve_truth")
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 4
    scene.cycles.use_denoising = False
    scene.cycles.device = "CPU"
    scene.render.resolution_x, scene.render.resolution_y = SIZE
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.view_settings.view_transform = "Standard"
    scene.frame_start, scene.frame_end = 1, FRAMES

    def add(mesh, material, location, rotation=(0.0, 0.0, 0.0)):
        ob = bpy.data.objects.new(mesh.name, mesh)
        ob.location, ob.rotation_euler = location, rotation
        mesh.materials.append(material)
        scene.collection.objects.link(ob)

    floor = bpy.data.meshes.new("floor")
    floor.from_pydata([(-20, -20, 0), (20, -20, 0), (20, 20, 0), (-20, 20, 0)], [], [(0, 1, 2, 3)])
    add(floor, emission_material("floor", 12.0), (0, 0, 0))
    wall = bpy.data.meshes.new("wall")
    wall.from_pydata([(-20, 0, 0), (20, 0, 0), (20, 0, 12), (-20, 0, 12)], [], [(0, 1, 2, 3)])
    add(wall, emission_material("wall", 6.0), (0, 14, 0))
    for i, (x, y, s) in enumerate([(-2.0, 2.0, 1.0), (1.5, 0.5, 0.8), (0.5, 5.0, 1.5)]):
        v = [(a * s, b * s, c * s) for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)]
        faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
        box = bpy.data.meshes.new(f"box{i}")
        box.from_pydata(v, [], faces)
        add(box, emission_material(f"box{i}", 3.0 + i), (x, y, s))

    data = bpy.data.cameras.new("truth")
    data.lens, data.sensor_width, data.sensor_fit = LENS, SENSOR, "HORIZONTAL"
    camera = bpy.data.objects.new("truth", data)
    scene.collection.objects.link(camera)
    scene.camera = camera
    target = bpy.data.objects.new("target", None)
    target.location = (0.0, 3.0, 0.8)
    scene.collection.objects.link(target)
    camera.constraints.new("TRACK_TO").target = target
    for f in range(1, FRAMES + 1):
        t = (f - 1) / (FRAMES - 1)
        camera.location = (-2.5 + 2.5 * t, -7 + 0.5 * t, 2.2 + 0.3 * math.sin(3 * t))
        camera.keyframe_insert("location", frame=f)
    return scene, camera


@pytest.fixture(scope="module")
def solved(tmp_path_factory, addon):
    """(scene, true camera, clip, the camera_solve module) after a real track and solve."""
    folder = tmp_path_factory.mktemp("solve_plate")
    scene, camera = build_scene()
    window = bpy.context.window_manager.windows[0]
    # the other Blender tests work on the window's scene and first area: given back at the end
    previous_scene, area = window.scene, window.screen.areas[0]
    previous_type = area.type
    window.scene = scene
    for f in range(1, FRAMES + 1):
        scene.frame_set(f)
        scene.render.filepath = str(folder / f"plate.{FIRST + f - 1:04d}.png")
        bpy.ops.render.render(write_still=True, scene=scene.name)

    clip = bpy.data.movieclips.load(str(folder / f"plate.{FIRST:04d}.png"))
    tracking = clip.tracking
    tracking.camera.sensor_width, tracking.camera.focal_length = SENSOR, LENS
    tracking.settings.use_keyframe_selection = True
    tracking.settings.default_pattern_size = 15
    tracking.settings.default_search_size = 71
    area.type = "CLIP_EDITOR"
    space = area.spaces.active
    space.clip = clip
    region = next(r for r in area.regions if r.type == "WINDOW")
    with bpy.context.temp_override(window=window, area=area, region=region, space_data=space):
        scene.frame_set(1)
        assert bpy.ops.clip.detect_features(threshold=0.02, min_distance=12, margin=10) == {
            "FINISHED"
        }
        assert bpy.ops.clip.track_markers(backwards=False, sequence=True) == {"FINISHED"}
        assert bpy.ops.clip.solve_camera() == {"FINISHED"}
        # the usual clean-up: drop short tracks and those the solve cannot explain, solve again
        bpy.ops.clip.clean_tracks(frames=5, error=0.5, action="DELETE_TRACK")
        assert bpy.ops.clip.solve_camera() == {"FINISHED"}
    assert tracking.reconstruction.is_valid, "Blender's solver found no solution"
    module = importlib.import_module(f"{ADDON_MODULE}.camera_solve")
    yield {
        "scene": scene,
        "camera": camera,
        "clip": clip,
        "module": module,
        "override": dict(window=window, area=area, region=region, space_data=space),
    }
    area.type = previous_type
    window.scene = previous_scene


def true_depth(scene, camera, frame: int, x: float, y: float) -> float:
    """Planar depth of the first surface under plate pixel (x, y) on scene frame ``frame``."""
    scene.frame_set(frame)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    matrix = camera.evaluated_get(depsgraph).matrix_world
    half_w = 0.5 * SENSOR / LENS
    half_h = half_w * SIZE[1] / SIZE[0]
    local = Vector(((x / SIZE[0] - 0.5) * 2 * half_w, (0.5 - y / SIZE[1]) * 2 * half_h, -1.0))
    origin = matrix.translation
    direction = (matrix.to_3x3() @ local).normalized()
    hit, location, *_ = scene.ray_cast(depsgraph, origin, direction)
    assert hit
    return -(matrix.inverted() @ location).z


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def test_solve_anchors_match_true_depth_up_to_the_solve_scale(solved):
    scene, camera, clip, module = (solved[k] for k in ("scene", "camera", "clip", "module"))
    anchors = module.solve_anchors(clip, scene)
    rows = anchors.rows
    tracks = {row[5] for row in rows}
    assert len(rows) > 40 and len(tracks) >= 8
    # a new scene is metric, but nobody set the solve's scale: its units are arbitrary, and
    # say so rather than "m" (issue 23)
    assert anchors.units == "scene units (solve not scaled)" and anchors.scale == 1.0
    assert {row[0] for row in rows} <= set(range(FIRST, FIRST + FRAMES))
    assert all(0 <= row[1] < SIZE[0] and 0 <= row[2] < SIZE[1] for row in rows)
    # the muted end markers the tracker leaves behind are not anchors
    enabled = sum(1 for t in clip.tracking.tracks if t.has_bundle for m in t.markers if not m.mute)
    assert len(rows) + anchors.skipped.get("no camera", 0) == enabled
    # features were detected on scene frame 1, which shows plate.1001.png
    assert min(row[0] for row in rows) == FIRST
    # a camera solve is right up to one scale: after it, every anchor is near its true depth
    # (to this solve's own accuracy: short baseline, 320 px frames, some tracks on edges)
    ratios = [true_depth(scene, camera, r[0] - FIRST + 1, r[1], r[2]) / r[3] for r in rows[::3]]
    scale = median(ratios)
    errors = sorted(abs(r / scale - 1) for r in ratios)
    assert errors[len(errors) // 2] < 0.03
    assert errors[int(0.9 * len(errors))] < 0.15
    # weights: the best-triangulated track has 1; the wall, far away and seen over the same
    # short baseline, is less certain than the boxes and floor in front of it
    weights = [row[4] for row in rows]
    assert max(weights) == 1.0 and min(weights) >= module.MIN_WEIGHT
    depth_of = [(r[3] * scale, r[4]) for r in rows]
    far = median([w for z, w in depth_of if z > 15])
    near = median([w for z, w in depth_of if z < 12])
    assert far < 0.5 * near


def test_set_scale_camera_object_and_unit_scale_are_honoured(solved, tmp_path):
    scene, camera, clip, module = (solved[k] for k in ("scene", "camera", "clip", "module"))
    tracking = clip.tracking
    # a scene camera driven by the solve, scaled by Blender's own Set Scale (two tracks 3 m
    # apart); how close that is to the truth depends on the solve, the bookkeeping must be exact
    data = bpy.data.cameras.new("solved")
    solved_camera = bpy.data.objects.new("solved", data)
    scene.collection.objects.link(solved_camera)
    constraint = solved_camera.constraints.new("CAMERA_SOLVER")
    constraint.use_active_clip = True
    scene.active_clip = clip
    first, second = [t for t in tracking.tracks if t.has_bundle][:2]
    distance = 3.0
    for track in tracking.tracks:
        track.select = track in (first, second)
    with bpy.context.temp_override(scene=scene, **solved["override"]):
        assert bpy.ops.clip.set_scale(distance=distance) == {"FINISHED"}
    bpy.context.view_layer.update()
    scaled = module.solve_anchors(clip, scene)
    assert scaled.units == "m"  # scaled: now the scene's metres
    # Set Scale scaled the camera object so that the two bundles are `distance` apart ...
    assert scaled.scale == pytest.approx(distance / (first.bundle - second.bundle).length, rel=1e-5)
    assert scaled.scale == pytest.approx(solved_camera.scale[0], rel=1e-5)
    # ... and every anchor's depth by the same factor
    solved_camera.constraints.remove(constraint)
    unscaled = module.solve_anchors(clip, scene)
    assert unscaled.scale == 1.0
    for a, b in zip(unscaled.rows, scaled.rows, strict=True):
        assert b[3] == pytest.approx(a[3] * scaled.scale, rel=1e-5)

    # the unit scale (metres = Blender units x scale_length) and the object solve scale
    scene.unit_settings.scale_length = 0.25
    tracking.objects.active.scale = 2.0
    try:
        both = module.solve_anchors(clip, scene)
        scene.unit_settings.system = "NONE"
        plain = module.solve_anchors(clip, scene)
    finally:
        tracking.objects.active.scale = 1.0
        scene.unit_settings.scale_length = 1.0
        scene.unit_settings.system = "METRIC"
    assert both.units == "m" and plain.units == "blender units"
    assert plain.rows[0][3] == pytest.approx(unscaled.rows[0][3] * 2.0, rel=1e-6)
    for a, b in zip(unscaled.rows, both.rows, strict=True):
        assert a[:3] == b[:3] and b[3] == pytest.approx(a[3] * 0.25 * 2.0, rel=1e-6)

    # the CSV is what the engine reads: same anchors, units, track names
    path = module.export_solve_anchors(clip, str(tmp_path / "solve.csv"), scene)
    assert path.rows == unscaled.rows
    code = (
        "import sys\n"
        "from rollingdepth_core.anchors import load_anchors\n"
        "a = load_anchors(sys.argv[1])\n"
        "print(len(a), int(a.frame.min()), float(a.depth[0]), a.track[0], a.units)\n"
    )
    count, first_frame, depth, track, units = engine_python(
        code, str(tmp_path / "solve.csv")
    ).split(maxsplit=4)
    assert int(count) == len(unscaled.rows) and units.strip() == unscaled.units
    assert int(first_frame) == unscaled.rows[0][0] and float(depth) == unscaled.rows[0][3]
    assert track == unscaled.rows[0][5]


def test_refuses_a_clip_without_a_solve(solved, tmp_path):
    module = solved["module"]
    clip = bpy.data.movieclips.load(bpy.path.abspath(solved["clip"].filepath))
    assert clip != solved["clip"]
    with pytest.raises(module.CameraSolveError, match="no valid camera solve"):
        module.export_solve_anchors(clip, str(tmp_path / "none.csv"), solved["scene"])
    assert not (tmp_path / "none.csv").exists()


def test_refuses_a_tripod_solve(solved):
    module, clip = solved["module"], solved["clip"]
    clip.tracking.settings.use_tripod_solver = True
    try:
        with pytest.raises(module.CameraSolveError, match="tripod solve: it has no depth"):
            module.solve_anchors(clip, solved["scene"])
    finally:
        clip.tracking.settings.use_tripod_solver = False


def test_the_dialog_anchors_a_strip_to_its_solved_clip(solved, tmp_path):
    """Anchor to Camera Solve: the strip's footage has a solved Movie Clip, so the engine gets
    its anchors (`--anchors`) and writes depth as distance."""
    import os
    import sys
    import types
    from pathlib import Path

    from .support import add_image_strip

    operators = importlib.import_module(f"{ADDON_MODULE}.operators")
    engine = importlib.import_module(f"{ADDON_MODULE}.engine")
    scene = solved["scene"]
    folder = os.path.dirname(bpy.path.abspath(solved["clip"].filepath))
    names = [f"plate.{FIRST + f:04d}.png" for f in range(FRAMES)]
    if scene.sequence_editor is None:
        scene.sequence_editor_create()
    strip = add_image_strip(scene, Path(folder), names, 1, 1)
    cls = operators.SEQUENCER_OT_rollingdepth_estimate
    defaults = dict(
        checkpoint="", preset="fast", dilations="", refine_steps=-1, resolution=-1,
        depth_mode="normalized", near=1.0, far=100.0, half=False, restore_res=True,
        upsample_edges=True, strip_colorspace=False, holdout_strip="", anchor_solve=True,
        output_dir=str(tmp_path), defocus=False, replace=True,
    )  # fmt: skip
    stand_in = types.SimpleNamespace(**defaults, report=lambda *a: None)
    for method in ("_holdout", "_solve_anchors"):
        setattr(stand_in, method, types.MethodType(getattr(cls, method), stand_in))
    assert bpy.context.scene == scene  # the fixture made it the window's scene
    settings = cls._settings(stand_in, bpy.context, strip)
    argv = engine.run_argv(sys.executable, "p", "o", None, settings.options)
    assert "--depth-mode" in argv and argv[argv.index("--depth-mode") + 1] == "depth"
    # the anchors go with the job, which writes the CSV into its own work folder (so that it
    # leaves with the run, issue 23): nothing is written yet
    assert "--anchors" not in argv
    jobs = importlib.import_module(f"{ADDON_MODULE}.jobs")
    job = jobs.DepthJob(scene, strip, settings)
    path = os.path.join(str(tmp_path), "anchors.csv")
    solve = importlib.import_module(f"{ADDON_MODULE}.camera_solve")
    solve.write_anchors_csv(path, settings.anchors)
    assert job.settings.anchors.units == "scene units (solve not scaled)"
    with open(path) as fh:
        header, *rows = [line for line in fh.read().splitlines() if not line.startswith("#")]
    assert header.startswith("frame,x,y,depth")
    assert len(rows) > 30  # every track with a bundle, on every solved frame
    frames = {int(r.split(",")[0]) for r in rows if not r.startswith("#")}
    assert frames <= set(range(FIRST, FIRST + FRAMES))
