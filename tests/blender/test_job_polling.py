"""The poll step the modal operator's timer calls, cancelling, and staged (gappy) strips."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import time
import types

import bpy
import pytest

from .conftest import fresh_scene
from .support import ADDON_MODULE, add_image_strip, run_operator, select_only


@pytest.fixture()
def jobs(addon):
    return importlib.import_module(f"{ADDON_MODULE}.jobs")


@pytest.fixture()
def engine(addon):
    return importlib.import_module(f"{ADDON_MODULE}.engine")


def _options(engine, checkpoint: str):
    return engine.RunOptions(
        checkpoint=checkpoint,
        dilations=(1, 3),
        resolution=64,
        device="cpu",
        dtype="fp32",
    )


def _every_other_frame_strip(media):
    """A strip listing plate.1001, 1003, ... 1011: not one contiguous run, so it is staged."""
    scene = fresh_scene()
    names = [f"plate.{n:04d}.png" for n in range(1001, 1012, 2)]
    strip = add_image_strip(scene, media["sequence_dir"], names, 1, 1)
    scene.sequence_editor.active_strip = strip
    return scene, strip, names


class ModalDriver:
    """Drives the operator's real `modal` method as Blender's timer would (background mode has
    no event loop): the operator class's functions bound to a stand-in instance."""

    def __init__(self, operators, job):
        self.reports: list[tuple[str, str]] = []
        self._timer = None
        self._job = job
        cls = operators.SEQUENCER_OT_rollingdepth_estimate
        for name in ("modal", "cancel", "_end", "_cleanup_ui", "_show_progress"):
            setattr(self, name, types.MethodType(getattr(cls, name), self))
        self.context = types.SimpleNamespace(
            window_manager=bpy.context.window_manager, workspace=None, screen=None
        )

    def report(self, kind, message):
        self.reports.append((next(iter(kind)), message))

    def event(self, kind: str):
        return self.modal(self.context, types.SimpleNamespace(type=kind, value="PRESS"))


@pytest.fixture()
def operators(addon):
    return importlib.import_module(f"{ADDON_MODULE}.operators")


def _start(jobs, engine, prefs, media, tmp_path):
    scene, strip, names = _every_other_frame_strip(media)
    settings = jobs.JobSettings(
        engine_path=str(prefs.engine_path),
        options=_options(engine, media["checkpoint"]),
        output_dir=str(tmp_path),
    )
    job = jobs.DepthJob(scene, strip, settings).start()
    jobs.set_current(job)
    return scene, strip, names, job


# Deadlines in this module only catch a hang: the engine on a busy 2-core machine may take
# minutes, and no test below passes or fails on how long something took when it does end.
HANG_GUARD_S = 900
# How long a frozen engine stays frozen if a timer step waits on it (the step then returns only
# after this, and the test fails): a hang guard too, far beyond what a step that does not
# wait takes on any machine.
FROZEN_GUARD_S = 120


def _steps_while_frozen(driver, pid: int, n: int = 3) -> int:
    """Timer steps taken while the engine process is stopped (SIGSTOP): nothing arrives then,
    so a step that waited on the engine (its output, its exit) could not return until the
    guard thread resumes it. What "never blocks" means, whatever the machine's load."""
    resumed = threading.Event()

    def resume():
        resumed.set()
        os.kill(pid, signal.SIGCONT)

    guard = threading.Timer(FROZEN_GUARD_S, resume)
    os.kill(pid, signal.SIGSTOP)
    guard.start()
    try:
        for _ in range(n):
            assert driver.event("TIMER") == {"PASS_THROUGH"}, driver.reports
            assert not resumed.is_set(), "a timer step waited on the engine"
    finally:
        guard.cancel()
        if not resumed.is_set():
            os.kill(pid, signal.SIGCONT)
    return n


def test_modal_timer_steps_never_block_and_finish(jobs, engine, operators, prefs, media, tmp_path):
    scene, strip, names, job = _start(jobs, engine, prefs, media, tmp_path)
    # every other file: read in place, exactly those numbers
    assert job.plan.frames == ",".join(n.split(".")[1].lstrip("0") for n in names)
    assert job.plan.staging == ()
    driver = ModalDriver(operators, job)
    steps, frozen_steps, seen_progress = 0, 0, False
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        if seen_progress and not frozen_steps and job.process.returncode is None:
            frozen_steps = _steps_while_frozen(driver, job.process.pid)
        result = driver.event("TIMER")
        if result != {"PASS_THROUGH"}:
            break  # the last step adds the strip
        steps += 1
        seen_progress = seen_progress or job.process.state.total > 0
        assert time.monotonic() < deadline, f"the engine did not finish in {HANG_GUARD_S} s"
        time.sleep(0.05)
    assert result == {"FINISHED"}, driver.reports
    assert job.state == jobs.FINISHED
    assert steps > 5 and seen_progress and frozen_steps == 3
    assert jobs.current_job() is None and "Depth strip" in jobs.last_outcome()
    assert any(kind == "INFO" and "Depth strip" in text for kind, text in driver.reports)
    # the output keeps the source files' own numbers, gaps included
    numbers = [int(n.split(".")[1]) for n in names]
    assert sorted(p.name for p in tmp_path.glob("depth.*.exr")) == [
        f"depth.{n:04d}.exr" for n in numbers
    ]
    depth = scene.sequence_editor.strips[job.depth_strip_name]
    assert [e.filename for e in depth.elements] == [f"depth.{n:04d}.exr" for n in numbers]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _assert_gone(job, strip, scene, tmp_path):
    process = job.process
    assert process.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(process.pid, 0)
    assert list(tmp_path.iterdir()) == []
    assert scene.sequence_editor.strips.get(f"{strip.name} depth") is None


def test_cancel_button_mid_run_ends_the_engine_and_leaves_nothing(
    jobs, engine, operators, prefs, media, tmp_path
):
    scene, strip, _, job = _start(jobs, engine, prefs, media, tmp_path)
    driver = ModalDriver(operators, job)
    deadline = time.monotonic() + HANG_GUARD_S
    while job.process.state.total == 0:  # wait until the engine is really working
        assert driver.event("TIMER") == {"PASS_THROUGH"}, driver.reports
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # the button ends the engine mid-run (terminate, then kill after its grace): the process
    # is gone and nothing was written (_assert_gone), however long a busy machine took
    assert bpy.ops.sequencer.rollingdepth_cancel() == {"FINISHED"}  # the sidebar's button
    assert job.process.returncode is not None and job.process.state.result is None
    assert driver.event("TIMER") == {"CANCELLED"}
    assert job.state == jobs.CANCELLED
    assert ("WARNING", "RollingDepth cancelled; no depth files were written.") in driver.reports
    _assert_gone(job, strip, scene, tmp_path)


def test_escape_cancels(jobs, engine, operators, prefs, media, tmp_path):
    scene, strip, _, job = _start(jobs, engine, prefs, media, tmp_path)
    driver = ModalDriver(operators, job)
    assert driver.event("TIMER") == {"PASS_THROUGH"}
    assert driver.event("ESC") == {"CANCELLED"}
    assert job.state == jobs.CANCELLED and jobs.current_job() is None
    _assert_gone(job, strip, scene, tmp_path)


def test_blocking_job_path(jobs, engine, prefs, media, tmp_path):
    """`run_blocking` is the same step loop; a timeout stops the engine and reports it."""
    scene, strip, _, job = _start(jobs, engine, prefs, media, tmp_path)
    jobs.set_current(None)
    assert job.run_blocking(timeout=0.5) == jobs.FAILED
    assert "did not finish within" in job.error
    _assert_gone(job, strip, scene, tmp_path)


def test_engine_process_protocol_with_a_fake_engine(engine, tmp_path):
    """Protocol parsing without the model: chatter, progress, a result, and a crash."""
    script = tmp_path / "fake.py"
    script.write_text(
        "import json, sys\n"
        "print('some library chatter')\n"
        "print(json.dumps({'event': 'progress', 'stage': 'snippets', 'done': 1, 'total': 4,"
        " 'message': 'estimating depth'}), flush=True)\n"
        "print('a warning', file=sys.stderr)\n"
        "if sys.argv[1] == 'ok':\n"
        "    print(json.dumps({'event': 'result', 'ok': True, 'files': []}))\n"
        "else:\n"
        "    raise SystemExit('boom: the GPU caught fire')\n"
    )
    run = engine.EngineProcess([sys.executable, str(script), "ok"]).start()
    assert run.wait(timeout=30)
    assert run.state.result == {"event": "result", "ok": True, "files": []}
    assert run.state.error is None

    crash = engine.EngineProcess([sys.executable, str(script), "crash"]).start()
    assert crash.wait(timeout=30)
    assert crash.state.result is None
    assert crash.state.error["kind"] == "EngineCrash"
    assert "boom: the GPU caught fire" in crash.state.error["message"]
    assert "exit code 1" in crash.state.error["message"]


def test_run_arguments_follow_the_cli(engine):
    options = engine.RunOptions(
        checkpoint="ckpt",
        preset="full",
        dilations=(1, 10, 25),
        refine_steps=5,
        resolution=512,
        depth_mode="depth",
        near=0.5,
        far=50.0,
        half=True,
    )
    argv = engine.run_argv(sys.executable, "plate.####.png", "out", "1001-1010", options)
    joined = " ".join(argv[1:])
    assert joined.startswith(
        "-m rollingdepth_core.cli run plate.####.png -o out --frames 1001-1010"
    )
    for part in (
        "--preset full",
        "--checkpoint ckpt",
        "--dilations 1 10 25",
        "--refine-steps 5",
        "--res 512",
        "--depth-mode depth",
        "--near 0.5 --far 50.0",
        "--half",
        "--channel Y",
        "--restore-res",
        "--progress json",
    ):
        assert part in joined
    assert engine.parse_dilations("1, 10 25") == (1, 10, 25)
    assert engine.parse_dilations("") == ()
    with pytest.raises(engine.EngineError, match="include 1"):
        engine.parse_dilations("10 25")
    # plain options stay off the command line until asked for
    plain = " ".join(
        engine.run_argv(sys.executable, "p.####.png", "out", None, engine.RunOptions())
    )
    assert "--depth-mode normalized" in plain and "--channel Y" in plain
    for flag in ("--upsample", "--input-colorspace", "--ocio-config", "--holdout"):
        assert flag not in plain


def test_dialog_options_reach_the_command_line(addon, prefs, scene, media, tmp_path):
    """Upsample Edges, Strip Colour Space (with Blender's OCIO config) and Holdout Matte, as
    the operator builds them from its properties and the strips."""
    operators = importlib.import_module(f"{ADDON_MODULE}.operators")
    names = [f"plate.{n:04d}.png" for n in range(1001, 1005)]
    plate = add_image_strip(scene, media["sequence_dir"], names, 1, 1)
    plate.colorspace_settings.name = "Linear Rec.709"
    matte = add_image_strip(scene, media["sequence_dir"], names, 2, 1)
    matte.name = "roto"
    movie = scene.sequence_editor.strips.new_movie("roto clip", str(media["movie"]), 3, 1)
    cls = operators.SEQUENCER_OT_rollingdepth_estimate

    def argv(**properties):
        defaults = dict(
            checkpoint="", preset="fast", dilations="", refine_steps=-1, resolution=-1,
            depth_mode="normalized", near=1.0, far=100.0, half=False, restore_res=True,
            upsample_edges=False, strip_colorspace=False, holdout_strip="", anchor_solve=False,
            anchors_file="", output_dir=str(tmp_path), defocus=False, replace=True,
            replace_other=False, camera="NONE", write_passes=False, write_points=True,
        )  # fmt: skip
        stand_in = types.SimpleNamespace(**{**defaults, **properties}, report=lambda *a: None)
        stand_in._holdout = types.MethodType(cls._holdout, stand_in)
        stand_in._anchors_file = types.MethodType(cls._anchors_file, stand_in)
        stand_in._camera = types.MethodType(cls._camera, stand_in)
        stand_in._estimate_of = cls._estimate_of
        settings = cls._settings(stand_in, bpy.context, plate)
        return " ".join(engine_module.run_argv(sys.executable, "p", "o", None, settings.options))

    engine_module = importlib.import_module(f"{ADDON_MODULE}.engine")
    assert "--upsample edge" in argv(upsample_edges=True)
    survey = tmp_path / "survey.csv"
    survey.write_text("frame,x,y,depth\n1001,1,1,2.0\n")
    anchored = argv(anchors_file=str(survey))
    assert f"--anchors {survey}" in anchored and "--depth-mode depth" in anchored
    assert "--upsample bilinear" in argv(upsample_edges=False)
    assert "--upsample" not in argv(upsample_edges=True, restore_res=False)
    colour = argv(strip_colorspace=True)
    ocio = operators.blender_ocio_config()
    assert os.path.isfile(ocio) and ocio.endswith("config.ocio")
    assert f"--input-colorspace Linear Rec.709 --ocio-config {ocio}" in colour
    assert f"--holdout {media['sequence_dir'] / 'plate.####.png'}" in argv(holdout_strip="roto")
    assert f"--holdout {media['movie']}" in argv(holdout_strip=movie.name)
    with pytest.raises(operators.StripError, match="no strip 'gone'"):
        argv(holdout_strip="gone")


def test_ctrl_c_in_a_blocking_run_stops_the_engine_and_reports_cancelled(
    jobs, prefs, media, tmp_path, monkeypatch, capfd
):
    """Background Blender's Ctrl-C lands in the blocking loop as KeyboardInterrupt: it was a
    traceback, and the engine ran on (holding the folder's lock) for the rest of its run."""
    scene = fresh_scene()
    names = [f"plate.{n:04d}.png" for n in range(1001, 1009)]
    strip = add_image_strip(scene, media["sequence_dir"], names, 1, 1)
    select_only(scene, strip)
    seen = {}
    step = jobs.DepthBatch.step

    def step_then_ctrl_c(batch):
        state = step(batch)
        process = batch.current.process if batch.current is not None else None
        if process is not None and process.state.total > 0:  # the engine is working
            seen["process"] = process
            raise KeyboardInterrupt
        return state

    monkeypatch.setattr(jobs.DepthBatch, "step", step_then_ctrl_c)
    out = tmp_path / "depth"
    assert run_operator(output_dir=str(out)) == {"CANCELLED"}  # no exception, no traceback
    process = seen["process"]
    assert process.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(process.pid, 0)
    printed = capfd.readouterr()
    assert "Traceback" not in printed.out + printed.err
    assert "RollingDepth cancelled; no depth files were written." in printed.out + printed.err
    assert not list(out.glob("*.exr")) and not list(out.glob(".*.lock"))
    assert jobs.current_job() is None
