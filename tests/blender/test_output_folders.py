"""What the add-on does with an output folder that already holds depth (issue 29).

The engine publishes into the final folder (its lock, staging swap and record beside the
frames); the add-on picks the folder and decides, before the engine starts, whether the
engine may replace what the folder holds. Versioned .blend files get their own default
folders, Replace Previous Depth off writes a new version of the folder, and another run's
depth is replaced only when the artist ticks Replace Other Depth.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

import bpy
import pytest

from .conftest import fresh_scene, point_at_engine
from .support import ADDON_MODULE, add_image_strip, engine_cli, run_operator, select_only
from .test_ui import _draw

SOURCE_KEY = "rollingdepth_source"
NAMES = [f"plate.{n:04d}.png" for n in range(1001, 1005)]


@pytest.fixture()
def modules(addon):
    return {
        name: importlib.import_module(f"{ADDON_MODULE}.{name}")
        for name in ("folders", "operators", "engine")
    }


@pytest.fixture()
def shot(tmp_path, media, addon):
    """An empty scene with a four-frame image strip `plate64`, saved as shot_v01.blend."""
    point_at_engine(media["checkpoint"])
    scene = fresh_scene()
    strip = add_image_strip(scene, media["sequence_dir"], NAMES, 1, 1)
    strip.name = "plate64"
    select_only(scene, strip)
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot_v01.blend"))
    yield tmp_path
    bpy.ops.wm.read_homefile(use_empty=True)
    point_at_engine(media["checkpoint"])


def _scene():
    return bpy.context.scene


def _depth_strips() -> dict[str, object]:
    return {s.name: s for s in _scene().sequence_editor.strips_all if s.get(SOURCE_KEY)}


def _files_of(strip) -> list[Path]:
    folder = Path(bpy.path.abspath(strip.directory))
    return [folder / element.filename for element in strip.elements]


def _digests(paths) -> dict[str, str]:
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


def _record(folder: Path) -> dict:
    return json.loads((folder / "depth_run.json").read_text())


def _save_as(path: Path) -> None:
    bpy.ops.wm.save_as_mainfile(filepath=str(path))


def _select_plate():
    select_only(_scene(), _scene().sequence_editor.strips["plate64"])


def test_two_blend_files_sharing_a_folder_keep_their_own_depth(shot):
    """shot_v01.blend and shot_v02.blend side by side, each with a strip plate64: each run
    goes to its .blend's own folder; the first file's strip still shows its own frames, with
    its own record beside them."""
    assert run_operator() == {"FINISHED"}
    first = _depth_strips()["plate64 depth"]
    kept = _digests(_files_of(first))
    v01, first_folder = _files_of(first)[0].parent, first.directory
    bpy.ops.wm.save_mainfile()

    _save_as(shot / "shot_v02.blend")
    _select_plate()
    # other settings in the second file: its depth differs from the first's
    assert run_operator(depth_mode="inverse") == {"FINISHED"}
    second_folder = _depth_strips()["plate64 depth"].directory
    assert _digests(kept) == kept  # the first file's depth, byte for byte
    assert second_folder != first_folder

    bpy.ops.wm.open_mainfile(filepath=str(shot / "shot_v01.blend"))
    reopened = _depth_strips()["plate64 depth"]
    assert _digests(_files_of(reopened)) == kept
    assert reopened.directory == "//depth/shot_v01/plate64/"
    assert second_folder == "//depth/shot_v02/plate64/"
    for version in ("v01", "v02"):
        folder = shot / "depth" / f"shot_{version}" / "plate64"
        record = _record(folder)
        assert record["requested_by"] == str(shot / f"shot_{version}.blend")
        assert record["front_end"] == "blender"
        # the run's record and timeline beside the frames; no hidden work or staging folder
        assert {"depth_run.json", "depth.otio"} <= {p.name for p in folder.iterdir()}
        assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert v01 == shot / "depth" / "shot_v01" / "plate64"


def test_replace_off_twice_keeps_each_strips_own_frames(shot):
    """Replace Previous Depth off: each run writes a new version of the folder, and every
    depth strip keeps showing the frames of the run it was made from."""
    assert run_operator() == {"FINISHED"}
    shown = {"plate64 depth": _digests(_files_of(_depth_strips()["plate64 depth"]))}
    for mode in ("inverse", "depth"):
        assert run_operator(replace=False, depth_mode=mode) == {"FINISHED"}
        added = [s for name, s in _depth_strips().items() if name not in shown]
        assert len(added) == 1
        shown[added[0].name] = _digests(_files_of(added[0]))
    strips = _depth_strips()
    for name, digests in shown.items():  # every strip shows the frames of its own run
        assert _digests(_files_of(strips[name])) == digests
    assert len({tuple(d.values()) for d in shown.values()}) == 3
    ordered = sorted(strips.values(), key=lambda s: s.channel)
    assert [s.directory for s in ordered] == [
        "//depth/shot_v01/plate64/",
        "//depth/shot_v01/plate64_v002/",
        "//depth/shot_v01/plate64_v003/",
    ]
    runs = [_record(Path(bpy.path.abspath(s.directory)))["run_id"] for s in ordered]
    assert len(set(runs)) == 3  # each folder holds the record of its own run


def test_the_dialog_asks_before_replacing_another_blends_depth(shot):
    """shot_v02.blend pointed at shot_v01.blend's folder: without Replace Other Depth the
    run is refused in one line naming whose depth is there, and nothing changes; the dialog
    says the same and offers the box; ticked, the folder's depth is replaced whole."""
    assert run_operator() == {"FINISHED"}
    v01 = _files_of(_depth_strips()["plate64 depth"])[0].parent
    kept = _digests(sorted(v01.iterdir()))
    bpy.ops.wm.save_mainfile()
    _save_as(shot / "shot_v02.blend")
    _select_plate()
    target = bpy.path.relpath(str(v01)) + "/"

    with pytest.raises(RuntimeError) as refused:
        run_operator(output_dir=target, depth_mode="inverse")
    message = str(refused.value).strip()
    assert "shot_v01.blend" in message and "plate.####.png" in message
    assert "Replace Other Depth" in message and "\n" not in message
    assert _digests(sorted(v01.iterdir())) == kept
    assert _depth_strips()["plate64 depth"].directory == target

    operators = importlib.import_module(f"{ADDON_MODULE}.operators")
    settings = dict(
        depth_mode="inverse",
        output_dir=target,
        restore_res=True,
        holdout_strip="",
        anchor_solve=False,
        replace=True,
    )
    layout = _draw(operators.SEQUENCER_OT_rollingdepth_estimate, bpy.context, **settings)
    assert "replace_other" in [a[1] for name, a, _ in layout.log if name == "prop"]
    # the wrapped question, whole: the plate, its frames, who made it, what to do
    text = " ".join(layout.texts("label"))
    assert "plate.####.png (frames 1001-1004) made by shot_v01.blend" in text
    assert "tick Replace Other Depth to replace it" in text

    assert run_operator(output_dir=target, depth_mode="inverse", replace_other=True) == {"FINISHED"}
    assert _record(v01)["requested_by"] == str(shot / "shot_v02.blend")
    exrs = {k: v for k, v in kept.items() if k.endswith(".exr")}
    assert _digests(exrs) != exrs
    assert _depth_strips()["plate64 depth"].directory == target


def test_the_dialog_asks_before_replacing_depth_made_outside_blender(shot, media):
    """Depth the command line wrote into the strip's default folder: the rerun with Replace
    on is refused, naming it, until the artist agrees; Replace off writes beside it."""
    folder = shot / "depth" / "shot_v01" / "plate64"
    engine_cli(
        str(media["sequence_dir"] / "plate.####.png"),
        "-o",
        str(folder),
        "--checkpoint",
        media["checkpoint"],
        "--frames",
        "1001-1004",
        "--res",
        "64",
        "--dilations",
        "1",
        "3",
        "--device",
        "cpu",
        "--dtype",
        "fp32",
    )
    kept = _digests(sorted(folder.glob("depth.*.exr")))
    with pytest.raises(RuntimeError, match="made by the rollingdepth command"):
        run_operator()
    assert _digests(sorted(folder.glob("depth.*.exr"))) == kept
    assert run_operator(replace=False) == {"FINISHED"}
    assert _depth_strips()["plate64 depth"].directory == "//depth/shot_v01/plate64_v002/"
    assert _digests(sorted(folder.glob("depth.*.exr"))) == kept


def test_rerun_with_replace_on_replaces_the_strips_own_depth_without_asking(shot):
    """The strip's own earlier depth (this .blend, this plate) is what Replace Previous
    Depth replaces: no question, one depth strip, one sequence in the folder."""
    assert run_operator() == {"FINISHED"}
    folder = shot / "depth" / "shot_v01" / "plate64"
    first = _record(folder)["run_id"]
    assert run_operator(depth_mode="inverse") == {"FINISHED"}
    assert list(_depth_strips()) == ["plate64 depth"]
    assert _record(folder)["run_id"] != first
    assert sorted(p.name for p in folder.glob("depth.*.exr")) == [
        f"depth.{n}.exr" for n in range(1001, 1005)
    ]


def test_the_engine_is_told_who_asked_and_whether_it_may_replace(modules):
    engine = modules["engine"]
    args = engine.RunOptions(requested_by="/shots/a.blend", overwrite=True).arguments()
    assert args[args.index("--front-end") + 1] == "blender"
    assert args[args.index("--requested-by") + 1] == "/shots/a.blend"
    assert "--overwrite" in args
    assert "--overwrite" not in engine.RunOptions().arguments()
    protocol = importlib.import_module(f"{ADDON_MODULE}.protocol")
    assert engine.FRONT_END in protocol.FRONT_ENDS


def test_an_unsaved_blend_writes_to_its_sessions_temporary_folder(addon, modules):
    import os
    import tempfile

    bpy.ops.wm.read_homefile(use_empty=True)
    folders = modules["folders"]
    assert folders.default_output_dir("plate 64") == "//depth/unsaved/plate_64/"
    folder, note = folders.resolve_output_dir("", "plate 64")
    assert folder.startswith(tempfile.gettempdir())
    assert f"unsaved-{os.getpid()}" in folder and folder in note
    assert folders.requested_by().startswith("unsaved .blend")


def test_whose_depth_a_folder_holds_decides_whether_replace_asks(shot, modules, media):
    """The rules without an engine run: a folder recorded as made by this .blend from this
    plate is the strip's own depth, unless a depth strip of another plate here shows it; a
    folder made by this .blend from another plate asks."""
    folders = modules["folders"]
    folder = shot / "depth" / "shared"
    folder.mkdir(parents=True)
    frames = [f"depth.{n}.exr" for n in range(1001, 1005)]
    for name in frames:
        (folder / name).write_bytes(b"a frame")
    plate = str(media["sequence_dir"] / "plate.####.png")

    def record(source: str) -> None:
        manifest = {"run_id": "r1", "source": source, "name": "depth",
                    "frames": list(range(1001, 1005)), "state": "complete", "complete": True,
                    "files": frames, "front_end": "blender",
                    "requested_by": folders.requested_by()}  # fmt: skip
        (folder / "depth_run.json").write_text(json.dumps(manifest))

    record(plate)
    scene = _scene()
    source = scene.sequence_editor.strips["plate64"]
    choice = folders.choose_folder(source, lambda: plate, str(folder), True, False)
    assert choice.overwrite and choice.question is None  # plate64's own earlier depth

    other = add_image_strip(scene, media["sequence_dir"], NAMES, 2, 1)
    other.name = "B"
    shown = scene.sequence_editor.strips.new_image("B depth", str(folder / frames[0]), 3, 1)
    shown["rollingdepth_source"] = "B"
    choice = folders.choose_folder(source, lambda: plate, str(folder), True, False)
    assert not choice.overwrite and "shown by 'B depth' in this .blend" in choice.question
    assert "made by this .blend" in choice.question
    scene.sequence_editor.strips.remove(shown)

    record(str(shot / "other" / "plate.####.exr"))
    choice = folders.choose_folder(source, lambda: plate, str(folder), True, False)
    assert not choice.overwrite and "the depth of plate.####.exr" in choice.question
    choice = folders.choose_folder(source, lambda: plate, str(folder), True, True)
    assert choice.overwrite and choice.question is None and "replacing" in choice.note
    # Replace off asks nothing and replaces nothing: the first free version
    choice = folders.choose_folder(source, lambda: plate, str(folder), False, False)
    assert choice.folder == f"{folder}_v002" and not choice.overwrite
