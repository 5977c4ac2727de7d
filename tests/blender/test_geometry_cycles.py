"""Depth + camera -> P and N against Cycles' own passes (issue 31's proof of the geometry).

Real bpy renders a small scene (a ground plane, two boxes, a moving camera with a known lens
and sensor) with its Depth, Position and Normal passes (``filter_width = 0.01``: every pixel
sampled at its centre), exports the camera as USD (Blender's exporter) and as a Nuke ``.chan``
(ZXY rotations, vertical field of view), and the engine reads the depth and each camera file
back and turns them into P and N with :mod:`rollingdepth_core.geometry`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import bpy
import pytest
from mathutils import Vector

from .support import engine_python

SIZE = (48, 64)  # height, width
FRAMES = (1, 2, 3)
SCENE_SIZE = 20.0  # the ground plane's side: "P within 1e-4 of the scene's size"
LENS, SENSOR = 30.0, 36.0


def _camera_pose(frame: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    location = (2 + 0.5 * frame, -9 + 0.3 * frame, 4 + 0.2 * frame)
    rotation = tuple(math.radians(a) for a in (68 - frame, 2 * frame, 15 + 3 * frame))
    return location, rotation


def _build_scene():
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 1
    scene.cycles.filter_width = 0.01
    scene.render.resolution_y, scene.render.resolution_x = SIZE
    scene.render.resolution_percentage = 100
    layer = scene.view_layers[0]
    layer.use_pass_z = layer.use_pass_position = layer.use_pass_normal = True
    bpy.ops.mesh.primitive_plane_add(size=SCENE_SIZE)
    bpy.ops.mesh.primitive_cube_add(size=2, location=(0, 0, 1))
    bpy.ops.mesh.primitive_cube_add(size=1.5, location=(3, 2, 0.75), rotation=(0, 0, 0.6))
    data = bpy.data.cameras.new("shot_cam")
    data.lens, data.sensor_width, data.sensor_fit = LENS, SENSOR, "HORIZONTAL"
    camera = bpy.data.objects.new("shot_cam", data)
    scene.collection.objects.link(camera)
    scene.camera = camera
    scene.frame_start, scene.frame_end = FRAMES[0], FRAMES[-1]
    for frame in FRAMES:
        camera.location, camera.rotation_euler = _camera_pose(frame)
        camera.keyframe_insert("location", frame=frame)
        camera.keyframe_insert("rotation_euler", frame=frame)
    return scene, camera


def _render_passes(scene, folder: Path) -> None:
    """Depth, Position and Normal of every frame into ``passes.####.exr`` (one part each)."""
    tree = bpy.data.node_groups.new("passes", "CompositorNodeTree")
    scene.compositing_node_group = tree
    layers = tree.nodes.new("CompositorNodeRLayers")
    out = tree.nodes.new("CompositorNodeOutputFile")
    out.directory = str(folder)
    out.format.file_format = "OPEN_EXR_MULTILAYER"
    for kind, name in (("FLOAT", "Depth"), ("VECTOR", "Position"), ("VECTOR", "Normal")):
        out.file_output_items.new(kind, name)
        tree.links.new(layers.outputs[name], out.inputs[name])
    for frame in FRAMES:
        scene.frame_set(frame)
        out.file_name = f"passes.{frame:04d}"
        bpy.ops.render.render()


def write_chan(camera, scene, path: Path) -> None:
    """Nuke's .chan: frame, translate, ZXY rotation (degrees), vertical field of view."""
    height, width = SIZE
    vertical_sensor = camera.data.sensor_width * height / width  # sensor fit: horizontal
    vfov = math.degrees(2 * math.atan(vertical_sensor / 2 / camera.data.lens))
    lines = []
    for frame in FRAMES:
        scene.frame_set(frame)
        matrix = camera.matrix_world
        euler = matrix.to_3x3().normalized().to_euler("ZXY")
        values = [*matrix.translation, *(math.degrees(a) for a in euler), vfov]
        lines.append(f"{frame} " + " ".join(f"{v:.10f}" for v in values))
    path.write_text("\n".join(lines) + "\n")


COMPARE = """
import json, sys
import numpy as np
import OpenImageIO as oiio
from rollingdepth_core.cameras import CameraRequest, load_camera
from rollingdepth_core.geometry import depth_normals, depth_to_position, project_points

folder, camera_file, frames = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
h, w = json.loads(sys.argv[4])
scene_size = float(sys.argv[5])
track = load_camera(CameraRequest(file=camera_file), frames, (h, w))

def parts(path):
    inp = oiio.ImageInput.open(path)
    found, index = {}, 0
    while inp.seek_subimage(index, 0):
        spec = inp.spec()
        pixels = np.asarray(inp.read_image("float")).reshape(spec.height, spec.width, -1)
        found[spec.channelnames[0].split(".")[0]] = pixels
        index += 1
    inp.close()
    return found

result = {"p_err": 0.0, "n_err_flat": 0.0, "n_flat_pixels": 0, "n_flat_valid": 0,
          "reproject_px": 0.0, "n_err_valid_p99": 0.0, "surface_pixels": 0}
for frame in frames:
    found = parts(f"{folder}/passes.{frame:04d}.exr")
    depth = found["Depth"][..., 0]
    position, normal = found["Position"], found["Normal"]
    camera = track.at(frame)
    surface = depth < 1e9  # Cycles gives the background 1e10
    P = depth_to_position(depth, camera)
    N, valid = depth_normals(depth, camera)
    result["surface_pixels"] += int(surface.sum())
    result["p_err"] = max(result["p_err"], float(np.abs(P - position)[surface].max()))
    # flat faces: the pixel's 3x3 neighbourhood is one plane in Cycles' passes (same
    # normal, every neighbour's position on the pixel's plane)
    flat = surface.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            shifted_n = np.roll(normal, (dy, dx), (0, 1))
            shifted_p = np.roll(position, (dy, dx), (0, 1))
            shifted_s = np.roll(surface, (dy, dx), (0, 1))
            same_normal = (shifted_n * normal).sum(-1) > np.cos(np.radians(0.01))
            on_plane = np.abs(((shifted_p - position) * normal).sum(-1)) < 1e-4 * scene_size
            flat &= shifted_s & same_normal & on_plane
    flat[[0, -1], :] = False
    flat[:, [0, -1]] = False
    cosine = np.clip((N * normal).sum(-1), -1, 1)
    angle = np.degrees(np.arccos(cosine))
    result["n_flat_pixels"] += int(flat.sum())
    result["n_flat_valid"] += int((flat & valid).sum())
    result["n_err_flat"] = max(result["n_err_flat"], float(angle[flat & valid].max()))
    ok = valid & surface
    result["n_err_valid_p99"] = max(result["n_err_valid_p99"], float(np.percentile(angle[ok], 99)))
    pixels, z = project_points(P[surface], camera, (h, w))
    ys, xs = np.nonzero(surface)
    centres = np.stack([xs + 0.5, ys + 0.5], -1)
    result["reproject_px"] = max(result["reproject_px"], float(np.abs(pixels - centres).max()))
    result["depth_roundtrip"] = float(np.abs(z - depth[surface]).max() / depth[surface].max())
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def cycles_shot(tmp_path_factory, engine_ready):
    folder = tmp_path_factory.mktemp("cycles")
    scene, camera = _build_scene()
    _render_passes(scene, folder)
    bpy.ops.wm.usd_export(
        filepath=str(folder / "camera.usda"), export_animation=True, selected_objects_only=False
    )
    write_chan(camera, scene, folder / "camera.chan")
    return folder


def _compare(folder: Path, camera_file: str) -> dict:
    out = engine_python(
        COMPARE,
        str(folder),
        str(folder / camera_file),
        json.dumps(FRAMES),
        json.dumps(SIZE),
        str(SCENE_SIZE),
    )
    result = json.loads(out.strip().splitlines()[-1])
    print(camera_file, result)
    return result


@pytest.mark.parametrize("camera_file", ["camera.usda", "camera.chan"])
def test_position_and_normals_match_cycles_passes(cycles_shot, camera_file):
    result = _compare(cycles_shot, camera_file)
    assert result["surface_pixels"] > 0.5 * len(FRAMES) * SIZE[0] * SIZE[1]
    # P within 1e-4 of the scene's size on every surface pixel
    assert result["p_err"] <= 1e-4 * SCENE_SIZE, result
    # N within 1 degree on flat faces, and (almost) every flat-face pixel has a normal
    assert result["n_flat_pixels"] > 1000, result
    assert result["n_err_flat"] <= 1.0, result
    assert result["n_flat_valid"] >= 0.98 * result["n_flat_pixels"], result  # 99.05 % measured
    # no smearing at depth edges: the normals that are given are right nearly everywhere
    assert result["n_err_valid_p99"] <= 2.0, result
    # P projected back through the same camera lands on its own pixel's centre
    assert result["reproject_px"] < 1e-3, result
    assert result["depth_roundtrip"] < 1e-5, result


WRITE_PASSES = """
import sys
import numpy as np
from rollingdepth_core.cameras import CameraRequest, load_camera
from rollingdepth_core.exr import write_depth_exr
from rollingdepth_core.passes import FrameGeometry

h, w = 48, 64
track = load_camera(CameraRequest(focal_length=30.0), [1], (h, w))
yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
z = (3.0 + 0.1 * yy + 0.02 * xx).astype(np.float32)
z[10:20, 10:30] = 2.0
channels = FrameGeometry(track, ("Z", "P", "N")).channels(1, z, "depth")
write_depth_exr(sys.argv[1], z, extra_channels=channels)
"""

READ_BACK = """
import json, sys
import numpy as np
import OpenImageIO as oiio
from rollingdepth_core.exr import read_exr

ours, _ = read_exr(sys.argv[1])
inp = oiio.ImageInput.open(sys.argv[2])
worst, index = {}, 0
while inp.seek_subimage(index, 0):
    spec = inp.spec()
    pixels = np.asarray(inp.read_image("float")).reshape(spec.height, spec.width, -1)
    name = spec.channelnames[0].split(".")[0]
    names = {"P": ["P.X", "P.Y", "P.Z"], "N": ["N.X", "N.Y", "N.Z"], "Depth": ["Z"]}[name]
    expected = np.stack([ours[n] for n in names], -1)
    worst[name] = float(np.abs(pixels - expected).max())
    index += 1
print(json.dumps(worst))
"""


def test_blender_reads_p_and_n_as_passes_without_a_shuffle(tmp_path, engine_ready):
    """The engine's EXR (Z, P.X/Y/Z, N.X/Y/Z) opens in Blender's compositor as its own Depth,
    P and N vector passes, values unchanged (written back out through a File Output)."""
    from .support import engine_python

    ours = tmp_path / "depth.0001.exr"
    engine_python(WRITE_PASSES, str(ours))
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 1
    scene.render.resolution_y, scene.render.resolution_x = SIZE
    scene.render.resolution_percentage = 100
    data = bpy.data.cameras.new("cam")
    scene.camera = bpy.data.objects.new("cam", data)
    scene.collection.objects.link(scene.camera)
    tree = bpy.data.node_groups.new("read", "CompositorNodeTree")
    scene.compositing_node_group = tree
    image = tree.nodes.new("CompositorNodeImage")
    image.image = bpy.data.images.load(str(ours))
    outputs = {o.name: o.type for o in image.outputs if o.enabled}
    assert outputs.get("P") == "VECTOR" and outputs.get("N") == "VECTOR", outputs
    assert "Depth" in outputs, outputs
    out = tree.nodes.new("CompositorNodeOutputFile")
    out.directory, out.file_name = str(tmp_path), "back"
    out.format.file_format = "OPEN_EXR_MULTILAYER"
    for kind, name in (("VECTOR", "P"), ("VECTOR", "N"), ("FLOAT", "Depth")):
        out.file_output_items.new(kind, name)
        tree.links.new(image.outputs[name], out.inputs[name])
    bpy.ops.render.render()
    worst = json.loads(engine_python(READ_BACK, str(ours), str(tmp_path / "back.exr")).strip())
    assert set(worst) == {"P", "N", "Depth"} and max(worst.values()) == 0.0, worst


WRITE_POINTS = """
import sys
import numpy as np
import OpenImageIO as oiio
from rollingdepth_core.cameras import CameraRequest, load_camera
from rollingdepth_core.passes import FrameGeometry
from rollingdepth_core.points import PointCloud

folder, frames = sys.argv[1], [int(f) for f in sys.argv[2].split(",")]
track = load_camera(CameraRequest(file=f"{folder}/camera.usda"), frames, (48, 64))
cloud = PointCloud(budget=100_000)
geometry = FrameGeometry(track, ("Z", "P", "N"), cloud)
for frame in frames:
    inp = oiio.ImageInput.open(f"{folder}/passes.{frame:04d}.exr")  # part 0: Depth
    depth = np.asarray(inp.read_image("float")).reshape(48, 64)
    inp.close()
    geometry.channels(frame, np.minimum(depth, 1000.0), "depth")  # the sky as a far wall
cloud.save(f"{folder}/points.usda", track)
"""

NEAREST = """
import json, sys
import numpy as np
import OpenImageIO as oiio

folder, frame = sys.argv[1], int(sys.argv[2])
points = np.load(sys.argv[3])
inp = oiio.ImageInput.open(f"{folder}/passes.{frame:04d}.exr")
inp.seek_subimage(1, 0)  # Position
spec = inp.spec()
position = np.asarray(inp.read_image("float")).reshape(-1, 3)
inp.close()
distance = np.abs(points[:, None, :] - position[None]).max(-1).min(-1)
print(json.dumps({"max": float(distance.max()), "count": len(points)}))
"""


def test_points_import_into_blender_on_the_rendered_surfaces(cycles_shot, tmp_path):
    """The points stage (P from Cycles' depth and the USD camera) through Blender's own USD
    importer: the camera comes in animated with its lens, and every frame's points sit on the
    surfaces Cycles rendered (its Position pass) in Blender's world."""
    from mathutils import Euler, Matrix

    from .support import engine_python

    engine_python(WRITE_POINTS, str(cycles_shot), ",".join(str(f) for f in FRAMES))
    bpy.ops.wm.read_homefile(use_empty=True)
    assert bpy.ops.wm.usd_import(filepath=str(cycles_shot / "points.usda")) == {"FINISHED"}
    scene = bpy.context.scene
    cloud = next(o for o in scene.objects if o.type == "POINTCLOUD")
    camera = next(o for o in scene.objects if o.type == "CAMERA")
    assert camera.data.lens == pytest.approx(LENS, rel=1e-5)
    assert camera.data.sensor_width == pytest.approx(SENSOR, rel=1e-5)
    for frame in FRAMES:
        scene.frame_set(frame)
        location, rotation = _camera_pose(frame)
        expected = Matrix.LocRotScale(location, Euler(rotation, "XYZ"), None)
        error = max(abs(a - b) for ra, rb in zip(camera.matrix_world, expected, strict=True)
                    for a, b in zip(ra, rb, strict=True))  # fmt: skip
        assert error < 1e-4, (frame, error)
        data = cloud.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
        flat = [0.0] * (3 * len(data.attributes["position"].data))
        data.attributes["position"].data.foreach_get("vector", flat)
        radius = [0.0] * len(data.attributes["radius"].data)
        data.attributes["radius"].data.foreach_get("value", radius)
        world = cloud.matrix_world
        # the untrusted points (depth edges) are there, 0 wide: the count stays constant
        points = [world @ Vector(flat[3 * i : 3 * i + 3]) for i, r in enumerate(radius) if r > 0]
        near = [tuple(p) for p in points if (p - camera.matrix_world.translation).length < 100]
        path = tmp_path / f"points.{frame}.json"
        path.write_text(json.dumps(near))
        code = NEAREST.replace("np.load(sys.argv[3])", "np.array(json.load(open(sys.argv[3])))")
        result = json.loads(engine_python(code, str(cycles_shot), str(frame), str(path)).strip())
        print(f"frame {frame}: {result['count']} points, farthest from a rendered surface "
              f"{result['max']:.2e}")  # fmt: skip
        assert result["count"] > 1000 and result["max"] <= 1e-4 * SCENE_SIZE, result
