"""The Estimate Depth dialog says what a run will cost before it starts (from the engine, in
the background), offers the plate's size when that is faster, and the run says its time left
(status bar, sidebar, and the blocking path's lines)."""

from __future__ import annotations

import importlib
import time
import types

import bpy
import pytest

from .support import ADDON_MODULE, add_image_strip, select_only
from .test_ui import RecordingLayout


@pytest.fixture()
def modules(addon):
    return types.SimpleNamespace(
        operators=importlib.import_module(f"{ADDON_MODULE}.operators"),
        engine=importlib.import_module(f"{ADDON_MODULE}.engine"),
        jobs=importlib.import_module(f"{ADDON_MODULE}.jobs"),
    )


@pytest.fixture()
def strip(scene, media):
    names = [f"plate.{n:04d}.png" for n in range(1001, 1009)]
    strip = add_image_strip(scene, media["sequence_dir"], names, 1, 1)
    select_only(scene, strip)
    return strip


def dialog(modules, **values):
    """The dialog's draw with the operator's defaults and ``values`` over them."""
    rna = bpy.ops.sequencer.rollingdepth_estimate.get_rna_type()
    settings = {
        p.identifier: p.default
        for p in rna.properties
        if p.identifier != "rna_type" and not getattr(p, "is_array", False)
    }
    settings.update(values)
    stand_in = types.SimpleNamespace(layout=RecordingLayout(), **settings)
    modules.operators.SEQUENCER_OT_rollingdepth_estimate.draw(stand_in, bpy.context)
    return stand_in.layout


def labels(layout) -> str:
    return " ".join(layout.texts("label"))


def test_the_dialog_says_the_cost_and_offers_the_plate_size(
    prefs, modules, strip, tmp_path, monkeypatch
):
    # a machine without earlier runs: the session's other tests' runs teach the shared book
    monkeypatch.setenv("ROLLINGDEPTH_CONFIG_DIR", str(tmp_path / "config"))
    layout = dialog(modules)  # the preset's 768 px on a 64x48 plate
    assert "Estimating how long this takes" in labels(layout)
    deadline = time.monotonic() + 120
    while "Estimating" in labels(layout) and time.monotonic() < deadline:
        time.sleep(0.2)
        layout = dialog(modules)
    text = labels(layout)
    assert "8 frames at 768x576: about " in text
    assert "larger than the plate (64x48)" in text and "rough" in text
    offers = [kw.get("text", "") for name, a, kw in layout.log if name == "prop"
              and a[1] == "at_plate_size"]  # fmt: skip
    assert offers and offers[0].startswith("Process at the Plate's Size (about ")


def test_the_one_click_choice_sets_the_plate_size(prefs, modules, strip):
    rna = bpy.ops.sequencer.rollingdepth_estimate.get_rna_type()
    assert rna.properties["at_plate_size"].name == "Process at the Plate's Size"
    operator = types.SimpleNamespace(at_plate_size=True, resolution=-1)
    modules.operators.use_plate_size(operator, bpy.context)  # its update rule
    assert operator.resolution == 0
    operator.at_plate_size = False
    modules.operators.use_plate_size(operator, bpy.context)
    assert operator.resolution == -1


def test_a_run_says_its_time_left(prefs, modules, strip, tmp_path, capsys):
    engine, jobs, operators = modules.engine, modules.jobs, modules.operators
    options = engine.RunOptions(
        checkpoint=prefs.checkpoint, resolution=64, dilations=(1, 3), device="cpu", dtype="fp32"
    )
    argv = operators.strip_estimate_argv(prefs.engine_path, strip, options)
    assert engine.ESTIMATES.wait(argv)["frames"] == 8
    settings = jobs.JobSettings(
        engine_path=prefs.engine_path,
        options=options,
        output_dir=str(tmp_path / "out"),
        estimate_argv=tuple(argv),
    )
    batch = jobs.DepthBatch(bpy.context.scene, [strip], [settings]).start()
    seen = []
    while batch.step() == jobs.RUNNING:
        seen.append(batch.status_text)
        time.sleep(0.05)
    assert batch.state == jobs.FINISHED
    assert any(text.endswith(" left") and "about " in text for text in seen), seen[-5:]
