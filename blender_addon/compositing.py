"""A Defocus compositing setup fed by the depth sequence.

The setup gets its own scene: a scene whose sequencer has strips renders the sequencer and
skips the compositor, so a compositor tree in the edit's scene would never run. The new scene
reads the plate and the depth EXRs through Image nodes lined up on the same timeline frames as
the strips, turns depth into a blur amount around a focus value, and feeds Defocus's Z.

The first render must show the effect: focus starts on the subject (the depth under the frame
centre, or the scene camera's focus distance when depth is in scene units), the farthest
distance from focus gets the full blur, and that blur is a visible share of the width. The
sidebar edits the two values that matter: Focus and Blur.

Blender 5.0 compositors are node groups (``scene.compositing_node_group``, output through a
Group Output node); 4.5 keeps ``scene.use_nodes`` / ``scene.node_tree`` with a Composite node.
"""

from __future__ import annotations

import array
import os

import bpy

from .frames import FramePlan
from .protocol import nearness_affine
from .sequencer import SOURCE_KEY

MAX_BLUR_SHARE = 0.02  # largest blur radius as a share of the image width
MIN_BLUR_PX = 4.0  # so that small plates blur visibly too
CENTRE_SHARE = 0.1  # the focus sample: the middle tenth of the frame (median)
FOCUS_NODE = "RollingDepth Focus"
DEFOCUS_NODE = "RollingDepth Defocus"
EDIT_SCENE_KEY = "rollingdepth_edit_scene"


def compositor_tree(scene):
    """A fresh, empty compositor node tree attached to ``scene`` (5.0 or 4.5 API)."""
    if hasattr(scene, "compositing_node_group"):
        tree = bpy.data.node_groups.new(f"{scene.name} Compositor", "CompositorNodeTree")
        scene.compositing_node_group = tree
        return tree
    scene.use_nodes = True
    tree = scene.node_tree
    tree.nodes.clear()
    return tree


def _output_node(tree):
    """Where the final image goes: Group Output in 5.0, Composite in 4.5."""
    if hasattr(bpy.types, "CompositorNodeComposite"):
        return tree.nodes.new("CompositorNodeComposite")
    if "Image" not in [item.name for item in tree.interface.items_tree]:
        tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
    return tree.nodes.new("NodeGroupOutput")


def _first_node_type(*names: str) -> str:
    """The first of ``names`` this Blender defines (4.5 has compositor-only Math/Value nodes;
    5.0 shares the shader ones)."""
    return next(name for name in names if hasattr(bpy.types, name))


def _new_math(tree, operation: str, label: str):
    node = tree.nodes.new(_first_node_type("CompositorNodeMath", "ShaderNodeMath"))
    node.operation = operation
    node.label = label
    return node


def _new_value(tree, value: float, label: str):
    node = tree.nodes.new(_first_node_type("CompositorNodeValue", "ShaderNodeValue"))
    node.outputs[0].default_value = value
    node.label = label
    return node


def _sequence_node(tree, path: str, source: str, first_number: int, start: int, count: int):
    """An Image node showing file/frame ``first_number`` at timeline frame ``start``.

    Blender's image user shows image frame ``frame - frame_start + 1 + frame_offset``; for a
    sequence that is the file number, for a movie the 1-based movie frame.
    """
    image = bpy.data.images.load(path, check_existing=True)
    image.source = source
    node = tree.nodes.new("CompositorNodeImage")
    node.image = image
    node.frame_start = start
    node.frame_duration = count
    node.frame_offset = first_number - 1 if source == "SEQUENCE" else first_number
    return node


def setup_defocus(
    edit_scene,
    source,
    plan: FramePlan,
    depth_files: list[str],
    depth_mode: str,
    near: float,
    far: float,
    value_range: tuple[float, float] | None,
    size: tuple[int, int] | None,
):
    """Create the scene ``<source> Defocus`` and return it."""
    scene = bpy.data.scenes.new(f"{source.name} Defocus")
    scene[SOURCE_KEY] = source.name
    scene[EDIT_SCENE_KEY] = edit_scene.name
    first, last = plan.timeline[0][0], plan.timeline[-1][0]
    scene.frame_start, scene.frame_end = first, last
    scene.render.fps, scene.render.fps_base = edit_scene.render.fps, edit_scene.render.fps_base
    width, height = size or (edit_scene.render.resolution_x, edit_scene.render.resolution_y)
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.render.use_compositing = True
    scene.render.use_sequencer = False
    scene.view_settings.view_transform = edit_scene.view_settings.view_transform

    tree = compositor_tree(scene)
    count = last - first + 1
    first_number = plan.timeline[0][1]
    if plan.kind == "MOVIE":
        plate = _sequence_node(tree, plan.plate, "MOVIE", first_number, first, count)
    else:
        plate_file = _plate_file(source, plan)
        plate = _sequence_node(tree, plate_file, "SEQUENCE", first_number, first, count)
    plate.label = "Plate"
    plate.location = (-800, 200)

    depth_node = _sequence_node(tree, depth_files[0], "SEQUENCE", first_number, first, count)
    depth_node.image.colorspace_settings.name = "Non-Color"
    depth_node.label = "RollingDepth"
    depth_node.location = (-800, -150)

    # nearness in 0..1 (1 = near plane / nearest), whatever the file's convention
    scale, offset = nearness_affine(depth_mode, near, far, value_range)
    source_socket = depth_node.outputs[0]
    x = -550
    if depth_mode == "depth":
        reciprocal = _new_math(tree, "DIVIDE", "1 / depth")
        reciprocal.inputs[0].default_value = 1.0
        tree.links.new(source_socket, reciprocal.inputs[1])
        reciprocal.location = (x, -150)
        source_socket, x = reciprocal.outputs[0], x + 200
    nearness = _new_math(tree, "MULTIPLY_ADD", "Nearness (0 far .. 1 near)")
    tree.links.new(source_socket, nearness.inputs[0])
    nearness.inputs[1].default_value = scale
    nearness.inputs[2].default_value = offset
    nearness.location = (x, -150)

    focus_value = _subject_nearness(edit_scene, depth_files[0], depth_mode, scale, offset)
    focus = _new_value(tree, focus_value, "Focus (0 far .. 1 near)")
    focus.name = FOCUS_NODE
    focus.location = (x, -400)
    away = _new_math(tree, "SUBTRACT", "Distance from focus")
    tree.links.new(nearness.outputs[0], away.inputs[0])
    tree.links.new(focus.outputs[0], away.inputs[1])
    away.location = (x + 200, -150)
    distance = _new_math(tree, "ABSOLUTE", "|distance|")
    tree.links.new(away.outputs[0], distance.inputs[0])
    distance.location = (x + 400, -150)
    # the farthest any pixel can be from focus, max(focus, 1 - focus), gets the full blur
    rest = _new_math(tree, "SUBTRACT", "1 - focus")
    rest.inputs[0].default_value = 1.0
    tree.links.new(focus.outputs[0], rest.inputs[1])
    rest.location = (x + 200, -400)
    reach = _new_math(tree, "MAXIMUM", "Farthest from focus")
    tree.links.new(focus.outputs[0], reach.inputs[0])
    tree.links.new(rest.outputs[0], reach.inputs[1])
    reach.location = (x + 400, -400)
    amount = _new_math(tree, "DIVIDE", "Blur amount (0..1)")
    amount.use_clamp = True
    tree.links.new(distance.outputs[0], amount.inputs[0])
    tree.links.new(reach.outputs[0], amount.inputs[1])
    amount.location = (x + 600, -150)

    defocus = tree.nodes.new("CompositorNodeDefocus")
    defocus.name = DEFOCUS_NODE
    defocus.use_zbuffer = False  # Z is a 0..1 blur amount, scaled by z_scale pixels
    defocus.z_scale = max(MIN_BLUR_PX, round(width * MAX_BLUR_SHARE))
    # room for the sidebar's Blur (z_scale) to grow before Defocus clamps it
    defocus.blur_max = max(defocus.z_scale, round(width / 8))
    defocus.location = (x + 850, 100)
    tree.links.new(plate.outputs["Image"], defocus.inputs["Image"])
    tree.links.new(amount.outputs[0], defocus.inputs["Z"])

    output = _output_node(tree)
    output.location = (x + 1150, 100)
    tree.links.new(defocus.outputs["Image"], output.inputs[0])
    viewer = tree.nodes.new("CompositorNodeViewer")
    viewer.location = (x + 1150, -100)
    tree.links.new(defocus.outputs["Image"], viewer.inputs[0])
    return scene


def _subject_nearness(edit_scene, depth_file: str, depth_mode: str, scale, offset) -> float:
    """Where to focus first: the camera's focus distance for depth in scene units, else the
    median depth in the middle of the first frame (where the subject usually is)."""
    camera = edit_scene.camera
    if depth_mode == "depth" and camera is not None and camera.type == "CAMERA":
        dof = camera.data.dof
        if dof.use_dof and dof.focus_distance > 0:
            return min(1.0, max(0.0, scale / dof.focus_distance + offset))
    image = bpy.data.images.load(depth_file, check_existing=False)
    try:
        image.colorspace_settings.name = "Non-Color"  # the values as written
        width, height = image.size
        channels = image.channels
        pixels = array.array("f", bytes(4 * channels * width * height))
        image.pixels.foreach_get(pixels)
    finally:
        bpy.data.images.remove(image)
    half_w, half_h = max(1, int(width * CENTRE_SHARE / 2)), max(1, int(height * CENTRE_SHARE / 2))
    values = sorted(
        pixels[channels * (row * width + column)]
        for row in range(height // 2 - half_h, height // 2 + half_h)
        for column in range(width // 2 - half_w, width // 2 + half_w)
    )
    value = values[len(values) // 2]
    if depth_mode == "depth":
        value = 1.0 / value if value > 0 else 0.0
    return min(1.0, max(0.0, scale * value + offset))


def defocus_scenes_of(source_name: str) -> list:
    """The Defocus scenes built for the strip named ``source_name``."""
    return [s for s in bpy.data.scenes if s.get(SOURCE_KEY) == source_name]


def remove_defocus_scenes(edit_scene, source) -> None:
    for scene in defocus_scenes_of(source.name):
        if scene.get(EDIT_SCENE_KEY) == edit_scene.name and scene != edit_scene:
            tree = getattr(scene, "compositing_node_group", None)
            bpy.data.scenes.remove(scene)
            if tree is not None and tree.users == 0:
                bpy.data.node_groups.remove(tree)


def defocus_controls(scene):
    """``(focus socket, defocus node)`` of a Defocus scene this add-on built, else None."""
    tree = getattr(scene, "compositing_node_group", None) or getattr(scene, "node_tree", None)
    if tree is None or FOCUS_NODE not in tree.nodes or DEFOCUS_NODE not in tree.nodes:
        return None
    return tree.nodes[FOCUS_NODE].outputs[0], tree.nodes[DEFOCUS_NODE]


def _plate_file(source, plan: FramePlan) -> str:
    """The plate file shown on the first timeline frame (the original, not a staging link)."""
    element = source.strip_elem_from_frame(plan.timeline[0][0])
    directory = bpy.path.abspath(source.directory, library=source.id_data.library)
    return os.path.normpath(os.path.join(directory, element.filename))
