"""The panel keeps the run contract: each shot of an edit runs on its own as the CLI runs it,
and its export is published whole, never over another run's frames without asking."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import OpenImageIO as oiio

from rollingdepth_core.config import OutputConfig
from rollingdepth_core.exr import read_exr, write_depth_exr

from .conftest import HEIGHT, N_FRAMES, RUN_TIMEOUT_MS, WIDTH
from .test_main_window import run_and_wait


def test_a_two_shot_edit_runs_and_exports_as_the_cli_runs_it(
    qtbot, window, tiny_checkpoint, tmp_path
):
    from tests.core.test_cuts import write_edit

    edit = write_edit(tmp_path / "edit.mp4", [12, 10], HEIGHT, WIDTH)
    c = window.controller
    assert window.open_plate(str(edit))
    prediction = run_and_wait(qtbot, window)
    assert [shot.start for shot, _ in prediction.shots] == [0, 12]
    assert c.cuts == [12] and window.scrubber.cuts_label.text() == "2 shots"
    # each shot is normalised on its own, as a run does
    for shot, _ in prediction.shots:
        part = prediction.depth[shot.start : shot.stop]
        assert abs(part.min() + 1) < 1e-6 and abs(part.max() - 1) < 1e-6
    pattern = str(tmp_path / "panel" / "depth.####.exr")
    with qtbot.waitSignal(c.export_finished, timeout=RUN_TIMEOUT_MS) as done:
        c.export(pattern, OutputConfig(), None, False)
    assert len(done.args[0]) == 22

    cli = subprocess.run(
        [sys.executable, "-m", "rollingdepth_core.cli", "run", str(edit), "-o",
         str(tmp_path / "cli"), "--checkpoint", str(tiny_checkpoint), "--res", "64",
         "--dilations", "1", "3", "--device", "cpu", "--dtype", "fp32"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    worst = 0.0
    for n in range(22):
        ours, header = read_exr(tmp_path / "panel" / f"depth.{n:04d}.exr")
        theirs, cli_header = read_exr(tmp_path / "cli" / f"depth.{n:04d}.exr")
        worst = max(worst, float(np.abs(ours["Z"] - theirs["Z"]).max()))
        assert header["rollingdepth/shot"] == cli_header["rollingdepth/shot"]
    assert worst < 1e-5, worst
    manifest = json.loads((tmp_path / "panel" / "depth_run.json").read_text())
    assert manifest["used"]["cuts"]["starts"] == [12]


def test_export_into_a_folder_of_another_plate_asks_first(qtbot, window, clip, tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    # another plate's sequence, with no manifest of ours: six frames we must not mix into
    for n in range(6):
        write_depth_exr(folder / f"depth.{n:04d}.exr", np.full((4, 6), 7.0, np.float32))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    c = window.controller
    assert window.open_plate(str(clip))
    run_and_wait(qtbot, window)
    pattern = str(folder / "depth.####.exr")
    with qtbot.waitSignal(c.replace_asked, timeout=RUN_TIMEOUT_MS) as asked:
        c.export(pattern, OutputConfig(), None, False)
    holds, export = asked.args
    assert "holds 6 depth.*.exr frames (0-5)" in holds
    qtbot.waitUntil(lambda: not c.worker.busy, timeout=RUN_TIMEOUT_MS)
    box = window.replace_box
    assert box.isVisible() and "Replace" in box.button(box.StandardButton.Yes).text()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # untouched
    # the user agrees: the export's sequence replaces the folder's whole
    with qtbot.waitSignal(c.export_finished, timeout=RUN_TIMEOUT_MS):
        box.button(box.StandardButton.Yes).click()
    names = sorted(p.name for p in folder.glob("depth.*.exr"))
    assert names == [f"depth.{n:04d}.exr" for n in range(N_FRAMES)]
    inp = oiio.ImageInput.open(str(folder / "depth.0000.exr"))
    assert (inp.spec().width, inp.spec().height) != (6, 4)
    inp.close()
    assert not (folder / ".depth.staging").exists() and not (folder / ".depth.lock").exists()
