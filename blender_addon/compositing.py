"""A Defocus compositing setup fed by the depth sequence.

The setup gets its own scene: a scene whose sequencer has strips renders the sequencer and
skips the compositor, so a compositor tree in the edit's scene would never run. The new scene
reads the plate and the depth EXRs through Image nodes lined up on the same timeline frames as
the strips, turns depth into a blur amount around a focus value, and feeds Defocus's Z.

The first render must show the effect: focus starts on the subject (the depth under the frame
centre, or the scene camera's focus distance when depth is in scene units), the farthest
distance from focus gets the full blur, and that blur is a visible share of the width.

Two graphs, after what the files hold:
    * relative depth (normalized, inverse): nearness 0 (far) .. 1 (near) from the run's value
      range; blur grows with the distance from a Focus nearness; the sidebar edits Focus and
      Blur (px).
    * depth in scene units (the Depth convention, Anchor to Camera Solve): a thin lens's blur,
      ``K / N * |1/Z - 1/S|`` pixels, with ``S`` the focus distance in scene units and ``N``
      an f-stop-like control (half of it, twice the blur). ``K`` is fixed when the setup is
      built so that at ``DEFAULT_F_STOP`` the depth of the run's range farthest from focus
      gets the full blur: the first render is visibly defocused whatever the scene's scale
      (a real lens at this scale might blur less than a pixel). The sidebar edits the focus
      distance (scene units) and the F-stop.

A still render of this scene from another scene renders the frame the window's scene is on
(Blender's render operator): the timelines are the same, so that is the edit's frame; an
animation render or a Scene strip steps through its own frames.

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
F_STOP_NODE = "RollingDepth F-stop"
DEFOCUS_NODE = "RollingDepth Defocus"
EDIT_SCENE_KEY = "rollingdepth_edit_scene"
UNITS_KEY = "rollingdepth_units"  # a Defocus scene in scene units: what its Focus is in
DEFAULT_F_STOP = 2.8


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
    units: str = "scene units",
):
    """Create the scene ``<source> Defocus`` and return it (``units``: what depth in scene
    units is measured in, for the sidebar's Focus)."""
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

    blur_px = max(MIN_BLUR_PX, round(width * MAX_BLUR_SHARE))
    if depth_mode == "depth":
        scene[UNITS_KEY] = units
        radius, x = _thin_lens_radius(
            tree, edit_scene, depth_node, depth_files[0], value_range, blur_px
        )
        z_scale = 1.0  # Z is the blur radius in pixels already
    else:
        radius, x = _nearness_blur(
            tree, depth_node, depth_files[0], depth_mode, near, far, value_range
        )
        z_scale = blur_px

    defocus = tree.nodes.new("CompositorNodeDefocus")
    defocus.name = DEFOCUS_NODE
    defocus.use_zbuffer = False  # Z is a blur amount, scaled by z_scale pixels
    defocus.z_scale = z_scale
    # room for the sidebar's Blur (or a smaller F-stop) to grow before Defocus clamps it
    defocus.blur_max = max(blur_px, round(width / 8))
    defocus.location = (x + 850, 100)
    tree.links.new(plate.outputs["Image"], defocus.inputs["Image"])
    tree.links.new(radius, defocus.inputs["Z"])

    output = _output_node(tree)
    output.location = (x + 1150, 100)
    tree.links.new(defocus.outputs["Image"], output.inputs[0])
    viewer = tree.nodes.new("CompositorNodeViewer")
    viewer.location = (x + 1150, -100)
    tree.links.new(defocus.outputs["Image"], viewer.inputs[0])
    return scene


def _nearness_blur(tree, depth_node, depth_file, depth_mode, near, far, value_range):
    """Relative depth: ``|nearness - focus| / max(focus, 1 - focus)`` (0..1, times Blur px).
    Returns the blur socket and the x where the graph ends."""
    # nearness in 0..1 (1 = near plane / nearest), whatever the file's convention
    scale, offset = nearness_affine(depth_mode, near, far, value_range)
    source_socket = depth_node.outputs[0]
    x = -550
    nearness = _new_math(tree, "MULTIPLY_ADD", "Nearness (0 far .. 1 near)")
    tree.links.new(source_socket, nearness.inputs[0])
    nearness.inputs[1].default_value = scale
    nearness.inputs[2].default_value = offset
    nearness.location = (x, -150)

    focus_value = _subject_nearness(depth_file, scale, offset)
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

    return amount.outputs[0], x


def _thin_lens_radius(tree, edit_scene, depth_node, depth_file, value_range, blur_px):
    """Depth in scene units: the blur radius in pixels, ``K / N * |1/Z - 1/S|`` (module
    docstring). Returns the radius socket and the x where the graph ends."""
    focus_distance = _subject_distance(edit_scene, depth_file)
    x = -550
    inverse = _new_math(tree, "DIVIDE", "1 / depth")
    inverse.inputs[0].default_value = 1.0
    tree.links.new(depth_node.outputs[0], inverse.inputs[1])
    inverse.location = (x, -150)
    focus = _new_value(tree, focus_distance, "Focus distance (scene units)")
    focus.name = FOCUS_NODE
    focus.location = (x, -400)
    focus_inverse = _new_math(tree, "DIVIDE", "1 / focus")
    focus_inverse.inputs[0].default_value = 1.0
    tree.links.new(focus.outputs[0], focus_inverse.inputs[1])
    focus_inverse.location = (x + 200, -400)
    away = _new_math(tree, "SUBTRACT", "1/depth - 1/focus")
    tree.links.new(inverse.outputs[0], away.inputs[0])
    tree.links.new(focus_inverse.outputs[0], away.inputs[1])
    away.location = (x + 200, -150)
    distance = _new_math(tree, "ABSOLUTE", "|1/depth - 1/focus|")
    tree.links.new(away.outputs[0], distance.inputs[0])
    distance.location = (x + 400, -150)
    lens = _new_math(tree, "MULTIPLY", "Lens (px x scene units)")
    tree.links.new(distance.outputs[0], lens.inputs[0])
    lens.inputs[1].default_value = lens_constant(value_range, focus_distance, blur_px)
    lens.location = (x + 600, -150)
    f_stop = _new_value(tree, DEFAULT_F_STOP, "F-stop")
    f_stop.name = F_STOP_NODE
    f_stop.location = (x + 600, -400)
    radius = _new_math(tree, "DIVIDE", "Blur radius (px)")
    tree.links.new(lens.outputs[0], radius.inputs[0])
    tree.links.new(f_stop.outputs[0], radius.inputs[1])
    radius.location = (x + 800, -150)
    return radius.outputs[0], x + 200


def lens_constant(value_range, focus_distance: float, blur_px: float) -> float:
    """``K`` such that at ``DEFAULT_F_STOP`` the depth of ``value_range`` (scene units) farthest
    from ``focus_distance``, in 1/depth, gets ``blur_px``."""
    lo, hi = value_range if value_range else (focus_distance, focus_distance)
    inverse_focus = 1.0 / focus_distance
    reach = max(abs(1.0 / z - inverse_focus) for z in (lo, hi) if z > 0) if hi > 0 else 0.0
    if not reach > 0:  # flat depth: any focus change is then what the user sees
        reach = inverse_focus
    return blur_px * DEFAULT_F_STOP / reach


def _subject_distance(edit_scene, depth_file: str) -> float:
    """Where to focus first, in scene units: the scene camera's focus distance when its depth
    of field is on, else the median depth in the middle of the first frame."""
    camera = edit_scene.camera
    if camera is not None and camera.type == "CAMERA":
        dof = camera.data.dof
        if dof.use_dof and dof.focus_distance > 0:
            return float(dof.focus_distance)
    value = _centre_median(depth_file)
    return value if value > 0 else 1.0


def _subject_nearness(depth_file: str, scale: float, offset: float) -> float:
    """Where to focus first: the median nearness in the middle of the first frame (where the
    subject usually is)."""
    return min(1.0, max(0.0, scale * _centre_median(depth_file) + offset))


def _centre_median(depth_file: str) -> float:
    """The median value in the middle tenth of ``depth_file`` (as written: Non-Color)."""
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
    return values[len(values) // 2]


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


def defocus_fields(scene) -> list[tuple[object, str, str]]:
    """What the sidebar edits in a Defocus scene: ``(data, property, label)`` rows; empty
    for a scene this add-on did not build."""
    controls = defocus_controls(scene)
    if controls is None:
        return []
    focus, defocus = controls
    tree = defocus.id_data
    if F_STOP_NODE in tree.nodes:  # depth in scene units
        units = scene.get(UNITS_KEY, "scene units")
        return [
            (focus, "default_value", f"Focus in {units}"),
            (tree.nodes[F_STOP_NODE].outputs[0], "default_value", "F-stop"),
        ]
    return [(focus, "default_value", "Focus (0 far, 1 near)"), (defocus, "z_scale", "Blur (px)")]


def _plate_file(source, plan: FramePlan) -> str:
    """The plate file shown on the first timeline frame (the original, not a staging link)."""
    element = source.strip_elem_from_frame(plan.timeline[0][0])
    directory = bpy.path.abspath(source.directory, library=source.id_data.library)
    return os.path.normpath(os.path.join(directory, element.filename))
