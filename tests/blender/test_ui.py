"""The sidebar panel, the dialog and the preferences draw without errors in every state.

Background mode has no windows to draw in, so each draw function runs against a recording
stand-in for UILayout: it catches misspelt calls and wrong states, not pixel layout.
"""

from __future__ import annotations

import importlib
import types

import bpy
import pytest

from .support import ADDON_MODULE, add_image_strip


class RecordingLayout:
    """Accepts any UILayout call; records labels, operators and progress bars."""

    def __init__(self, log=None):
        self.log = [] if log is None else log

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.log.append((name, args, kwargs))
            return RecordingLayout(self.log)

        return call

    def __setattr__(self, name, value):
        if name == "log":
            object.__setattr__(self, name, value)

    def texts(self, kind):
        return [
            kw.get("text", args[0] if args else "") for name, args, kw in self.log if name == kind
        ]


def _draw(cls, context, **attributes):
    stand_in = types.SimpleNamespace(layout=RecordingLayout(), **attributes)
    cls.draw(stand_in, context)
    return stand_in.layout


@pytest.fixture()
def modules(addon):
    return types.SimpleNamespace(
        panels=importlib.import_module(f"{ADDON_MODULE}.panels"),
        operators=importlib.import_module(f"{ADDON_MODULE}.operators"),
        jobs=importlib.import_module(f"{ADDON_MODULE}.jobs"),
        preferences=importlib.import_module(f"{ADDON_MODULE}.preferences"),
    )


def test_panel_without_a_strip_explains_what_to_do(modules, scene):
    layout = _draw(modules.panels.SEQUENCER_PT_rollingdepth, bpy.context)
    assert any("Select an image-sequence" in t for t in layout.texts("label"))


def test_panel_while_running_shows_stage_progress_and_cancel(modules, scene, media):
    strip = add_image_strip(
        scene, media["sequence_dir"], ["plate.1001.png", "plate.1002.png"], 1, 1
    )
    scene.sequence_editor.active_strip = strip
    job = types.SimpleNamespace(
        done=False, strip_name=strip.name, status_text="predicting snippets 3/8", progress=0.4
    )
    modules.jobs.set_current(job)
    try:
        layout = _draw(modules.panels.SEQUENCER_PT_rollingdepth, bpy.context)
    finally:
        modules.jobs.set_current(None)
    assert "predicting snippets 3/8" in layout.texts("label")
    assert [kw["factor"] for name, _, kw in layout.log if name == "progress"] == [0.4]
    assert [a[0] for name, a, _ in layout.log if name == "operator"] == [
        "sequencer.rollingdepth_cancel"
    ]


def test_dialog_and_preferences_draw(modules, scene, media):
    strip = add_image_strip(
        scene, media["sequence_dir"], ["plate.1001.png", "plate.1002.png"], 1, 1
    )
    scene.sequence_editor.active_strip = strip
    layout = _draw(
        modules.operators.SEQUENCER_OT_rollingdepth_estimate,
        bpy.context,
        depth_mode="depth",
        output_dir="//depth/plate/",
    )
    props = [a[1] for name, a, _ in layout.log if name == "prop"]
    assert props[:4] == ["preset", "dilations", "refine_steps", "resolution"]
    assert {"near", "far", "half", "restore_res", "output_dir", "defocus"} <= set(props)
    assert any("temporary folder" in t for t in layout.texts("label"))

    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    layout = _draw(modules.preferences.RollingDepthPreferences, bpy.context)
    layout_props = [a[1] for name, a, _ in layout.log if name == "prop"]
    assert layout_props == ["engine_path", "checkpoint", "device", "dtype"]
    assert prefs.bl_rna.properties["engine_path"].subtype == "FILE_PATH"
