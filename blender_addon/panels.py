"""The Sequencer sidebar's RollingDepth tab: the run's stage, progress and a Cancel button;
Focus and Blur of the active strip's Defocus setup."""

from __future__ import annotations

import textwrap

import bpy

from . import jobs, sequencer
from .compositing import defocus_controls, defocus_scenes_of
from .operators import SEQUENCER_OT_rollingdepth_cancel, SEQUENCER_OT_rollingdepth_estimate


def _wrapped(layout, text: str, width: int = 42, icon: str = "NONE") -> None:
    column = layout.column(align=True)
    for i, line in enumerate(textwrap.wrap(text, width) or [""]):
        column.label(text=line, icon=icon if i == 0 else "BLANK1")


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

        strip = sequencer.active_strip(sequencer.sequencer_scene(context))
        problem = sequencer.strip_problem(strip)
        column = layout.column()
        if problem:
            _wrapped(column, problem, icon="INFO")
        else:
            column.label(text=f"{strip.name}", icon="SEQUENCE")
        row = layout.row()
        row.enabled = problem is None
        row.operator(SEQUENCER_OT_rollingdepth_estimate.bl_idname, text="Estimate Depth")
        outcome = jobs.last_outcome()
        if outcome:
            layout.separator()
            _wrapped(layout, outcome, icon="INFO")
        _draw_defocus(layout, context, strip)


def _draw_defocus(layout, context, strip) -> None:
    """Focus and Blur of the Defocus scene made for ``strip`` (or of the scene shown)."""
    scenes = [context.scene] if defocus_controls(context.scene) else []
    if not scenes and strip is not None:
        scenes = defocus_scenes_of(strip.get(sequencer.SOURCE_KEY) or strip.name)
    for scene in scenes:
        controls = defocus_controls(scene)
        if controls is None:
            continue
        focus, defocus = controls
        box = layout.box()
        box.label(text=scene.name, icon="SCENE_DATA")
        box.prop(focus, "default_value", text="Focus (0 far, 1 near)")
        box.prop(defocus, "z_scale", text="Blur (px)")
