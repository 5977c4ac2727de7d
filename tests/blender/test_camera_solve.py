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
import os
import tempfile
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy")
from mathutils import Vector  # noqa: E402

from .support import (  # noqa: E402
    ADDON_MODULE,
    add_image_strip,
    engine_python,
    run_operator,
    select_only,
)
from .test_ui import _draw  # noqa: E402

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
        output_dir=str(tmp_path), defocus=False, replace=True, replace_other=False, anchors_file="",
        camera="NONE", write_passes=False, write_points=True,
    )  # fmt: skip
    stand_in = types.SimpleNamespace(**defaults, report=lambda *a: None)
    for method in ("_holdout", "_solve_anchors", "_anchors_file", "_camera"):
        setattr(stand_in, method, types.MethodType(getattr(cls, method), stand_in))
    stand_in._estimate_of = cls._estimate_of
    assert bpy.context.scene == scene  # the fixture made it the window's scene
    settings = cls._settings(stand_in, bpy.context, strip)
    argv = engine.run_argv(sys.executable, "p", "o", None, settings.options)
    assert "--depth-mode" in argv and argv[argv.index("--depth-mode") + 1] == "depth"
    # the anchors go with the job, which writes the CSV into its own temporary inputs folder
    # (so that it leaves with the run, issue 23): nothing is written yet
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


# ---------------------------------------------------------------------------- issue 23
# Anchor to Camera Solve end to end, on the solve above (one solve per session: a second one
# in the same Blender tracks differently): the real engine, then what the artist sees, the
# depth strip in the Sequencer and the Defocus render.
ANCHOR_TEMPS = "rollingdepth-inputs-"  # the run's temporary inputs folder (jobs.py)


def _temp_anchor_files() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith(ANCHOR_TEMPS)}


def _plate_strip(solve):
    scene = solve["scene"]
    if scene.sequence_editor is None:
        scene.sequence_editor_create()
    for strip in list(scene.sequence_editor.strips):
        scene.sequence_editor.strips.remove(strip)
    folder = Path(os.path.dirname(bpy.path.abspath(solve["clip"].filepath)))
    names = [f"plate.{FIRST + f:04d}.png" for f in range(FRAMES)]
    strip = add_image_strip(scene, folder, names, 1, 1)
    select_only(scene, strip)
    return scene, strip


def _model_consistent(anchors, plate_pattern: str, checkpoint: str, work: Path):
    """The solve's anchors (frames, positions, weights) with depths that agree with the
    model's own depth order: the tiny *random* model's depth is noise, which a real solve's
    depths contradict (the engine then refuses the fit, as it should). The depths are
    ``1 / (a d + b)`` of the model's relative inverse depth ``d`` at each anchor, spanning
    6.35 .. 8.77 scene units, the range of the run reported in issue 23."""
    from .support import FAST, engine_cli, engine_python

    engine_cli(plate_pattern, "-o", str(work), "--checkpoint", checkpoint, "--channel", "Y",
               "--restore-res", "--depth-mode", "inverse", *FAST,
               "--cache", str(work.parent / ".kept"))  # as the add-on runs it  # fmt: skip
    code = (
        "import json, sys\n"
        "from rollingdepth_core.exr import read_exr\n"
        "rows, folder = json.loads(sys.argv[1]), sys.argv[2]\n"
        "images, out = {}, []\n"
        "for frame, x, y in rows:\n"
        "    if frame not in images:\n"
        "        images[frame] = read_exr(f'{folder}/depth.{frame:04d}.exr')[0]['Y']\n"
        "    d = images[frame]\n"
        "    out.append(float(d[min(int(y), d.shape[0] - 1), min(int(x), d.shape[1] - 1)]))\n"
        "print(json.dumps(out))\n"
    )
    import json

    points = [(row[0], row[1], row[2]) for row in anchors.rows]
    d = json.loads(engine_python(code, json.dumps(points), str(work)))
    lo, hi = min(d), max(d)
    a = (1 / 6.35 - 1 / 8.77) / (hi - lo)
    b = 1 / 8.77 - a * lo
    rows = [(*row[:3], 1.0 / (a * v + b), *row[4:]) for row, v in zip(anchors.rows, d, strict=True)]
    from dataclasses import replace

    return replace(anchors, rows=rows)


@pytest.fixture(scope="module")
def anchored(solved, addon, media, tmp_path_factory):  # noqa: F811
    """The operator's own settings for Anchor to Camera Solve + Defocus, run as the operator
    runs them (a DepthBatch: the real engine, the depth strip, the Defocus scene)."""
    import types
    from dataclasses import replace

    from .conftest import point_at_engine

    point_at_engine(media["checkpoint"])
    scene, strip = _plate_strip(solved)
    assert bpy.context.scene == scene
    # the plate is rendered; from here on the view a new scene shows (the Defocus scene
    # takes it over), as an artist sees it
    scene.view_settings.view_transform = "AgX"
    temps = _temp_anchor_files()
    output = tmp_path_factory.mktemp("anchored_out")
    operators = importlib.import_module(f"{ADDON_MODULE}.operators")
    jobs = importlib.import_module(f"{ADDON_MODULE}.jobs")
    cls = operators.SEQUENCER_OT_rollingdepth_estimate
    dialog = dict(
        checkpoint="", preset="fast", dilations="1 3", refine_steps=-1, resolution=64,
        depth_mode="normalized", near=1.0, far=100.0, half=False, restore_res=True,
        upsample_edges=True, strip_colorspace=False, holdout_strip="", anchor_solve=True,
        output_dir=str(output), defocus=True, replace=True, replace_other=False, anchors_file="",
        camera="NONE", write_passes=False, write_points=True,
    )  # fmt: skip
    stand_in = types.SimpleNamespace(**dialog, report=lambda *a: None)
    for method in ("_holdout", "_solve_anchors", "_anchors_file", "_camera"):
        setattr(stand_in, method, types.MethodType(getattr(cls, method), stand_in))
    stand_in._estimate_of = cls._estimate_of
    settings = cls._settings(stand_in, bpy.context, strip)
    folder = os.path.dirname(bpy.path.abspath(solved["clip"].filepath))
    anchors = _model_consistent(
        settings.anchors,
        os.path.join(folder, "plate.####.png"),
        media["checkpoint"],
        tmp_path_factory.mktemp("model_depth"),
    )
    batch = jobs.DepthBatch(scene, [strip], [replace(settings, anchors=anchors)]).start()
    batch.run_blocking(timeout=600)
    assert batch.state == jobs.FINISHED, batch.error
    return {
        "result": {"FINISHED"},
        "scene": scene,
        "source": strip,
        "depth": scene.sequence_editor.strips[f"{strip.name} depth"],
        "output": output,
        "temps": temps,
        "defocus": bpy.data.scenes[f"{strip.name} Defocus"],
    }


def _render(scene, path: Path, frame: int, mute=()) -> list[float]:
    """Render ``frame`` of ``scene`` to a PNG; its red channel."""
    for item in mute:
        item.mute = True
    try:
        scene.frame_set(frame)
        scene.render.image_settings.file_format = "PNG"
        scene.render.filepath = str(path)
        bpy.ops.render.render(write_still=True, scene=scene.name)
    finally:
        for item in mute:
            item.mute = False
    image = bpy.data.images.load(str(path))
    red = list(image.pixels)[0::4]
    bpy.data.images.remove(image)
    return red


def test_anchored_defocus_blurs_the_plate(anchored, tmp_path):
    """The compositor must not map scene-unit depth through the dialog's Near/Far (1, 100):
    that left about 0.2 px of blur, a render identical to the sharp one."""
    defocus_scene = anchored["defocus"]
    compositing = importlib.import_module(f"{ADDON_MODULE}.compositing")
    focus, defocus = compositing.defocus_controls(defocus_scene)
    frame = defocus_scene.frame_start + 3
    sharp = _render(defocus_scene, tmp_path / "sharp.png", frame, mute=[defocus])
    blurred = _render(defocus_scene, tmp_path / "defocus.png", frame)
    assert sum(sharp) / len(sharp) > 0.05, "no plate arrived in the compositor"
    changed = [abs(a - b) for a, b in zip(sharp, blurred, strict=True)]
    share = sum(c > 2 / 255 for c in changed) / len(changed)
    mean = sum(changed) / len(changed)
    print(f"anchored Defocus: {share:.1%} of pixels changed, mean |change| {mean:.4f}")
    # the old mapping gave at most ~0.3 px of blur here (nearness 0.105..0.149 of 0..1):
    # identical renders. Now the farthest depth from focus gets 2 % of the width (6 px)
    assert share > 0.03 and mean > 0.002, f"{share:.1%} changed, mean {mean:.4f}: looks sharp"
    # a smaller F-stop blurs more, as on a lens (the radius is K / N |1/Z - 1/S|)
    fields = compositing.defocus_fields(defocus_scene)
    f_stop = fields[1][0]
    f_stop.default_value = compositing.DEFAULT_F_STOP / 2
    try:
        wider = _render(defocus_scene, tmp_path / "wide.png", frame)
    finally:
        f_stop.default_value = compositing.DEFAULT_F_STOP
    wide_mean = sum(abs(a - b) for a, b in zip(sharp, wider, strict=True)) / len(sharp)
    assert wide_mean > 1.3 * mean
    _keep_screenshot(tmp_path / "sharp.png", "blender_anchored_sharp.png")
    _keep_screenshot(tmp_path / "defocus.png", "blender_anchored_defocus.png")


def _keep_screenshot(path: Path, name: str) -> None:
    """Copy a render to $RD_SCREENSHOT_DIR (the README's pictures), when set."""
    if os.environ.get("RD_SCREENSHOT_DIR"):
        import shutil

        folder = Path(os.environ["RD_SCREENSHOT_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, folder / name)


def test_anchored_focus_is_a_distance_in_scene_units(anchored):
    """Focus starts on the depth under the frame centre (the camera's depth of field is off),
    in the run's units; the sidebar shows Focus in those units and an F-stop."""
    compositing = importlib.import_module(f"{ADDON_MODULE}.compositing")
    panels = importlib.import_module(f"{ADDON_MODULE}.panels")
    depth_strip = anchored["depth"]
    lo, hi = _value_range(anchored)
    focus, _ = compositing.defocus_controls(anchored["defocus"])
    assert lo <= focus.default_value <= hi and hi > 1.5  # distances, not a 0..1 nearness
    anchored["scene"].sequence_editor.active_strip = depth_strip
    layout = _draw(panels.SEQUENCER_PT_rollingdepth, bpy.context)
    labels = [kw.get("text") for name, _, kw in layout.log if name == "prop"]
    assert labels == ["Focus in scene units (solve not scaled)", "F-stop"]
    # a smaller F-stop blurs more, as on a lens: the radius is K / N |1/Z - 1/S|
    fields = compositing.defocus_fields(anchored["defocus"])
    assert fields[1][0].default_value == pytest.approx(compositing.DEFAULT_F_STOP)


def _value_range(anchored) -> tuple[float, float]:
    """(min, max) depth the engine wrote, from the first EXR's header (via the engine)."""
    from .support import engine_python

    first = sorted(anchored["output"].glob("depth.*.exr"))[0]
    code = (
        "import sys\n"
        "from rollingdepth_core.exr import read_exr\n"
        "_, meta = read_exr(sys.argv[1])\n"
        "print(meta['rollingdepth/value_min'], meta['rollingdepth/value_max'],"
        " meta['rollingdepth/anchors.units'])\n"
    )
    lo, hi, *units = engine_python(code, str(first)).split()
    assert " ".join(units) == "scene units (solve not scaled)"
    return float(lo), float(hi)


def test_anchored_depth_strip_shows_depth_in_the_sequencer(anchored, tmp_path):
    """Depth in scene units (6..9 here) rendered flat white: a compositor modifier maps the
    run's range to nearest white .. farthest black, the files keep the distances."""
    scene, source = anchored["scene"], anchored["source"]
    red = _render(scene, tmp_path / "strip.png", 5, mute=[source])
    white = sum(v >= 254 / 255 for v in red) / len(red)
    assert max(red) - min(red) > 0.3, "the anchored depth strip renders flat"
    assert white < 0.3, f"{white:.0%} of the anchored depth strip is clipped white"
    _keep_screenshot(tmp_path / "strip.png", "blender_anchored_depth_strip.png")


def test_anchored_run_leaves_no_temporary_anchors_file(anchored):
    assert anchored["result"] == {"FINISHED"}
    assert _temp_anchor_files() <= anchored["temps"]
    names = sorted(p.name for p in anchored["output"].iterdir())
    assert not [n for n in names if n.startswith(".")], names  # no work folder left
    assert "depth_anchors.json" in names  # the fit's report, kept with the EXRs


def test_a_failed_anchored_run_leaves_no_anchors_file(anchored, prefs, tmp_path):
    _plate_strip_again = _plate_strip  # same plate, broken weights
    scene, strip = _plate_strip_again({"scene": anchored["scene"], "clip": _clip(anchored)})
    before = _temp_anchor_files()
    prefs.checkpoint = str(tmp_path / "no-weights")
    with pytest.raises(RuntimeError, match="The model's weights are not there"):
        run_operator(output_dir=str(tmp_path / "out"), anchor_solve=True)
    assert _temp_anchor_files() <= before
    assert not (tmp_path / "out").exists()


def _clip(anchored):
    return next(c for c in bpy.data.movieclips if c.tracking.reconstruction.is_valid)


def test_the_dialog_says_what_anchoring_writes(anchored):
    operators = importlib.import_module(f"{ADDON_MODULE}.operators")
    # a fresh plate strip: an earlier test may have replaced the strips (the fixture's
    # strip is then freed, and reading its name reads freed memory)
    _plate_strip({"scene": anchored["scene"], "clip": _clip(anchored)})
    dialog = dict(depth_mode="normalized", output_dir="/x", restore_res=True, holdout_strip="")
    layout = _draw(operators.SEQUENCER_OT_rollingdepth_estimate, bpy.context,
                   anchor_solve=True, **dialog)  # fmt: skip
    text = " ".join(layout.texts("label"))
    assert "Shows as depth in the Sequencer" not in text
    assert "Anchors make the depth a distance in their units" in text


# ---------------------------------------------------------------------------- issue 31
def test_a_solved_shot_opens_in_3d_on_its_plate(solved, media, tmp_path):
    """The dialog's Camera on a solved shot: the camera a Camera Solver constraint drives (as
    Setup Tracking Scene makes it), with the solve's anchors; Build Shot in 3D then renders,
    through that camera, the points and the plate's depth mesh on the plate's own pixels."""
    import types
    from dataclasses import replace

    import numpy as np

    from .conftest import point_at_engine

    point_at_engine(media["checkpoint"])
    scene, strip = _plate_strip(solved)
    clip = solved["clip"]
    data = bpy.data.cameras.new("solved")
    data.lens, data.sensor_width, data.sensor_fit = LENS, SENSOR, "HORIZONTAL"
    camera = bpy.data.objects.new("solved", data)
    scene.collection.objects.link(camera)
    constraint = camera.constraints.new("CAMERA_SOLVER")
    constraint.use_active_clip, constraint.clip = False, clip
    previous, scene.camera = scene.camera, camera
    try:
        operators = importlib.import_module(f"{ADDON_MODULE}.operators")
        jobs = importlib.import_module(f"{ADDON_MODULE}.jobs")
        cls = operators.SEQUENCER_OT_rollingdepth_estimate
        dialog = dict(
            checkpoint="", preset="fast", dilations="1 3", refine_steps=-1, resolution=64,
            depth_mode="normalized", near=1.0, far=100.0, half=False, restore_res=True,
            upsample_edges=True, strip_colorspace=False, holdout_strip="", anchor_solve=True,
            output_dir=str(tmp_path / "out"), defocus=False, replace=True, replace_other=False,
            anchors_file="", camera="SCENE", write_passes=False, write_points=True,
        )  # fmt: skip
        stand_in = types.SimpleNamespace(**dialog, report=lambda *a: None)
        for method in ("_holdout", "_solve_anchors", "_anchors_file", "_camera"):
            setattr(stand_in, method, types.MethodType(getattr(cls, method), stand_in))
        stand_in._estimate_of = cls._estimate_of
        settings = cls._settings(stand_in, bpy.context, strip)
        folder = os.path.dirname(bpy.path.abspath(clip.filepath))
        anchors = _model_consistent(settings.anchors, os.path.join(folder, "plate.####.png"),
                                    media["checkpoint"], tmp_path / "model")  # fmt: skip
        batch = jobs.DepthBatch(scene, [strip], [replace(settings, anchors=anchors)]).start()
        batch.run_blocking(timeout=600)
        assert batch.state == jobs.FINISHED, batch.error
        depth = scene.sequence_editor.strips[f"{strip.name} depth"]
        select_only(scene, depth)
        assert bpy.ops.sequencer.rollingdepth_build_shot() == {"FINISHED"}
    finally:
        scene.camera = previous
    shot = bpy.data.scenes[f"{depth.name} 3D"]
    shot.render.engine = "CYCLES"
    shot.cycles.samples = 1
    shot.render.image_settings.file_format = "PNG"
    shot.render.image_settings.color_mode = "RGBA"
    found = {}
    for kind, hide in (("points", "MESH"), ("mesh", "POINTCLOUD")):
        for ob in shot.objects:
            ob.hide_render = ob.type == hide
        for number in (FIRST, FIRST + FRAMES - 1):
            shot.frame_set(number)
            path = tmp_path / f"{kind}.{number}.png"
            shot.render.filepath = str(path)
            with bpy.context.temp_override(scene=shot):
                bpy.ops.render.render(write_still=True)
            render = _rgba(path)
            plate = _rgba(Path(folder) / f"plate.{number:04d}.png")[..., :3]
            covered = render[..., 3] > 0.99
            error = float(np.median(np.abs(render[..., :3] - plate)[covered]))
            found[(kind, number)] = (round(float(covered.mean()), 3), round(error, 3))
            if number == FIRST + FRAMES - 1:
                side = np.concatenate([plate, render[..., :3]], axis=1)
                _keep_screenshot(_save_rgb(side, tmp_path / f"{kind}_side.png"),
                                 f"solved_shot_{kind}.png")  # fmt: skip
    print(f"solved shot through its camera (share covered, median |render - plate|): {found}")
    for (kind, _), (share, error) in found.items():
        assert share > (0.3 if kind == "points" else 0.99), found
        assert error < 0.01, found


def _rgba(path: Path):
    import numpy as np

    image = bpy.data.images.load(str(path))
    width, height = image.size
    pixels = np.array(image.pixels[:], np.float32).reshape(height, width, 4)[::-1]
    bpy.data.images.remove(image)
    return pixels


def _save_rgb(rgb, path: Path) -> Path:
    import numpy as np

    height, width = rgb.shape[:2]
    image = bpy.data.images.new("side", width, height)
    rgba = np.concatenate([rgb, np.ones((height, width, 1), np.float32)], -1)[::-1]
    image.pixels.foreach_set(rgba.reshape(-1))
    image.filepath_raw = str(path)
    image.file_format = "PNG"
    image.save()
    bpy.data.images.remove(image)
    return path
