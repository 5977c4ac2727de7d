"""RollingDepth for Blender's Video Sequencer.

Estimates temporally consistent depth for an image-sequence or movie strip by running the
RollingDepth engine in its own Python (a subprocess; Blender never imports torch) and adds the
result as an EXR strip lined up with the source.
"""

from __future__ import annotations

import bpy
from bpy.app.handlers import persistent

from . import engine, jobs
from .operators import (
    SEQUENCER_OT_rollingdepth_cancel,
    SEQUENCER_OT_rollingdepth_estimate,
    draw_strip_menu,
)
from .panels import SEQUENCER_PT_rollingdepth
from .preferences import ROLLINGDEPTH_OT_check_engine, RollingDepthPreferences
from .setup_operators import (
    ROLLINGDEPTH_OT_cancel_setup,
    ROLLINGDEPTH_OT_setup_engine,
    cancel_current_task,
)
from .shot3d import SEQUENCER_OT_rollingdepth_build_shot
from .shot3d import draw_strip_menu as draw_shot_menu

CLASSES = (
    RollingDepthPreferences,
    ROLLINGDEPTH_OT_check_engine,
    ROLLINGDEPTH_OT_setup_engine,
    ROLLINGDEPTH_OT_cancel_setup,
    SEQUENCER_OT_rollingdepth_estimate,
    SEQUENCER_OT_rollingdepth_cancel,
    SEQUENCER_PT_rollingdepth,
    SEQUENCER_OT_rollingdepth_build_shot,
)


@persistent
def _stop_before_load(*_args) -> None:
    """Opening another .blend invalidates the strip a run would add its result to."""
    jobs.cancel_current()


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.SEQUENCER_MT_strip.append(draw_strip_menu)
    bpy.types.SEQUENCER_MT_strip.append(draw_shot_menu)
    bpy.app.handlers.load_pre.append(_stop_before_load)


def unregister() -> None:
    jobs.cancel_current()
    cancel_current_task()
    engine.stop_all()
    if _stop_before_load in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_stop_before_load)
    bpy.types.SEQUENCER_MT_strip.remove(draw_shot_menu)
    bpy.types.SEQUENCER_MT_strip.remove(draw_strip_menu)
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
