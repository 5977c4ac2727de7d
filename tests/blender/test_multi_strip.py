"""Several selected strips in one call: each its own shot (own engine run, folder and depth
strip), one after another, with one report; refusals before anything runs; a failing strip
and a cancel keep the other strips' depth.

Each engine run costs ~10 s on the 2-core test machines: five strips run to the end here."""

from __future__ import annotations

import importlib
import shutil
import time

import bpy
import pytest

from .conftest import fresh_scene, point_at_engine
from .support import (
    ADDON_MODULE,
    MOVIE_FRAMES,
    add_image_strip,
    max_exr_difference,
    run_operator,
    select_only,
)
from .test_job_polling import ModalDriver
from .test_ui import _draw

SOURCE_KEY = "rollingdepth_source"
FRAMES = 4  # per strip: enough for dilations 1 and 3, little engine time on 2 cores


def _names(first: int) -> list[str]:
    return [f"plate.{n:04d}.png" for n in range(first, first + FRAMES)]


def _depth_strips(scene) -> list:
    return [s for s in scene.sequence_editor.strips_all if s.get(SOURCE_KEY)]


def _exrs(folder) -> list[str]:
    return sorted(p.name for p in folder.glob("*.exr"))


@pytest.fixture(scope="module")
def modules(addon):
    return {name: importlib.import_module(f"{ADDON_MODULE}.{name}") for name in ("jobs",)}


@pytest.fixture(scope="module")
def batch(tmp_path_factory, media, addon, modules):
    """A saved .blend with plate A (image sequence, frames 3-6) and C (movie, frames 1-4,
    one channel up); A and a colour strip selected, C active but not selected; one run with
    the dialog's default Output Folder."""
    point_at_engine(media["checkpoint"])
    scene = fresh_scene()
    strips = scene.sequence_editor.strips
    a = add_image_strip(scene, media["sequence_dir"], _names(1001), 1, 3)
    a.name = "A"
    c = strips.new_movie("C", str(media["movie"]), 2, 1)
    c.frame_offset_end = MOVIE_FRAMES - FRAMES  # movie frames 0-3 on timeline 1-4
    colour = strips.new_effect("Colour", "COLOR", 3, 30, length=5)
    select_only(scene, colour, a)
    scene.sequence_editor.active_strip = c  # the active strip runs, selected or not
    folder = tmp_path_factory.mktemp("multi")
    bpy.ops.wm.save_as_mainfile(filepath=str(folder / "shots.blend"))
    scene = bpy.context.scene
    sequencer = importlib.import_module(f"{ADDON_MODULE}.sequencer")
    sources, skipped, problem = sequencer.estimate_sources(scene)
    result = run_operator()
    yield {
        "scene": scene,
        "folder": folder,
        "result": result,
        "planned": ([s.name for s in sources], [s.name for s in skipped], problem),
        "outcome": modules["jobs"].last_outcome(),
        "frames": {"A": range(1001, 1001 + FRAMES), "C": range(0, FRAMES)},
    }
    bpy.ops.wm.read_homefile(use_empty=True)
    point_at_engine(media["checkpoint"])


def test_every_selected_plate_runs_as_its_own_shot(batch):
    scene = batch["scene"]
    # timeline order (start frame, then channel); the colour strip is skipped, not refused
    assert batch["planned"] == (["C", "A"], ["Colour"], None)
    assert batch["result"] == {"FINISHED"}
    assert batch["outcome"] == "2 depth strips added: 'C depth', 'A depth'"
    depth = {s[SOURCE_KEY]: s for s in _depth_strips(scene)}
    assert sorted(depth) == ["A", "C"]
    strips = scene.sequence_editor.strips
    for name, strip in depth.items():
        source = strips[name]
        assert strip.name == f"{name} depth"
        assert strip.channel > source.channel
        assert (strip.frame_final_start, strip.frame_final_end) == (
            source.frame_final_start,
            source.frame_final_end,
        )
    # C runs first and takes channel 3; A's depth then finds 2 (C) and 3 (C's depth) taken
    assert (depth["C"].channel, depth["A"].channel) == (3, 4)


def test_each_strip_writes_its_own_folder(batch):
    """The default Output Folder is each strip's own //depth/<blend name>/<strip name>/, one
    EXR per frame the strip shows."""
    depth = {s[SOURCE_KEY]: s for s in _depth_strips(batch["scene"])}
    for name, numbers in batch["frames"].items():
        assert depth[name].directory == f"//depth/shots/{name}/"
        folder = batch["folder"] / "depth" / "shots" / name
        assert _exrs(folder) == [f"depth.{n:04d}.exr" for n in numbers]
        assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    shots = batch["folder"] / "depth" / "shots"
    assert sorted(p.name for p in shots.iterdir()) == [".rollingdepth-cache", "A", "C"]
    # each strip's kept predictions beside the strips' folders, one folder per strip
    assert sorted(p.name for p in (shots / ".rollingdepth-cache").iterdir()) == ["A", "C"]


def test_each_depth_equals_a_single_strip_run(batch, tmp_path):
    """Same settings, one strip selected: the same EXRs, bit for bit (each strip is its own
    run, so nothing of one shot reaches another's alignment or normalisation)."""
    scene = batch["scene"]
    pairs = []
    for name, numbers in batch["frames"].items():
        select_only(scene, scene.sequence_editor.strips[name])
        assert run_operator(output_dir=str(tmp_path / name), replace=False) == {"FINISHED"}
        assert _exrs(tmp_path / name) == [f"depth.{n:04d}.exr" for n in numbers]
        pairs += [
            (
                str(batch["folder"] / "depth" / "shots" / name / f"depth.{n:04d}.exr"),
                str(tmp_path / name / f"depth.{n:04d}.exr"),
            )
            for n in numbers
        ]
    assert max_exr_difference(pairs) == 0.0


def _two_plates(scene, media):
    a = add_image_strip(scene, media["sequence_dir"], _names(1001), 1, 1)
    a.name = "A"
    b = add_image_strip(scene, media["sequence_dir"], _names(1005), 1, 10)
    b.name = "B"
    return a, b


def test_a_holdout_matte_with_several_strips_is_refused(prefs, scene, media, tmp_path):
    a, b = _two_plates(scene, media)
    roto = add_image_strip(scene, media["sequence_dir"], _names(1001), 2, 1)
    roto.name = "roto"
    select_only(scene, a, roto, b)  # the matte itself is never a source
    with pytest.raises(RuntimeError, match=r"Holdout Matte 'roto' belongs to one plate, but 2"):
        run_operator(holdout_strip="roto", output_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists() and not _depth_strips(scene)
    sequencer = importlib.import_module(f"{ADDON_MODULE}.sequencer")
    select_only(scene, roto, a)
    assert [s.name for s in sequencer.estimate_sources(scene, "roto")[0]] == ["A"]


def test_a_strip_with_a_problem_stops_the_call_before_anything_runs(prefs, scene, media, tmp_path):
    a, b = _two_plates(scene, media)
    reversed_clip = scene.sequence_editor.strips.new_movie("R", str(media["movie"]), 2, 20)
    reversed_clip.use_reverse_frames = True
    select_only(scene, a, reversed_clip, b)
    with pytest.raises(RuntimeError, match=r"Movie strip 'R' plays reversed") as caught:
        run_operator(output_dir=str(tmp_path / "out"))
    assert str(caught.value).count("\n") <= 1  # one line
    # a plate whose files are gone: found before the first engine starts, too
    gone = add_image_strip(scene, media["sequence_dir"], ["plate.1001.png", "gone.1002.png"], 3, 1)
    gone.name = "G"
    select_only(scene, a, gone, b)
    with pytest.raises(RuntimeError, match=r"Strip 'G' cannot be read: 1 file"):
        run_operator(output_dir=str(tmp_path / "out"))
    # two names that make the same folder name: refused, not one written over the other
    a.name, b.name = "shot.1", "shot_1"
    select_only(scene, a, b)
    with pytest.raises(RuntimeError, match=r"'shot.1' and 'shot_1' would write to the same"):
        run_operator(output_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists() and not _depth_strips(scene)


def test_a_failing_strip_is_reported_the_others_keep_their_depth_and_cancel_stops(
    prefs, scene, media, tmp_path, modules
):
    """Plates A, B, C, D in one call into a chosen folder, driven through the operator's own
    `modal` as its timer would. B has a corrupt frame (a truncated render): its run fails and
    C still runs. Cancel during D: D's engine stops and leaves nothing, A and C keep their
    depth, each in its own subfolder, and the reports say which is which."""
    jobs = modules["jobs"]
    folders = importlib.import_module(f"{ADDON_MODULE}.folders")
    operators = importlib.import_module(f"{ADDON_MODULE}.operators")
    engine = importlib.import_module(f"{ADDON_MODULE}.engine")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in _names(1005):
        shutil.copy(media["sequence_dir"] / name, broken / name)
    (broken / "plate.1006.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    plates = []
    for name, folder, first, start in (
        ("A", media["sequence_dir"], 1001, 1),
        ("B", broken, 1005, 10),
        ("C", media["sequence_dir"], 1009, 20),
        ("D", media["sequence_dir"], 1001, 30),
    ):
        plates.append(add_image_strip(scene, folder, _names(first), 1, start))
        plates[-1].name = name
    out = tmp_path / "out"
    options = engine.RunOptions(
        checkpoint=media["checkpoint"], dilations=(1, 3), resolution=64, device="cpu", dtype="fp32"
    )
    settings = [
        jobs.JobSettings(
            str(prefs.engine_path), options, folders.resolve_output_dir(str(out), s.name, True)[0]
        )
        for s in plates
    ]
    batch = jobs.DepthBatch(scene, plates, settings).start()
    jobs.set_current(batch)
    driver = ModalDriver(operators, batch)
    seen, deadline = [], time.monotonic() + 900  # a hang guard: minutes under load
    while batch.strip_name != "D" or batch.current.process.state.total == 0:
        assert driver.event("TIMER") == {"PASS_THROUGH"}, driver.reports
        seen.append((batch.progress, batch.status_text))
        assert time.monotonic() < deadline, "A, B and C did not end"
        time.sleep(0.05)
    progress = [p for p, _ in seen]
    assert progress == sorted(progress) and 0.75 <= progress[-1] < 1.0
    assert seen[0][1].startswith("strip 1 of 4: ") and seen[-1][1].startswith("strip 4 of 4: ")
    last = batch.current
    assert bpy.ops.sequencer.rollingdepth_cancel() == {"FINISHED"}  # the sidebar's button
    assert driver.event("TIMER") == {"CANCELLED"}
    assert batch.state == jobs.CANCELLED and jobs.current_job() is None
    assert last.process.returncode is not None

    errors = [text for kind, text in driver.reports if kind == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith("'B': "), driver.reports
    kept = "depth kept for 'A', 'C'; nothing written for 'B', 'D'."
    assert ("WARNING", f"RollingDepth cancelled; {kept}") in driver.reports
    assert jobs.last_outcome() == f"Cancelled; {kept}"
    depth = {s[SOURCE_KEY]: s for s in _depth_strips(scene)}
    assert sorted(depth) == ["A", "C"]
    assert _exrs(out / "A") == [f"depth.{n}.exr" for n in range(1001, 1005)]
    assert _exrs(out / "C") == [f"depth.{n}.exr" for n in range(1009, 1013)]
    assert sorted(p.name for p in out.iterdir()) == ["A", "C"]  # B's and D's went with them


def test_the_dialog_and_the_sidebar_list_the_strips(prefs, scene, media, addon):
    a, b = _two_plates(scene, media)
    select_only(scene, b, a)
    cls = importlib.import_module(f"{ADDON_MODULE}.operators").SEQUENCER_OT_rollingdepth_estimate
    dialog = dict(
        depth_mode="normalized", restore_res=True, output_dir="//depth/", anchor_solve=False
    )
    layout = _draw(cls, bpy.context, holdout_strip="", **dialog)
    labels = layout.texts("label")
    assert "2 strips: A, B" in labels
    assert "One folder per strip: //depth/<strip name>/" in labels
    layout = _draw(cls, bpy.context, holdout_strip="A", **dialog)  # A is the matte: B alone
    assert any(t.startswith("B: frames 10-13") for t in layout.texts("label"))
    roto = add_image_strip(scene, media["sequence_dir"], _names(1001), 2, 1)
    roto.name = "roto"
    layout = _draw(cls, bpy.context, holdout_strip="roto", **dialog)
    assert "Holdout Matte 'roto' belongs to one plate" in " ".join(layout.texts("label"))
    panels = importlib.import_module(f"{ADDON_MODULE}.panels")
    select_only(scene, b, a)
    layout = _draw(panels.SEQUENCER_PT_rollingdepth, bpy.context)
    assert "2 strips: A, B" in layout.texts("label")
