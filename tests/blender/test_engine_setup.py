"""Set Up Engine under real bpy: an engine environment made from a clean user folder by the
add-on's own action, then Check Engine (its selftest) and a depth run through that engine; an
interrupted set-up and one without a usable Python, with the words an artist reads.

The full set-up installs torch and the engine's dependencies with pip (from its cache; torch
pinned by scripts/constraints.txt through PIP_CONSTRAINT, as the rest of the suite): about two
to three minutes on 2 shared cores.
"""

from __future__ import annotations

import importlib
import json
import threading
import time
from pathlib import Path

import bpy
import pytest

from .conftest import fresh_scene
from .support import ADDON_MODULE, REPO, add_image_strip, run_operator

CONSTRAINTS = REPO / "scripts" / "constraints.txt"
# a user folder as artists have them: spaces and letters beyond ASCII
ARTIST_FOLDER = "Künstler Ordner"


@pytest.fixture(scope="module")
def setup_modules(addon):
    return (
        importlib.import_module(f"{ADDON_MODULE}.engine_setup"),
        importlib.import_module(f"{ADDON_MODULE}.setup_operators"),
    )


@pytest.fixture(scope="module")
def artist_folder(setup_modules):
    """The add-on's extension user folder (Blender's), plus a subfolder with spaces and
    non-ASCII letters, emptied: the set-up starts from nothing."""
    _, operators = setup_modules
    real = operators.user_folder
    folder = Path(real()) / ARTIST_FOLDER
    mp = pytest.MonkeyPatch()
    mp.setattr(operators, "user_folder", lambda: str(folder))
    # pip here: torch pinned to the local CPU wheel (letting pip choose downloads a CUDA build)
    mp.setenv("PIP_CONSTRAINT", str(CONSTRAINTS))
    yield folder
    mp.undo()


def _prefs():
    return bpy.context.preferences.addons[ADDON_MODULE].preferences


def _setup_prefs(prefs):
    prefs.setup_python = ""
    prefs.engine_package = ""  # the wheel the built extension carries
    # PyTorch's own index is not reachable from this machine: the registry's build, which the
    # constraints pin to the local CPU wheel (Automatic picks PyTorch's CPU index on Linux)
    prefs.torch_source = "registry"


@pytest.fixture(scope="module")
def made_engine(setup_modules, artist_folder, media):
    """Set Up Engine, pressed once, from a clean user folder."""
    engine_setup, _ = setup_modules
    prefs = _prefs()
    _setup_prefs(prefs)
    prefs.engine_path = ""
    assert not (artist_folder / "engine").exists()
    started = time.monotonic()
    result = bpy.ops.rollingdepth.setup_engine()
    seconds = time.monotonic() - started
    print(f"\nSet Up Engine from a clean user folder: {seconds:.1f} s")
    assert result == {"FINISHED"}, prefs.setup_status
    return {"python": Path(prefs.engine_path), "seconds": seconds, "status": prefs.setup_status}


def test_set_up_engine_makes_an_engine_in_the_user_folder(
    made_engine, artist_folder, setup_modules
):
    engine_setup, _ = setup_modules
    python = made_engine["python"]
    assert python.is_file()
    env = python.parent.parent
    assert env.parent == artist_folder / "engine"
    assert engine_setup.installed_engine(artist_folder) == python
    marker = json.loads((env / engine_setup.MARKER).read_text(encoding="utf-8"))
    assert marker["check"]["torch"].startswith("2.13.0")
    assert Path(marker["engine"]).name.startswith("rollingdepth-")  # the bundled wheel
    assert Path(marker["engine"]).parent.name == "engine"
    assert "Engine set up in" in made_engine["status"] and "Check Engine" in made_engine["status"]


def test_check_engine_runs_the_selftest_of_the_made_engine(made_engine, media, capfd):
    prefs = _prefs()
    prefs.engine_path = str(made_engine["python"])
    prefs.checkpoint = media["checkpoint"]
    prefs.device, prefs.dtype = "cpu", "fp32"
    assert bpy.ops.rollingdepth.check_engine() == {"FINISHED"}
    out = capfd.readouterr().out
    assert "Ready" in out and "Selftest passed" in out and "torch 2.13.0" in out
    assert "Selftest passed" in prefs.setup_status


def test_a_depth_run_through_the_made_engine(made_engine, media, tmp_path):
    prefs = _prefs()
    prefs.engine_path = str(made_engine["python"])
    prefs.checkpoint = media["checkpoint"]
    prefs.device, prefs.dtype = "cpu", "fp32"
    scene = fresh_scene()
    names = [f"plate.{n:04d}.png" for n in range(1001, 1009)]
    strip = add_image_strip(scene, media["sequence_dir"], names, 1, 1)
    scene.sequence_editor.active_strip = strip
    out = tmp_path / "depth out"
    assert run_operator(output_dir=str(out)) == {"FINISHED"}
    depth = [s for s in scene.sequence_editor.strips if s.name.endswith("depth")]
    assert len(depth) == 1 and len(depth[0].elements) == 8
    assert len(list(out.glob("*.exr"))) == 8


def test_an_interrupted_set_up_keeps_nothing(made_engine, setup_modules, artist_folder, capfd):
    """Cancelled while pip installs torch (as Esc or Cancel does): the artist reads that
    nothing was kept; no half-made folder stays, and the engine made before stays in use."""
    engine_setup, operators = setup_modules
    prefs = _prefs()
    _setup_prefs(prefs)
    prefs.engine_path = before = str(made_engine["python"])

    cancelled = []

    def cancel_once_torch_installs():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            task = operators.current_task()
            if isinstance(task, engine_setup.EngineSetup) and task.state.message.startswith(
                "Installing PyTorch"
            ):
                time.sleep(0.5)
                task.cancel()
                cancelled.append(task.state.message)
                return
            time.sleep(0.05)

    canceller = threading.Thread(target=cancel_once_torch_installs)
    canceller.start()
    result = bpy.ops.rollingdepth.setup_engine()  # a warning, not an error: bpy.ops returns
    canceller.join()
    assert cancelled, "the set-up never reached PyTorch's step"
    assert result == {"CANCELLED"}
    assert "Set Up Engine was cancelled; nothing was kept." in capfd.readouterr().out
    assert prefs.setup_status == "Set Up Engine was cancelled; nothing was kept."
    assert prefs.engine_path == before
    envs = sorted((artist_folder / "engine").glob("env-*"))
    assert envs == [made_engine["python"].parent.parent]  # the cancelled env-2 is gone
    assert engine_setup.installed_engine(artist_folder) == made_engine["python"]


def test_a_set_up_without_a_usable_python(setup_modules, artist_folder, tmp_path, monkeypatch):
    """No Python 3.10-3.12 anywhere: the artist reads what was tried and what to install;
    a chosen Python that is too old: what to choose instead. Nothing is made either way."""
    engine_setup, _ = setup_modules
    prefs = _prefs()
    _setup_prefs(prefs)
    old = tmp_path / "python 3.9" / "python3"
    old.parent.mkdir()
    old.write_text("#!/bin/sh\necho '[3, 9, 18]'\n")
    old.chmod(0o755)
    before = sorted((artist_folder / "engine").glob("env-*"))

    monkeypatch.setattr(engine_setup, "python_candidates", lambda *a, **k: [str(old), "/no/python"])
    with pytest.raises(RuntimeError) as caught:
        bpy.ops.rollingdepth.setup_engine()
    message = str(caught.value)
    assert "No Python 3.10-3.12 to make the engine with" in message
    assert f"{old} is Python 3.9.18, not 3.10-3.12" in message
    assert "Install Python 3.12" in message and "python.org" in message
    assert prefs.setup_status in message

    monkeypatch.undo()
    prefs.setup_python = str(old)
    with pytest.raises(RuntimeError, match="The Python for Set Up cannot make the engine"):
        bpy.ops.rollingdepth.setup_engine()
    prefs.setup_python = str(tmp_path / "nowhere" / "python")
    with pytest.raises(RuntimeError, match="does not run"):
        bpy.ops.rollingdepth.setup_engine()
    assert sorted((artist_folder / "engine").glob("env-*")) == before
    prefs.setup_python = ""
