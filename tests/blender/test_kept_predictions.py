"""A rerun costs what it changes: the strip's kept predictions (the engine's cache beside its
depth) are re-aligned when only what acts after the model changed (here: a holdout matte
added), recomputed when a model setting changed, and removable from the sidebar."""

from __future__ import annotations

import importlib
import time
import types

import bpy
import pytest

from .conftest import fresh_scene, point_at_engine
from .support import (
    ADDON_MODULE,
    PLATE_SIZE,
    add_image_strip,
    engine_python,
    max_exr_difference,
    run_operator,
    select_only,
)
from .test_ui import RecordingLayout

FRAMES = 24
NAMES = [f"plate.{n:04d}.png" for n in range(1001, 1001 + FRAMES)]
MATTES = [f"matte.{n:04d}.png" for n in range(1001, 1001 + FRAMES)]
REUSED = "the model's work was kept from the last run: this run only re-aligned"


@pytest.fixture(scope="module")
def strip24(tmp_path_factory, media, addon):
    """A 24-frame plate strip and a matte strip (a box over the right third), in a saved
    .blend so that the depth and its kept predictions go beside it."""
    root = tmp_path_factory.mktemp("kept")
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import numpy as np\n"
        "import OpenImageIO as oiio\n"
        "from rollingdepth_core.sample import sample_frame\n"
        "root = Path(sys.argv[1])\n"
        f"h, w = {PLATE_SIZE}\n"
        "def write(path, pixels):\n"
        "    out = oiio.ImageOutput.create(str(path))\n"
        "    spec = oiio.ImageSpec(w, h, pixels.shape[2], 'uint8')\n"
        "    assert out.open(str(path), spec), oiio.geterror()\n"
        "    out.write_image(pixels)\n"
        "    out.close()\n"
        f"for i in range({FRAMES}):\n"
        f"    rgb = sample_frame(i, {FRAMES}, h, w)\n"
        "    write(root / f'plate.{1001 + i:04d}.png', (rgb * 255 + 0.5).astype(np.uint8))\n"
        "    matte = np.zeros((h, w, 1), np.uint8)\n"
        "    matte[:, 2 * w // 3 :] = 255\n"
        "    write(root / f'matte.{1001 + i:04d}.png', matte)\n"
    )
    engine_python(code, str(root))
    point_at_engine(media["checkpoint"])
    scene = fresh_scene()
    matte = add_image_strip(scene, root, MATTES, 2, 1)
    matte.name = "roto"
    plate = add_image_strip(scene, root, NAMES, 1, 1)
    select_only(scene, plate)
    bpy.ops.wm.save_as_mainfile(filepath=str(root / "shot.blend"))
    yield {"root": root, "depth": root / "depth" / "shot" / "plate"}
    bpy.ops.wm.read_homefile(use_empty=True)
    point_at_engine(media["checkpoint"])


@pytest.fixture()
def events(monkeypatch, addon):
    """Every event the engine sent in this test, in order."""
    engine = importlib.import_module(f"{ADDON_MODULE}.engine")
    seen: list[dict] = []
    apply = engine.EngineProcess._apply

    def recording(self, event):
        seen.append(event)
        apply(self, event)

    monkeypatch.setattr(engine.EngineProcess, "_apply", recording)
    return seen


def _stages(events) -> set[str]:
    return {e.get("stage") for e in events if e.get("event") == "progress"}


def _result(events) -> dict:
    return [e for e in events if e.get("event") == "result"][-1]


def _select_plate():
    scene = bpy.context.scene
    select_only(scene, scene.sequence_editor.strips["plate"])
    return scene


def _dialog_says(**values) -> tuple[str, list[str]]:
    """The Estimate Depth dialog's labels once the engine's estimate is in, and the argv of
    that estimate, for the operator's defaults with run_operator's settings and ``values``."""
    operators = importlib.import_module(f"{ADDON_MODULE}.operators")
    rna = bpy.ops.sequencer.rollingdepth_estimate.get_rna_type()
    settings = {p.identifier: p.default for p in rna.properties
                if p.identifier != "rna_type" and not getattr(p, "is_array", False)}  # fmt: skip
    settings.update({"resolution": 64, "dilations": "1 3", "preset": "fast", **values})
    deadline = time.monotonic() + 300  # a hang guard: the engine answers in seconds
    while True:
        stand_in = types.SimpleNamespace(layout=RecordingLayout(), **settings)
        operators.SEQUENCER_OT_rollingdepth_estimate.draw(stand_in, bpy.context)
        text = " ".join(stand_in.layout.texts("label"))
        if "Estimating" not in text or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    engine = importlib.import_module(f"{ADDON_MODULE}.engine")
    strip = bpy.context.scene.sequence_editor.active_strip
    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    options = engine.RunOptions(checkpoint=prefs.checkpoint, resolution=settings["resolution"],
                                dilations=(1, 3), restore_res=settings["restore_res"],
                                device=prefs.device, dtype=prefs.dtype)  # fmt: skip
    return text, operators.strip_estimate_argv(prefs.engine_path, strip, options)


def test_a_rerun_with_a_holdout_re_aligns_the_kept_predictions(strip24, events):
    jobs = importlib.import_module(f"{ADDON_MODULE}.jobs")
    folders = importlib.import_module(f"{ADDON_MODULE}.folders")
    panels = importlib.import_module(f"{ADDON_MODULE}.panels")
    scene = _select_plate()
    kept = strip24["root"] / "depth" / "shot" / ".rollingdepth-cache" / "plate"

    started = time.perf_counter()
    assert run_operator() == {"FINISHED"}
    first_s = time.perf_counter() - started
    first = _result(events)
    assert "load" in _stages(events) and first["cache_stats"]["blocks_computed"] > 0
    assert REUSED not in jobs.last_outcome()
    without = strip24["root"] / "without_holdout"
    without.mkdir()
    for path in strip24["depth"].glob("depth.*.exr"):
        (without / path.name).write_bytes(path.read_bytes())
    # kept beside the depth, shown in the sidebar with its size
    assert {"blocks", "latents"} <= {p.name for p in kept.iterdir()} <= set(folders.CACHE_PARTS)
    plate = scene.sequence_editor.strips["plate"]
    assert plate[importlib.import_module(f"{ADDON_MODULE}.sequencer").CACHE_KEY] == str(kept)
    line = panels.kept_line(scene, plate)
    assert line and line.startswith("Kept predictions of 'plate': ") and "B" in line
    assert folders.cache_size(str(kept)) > 0
    # the dialog prices the rerun as what it is: a re-alignment, not the first run again
    operators = importlib.import_module(f"{ADDON_MODULE}.operators")
    engine = importlib.import_module(f"{ADDON_MODULE}.engine")
    text, argv = _dialog_says(holdout_strip="roto")
    assert "--kept" in argv and operators.KEPT_NOTE in text, text
    full = [a for a in argv if a != "--kept"]
    kept_s, full_s = engine.ESTIMATES.wait(argv)["seconds"], engine.ESTIMATES.wait(full)["seconds"]
    assert kept_s < full_s / 2, (kept_s, full_s)
    text, argv = _dialog_says(holdout_strip="roto", resolution=48)  # a model setting changed
    assert "--kept" not in argv and operators.KEPT_NOTE not in text, text

    events.clear()
    started = time.perf_counter()
    assert run_operator(holdout_strip="roto") == {"FINISHED"}
    second_s = time.perf_counter() - started
    second = _result(events)
    # no model ran: nothing loaded, every block found in the kept predictions
    assert "load" not in _stages(events), _stages(events)
    assert second["model_loaded"] is False
    assert second["cache_stats"]["blocks_computed"] == 0
    assert second["cache_stats"]["blocks_reused"] == first["cache_stats"]["blocks_computed"]
    assert REUSED in jobs.last_outcome()
    print(f"\n24-frame strip: first run {first_s:.1f} s, rerun with a holdout {second_s:.1f} s")
    print(f"engine's own: first {first['seconds']} s, rerun {second['seconds']} s")
    print(f"first timings {first['timings']}; rerun timings {second['timings']}")
    rerun = {p.name: p.read_bytes() for p in strip24["depth"].glob("depth.*.exr")}
    assert len(rerun) == FRAMES
    saved = strip24["root"] / "rerun"
    saved.mkdir()
    for name, data in rerun.items():
        (saved / name).write_bytes(data)

    # the same frames as a fresh run with the holdout: remove the kept predictions (the
    # sidebar's button), run again, compare
    with bpy.context.temp_override(scene=scene):
        assert bpy.ops.sequencer.rollingdepth_remove_kept() == {"FINISHED"}
    assert not kept.exists()
    assert panels.kept_line(scene, plate) is None
    assert "--kept" not in _dialog_says(holdout_strip="roto")[1]  # nothing kept: full price
    assert len(list(strip24["depth"].glob("depth.*.exr"))) == FRAMES  # depth stays
    events.clear()
    assert run_operator(holdout_strip="roto") == {"FINISHED"}
    assert "load" in _stages(events)
    assert _result(events)["cache_stats"]["blocks_reused"] == 0
    pairs = [(str(saved / n), str(strip24["depth"] / n)) for n in sorted(rerun)]
    assert max_exr_difference(pairs) == 0.0
    # and the holdout changed the depth: the rerun did not just keep the first run's frames
    assert max_exr_difference([(str(saved / n), str(without / n)) for n in sorted(rerun)]) > 0


def test_a_changed_model_setting_predicts_again(strip24, events):
    jobs = importlib.import_module(f"{ADDON_MODULE}.jobs")
    _select_plate()
    assert run_operator(holdout_strip="roto") == {"FINISHED"}  # kept for these settings
    events.clear()
    assert run_operator(holdout_strip="roto", resolution=48) == {"FINISHED"}
    stats = _result(events)["cache_stats"]
    assert "load" in _stages(events) and stats["blocks_computed"] > 0
    assert stats["blocks_reused"] == 0
    assert REUSED not in jobs.last_outcome()


def test_remove_kept_predictions_removes_only_a_cache(strip24, tmp_path, addon):
    folders = importlib.import_module(f"{ADDON_MODULE}.folders")
    # a folder of depth (or anything else) named like the strip is never removed
    lookalike = tmp_path / ".rollingdepth-cache" / "plate"
    (lookalike / "blocks").mkdir(parents=True)
    (lookalike / "depth.1001.exr").write_bytes(b"x")
    with pytest.raises(Exception, match="does not hold RollingDepth's kept predictions"):
        folders.remove_cache(str(lookalike))
    assert (lookalike / "depth.1001.exr").exists()
    other = tmp_path / "cache" / "plate"
    (other / "blocks").mkdir(parents=True)
    with pytest.raises(Exception, match="does not hold RollingDepth's kept predictions"):
        folders.remove_cache(str(other))
    assert other.exists()


def test_a_folder_that_cannot_keep_predictions_does_not_stop_the_run(strip24, tmp_path, events):
    """Kept predictions go beside the depth; where they cannot (here a file is in the way),
    the run still writes its depth and says that reruns will not be faster."""
    jobs = importlib.import_module(f"{ADDON_MODULE}.jobs")
    scene = _select_plate()
    (tmp_path / ".rollingdepth-cache").write_text("not a folder")
    assert run_operator(output_dir=str(tmp_path / "out")) == {"FINISHED"}
    assert len(list((tmp_path / "out").glob("depth.*.exr"))) == FRAMES
    assert "cache_stats" not in _result(events)
    assert (tmp_path / ".rollingdepth-cache").read_text() == "not a folder"
    plate = scene.sequence_editor.strips["plate"]
    key = importlib.import_module(f"{ADDON_MODULE}.sequencer").CACHE_KEY
    assert not plate.get(key, "").startswith(str(tmp_path))  # the earlier ones stay shown
    assert jobs.last_outcome().startswith("Depth strip 'plate depth' added")
