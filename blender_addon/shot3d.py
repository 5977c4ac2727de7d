"""Build Shot in 3D: a depth strip whose run wrote points (a camera and ``--points``) opens as
a 3D scene: the shot's camera, animated, and the plate's points, read from the USD the run
wrote beside its EXRs by Blender's own USD importer.

The scene is new (``<strip> 3D``), so the edit is left as it was; its frame range, frame rate
and resolution are the shot's, and the points show the plate's colours in a render through
the camera.
"""

from __future__ import annotations

import json
import os

import bpy

from . import sequencer

POINT_SUFFIXES = (".usd", ".usda", ".usdc")
MANIFEST_SUFFIX = "_run.json"  # the engine's publisher names its manifest NAME_run.json


class ShotError(Exception):
    """Why a strip cannot be built in 3D, in words an artist reads."""


def points_file(strip) -> str:
    """The USD of points the run of ``strip`` (a depth strip) wrote, from its manifest."""
    if strip is None or strip.type != "IMAGE" or sequencer.SOURCE_KEY not in strip:
        raise ShotError("Select a depth strip made by RollingDepth.")
    folder = os.path.normpath(bpy.path.abspath(strip.directory, library=strip.id_data.library))
    first = strip.elements[0].filename if len(strip.elements) else ""
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else ():
        if not name.endswith(MANIFEST_SUFFIX):
            continue
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as handle:
                files = json.load(handle).get("files", [])
        except (OSError, ValueError):
            continue
        if first not in files:
            continue
        for file in files:
            path = os.path.join(folder, file)
            if file.lower().endswith(POINT_SUFFIXES) and os.path.isfile(path):
                return path
    raise ShotError(
        "This depth has no points: estimate it again with the shot's camera and points on."
    )


def build_shot(context, strip):
    """A new scene with the shot's camera and points; returns it."""
    path = points_file(strip)
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
    for cloud in (o for o in shot.objects if o.type == "POINTCLOUD"):
        cloud.data.materials.clear()
        cloud.data.materials.append(material)
    return shot


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

    @classmethod
    def poll(cls, context):
        scene = sequencer.sequencer_scene(context)
        return scene is not None and sequencer.active_strip(scene) is not None

    def execute(self, context):
        strip = sequencer.active_strip(sequencer.sequencer_scene(context))
        try:
            shot = build_shot(context, strip)
        except ShotError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Built the shot in 3D in the scene “{shot.name}”.")
        return {"FINISHED"}


def draw_strip_menu(self, context):
    self.layout.operator(SEQUENCER_OT_rollingdepth_build_shot.bl_idname, text="Build Shot in 3D")
