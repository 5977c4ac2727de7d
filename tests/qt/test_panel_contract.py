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
    assert f"{folder} holds frames 0-5 from another export" in holds
    assert "run id" not in holds and "`" not in holds and "--" not in holds
    qtbot.waitUntil(lambda: not c.worker.busy, timeout=RUN_TIMEOUT_MS)
    box = window.replace_box
    assert box.isVisible() and "Replace" in box.button(box.StandardButton.Yes).text()
    assert box.text().startswith(f"{folder} holds frames 0-5 from another export.")
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


# What may differ between the CLI's and the panel's files of one request: who ran it.
FRONT_END_KEYS = {"rollingdepth/front_end"}
WHO = {"front_end", "requested_by"}


def write_mattes(folder, numbers, value: int = 0):
    folder.mkdir()
    for n in numbers:
        pixels = np.full((HEIGHT, WIDTH, 1), value, np.uint8)
        pixels[: HEIGHT // 3] = 255  # the top third held out: "sky"
        out = oiio.ImageOutput.create("png")
        assert out.open(str(folder / f"m.{n:04d}.png"), oiio.ImageSpec(WIDTH, HEIGHT, 1, "uint8"))
        assert out.write_image(pixels)
        out.close()
    return folder / "m.####.png"


def test_the_panels_export_records_what_the_cli_records(
    qtbot, window, tiny_checkpoint, tmp_path, monkeypatch
):
    """The same request (a 2-shot edit, a holdout, anchors) through the CLI and the panel's
    export: the same header keys with the same values (each shot's anchor fit), the same
    manifest (settings, run id, used, timecode, sidecars), except which front-end ran it."""
    from tests.core.test_cuts import write_edit

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # DateTime: the same in both

    edit = write_edit(tmp_path / "edit.mp4", [12, 10], HEIGHT, WIDTH)
    mattes = write_mattes(tmp_path / "mattes", range(22))
    cli = [sys.executable, "-m", "rollingdepth_core.cli", "run", str(edit), "--checkpoint",
           str(tiny_checkpoint), "--res", "64", "--dilations", "1", "3", "--device", "cpu",
           "--dtype", "fp32", "--holdout", str(mattes)]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    plain = subprocess.run([*cli, "-o", str(tmp_path / "plain")], capture_output=True,
                           text=True, timeout=600, env=env)  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    rows = []  # anchors that agree with the depth: 1/Z an affine map of the inverse depth
    for n in (0, 5, 11, 12, 16, 21):
        d = read_exr(tmp_path / "plain" / f"depth.{n:04d}.exr")[0]["Z"]
        sy, sx = HEIGHT / d.shape[0], WIDTH / d.shape[1]  # depth pixels to plate pixels
        for i, j in ((10, 10), (30, 25), (55, 35)):
            z = 1.0 / (0.5 * float(d[j, i]) + 2.0)
            rows.append(f"{n},{(i + 0.5) * sx},{(j + 0.5) * sy},{z!r}\n")
    anchors = tmp_path / "anchors.csv"
    anchors.write_text("frame,x,y,depth\n" + "".join(rows))
    done = subprocess.run([*cli, "-o", str(tmp_path / "cli"), "--anchors", str(anchors)],
                          capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr

    c = window.controller
    assert window.open_plate(str(edit))
    assert c.load_holdout(str(mattes))
    assert c.load_anchors(str(anchors))
    run_and_wait(qtbot, window)
    qtbot.waitUntil(lambda: c.anchor_fit is not None, timeout=RUN_TIMEOUT_MS)
    with qtbot.waitSignal(c.export_finished, timeout=RUN_TIMEOUT_MS):
        c.export(str(tmp_path / "panel" / "depth.####.exr"), OutputConfig(), None, False)

    ours = json.loads((tmp_path / "panel" / "depth_run.json").read_text())
    theirs = json.loads((tmp_path / "cli" / "depth_run.json").read_text())
    assert (ours["front_end"], theirs["front_end"]) == ("panel", "cli")
    assert ours["used"] == theirs["used"]
    assert set(ours["used"]) == {"holdout", "anchors", "cuts"}
    assert ours["used"]["cuts"] == {"source": "detected", "starts": [12]}
    assert ours.get("timecode") == theirs.get("timecode")
    assert {k: v for k, v in ours.items() if k not in WHO} == {
        k: v for k, v in theirs.items() if k not in WHO
    }
    assert {"depth_anchors.json", "depth_alignment.json"} <= set(ours["files"])
    for n in range(22):
        header = read_exr(tmp_path / "panel" / f"depth.{n:04d}.exr")[1]
        cli_header = read_exr(tmp_path / "cli" / f"depth.{n:04d}.exr")[1]
        assert header.keys() == cli_header.keys(), set(header) ^ set(cli_header)
        differ = {k for k in header if header[k] != cli_header[k]}
        assert differ <= FRONT_END_KEYS, {k: (header[k], cli_header[k]) for k in differ}
        assert header["rollingdepth/front_end"] == "panel"
