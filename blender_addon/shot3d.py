"""Build Shot in 3D: a depth strip whose run wrote points (a camera and ``--points``) opens as
a 3D scene: the shot's camera, animated, and the plate's points, read from the USD the run
wrote beside its EXRs by Blender's own USD importer.

The scene is new (``<strip> 3D``), so the edit is left as it was; its frame range, frame rate
and resolution are the shot's, and the points show the plate's colours in a render through
the camera.

Optionally the plate goes onto a mesh built from its depth (2.5D projection): a grid with one
vertex per point of the points file (the engine's points are one per grid cell, row by row,
every frame), moved each frame onto the points by Geometry Nodes (Sample Index of the imported
point cloud, which Blender's importer animates), and textured with the plate through UVs at
each cell's pixel centre, so that through the camera it shows the plate, and from elsewhere
the plate's surfaces in depth; a ring of vertices round the grid continues the surface to
the frame's edges. The grid is one sheet: across a depth edge its faces stretch
from the near surface to the far one (seen from the camera they hold the plate's pixels
there; from the side they show as streaks), as projection set-ups usually are.
"""

from __future__ import annotations

import json
import os
import re

import bpy

from . import sequencer

POINT_SUFFIXES = (".usd", ".usda", ".usdc")
MANIFEST_SUFFIX = "_run.json"  # the engine's publisher names its manifest NAME_run.json


class ShotError(Exception):
    """Why a strip cannot be built in 3D, in words an artist reads."""


def points_file(strip) -> str:
    """The USD of points the run of ``strip`` (a depth strip) wrote, from its manifest."""
    return _run_of(strip)[0]


def _run_of(strip) -> tuple[str, dict]:
    """The points file of the run of ``strip`` and the run's manifest."""
    if strip is None or strip.type != "IMAGE" or sequencer.SOURCE_KEY not in strip:
        raise ShotError("Select a depth strip made by RollingDepth.")
    folder = os.path.normpath(bpy.path.abspath(strip.directory, library=strip.id_data.library))
    first = strip.elements[0].filename if len(strip.elements) else ""
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
        if not name.endswith(MANIFEST_SUFFIX):
            continue
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as handle:
                manifest = json.load(handle)
            files = manifest.get("files", [])
        except (OSError, ValueError, AttributeError):
            continue
        if first not in files:
            continue
        for file in files:
            path = os.path.join(folder, file)
            if file.lower().endswith(POINT_SUFFIXES) and os.path.isfile(path):
                return path, manifest
    raise ShotError(
        "This depth has no points: estimate it again with the shot's camera and points on."
    )


def build_shot(context, strip, mesh: bool = False):
    """A new scene with the shot's camera and points (and, with ``mesh``, the plate on a mesh
    built from its depth); returns it and a note on what was left out ("" when nothing)."""
    path, manifest = _run_of(strip)
    edit = sequencer.sequencer_scene(context)
    shot = bpy.data.scenes.new(f"{strip.name} 3D")
    shot.render.fps, shot.render.fps_base = edit.render.fps, edit.render.fps_base
    width, height = (strip.elements[0].orig_width, strip.elements[0].orig_height)
    if width and height:
        shot.render.resolution_x, shot.render.resolution_y = width, height
    else:
        shot.render.resolution_x = edit.render.resolution_x
        shot.render.resolution_y = edit.render.resolution_y
    shot.render.resolution_percentage = 100
    _show_the_plate_as_shot(shot)
    window = context.window or context.window_manager.windows[0]
    previous = window.scene
    window.scene = shot
    try:
        with context.temp_override(window=window, scene=shot):
            result = bpy.ops.wm.usd_import(filepath=path, set_frame_range=True)
    finally:
        window.scene = previous
    if result != {"FINISHED"}:
        bpy.data.scenes.remove(shot)
        raise ShotError("Blender could not read the points file the run wrote.")
    cameras = [o for o in shot.objects if o.type == "CAMERA"]
    if cameras:
        shot.camera = cameras[0]
    material = _point_material()
    clouds = [o for o in shot.objects if o.type == "POINTCLOUD"]
    for cloud in clouds:
        cloud.data.materials.clear()
        cloud.data.materials.append(material)
    note = ""
    if mesh and clouds:
        size = (strip.elements[0].orig_width, strip.elements[0].orig_height)
        try:
            plate_mesh(shot, clouds[0], size, manifest.get("source", ""))
        except ShotError as exc:
            note = str(exc)
    return shot, note


def grid_shape(count: int, size: tuple[int, int]) -> tuple[int, int, int]:
    """(rows, columns, step) of the engine's points grid: ``count`` points per frame over a
    depth of ``size`` (width, height), one per ``step`` x ``step`` cell, centred in it
    (rollingdepth_core/points.py: rows ``step // 2, step // 2 + step, ...``)."""
    width, height = size
    for step in range(1, max(width, height) + 1):
        rows = len(range(step // 2, height, step))
        cols = len(range(step // 2, width, step))
        if rows * cols == count:
            return rows, cols, step
    raise ShotError("The points file does not match this depth's size: the plate mesh is left out.")


def plate_mesh(shot, cloud, size: tuple[int, int], source: str):
    """The plate on a grid mesh that follows ``cloud`` (the imported points) every frame.

    The grid is the points' grid plus a ring round it, so that the mesh reaches the frame's
    edges: a ring vertex continues the surface outward from the border point ``a`` past its
    inner neighbour ``b`` by the share ``t`` of a cell that lies between ``a``'s pixel centre
    and the frame's edge (``P = Pa + tx (Pa - Pbx) + ty (Pa - Pby)``; 0 inside)."""
    graph = shot.view_layers[0].depsgraph
    count = len(cloud.evaluated_get(graph).data.points)
    rows, cols, step = grid_shape(count, size)
    image = _plate_image(source)
    width, height = size
    ys = [step // 2 + step * r + 0.5 for r in range(rows)]  # pixel centres of the points
    xs = [step // 2 + step * c + 0.5 for c in range(cols)]
    ring_rows, ring_cols = rows + 2, cols + 2

    def outward(k: int, n: int, centres: list[float], extent: int) -> tuple[int, int, float]:
        """(point, inner neighbour, share of a cell) along one axis for ring position k."""
        if k == 0 and n > 1:
            return 0, 1, centres[0] / step
        if k == n + 1 and n > 1:
            return n - 1, n - 2, (extent - centres[-1]) / step
        inside = min(max(k - 1, 0), n - 1)
        return inside, inside, 0.0

    def coordinate(k: int, n: int, centres: list[float], extent: int) -> float:
        return 0.0 if k == 0 else 1.0 if k == n + 1 else centres[k - 1] / extent

    a, bx, by, tx, ty, vertex_uv = [], [], [], [], [], []
    for i in range(ring_rows):
        r, r_in, t_r = outward(i, rows, ys, height)
        for j in range(ring_cols):
            c, c_in, t_c = outward(j, cols, xs, width)
            a.append(r * cols + c)
            bx.append(r * cols + c_in)
            by.append(r_in * cols + c)
            tx.append(t_c)
            ty.append(t_r)
            u = coordinate(j, cols, xs, width)
            v = 1.0 - coordinate(i, rows, ys, height)
            vertex_uv.append((u, v))
    mesh = bpy.data.meshes.new(f"{shot.name} plate")
    faces = [
        (i * ring_cols + j, (i + 1) * ring_cols + j, (i + 1) * ring_cols + j + 1,
         i * ring_cols + j + 1)
        for i in range(ring_rows - 1)
        for j in range(ring_cols - 1)
    ]  # counter-clockwise seen from the camera (rows go down the picture)  # fmt: skip
    mesh.from_pydata([(0.0, 0.0, 0.0)] * (ring_rows * ring_cols), [], faces)
    for name, kind, values in (("rd_a", "INT", a), ("rd_bx", "INT", bx), ("rd_by", "INT", by),
                               ("rd_tx", "FLOAT", tx), ("rd_ty", "FLOAT", ty)):  # fmt: skip
        mesh.attributes.new(name, kind, "POINT").data.foreach_set("value", values)
    uv = mesh.uv_layers.new(name="UVMap")
    loops = [0] * len(mesh.loops)
    mesh.loops.foreach_get("vertex_index", loops)
    uv.data.foreach_set("uv", [v for i in loops for v in vertex_uv[i]])
    mesh.materials.append(_plate_material(image, source))
    plate = bpy.data.objects.new(f"{shot.name} plate", mesh)
    shot.collection.objects.link(plate)
    modifier = plate.modifiers.new("Plate on depth", "NODES")
    modifier.node_group = _follow_points(cloud)
    return plate


def _follow_points(cloud):
    """Geometry Nodes: each vertex goes where its points of ``cloud`` are on the current
    frame (``rd_a``, and outward past ``rd_bx`` / ``rd_by`` by ``rd_tx`` / ``rd_ty``)."""
    tree = bpy.data.node_groups.new("RollingDepth plate on depth", "GeometryNodeTree")
    tree.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    tree.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    nodes, links = tree.nodes, tree.links
    given, result = nodes.new("NodeGroupInput"), nodes.new("NodeGroupOutput")
    info = nodes.new("GeometryNodeObjectInfo")
    info.transform_space = "RELATIVE"  # the points as placed in the scene, in the mesh's space
    info.inputs["Object"].default_value = cloud
    position = nodes.new("GeometryNodeInputPosition")

    def attribute(name: str, kind: str):
        node = nodes.new("GeometryNodeInputNamedAttribute")
        node.data_type = kind
        node.inputs["Name"].default_value = name
        return node.outputs["Attribute"]

    def point(index_name: str):
        sample = nodes.new("GeometryNodeSampleIndex")
        sample.data_type, sample.domain = "FLOAT_VECTOR", "POINT"
        links.new(info.outputs["Geometry"], sample.inputs["Geometry"])
        links.new(position.outputs[0], sample.inputs["Value"])
        links.new(attribute(index_name, "INT"), sample.inputs["Index"])
        return sample.outputs[0]

    def math(operation: str, first, second):
        node = nodes.new("ShaderNodeVectorMath")
        node.operation = operation
        links.new(first, node.inputs[0])
        links.new(second, node.inputs[3 if operation == "SCALE" else 1])
        return node.outputs[0]

    here = point("rd_a")
    across = math("SCALE", math("SUBTRACT", here, point("rd_bx")), attribute("rd_tx", "FLOAT"))
    up = math("SCALE", math("SUBTRACT", here, point("rd_by")), attribute("rd_ty", "FLOAT"))
    move = nodes.new("GeometryNodeSetPosition")
    links.new(given.outputs[0], move.inputs["Geometry"])
    links.new(math("ADD", math("ADD", here, across), up), move.inputs["Position"])
    links.new(move.outputs[0], result.inputs[0])
    return tree


def _plate_image(source: str):
    """The plate the run read (its manifest's ``source``: a movie, or a pattern with #), as
    an image that plays frame by frame with the shot's frame numbers."""
    pattern = re.search(r"#+", os.path.basename(source))
    if pattern:
        folder = os.path.dirname(source)
        head, tail = os.path.basename(source)[: pattern.start()], source[len(folder) + 1 :]
        tail = tail[pattern.end() :]
        numbered = re.compile(re.escape(head) + r"(\d+)" + re.escape(tail) + "$")
        found = sorted(
            (int(m[1]), name)
            for name in (os.listdir(folder) if os.path.isdir(folder) else ())
            if (m := numbered.match(name))
        )
        if not found:
            raise ShotError(f"The plate {source} is not there: the plate mesh is left out.")
        image = bpy.data.images.load(os.path.join(folder, found[0][1]), check_existing=True)
        image.source = "SEQUENCE"
        return image
    if not os.path.isfile(source):
        raise ShotError(
            f"The plate {source or '(unknown)'} is not there: the plate mesh is left out."
        )
    image = bpy.data.images.load(source, check_existing=True)
    image.source = "MOVIE"
    return image


def _plate_material(image, source: str):
    """Emission of the plate through the mesh's UVs: shown as the plate, lit by nothing.
    An image sequence's frame is its file number (frame n shows plate.n); a movie's frames
    are numbered from 0, as the engine numbers them."""
    material = bpy.data.materials.new("RollingDepth plate")
    tree = material.node_tree or _enable_nodes(material)
    tree.nodes.clear()
    texture = tree.nodes.new("ShaderNodeTexImage")
    texture.image = image
    texture.interpolation = "Closest"  # each pixel's own colour, as the points have it
    user = texture.image_user
    user.use_auto_refresh = True
    user.frame_start = 0 if image.source == "MOVIE" else 1
    user.frame_offset = 0
    user.frame_duration = 1_000_000  # the whole shot, whatever its numbers
    emission = tree.nodes.new("ShaderNodeEmission")
    out = tree.nodes.new("ShaderNodeOutputMaterial")
    tree.links.new(texture.outputs["Color"], emission.inputs["Color"])
    tree.links.new(emission.outputs["Emission"], out.inputs["Surface"])
    return material


def _show_the_plate_as_shot(shot) -> None:
    """A render of the points shows the plate's own colours. The points are the plate's
    colours in linear (USD's displayColor), lit by nothing, so:

    * the view transform is Standard: it turns linear back into the plate's sRGB exactly (a
      film look such as AgX tones it: 0.02 darker on the test plate);
    * Cycles' denoiser is off: emission needs no denoising, and on a render of points with
      gaps it pulls the gaps' black into the points (0.125 darker, median, at 1 sample);
    * the film is transparent: gaps (untrusted pixels, depth edges) show what is behind."""
    shot.view_settings.view_transform = "Standard"
    shot.view_settings.look = "None"
    shot.render.film_transparent = True
    shot.cycles.use_denoising = False
    shot.cycles.use_preview_denoising = False


def _point_material():
    """Emission of the points' own colour (the plate's, USD's displayColor): lit by nothing,
    the points look like the plate through the camera."""
    material = bpy.data.materials.get("RollingDepth points")
    if material is not None:
        return material
    material = bpy.data.materials.new("RollingDepth points")
    tree = material.node_tree or _enable_nodes(material)
    tree.nodes.clear()
    colour = tree.nodes.new("ShaderNodeAttribute")
    colour.attribute_name = "displayColor"
    emission = tree.nodes.new("ShaderNodeEmission")
    out = tree.nodes.new("ShaderNodeOutputMaterial")
    tree.links.new(colour.outputs["Color"], emission.inputs["Color"])
    tree.links.new(emission.outputs["Emission"], out.inputs["Surface"])
    return material


def _enable_nodes(material):
    material.use_nodes = True  # Blender 4.x; 5.0 materials come with a node tree
    return material.node_tree


class SEQUENCER_OT_rollingdepth_build_shot(bpy.types.Operator):
    """Open the shot in 3D: its camera and the plate's points, in a new scene"""

    bl_idname = "sequencer.rollingdepth_build_shot"
    bl_label = "Build Shot in 3D"
    bl_options = {"REGISTER", "UNDO"}

    mesh: bpy.props.BoolProperty(
        name="Plate on a Depth Mesh",
        description="Also put the plate on a mesh shaped by its depth, moving with the shot "
        "(2.5D projection): through the camera it shows the plate, from elsewhere its "
        "surfaces in depth",
        default=True,
    )

    @classmethod
    def poll(cls, context):
        scene = sequencer.sequencer_scene(context)
        return scene is not None and sequencer.active_strip(scene) is not None

    def execute(self, context):
        strip = sequencer.active_strip(sequencer.sequencer_scene(context))
        try:
            shot, note = build_shot(context, strip, self.mesh)
        except ShotError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if note:
            self.report({"WARNING"}, note)
        self.report({"INFO"}, f"Built the shot in 3D in the scene “{shot.name}”.")
        return {"FINISHED"}


def draw_strip_menu(self, context):
    self.layout.operator(SEQUENCER_OT_rollingdepth_build_shot.bl_idname, text="Build Shot in 3D")
