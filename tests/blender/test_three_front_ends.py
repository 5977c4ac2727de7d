"""One provenance, every front-end (issue 29): the same two-shot edit, with a holdout matte
and anchors, run through the command line, the panel's export and the add-on, gives the
same depth and records the same things, except which front-end ran it.

The panel runs as an artist drives it (its main window, offscreen, in the engine's Python:
open the plate, load the matte and the anchors, Run, Export); the add-on is the real one in
bpy, its job running the engine as a subprocess; the command line is `rollingdepth run`.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import bpy
import pytest

from .conftest import fresh_scene, point_at_engine
from .support import ADDON_MODULE, ENGINE_PYTHON, PLATE_SIZE, engine_cli, engine_python

SHOTS = (12, 10)  # the edit: two shots, a hard cut at clip position 12
N_FRAMES = sum(SHOTS)
SETTINGS = ["--res", "64", "--dilations", "1", "3", "--device", "cpu", "--dtype", "fp32"]
# What only says who ran it; everything else a folder records must agree.
WHO = {"front_end", "requested_by"}

MEDIA = """
import sys
from pathlib import Path
import numpy as np
import OpenImageIO as oiio
from tests.core.test_cuts import write_edit
root, (h, w) = Path(sys.argv[1]), (int(sys.argv[2]), int(sys.argv[3]))
write_edit(root / "edit.mp4", [int(n) for n in sys.argv[4].split(",")], h, w)
(root / "matte").mkdir()
for n in range(int(sys.argv[5])):
    matte = np.zeros((h, w), np.uint8)
    matte[:, : w // 4] = 255  # the left quarter held out of the alignment
    out = oiio.ImageOutput.create("png")
    assert out.open(str(root / "matte" / f"m.{n:04d}.png"), oiio.ImageSpec(w, h, 1, "uint8"))
    assert out.write_image(matte)
    out.close()
"""

# Depth the anchors must agree with: the model's own (a tiny random model's depth is noise,
# which made-up distances would contradict), read at plate-pixel centres of every frame.
ANCHORS = """
import json, sys
from rollingdepth_core.exr import read_exr
folder, out, n_frames = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows, values = [], []
for frame in range(n_frames):
    d = read_exr(f"{folder}/depth.{frame:04d}.exr")[0]["Y"]
    for y in (8, 24, 40):
        for x in (8, 24, 40, 56):
            rows.append((frame, x + 0.5, y + 0.5))
            values.append(float(d[y, x]))
# over the whole range of d (each shot spans -1 .. 1), not just the points': the fit is
# refused if it puts any of the clip at infinity
lo, hi = min(values + [-1.0]), max(values + [1.0])
a = (1 / 2.0 - 1 / 10.0) / (hi - lo)  # 2 .. 10 scene units
b = 1 / 10.0 - a * lo
with open(out, "w") as handle:
    handle.write("# units: m\\nframe,x,y,depth\\n")
    for (frame, x, y), v in zip(rows, values):
        handle.write(f"{frame},{x},{y},{1 / (a * v + b)!r}\\n")
"""

PANEL = """
import json, os, sys, time
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication
plate, matte, anchors, checkpoint, pattern, settings = sys.argv[1:7]
app = QApplication([])
QSettings.setDefaultFormat(QSettings.Format.IniFormat)
QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, settings)
app.setOrganizationName("RollingDepthTest")
app.setApplicationName("ThreeFrontEnds")
from rollingdepth_core.config import OutputConfig
from qt_panel.main_window import MainWindow

window = MainWindow()
window.settings_panel.set_values(
    checkpoint=checkpoint, preset="fast", dilations="1 3", processing_res=64, device="cpu"
)
controller = window.controller
errors, written = [], []
controller.error.connect(lambda *args: errors.append(args))
controller.export_finished.connect(written.append)


def wait(done, what, timeout=600):
    deadline = time.monotonic() + timeout
    while not done():
        app.processEvents()
        if errors:
            raise SystemExit(f"the panel said {errors} while waiting for {what}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)


assert window.open_plate(plate)
wait(lambda: controller.cuts is not None, "the cuts")
assert controller.load_holdout(matte)
assert controller.load_anchors(anchors)
window.run()
wait(lambda: controller.result is not None and not controller.worker.busy, "the run")
wait(lambda: controller.anchor_fit is not None, "the anchor fit")
controller.export(pattern, OutputConfig(depth_mode="depth", channel="Y"), None, False)
wait(lambda: written, "the export")
print(json.dumps({"cuts": controller.cuts, "files": [str(p) for p in written[0]]}))
controller.shutdown()  # the panel's own way out: its worker threads end first
"""

READ = """
import json, sys
import numpy as np
from rollingdepth_core.exr import read_exr
folders, n_frames = json.loads(sys.argv[1]), int(sys.argv[2])
out = {"worst": {}, "headers": {}}
first = {}
for name, folder in folders.items():
    headers = []
    for frame in range(n_frames):
        channels, header = read_exr(f"{folder}/depth.{frame:04d}.exr")
        headers.append({k[len("rollingdepth/"):]: str(v) for k, v in header.items()
                        if k.startswith("rollingdepth/")})
        if frame not in first:
            first[frame] = channels["Y"]
        else:
            worst = float(np.abs(channels["Y"] - first[frame]).max())
            out["worst"][name] = max(out["worst"].get(name, 0.0), worst)
    out["headers"][name] = headers
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def three(tmp_path_factory, media, addon):
    """The edit, its matte and anchors; then the same run by the CLI, the panel, the add-on."""
    root = tmp_path_factory.mktemp("three")
    h, w = PLATE_SIZE
    engine_python(MEDIA, str(root), str(h), str(w), ",".join(map(str, SHOTS)), str(N_FRAMES))
    edit, matte = root / "edit.mp4", str(root / "matte" / "m.####.png")
    common = ["--checkpoint", media["checkpoint"], "--holdout", matte, "--channel", "Y"]
    engine_cli(str(edit), "-o", str(root / "unanchored"), *common, "--depth-mode", "inverse",
               *SETTINGS)  # fmt: skip
    anchors = root / "anchors.csv"
    engine_python(ANCHORS, str(root / "unanchored"), str(anchors), str(N_FRAMES))

    folders = {name: root / name for name in ("cli", "panel", "blender")}
    cli = engine_cli(str(edit), "-o", str(folders["cli"]), *common, "--anchors", str(anchors),
                     "--depth-mode", "depth", *SETTINGS)  # fmt: skip
    panel = json.loads(
        engine_python(
            PANEL, str(edit), matte, str(anchors), media["checkpoint"],
            str(folders["panel"] / "depth.####.exr"), str(root / "qsettings"), timeout=900,
        ).strip().splitlines()[-1]
    )  # fmt: skip

    point_at_engine(media["checkpoint"])
    scene = fresh_scene()
    bpy.ops.wm.save_as_mainfile(filepath=str(root / "edit.blend"))
    scene = bpy.context.scene
    strip = scene.sequence_editor.strips.new_movie("edit", str(edit), 1, 1)
    jobs = importlib.import_module(f"{ADDON_MODULE}.jobs")
    engine = importlib.import_module(f"{ADDON_MODULE}.engine")
    folders_module = importlib.import_module(f"{ADDON_MODULE}.folders")
    options = engine.RunOptions(
        checkpoint=media["checkpoint"], dilations=(1, 3), resolution=64, device="cpu",
        dtype="fp32", depth_mode="depth", restore_res=False, holdout=matte,
        anchors=str(anchors), requested_by=folders_module.requested_by(),
    )  # fmt: skip
    settings = jobs.JobSettings(str(ENGINE_PYTHON), options, str(folders["blender"]))
    batch = jobs.DepthBatch(scene, [strip], [settings]).start()
    assert batch.run_blocking(timeout=900) == jobs.FINISHED, batch.error
    where = json.dumps({name: str(folder) for name, folder in folders.items()})
    read = json.loads(engine_python(READ, where, str(N_FRAMES)))
    yield {"folders": folders, "cli": cli, "panel": panel, "root": root, "read": read}
    bpy.ops.wm.read_homefile(use_empty=True)
    point_at_engine(media["checkpoint"])


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "depth_run.json").read_text())


def test_the_three_front_ends_write_the_same_depth(three):
    assert three["panel"]["cuts"] == [SHOTS[0]]  # the panel found the cut the CLI finds
    assert [s["start"] for s in three["cli"]["shots"]] == [0, SHOTS[0]]
    read = three["read"]
    # the CLI's frames first: the panel and the add-on against them
    assert read["worst"] == {"panel": 0.0, "blender": 0.0}, read["worst"]


def _provenance_differences(three, name: str) -> dict:
    """What ``name``'s folder records differently from the CLI's, besides who ran it: EXR
    header keys (frame by frame) and manifest fields."""
    headers = three["read"]["headers"]
    differ: dict = {}
    for frame in range(N_FRAMES):
        cli, theirs = headers["cli"][frame], headers[name][frame]
        for key in (set(cli) | set(theirs)) - WHO:
            if cli.get(key) != theirs.get(key):
                differ.setdefault(f"header {key}", (cli.get(key), theirs.get(key)))
        assert theirs["front_end"] == name
    cli, theirs = (_manifest(three["folders"][n]) for n in ("cli", name))
    for key in (set(cli) | set(theirs)) - WHO:
        if cli.get(key) != theirs.get(key):
            differ[f"manifest {key}"] = (cli.get(key), theirs.get(key))
    assert theirs["front_end"] == name
    return differ


def test_the_add_on_records_what_the_cli_records(three):
    assert _provenance_differences(three, "blender") == {}
    manifest = _manifest(three["folders"]["blender"])
    assert manifest["requested_by"] == str(three["root"] / "edit.blend")


def test_the_panel_records_what_the_cli_records(three):
    # the same request: the same settings (so the same run id), the same per-shot anchor fits,
    # the same sidecars published with the frames
    assert _provenance_differences(three, "panel") == {}
    cli, panel = (_manifest(three["folders"][n]) for n in ("cli", "panel"))
    assert panel["files"] == cli["files"] and any(f.endswith(".otio") for f in panel["files"])
