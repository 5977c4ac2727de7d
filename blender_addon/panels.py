"""The Sequencer sidebar's RollingDepth tab: the strips a run would take, the run's stage,
progress and a Cancel button; Focus and Blur of the active strip's Defocus setup."""

from __future__ import annotations

import bpy

from . import folders, jobs, sequencer
from .compositing import defocus_controls, defocus_fields, defocus_scenes_of
from .operators import (
    SEQUENCER_OT_rollingdepth_cancel,
    SEQUENCER_OT_rollingdepth_estimate,
    SEQUENCER_OT_rollingdepth_remove_kept,
    kept_predictions_of,
    sources_line,
    wrapped_label,
)


class SEQUENCER_PT_rollingdepth(bpy.types.Panel):
    bl_label = "RollingDepth"
    bl_space_type = "SEQUENCE_EDITOR"
    bl_region_type = "UI"
    bl_category = "RollingDepth"

    def draw(self, context):
        layout = self.layout
        job = jobs.current_job()
        if job is not None and not job.done:
            layout.label(text=f"Strip: {job.strip_name}", icon="SEQUENCE")
            layout.label(text=job.status_text)
            if hasattr(layout, "progress"):
                layout.progress(factor=job.progress, type="BAR", text=f"{job.progress:.0%}")
            else:
                layout.label(text=f"{job.progress:.0%}")
            layout.operator(SEQUENCER_OT_rollingdepth_cancel.bl_idname, icon="CANCEL")
            return

        scene = sequencer.sequencer_scene(context)
        strip = sequencer.active_strip(scene)
        sources, _, problem = sequencer.estimate_sources(scene)
        column = layout.column()
        if problem:
            wrapped_label(column, problem, icon="INFO")
        elif len(sources) > 1:
            wrapped_label(column, sources_line(sources), icon="SEQUENCE")
        else:
            column.label(text=f"{sources[0].name}", icon="SEQUENCE")
        row = layout.row()
        row.enabled = problem is None
        row.operator(SEQUENCER_OT_rollingdepth_estimate.bl_idname, text="Estimate Depth")
        outcome = jobs.last_outcome()
        if outcome:
            layout.separator()
            wrapped_label(layout, outcome, icon="INFO")
        _draw_kept(layout, scene, strip)
        _draw_timecode(layout, scene, strip)
        _draw_defocus(layout, context, strip)


def timecode_line(scene, strip) -> str | None:
    """The source timecode of the depth under the playhead: of ``strip`` if it is a depth
    strip, else of the depth strip made from it."""
    if strip is None:
        return None
    depths = [strip] if strip.get(sequencer.SOURCE_KEY) else sequencer.depth_strips_of(scene, strip)
    frame = scene.frame_current
    for depth in depths:
        shown = sequencer.timecode_at(depth, frame)
        if shown is None or shown == (None, None):
            continue
        timecode, fps = shown
        rate = f"{fps} fps" if fps else "no frame rate"
        return f"Frame {frame}: {timecode or 'no timecode'} ({rate})"
    return None


KEPT_HELP = (
    "A rerun that changes only the holdout, the anchors or how the depth is written re-aligns "
    "these instead of running the model again."
)


def kept_line(scene, strip) -> str | None:
    """What the sidebar says of the active strip's kept predictions, when it has some."""
    found = kept_predictions_of(scene, strip)
    size = folders.cache_size(found[1]) if found else None
    if size is None:
        return None
    return f"Kept predictions of {found[0].name!r}: {folders.size_text(size)}"


def _draw_kept(layout, scene, strip) -> None:
    line = kept_line(scene, strip)
    if line:
        layout.separator()
        wrapped_label(layout, line, icon="FILE_CACHE")
        wrapped_label(layout, KEPT_HELP)
        layout.operator(SEQUENCER_OT_rollingdepth_remove_kept.bl_idname, icon="TRASH")


def _draw_timecode(layout, scene, strip) -> None:
    line = timecode_line(scene, strip)
    if line:
        layout.label(text=line, icon="TIME")


def _draw_defocus(layout, context, strip) -> None:
    """Focus and Blur of the Defocus scene made for ``strip`` (or of the scene shown)."""
    scenes = [context.scene] if defocus_controls(context.scene) else []
    if not scenes and strip is not None:
        scenes = defocus_scenes_of(strip.get(sequencer.SOURCE_KEY) or strip.name)
    for scene in scenes:
        fields = defocus_fields(scene)
        if not fields:
            continue
        box = layout.box()
        box.label(text=scene.name, icon="SCENE_DATA")
        for data, prop, label in fields:
            box.prop(data, prop, text=label)
