"""Sequencer ▸ Strip ▸ Estimate Depth (RollingDepth), and its Cancel button.

The selected image-sequence and movie strips (and the active one) each become a shot of
their own, run one after another as one `jobs.DepthBatch`; a single strip is a batch of one.
Interactive use runs modal: a timer polls the engine (`DepthBatch.step`), progress goes to
the status bar and the sidebar, Esc or Cancel stops the engine. In background mode, or with
``wait=True`` from a script, the same batch is stepped in a loop until it ends.
"""

from __future__ import annotations

import os
import textwrap

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from . import camera_solve, folders, jobs, protocol, sequencer, shot_camera
from .engine import (
    DEFAULT_DEPTH_MODE,
    ESTIMATES,
    EngineError,
    RunOptions,
    estimate_argv,
    estimate_text,
    kept_key,
    parse_dilations,
)
from .frames import StripError
from .preferences import empty_checkpoint_text, preferences

TIMER_INTERVAL_S = 0.2

PRESET_ITEMS = [(key, p["label"], p["description"]) for key, p in protocol.PRESETS.items()]
DEPTH_MODE_ITEMS = [(key, m["label"], m["description"]) for key, m in protocol.DEPTH_MODES.items()]
# What the Sequencer shows of each convention, for the line under the Convention field.
DEPTH_MODE_LOOK = {
    "normalized": "Shows as depth in the Sequencer: 0 farthest .. 1 nearest",
    "inverse": "Values outside 0..1 show clipped (black) in the Sequencer",
    "depth": "Scene units between Near and Far; the strip shows them as nearest white .. "
    "farthest black",
}
# Anchors (a camera solve's or a file's) decide the convention: depth in their units.
ANCHORED_LOOK = (
    "Anchors make the depth a distance in their units; the strip shows it as nearest "
    "white .. farthest black"
)

# Under the estimate of a rerun whose model work is kept (strip_estimate_argv).
KEPT_NOTE = (
    "The model's work from the last run of this strip is kept: this run only lines the "
    "depth up again"
)


# The dialog's camera choices, kept alive: Blender reads the strings of a dynamic enum after
# the callback has returned.
_CAMERA_ITEMS: list[tuple[str, str, str]] = []
POINTS_FILE = "depth_points.usdc"  # beside the depth EXRs; Build Shot in 3D opens it
SCENE_UNITS_NEEDED = (
    "Position, normals and points are in the scene's units: set Convention to Depth (Near "
    "and Far in scene units), or anchor the depth to a camera solve or an anchors file."
)


def camera_choices(_operator, context):
    scene = sequencer.sequencer_scene(context) if context is not None else None
    _CAMERA_ITEMS[:] = shot_camera.camera_items(scene)
    return _CAMERA_ITEMS


def blender_ocio_config() -> str:
    """The OCIO config Blender reads its colour space names from: $OCIO, else its own."""
    return os.environ.get("OCIO") or os.path.join(
        bpy.utils.system_resource("DATAFILES", path="colormanagement"), "config.ocio"
    )


def wrapped_label(layout, text: str, width: int = 42, icon: str = "NONE") -> None:
    """``text`` as labels of at most ``width`` characters (a label does not wrap itself)."""
    column = layout.column(align=True)
    for i, line in enumerate(textwrap.wrap(text, width) or [""]):
        column.label(text=line, icon=icon if i == 0 else "BLANK1")


def sources_line(sources) -> str:
    """What the dialog and the sidebar say will run."""
    if len(sources) == 1:
        strip = sources[0]
        return f"{strip.name}: frames {strip.frame_final_start}-{strip.frame_final_end - 1}"
    return f"{len(sources)} strips: {', '.join(strip.name for strip in sources)}"


def use_plate_size(operator, _context=None) -> None:
    """The dialog's one-click faster choice: Resolution 0 is the plate's own size (-1 gives
    the preset's back)."""
    operator.resolution = 0 if operator.at_plate_size else -1


def anchored(operator) -> bool:
    """Whether the dialog's anchors (a camera solve's or a file's) decide the convention."""
    return operator.anchor_solve or bool(operator.anchors_file.strip())


def anchors_refusal(anchors: str, sources) -> str:
    return (
        f"Anchors File {os.path.basename(anchors)!r} belongs to one plate, but {len(sources)} "
        "strips are selected: select only its plate, or clear Anchors File."
    )


def holdout_refusal(holdout: str, sources) -> str:
    return (
        f"Holdout Matte {holdout!r} belongs to one plate, but {len(sources)} strips are "
        f"selected ({', '.join(repr(s.name) for s in sources)}): select only its plate, or "
        "clear Holdout Matte."
    )


def _redraw_sequencer(context) -> None:
    screen = getattr(context, "screen", None)
    if screen is None:
        return
    for area in screen.areas:
        if area.type == "SEQUENCE_EDITOR":
            area.tag_redraw()


class SEQUENCER_OT_rollingdepth_estimate(bpy.types.Operator):
    """Estimate depth for the selected image-sequence and movie strips"""

    bl_idname = "sequencer.rollingdepth_estimate"
    bl_label = "Estimate Depth (RollingDepth)"
    # Blender shows a docstring as is, line breaks and indents included: one line here
    bl_description = (
        "Estimate depth that stays steady over time for each selected image-sequence or "
        "movie strip (or the active one), one after another, and add it as an EXR strip "
        "above its source. Each strip is run as a shot of its own. "
        f"{protocol.GLOSSARY['shot']}"
    )
    bl_options = {"REGISTER"}

    preset: EnumProperty(name="Preset", items=PRESET_ITEMS, default=protocol.DEFAULT_PRESET)
    dilations: StringProperty(
        name="Dilations",
        description=(
            "The dilations to use, e.g. 1 10 25 (must include 1); empty: the preset's. "
            f"{protocol.GLOSSARY['dilation']}"
        ),
        default="",
    )
    refine_steps: IntProperty(
        name="Refinement Steps",
        description="Extra passes that sharpen the depth (slower); -1: as the preset says",
        default=-1,
        min=-1,
        max=500,
    )
    at_plate_size: BoolProperty(
        name="Process at the Plate's Size",
        description="The plate is smaller than the size the model would work at: working at "
        "the plate's own size gives the same detail in much less time (sets Resolution to 0)",
        default=False,
        update=lambda self, context: use_plate_size(self, context),
        options={"SKIP_SAVE"},
    )
    resolution: IntProperty(
        name="Resolution",
        description=(
            "Size the model works at: the longer side in pixels (smaller is faster); -1: as the "
            "preset says, 0: the plate's own size"
        ),
        default=-1,
        min=-1,
        max=8192,
    )
    depth_mode: EnumProperty(name="Convention", items=DEPTH_MODE_ITEMS, default=DEFAULT_DEPTH_MODE)
    near: FloatProperty(
        name="Near",
        description="Distance of the nearest thing in the plate, in scene units (Convention: "
        "Depth); the depth is spread between Near and Far",
        default=1.0,
        min=1e-4,
        soft_max=1000.0,
    )
    far: FloatProperty(
        name="Far",
        description="Distance of the farthest thing in the plate, in scene units (Convention: "
        "Depth)",
        default=100.0,
        min=1e-3,
        soft_max=100000.0,
    )
    half: BoolProperty(
        name="Half Float", description="Write 16-bit half EXRs instead of 32-bit float"
    )
    restore_res: BoolProperty(
        name="Write at Plate Size",
        description="Write the depth at the plate's size; off: at the size the model worked at "
        "(see Resolution)",
        default=True,
    )
    upsample_edges: BoolProperty(
        name="Upsample Edges",
        description="When writing at plate size, put the depth's edges on the plate's edges; "
        "off: a plain smooth resize",
        default=True,
    )
    strip_colorspace: BoolProperty(
        name="Strip Color Space",
        description="Read the plate in the strip's color space (Strip ▸ Source), through "
        "Blender's OCIO config; off: RollingDepth decides from the file type",
        default=True,
    )
    anchor_solve: BoolProperty(
        name="Anchor to Camera Solve",
        description="Depth in scene units: a Movie Clip of the same footage with a solved camera "
        "gives the anchors (every track with a bundle, on every frame its marker is enabled); "
        "the depth is written as distance (Convention: Depth) and the Defocus focuses at the "
        f"camera's focus distance. {protocol.GLOSSARY['anchors']}",
        default=False,
    )
    anchors_file: StringProperty(
        name="Anchors File",
        description="A CSV (frame,x,y,depth) or JSON file of anchors you already have, e.g. "
        "survey points: the depth is written as distance in their units (Convention: Depth). "
        f"{protocol.GLOSSARY['anchors']}",
        subtype="FILE_PATH",
        default="",
        options={"SKIP_SAVE"},  # points belong to one plate: never reused for the next
    )
    camera: EnumProperty(
        name="Camera",
        description="The shot's camera, per frame of the strip: each frame then also carries "
        "its position and normals in the scene's space, for relighting, position mattes and "
        "Build Shot in 3D (needs depth in scene units)",
        items=camera_choices,
        default=0,
        options={"SKIP_SAVE"},  # a camera belongs to one shot
    )
    write_passes: BoolProperty(
        name="Write Position and Normal",
        description="Each frame also carries where every pixel is in the scene (Position, "
        "P) and which way its surface faces (Normal, N), read by Nuke, Fusion and Blender's "
        "compositor as they are. The depth strip still shows the depth: the files also keep "
        "a grey copy of it that Blender's Sequencer shows",
        default=False,
    )
    write_points: BoolProperty(
        name="Points for Build Shot in 3D",
        description="Also write the plate as coloured points with the camera (a USD file "
        "beside the depth), which Strip ▸ Build Shot in 3D opens as a scene",
        default=True,
    )
    holdout_strip: StringProperty(
        name="Holdout Matte",
        description="An image-sequence or movie strip to use as the holdout, e.g. a roto of a "
        f"moving actor. {protocol.GLOSSARY['holdout']}",
        default="",
        options={"SKIP_SAVE"},
    )
    output_dir: StringProperty(
        name="Output Folder",
        description="Folder for depth.####.exr; default //depth/<strip name>/ next to the "
        ".blend; with several strips, one subfolder per strip",
        subtype="DIR_PATH",
        default="",
        # re-derived from each strip's name, never reused; `//` means next to the .blend
        options={"SKIP_SAVE", "PATH_SUPPORTS_BLEND_RELATIVE"},
    )
    replace: BoolProperty(
        name="Replace Previous Depth",
        description="Remove the depth strip an earlier run made from this strip, and replace "
        "its EXRs in the Output Folder; off, the new depth goes into a new version of the "
        "folder and both strips stay",
        default=True,
    )
    replace_other: BoolProperty(
        name="Replace Other Depth",
        description="The Output Folder holds depth this strip did not make (another .blend's, "
        "another plate's, or made outside Blender): replace it with this run's",
        default=False,
        options={"SKIP_SAVE"},
    )
    defocus: BoolProperty(
        name="Set up Defocus Compositing",
        description="Create a scene whose compositor feeds this depth into a Defocus node",
        default=False,
    )
    checkpoint: StringProperty(
        name="Checkpoint",
        description="Hub id or folder; empty uses the add-on preferences",
        default="",
        options={"HIDDEN", "SKIP_SAVE"},
    )
    wait: BoolProperty(
        name="Wait",
        description="Block until the engine finishes (for scripts; background mode always waits)",
        default=False,
        options={"HIDDEN", "SKIP_SAVE"},
    )

    _timer = None
    _job: jobs.DepthBatch | None = None

    @classmethod
    def poll(cls, context):
        scene = sequencer.sequencer_scene(context)
        if scene.sequence_editor is None:
            cls.poll_message_set(
                f"Scene {scene.name!r} has no strips: switch to the scene with the plate"
            )
            return False
        return True

    # ---------------------------------------------------------------- dialog
    def invoke(self, context, event):
        scene = sequencer.sequencer_scene(context)
        sources, _, problem = sequencer.estimate_sources(scene, self.holdout_strip)
        if problem:
            self.report({"ERROR"}, problem)
            return {"CANCELLED"}
        if not self.output_dir:
            # several strips: each in //depth/<strip name>/, their default folders
            several = len(sources) > 1
            self.output_dir = (
                folders.default_parent() if several else folders.default_output_dir(sources[0].name)
            )
        return context.window_manager.invoke_props_dialog(self, width=420)

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        scene = sequencer.sequencer_scene(context)
        sources, _, _ = sequencer.estimate_sources(scene, self.holdout_strip)
        if sources:
            wrapped_label(layout, sources_line(sources), width=60, icon="SEQUENCE")
        if len(sources) == 1:
            draw_estimate(self, context, layout, sources[0])
        layout.prop(self, "preset")
        layout.prop(self, "dilations")
        layout.prop(self, "refine_steps")
        layout.prop(self, "resolution")
        is_anchored = anchored(self)
        row = layout.row()
        row.enabled = not is_anchored  # the anchors decide: depth in their units
        row.prop(self, "depth_mode")
        look = ANCHORED_LOOK if is_anchored else DEPTH_MODE_LOOK[self.depth_mode]
        wrapped_label(layout, look, width=60, icon="INFO")
        if self.depth_mode == "depth" and not is_anchored:
            row = layout.row(align=True)
            row.prop(self, "near")
            row.prop(self, "far")
        layout.prop(self, "half")
        layout.prop(self, "restore_res")
        row = layout.row()
        row.enabled = self.restore_res
        row.prop(self, "upsample_edges")
        layout.prop(self, "strip_colorspace")
        layout.prop(self, "anchor_solve")
        layout.prop(self, "anchors_file")
        if self.anchors_file and len(sources) > 1:
            wrapped_label(layout, anchors_refusal(self.anchors_file, sources), 60, "ERROR")
        draw_camera(self, layout, sources)
        if scene.sequence_editor is not None:
            layout.prop_search(
                self, "holdout_strip", scene.sequence_editor, sequencer.ALL_STRIPS, icon="MOD_MASK"
            )
        if self.holdout_strip and len(sources) > 1:
            wrapped_label(layout, holdout_refusal(self.holdout_strip, sources), 60, "ERROR")
        layout.prop(self, "output_dir")
        if len(sources) > 1:
            parent = self.output_dir.strip() or folders.default_parent()
            folder = os.path.join(parent, "<strip name>", "")
            layout.label(text=f"One folder per strip: {folder}", icon="INFO")
        if self.output_dir.startswith("//") and not bpy.data.filepath:
            layout.label(text="Unsaved .blend: a temporary folder will be used", icon="INFO")
        layout.prop(self, "replace")
        choices = folder_choices(sources, self.output_dir, self.replace, self.replace_other)
        for choice in choices:
            if choice.question:
                wrapped_label(layout, choice.question, 60, "ERROR")
        if any(choice.other for choice in choices):
            layout.prop(self, "replace_other")
        for choice in choices:
            if choice.note:
                wrapped_label(layout, choice.note, 60, "INFO")
        layout.prop(self, "defocus")

    # ---------------------------------------------------------------- start
    def execute(self, context):
        if jobs.current_job() is not None and not jobs.current_job().done:
            self.report({"ERROR"}, "A RollingDepth run is in progress: cancel it or wait.")
            return {"CANCELLED"}
        scene = sequencer.sequencer_scene(context)
        sources, skipped, problem = sequencer.estimate_sources(scene, self.holdout_strip)
        if problem:
            self.report({"ERROR"}, problem)
            return {"CANCELLED"}
        if self.holdout_strip and len(sources) > 1:
            self.report({"ERROR"}, holdout_refusal(self.holdout_strip, sources))
            return {"CANCELLED"}
        if self.anchors_file.strip() and len(sources) > 1:
            self.report({"ERROR"}, anchors_refusal(self.anchors_file, sources))
            return {"CANCELLED"}
        try:
            settings = [self._settings(context, strip, len(sources) > 1) for strip in sources]
            _check_distinct_folders(sources, settings)
            job = jobs.DepthBatch(scene, sources, settings).start()
        except (EngineError, StripError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if skipped:
            names = ", ".join(repr(strip.name) for strip in skipped)
            self.report({"INFO"}, f"Skipped, not an image sequence or movie: {names}")

        if self.wait or bpy.app.background or context.window is None:
            job.run_blocking()
            return self._end(context, job)

        self._job = job
        jobs.set_current(job)
        wm = context.window_manager
        self._timer = wm.event_timer_add(TIMER_INTERVAL_S, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, 100)
        self._show_progress(context, job)
        return {"RUNNING_MODAL"}

    def _settings(self, context, strip, several: bool = False) -> jobs.JobSettings:
        """The run for ``strip``: its own colour space, solve anchors and output folder
        (``several``: one of several strips, so a chosen folder gets a subfolder for it)."""
        prefs = preferences(context)
        if self.anchor_solve and self.anchors_file.strip():
            raise EngineError(
                "Anchor to Camera Solve and Anchors File both give anchors: use one of them.",
                "ConfigError",
            )
        if self.depth_mode == "depth" and not anchored(self) and not self.near < self.far:
            raise EngineError("Near must be smaller than Far.", "ConfigError")
        checkpoint = self.checkpoint or prefs.checkpoint.strip()
        if not checkpoint:
            raise EngineError(empty_checkpoint_text("RollingDepth weights"), "WeightsError")
        output_dir, note = folders.resolve_output_dir(self.output_dir, strip.name, several)
        choice = folders.choose_folder(
            strip, lambda: plate_of(strip), output_dir, self.replace, self.replace_other
        )
        if choice.question:
            raise StripError(choice.question)
        options = RunOptions(
            checkpoint=checkpoint,
            preset=self.preset,
            dilations=parse_dilations(self.dilations) or None,
            refine_steps=None if self.refine_steps < 0 else self.refine_steps,
            resolution=None if self.resolution < 0 else self.resolution,
            depth_mode="depth" if anchored(self) else self.depth_mode,
            near=self.near,
            far=self.far,
            half=self.half,
            restore_res=self.restore_res,
            upsample=("edge" if self.upsample_edges else "bilinear") if self.restore_res else None,
            input_colorspace=strip.colorspace_settings.name if self.strip_colorspace else None,
            ocio_config=blender_ocio_config() if self.strip_colorspace else None,
            holdout=self._holdout(context),
            anchors=self._anchors_file(),
            **self._camera(context, strip, output_dir),
            device=prefs.device,
            dtype=None if prefs.dtype == "preset" else prefs.dtype,
            requested_by=folders.requested_by(),
            overwrite=choice.overwrite,
            cache=folders.cache_folder(output_dir, strip.name),
        )
        if note:
            self.report({"WARNING"}, note)
        if choice.note:
            self.report({"INFO"}, choice.note)
        engine_path = bpy.path.abspath(prefs.engine_path)
        return jobs.JobSettings(
            engine_path=engine_path,
            options=options,
            output_dir=choice.folder,
            defocus=self.defocus,
            replace=self.replace,
            anchors=self._solve_anchors(context, strip) if self.anchor_solve else None,
            estimate_argv=self._estimate_of(engine_path, strip, options),
        )

    @staticmethod
    def _estimate_of(engine_path: str, strip, options: RunOptions) -> tuple[str, ...]:
        try:
            return tuple(strip_estimate_argv(engine_path, strip, options))
        except (EngineError, StripError):
            return ()  # no estimate: the run still runs, without its time left

    def _solve_anchors(self, context, strip) -> camera_solve.SolveAnchors:
        """The anchors of the strip's solved Movie Clip (the job writes the engine's CSV)."""
        media = sequencer.media_path(strip)
        clip = camera_solve.solved_clip_for(media)
        if clip is None:
            raise StripError(
                f"Anchor to Camera Solve: no Movie Clip of {os.path.basename(media)!r} has a "
                "solved camera; open the footage in the Movie Clip Editor, track and solve it, "
                "or turn the option off."
            )
        try:
            return camera_solve.usable_solve_anchors(clip, sequencer.sequencer_scene(context))
        except camera_solve.CameraSolveError as exc:
            raise StripError(str(exc)) from exc

    def _camera(self, context, strip, output_dir: str) -> dict:
        """The RunOptions of the dialog's camera: the camera written per frame of ``strip``
        as a USD stage beside the strip's kept predictions, the passes and the points."""
        if self.camera == shot_camera.NONE or not (self.write_passes or self.write_points):
            return {}
        if not geometric_ready(self):
            raise EngineError(SCENE_UNITS_NEEDED, "ConfigError")
        scene = sequencer.sequencer_scene(context)
        plan = sequencer.plan_for_strip(strip, "")
        try:
            camera = shot_camera.camera_object(scene, self.camera)
            shot = shot_camera.shot_camera(
                scene, camera, plan.timeline, sequencer.plate_size(strip)
            )
        except shot_camera.ShotCameraError as exc:
            raise StripError(str(exc)) from exc
        stem = folders.cache_folder(output_dir, strip.name)
        try:
            path = shot_camera.write_camera(stem, shot)
        except OSError as exc:
            raise StripError(
                f"Cannot write the camera for the run beside {stem} ({exc.strerror}): choose "
                "another Output Folder."
            ) from exc
        return {
            "camera": path,
            "passes": ",".join(protocol.PASSES if self.write_passes else ("Z",)),
            "points": POINTS_FILE if self.write_points else None,
        }

    def _anchors_file(self) -> str | None:
        """The artist's own anchors file (the engine reads and checks it), absolute."""
        text = self.anchors_file.strip()
        if not text:
            return None
        path = bpy.path.abspath(text)
        if not os.path.isfile(path):
            raise StripError(f"Anchors File: there is no file {path!r}.")
        return path

    def _holdout(self, context) -> str | None:
        if not self.holdout_strip:
            return None
        matte = sequencer.find_strip(sequencer.sequencer_scene(context), self.holdout_strip)
        if matte is None:
            raise StripError(f"Holdout Matte: there is no strip {self.holdout_strip!r}.")
        return sequencer.media_path(matte)

    # ---------------------------------------------------------------- modal
    def modal(self, context, event):
        job = self._job
        if job is None:
            return {"CANCELLED"}
        if event.type == "ESC" and event.value == "PRESS":
            job.cancel()
            return self._end(context, job)
        if event.type == "TIMER":
            if job.step() != jobs.RUNNING:
                return self._end(context, job)
            self._show_progress(context, job)
        elif job.done:  # cancelled from the sidebar's button
            return self._end(context, job)
        return {"PASS_THROUGH"}

    def cancel(self, context):
        """Blender ends the modal operator (window closed, file loaded): stop the engine."""
        if self._job is not None:
            self._job.cancel()
            jobs.finished(self._job)
            self._job = None
            self._cleanup_ui(context)

    def _show_progress(self, context, job) -> None:
        percent = int(job.progress * 100)
        context.window_manager.progress_update(percent)
        if context.workspace is not None:
            context.workspace.status_text_set(
                f"RollingDepth: {job.strip_name}: {job.status_text} ({percent}%)  Esc to cancel"
            )
        _redraw_sequencer(context)

    def _cleanup_ui(self, context) -> None:
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        if context.workspace is not None:
            context.workspace.status_text_set(None)
        _redraw_sequencer(context)

    # ---------------------------------------------------------------- end
    def _end(self, context, job: jobs.DepthBatch | jobs.DepthJob):
        if self._timer is not None or self._job is not None:
            self._cleanup_ui(context)
        self._job = None
        jobs.finished(job)
        for note in job.notes:
            self.report({"INFO"}, f"RollingDepth: {note}")
        for level, line in jobs.outcome_reports(job):
            self.report({level}, line)
        # one undo step for the whole call, also when only some strips got their depth
        if jobs.depth_added(job) and not bpy.app.background:
            bpy.ops.ed.undo_push(message="Estimate Depth (RollingDepth)")
        return {"FINISHED"} if job.state == jobs.FINISHED else {"CANCELLED"}


def geometric_ready(operator) -> bool:
    """Whether the dialog's depth is in scene units, as position, normals and points need."""
    return anchored(operator) or operator.depth_mode == "depth"


def draw_camera(operator, layout, sources) -> None:
    """The camera choice, what it adds, and what it needs."""
    layout.prop(operator, "camera")
    if operator.camera == shot_camera.NONE:
        return
    layout.prop(operator, "write_passes")
    layout.prop(operator, "write_points")
    if not (operator.write_passes or operator.write_points):
        return
    if not geometric_ready(operator):
        wrapped_label(layout, SCENE_UNITS_NEEDED, 60, "ERROR")
    size = sequencer.plate_size(sources[0]) if len(sources) == 1 else None
    if operator.write_passes and size and operator.restore_res:
        frames = sources[0].frame_final_duration
        wrapped_label(layout, shot_camera.passes_size_text(size, frames), 60, "INFO")


def draw_estimate(operator, context, layout, strip) -> None:
    """What the run of ``strip`` will cost (the engine answers in the background; the
    dialog shows it once it has), and the faster choice when there is one."""
    prefs = preferences(context)
    try:
        options = RunOptions(
            checkpoint=operator.checkpoint or prefs.checkpoint.strip(),
            preset=operator.preset,
            dilations=parse_dilations(operator.dilations) or None,
            refine_steps=None if operator.refine_steps < 0 else operator.refine_steps,
            resolution=None if operator.resolution < 0 else operator.resolution,
            restore_res=operator.restore_res,
            device=prefs.device,
            dtype=None if prefs.dtype == "preset" else prefs.dtype,
        )
        argv = strip_estimate_argv(bpy.path.abspath(prefs.engine_path), strip, options)
    except (EngineError, StripError):
        return  # the run itself will say what is wrong
    ready, report = ESTIMATES.get(argv)
    if not ready:
        layout.label(text="Estimating how long this takes…", icon="TIME")
        return
    if report is None:
        return
    wrapped_label(layout, estimate_text(report), width=60, icon="TIME")
    if "--kept" in argv:
        wrapped_label(layout, KEPT_NOTE, width=60, icon="INFO")
    faster = report.get("at_plate_size")
    if faster and operator.resolution != 0:
        time = protocol.duration_text(faster["seconds"])
        layout.prop(operator, "at_plate_size", text=f"Process at the Plate's Size ({time})")


def strip_estimate_argv(engine_path: str, strip, options: RunOptions) -> list[str]:
    """The engine's estimate of a run of ``strip``'s visible frames (engine.estimate_argv);
    of a rerun that only re-aligns when the strip's kept predictions were made for these
    settings (it costs seconds, not the first run's minutes)."""
    frames = strip.frame_final_duration
    size = sequencer.plate_size(strip)
    plate = "" if size else sequencer.media_path(strip)
    argv = estimate_argv(engine_path, frames, options, plate=plate, size=size)
    if kept_for(strip, argv):
        argv.insert(len(argv) - 1, "--kept")  # before the closing --json
    return argv


def kept_for(strip, argv: list[str]) -> bool:
    """Whether ``strip``'s kept predictions are on disk and were made for the run ``argv``
    estimates (sequencer.KEPT_FOR_KEY, written when a run with them finished)."""
    folder = strip.get(sequencer.CACHE_KEY)
    made_for = strip.get(sequencer.KEPT_FOR_KEY)
    if not folder or not made_for or not folders.is_cache_folder(folder):
        return False
    return made_for == kept_key(sequencer.media_path(strip), argv)


def plate_of(strip) -> str:
    """What the engine reads for ``strip`` (its run's record names it); "" where it reads
    temporary links (files without one numbering)."""
    plan = sequencer.plan_for_strip(strip, "")
    return "" if plan.staging else plan.plate


def folder_choices(sources, output_dir: str, replacing: bool, replace_other: bool) -> list:
    """Each strip's `folders.FolderChoice`, for the dialog (strips that cannot run are left
    to the run's own refusal)."""
    several = len(sources) > 1
    choices = []
    for strip in sources:
        try:
            folder, _ = folders.resolve_output_dir(output_dir, strip.name, several)
            choices.append(
                folders.choose_folder(
                    strip, lambda s=strip: plate_of(s), folder, replacing, replace_other
                )
            )
        except StripError:
            continue
    return choices


def _check_distinct_folders(sources, settings: list[jobs.JobSettings]) -> None:
    """Two strips whose names clean to the same folder name would overwrite each other."""
    seen: dict[str, str] = {}
    for strip, run in zip(sources, settings, strict=True):
        key = os.path.normcase(run.output_dir)
        if key in seen:
            raise StripError(
                f"{seen[key]!r} and {strip.name!r} would write to the same folder "
                f"{run.output_dir}: rename one of them."
            )
        seen[key] = strip.name


class SEQUENCER_OT_rollingdepth_cancel(bpy.types.Operator):
    """Stop the running RollingDepth engine"""

    bl_idname = "sequencer.rollingdepth_cancel"
    bl_label = "Cancel RollingDepth"
    bl_description = (
        "Stop the running RollingDepth engine (nothing it wrote is kept) and start no other "
        "strip; strips already finished keep their depth"
    )
    bl_options = {"INTERNAL"}

    @classmethod
    def poll(cls, context):
        job = jobs.current_job()
        return job is not None and not job.done

    def execute(self, context):
        jobs.cancel_current()
        _redraw_sequencer(context)
        return {"FINISHED"}


def kept_predictions_of(scene, strip) -> tuple[object, str] | None:
    """(source strip, folder) of the kept predictions of ``strip`` (or of the strip a depth
    strip was made from), when they are on disk."""
    if strip is None:
        return None
    source_name = strip.get(sequencer.SOURCE_KEY)
    if source_name:
        strip = sequencer.find_strip(scene, source_name)
    folder = strip.get(sequencer.CACHE_KEY) if strip is not None else None
    if not folder or not folders.is_cache_folder(folder):
        return None
    return strip, folder


class SEQUENCER_OT_rollingdepth_remove_kept(bpy.types.Operator):
    """Remove the active strip's kept predictions"""

    bl_idname = "sequencer.rollingdepth_remove_kept"
    bl_label = "Remove Kept Predictions"
    bl_description = (
        "Delete the model's work kept for the active strip (its depth files stay). The next "
        "run of the strip predicts again, at full cost"
    )
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        job = jobs.current_job()
        if job is not None and not job.done:
            return False  # the running engine may be reading or writing them
        scene = sequencer.sequencer_scene(context)
        return kept_predictions_of(scene, sequencer.active_strip(scene)) is not None

    def execute(self, context):
        scene = sequencer.sequencer_scene(context)
        found = kept_predictions_of(scene, sequencer.active_strip(scene))
        if found is None:
            self.report({"ERROR"}, "The active strip has no kept predictions.")
            return {"CANCELLED"}
        strip, folder = found
        size = folders.cache_size(folder) or 0
        try:
            folders.remove_cache(folder)
        except (StripError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        del strip[sequencer.CACHE_KEY]
        self.report(
            {"INFO"},
            f"Removed the kept predictions of {strip.name!r} ({folders.size_text(size)}); "
            "its next run predicts again.",
        )
        _redraw_sequencer(context)
        return {"FINISHED"}


def draw_strip_menu(self, context):
    self.layout.separator()
    self.layout.operator(
        SEQUENCER_OT_rollingdepth_estimate.bl_idname, text="Estimate Depth (RollingDepth)"
    )
