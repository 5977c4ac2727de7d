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

from . import camera_solve, folders, jobs, protocol, sequencer
from .engine import DEFAULT_DEPTH_MODE, EngineError, RunOptions, parse_dilations
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
# Anchor to Camera Solve decides the convention: depth in the solve's scene units.
ANCHORED_LOOK = (
    "Anchor to Camera Solve writes Depth in scene units; the strip shows it as nearest "
    "white .. farthest black"
)


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
    """Estimate temporally consistent depth for each selected image-sequence or movie strip
    (or the active one), one after another, and add it as an EXR strip above its source"""

    bl_idname = "sequencer.rollingdepth_estimate"
    bl_label = "Estimate Depth (RollingDepth)"
    bl_options = {"REGISTER"}

    preset: EnumProperty(name="Preset", items=PRESET_ITEMS, default=protocol.DEFAULT_PRESET)
    dilations: StringProperty(
        name="Dilations",
        description="Frame spacings of the snippets, e.g. `1 10 25`; empty keeps the preset's",
        default="",
    )
    refine_steps: IntProperty(
        name="Refinement Steps",
        description="Refinement steps after co-alignment; -1 keeps the preset's",
        default=-1,
        min=-1,
        max=500,
    )
    resolution: IntProperty(
        name="Resolution",
        description="Longer edge for processing in pixels; -1 keeps the preset's, 0 = plate size",
        default=-1,
        min=-1,
        max=8192,
    )
    depth_mode: EnumProperty(name="Convention", items=DEPTH_MODE_ITEMS, default=DEFAULT_DEPTH_MODE)
    near: FloatProperty(name="Near", default=1.0, min=1e-4, soft_max=1000.0)
    far: FloatProperty(name="Far", default=100.0, min=1e-3, soft_max=100000.0)
    half: BoolProperty(
        name="Half Float", description="Write 16-bit half EXRs instead of 32-bit float"
    )
    restore_res: BoolProperty(
        name="Plate Resolution",
        description="Write the depth at the plate's resolution (else at processing size)",
        default=True,
    )
    upsample_edges: BoolProperty(
        name="Upsample Edges",
        description="At the plate's resolution, put the depth's edges on the plate's edges "
        "(`--upsample edge`); off resizes bilinearly",
        default=True,
    )
    strip_colorspace: BoolProperty(
        name="Strip Colour Space",
        description="Read the plate in the strip's colour space, through Blender's OCIO config "
        "(`--input-colorspace`, `--ocio-config`); off lets the engine guess from the file type",
        default=True,
    )
    anchor_solve: BoolProperty(
        name="Anchor to Camera Solve",
        description="Depth in scene units: a Movie Clip of the same footage with a solved camera "
        "gives points of known depth (every track with a bundle, on every frame its marker is "
        "enabled); the depth is written as distance (`--anchors`, Convention: Depth) and the "
        "Defocus focuses at the camera's focus distance",
        default=False,
    )
    holdout_strip: StringProperty(
        name="Holdout Matte",
        description="An image-sequence or movie strip whose white areas are kept out of the "
        "depth alignment (`--holdout`), e.g. a roto of a moving actor",
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
        layout.prop(self, "preset")
        layout.prop(self, "dilations")
        layout.prop(self, "refine_steps")
        layout.prop(self, "resolution")
        row = layout.row()
        row.enabled = not self.anchor_solve  # the solve decides: depth in scene units
        row.prop(self, "depth_mode")
        look = ANCHORED_LOOK if self.anchor_solve else DEPTH_MODE_LOOK[self.depth_mode]
        wrapped_label(layout, look, width=60, icon="INFO")
        if self.depth_mode == "depth" and not self.anchor_solve:
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
        if self.depth_mode == "depth" and not self.anchor_solve and not self.near < self.far:
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
            depth_mode="depth" if self.anchor_solve else self.depth_mode,
            near=self.near,
            far=self.far,
            half=self.half,
            restore_res=self.restore_res,
            upsample=("edge" if self.upsample_edges else "bilinear") if self.restore_res else None,
            input_colorspace=strip.colorspace_settings.name if self.strip_colorspace else None,
            ocio_config=blender_ocio_config() if self.strip_colorspace else None,
            holdout=self._holdout(context),
            device=prefs.device,
            dtype=None if prefs.dtype == "preset" else prefs.dtype,
            requested_by=folders.requested_by(),
            overwrite=choice.overwrite,
        )
        if note:
            self.report({"WARNING"}, note)
        if choice.note:
            self.report({"INFO"}, choice.note)
        return jobs.JobSettings(
            engine_path=bpy.path.abspath(prefs.engine_path),
            options=options,
            output_dir=choice.folder,
            defocus=self.defocus,
            replace=self.replace,
            anchors=self._solve_anchors(context, strip) if self.anchor_solve else None,
        )

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
    """Stop the running RollingDepth engine (nothing it wrote is kept) and start no other
    strip; strips already finished keep their depth"""

    bl_idname = "sequencer.rollingdepth_cancel"
    bl_label = "Cancel RollingDepth"
    bl_options = {"INTERNAL"}

    @classmethod
    def poll(cls, context):
        job = jobs.current_job()
        return job is not None and not job.done

    def execute(self, context):
        jobs.cancel_current()
        _redraw_sequencer(context)
        return {"FINISHED"}


def draw_strip_menu(self, context):
    self.layout.separator()
    self.layout.operator(
        SEQUENCER_OT_rollingdepth_estimate.bl_idname, text="Estimate Depth (RollingDepth)"
    )
