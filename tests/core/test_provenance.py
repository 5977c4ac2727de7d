"""Who ran a sequence, and what a front-end can tell an artist about an output folder before
it writes there: the request's front-end and requester in the manifest and the EXR headers,
and `protocol.describe_output_folder` over every state a folder can be in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rollingdepth_core import protocol
from rollingdepth_core.exr import read_exr, write_depth_exr
from rollingdepth_core.publish import Publisher, staging_folder

from .plate_fixtures import make_image_sequence

FAST = ["--res", "64", "--dilations", "1", "3", "--device", "cpu", "--seed", "3"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def publish(folder: Path, frames, record=None, name="depth") -> Publisher:
    publisher = Publisher(folder, name, frames, "run-a", source="plate.mov", record=record)
    publisher.check()
    with publisher.writing():
        for n in frames:
            write_depth_exr(publisher.staging_path(n), np.full((4, 6), 0.5, np.float32))
            publisher.wrote(n)
    publisher.publish()
    return publisher


def test_a_folder_without_a_run_is_described_as_none(tmp_path: Path) -> None:
    assert protocol.describe_output_folder(tmp_path) is None
    assert protocol.describe_output_folder(tmp_path / "missing") is None
    (tmp_path / "notes.txt").write_text("x")
    assert protocol.describe_output_folder(tmp_path) is None


def test_a_complete_run_is_described_with_who_ran_it(tmp_path: Path) -> None:
    who = {"front_end": "blender", "requested_by": "/shots/shot_v01.blend",
           "settings": {"preset": "fast", "depth_mode": "inverse", "processing_res": 768,
                        "dilations": [1, 25], "refine_steps": 0}}  # fmt: skip
    publish(tmp_path, range(1001, 1005), who)
    described = protocol.describe_output_folder(tmp_path)
    assert described["state"] == protocol.STATE_COMPLETE
    assert described["front_end"] == "blender"
    assert described["requested_by"] == "/shots/shot_v01.blend"
    assert described["plate"] == "plate.mov" and described["name"] == "depth"
    assert (described["first_frame"], described["last_frame"]) == (1001, 1004)
    assert described["frame_count"] == 4 and described["run_id"] == "run-a"
    assert described["settings"] == (
        "preset fast, depth mode inverse, processing res 768, dilations 1 25, refine steps 0"
    )
    # the manifest's own keys are the protocol's
    manifest = json.loads((tmp_path / "depth_run.json").read_text())
    assert manifest[protocol.KEY_STATE] == protocol.STATE_COMPLETE
    assert manifest[protocol.KEY_FRONT_END] == "blender"


def test_every_state_of_a_folder_is_described_without_raising(tmp_path: Path) -> None:
    publish(tmp_path, range(1, 5))
    manifest_path = tmp_path / "depth_run.json"
    manifest = json.loads(manifest_path.read_text())
    assert protocol.describe_output_folder(tmp_path)["front_end"] == "cli"  # the default
    # a frame gone: incomplete
    (tmp_path / "depth.0004.exr").rename(tmp_path / "kept.exr")
    assert protocol.describe_output_folder(tmp_path)["state"] == protocol.STATE_INCOMPLETE
    (tmp_path / "kept.exr").rename(tmp_path / "depth.0004.exr")
    # a frame the manifest does not list: incomplete too
    (tmp_path / "depth.0009.exr").write_bytes((tmp_path / "depth.0004.exr").read_bytes())
    assert protocol.describe_output_folder(tmp_path)["state"] == protocol.STATE_INCOMPLETE
    (tmp_path / "depth.0009.exr").unlink()
    # a swap in progress (or cut short by a kill)
    manifest_path.write_text(json.dumps({**manifest, "state": protocol.STATE_SWAPPING}))
    assert protocol.describe_output_folder(tmp_path)["state"] == protocol.STATE_SWAPPING
    manifest_path.write_text(json.dumps(manifest))
    staging = staging_folder(tmp_path, "depth")
    staging.mkdir()
    (staging / protocol.JOURNAL_NAME).write_text("{}")
    assert protocol.describe_output_folder(tmp_path)["state"] == protocol.STATE_SWAPPING
    (staging / protocol.JOURNAL_NAME).unlink()
    staging.rmdir()
    # damaged manifests: said, never raised
    for damaged in ("{not json", "[1, 2]", '{"frames": "abc"}', '{"frames": [null]}', "\x00"):
        manifest_path.write_text(damaged)
        described = protocol.describe_output_folder(tmp_path)
        assert described["state"] == protocol.STATE_UNREADABLE, damaged
        assert "depth_run.json" in described["detail"]
    manifest_path.write_bytes(b"\xff\xfe\x00garbage")
    assert protocol.describe_output_folder(tmp_path)["state"] == protocol.STATE_UNREADABLE
    # frames and no manifest
    manifest_path.unlink()
    described = protocol.describe_output_folder(tmp_path)
    assert described["state"] == protocol.STATE_NO_MANIFEST and described["frame_count"] == 4


def test_the_sequence_described_is_the_named_one(tmp_path: Path) -> None:
    publish(tmp_path, [1, 2], {"front_end": "panel"}, name="depth")
    publish(tmp_path, [5, 6, 7], {"front_end": "blender"}, name="shotB")
    assert protocol.describe_output_folder(tmp_path)["name"] == "depth"  # the default name
    assert protocol.describe_output_folder(tmp_path, "shotB")["front_end"] == "blender"
    assert protocol.describe_output_folder(tmp_path, "other") is None


def test_protocol_is_standard_library_only() -> None:
    """The add-on bundles protocol.py into Blender's Python: nothing beyond the stdlib."""
    code = (
        "import sys, importlib.util as u\n"
        "spec = u.spec_from_file_location('p', sys.argv[1]); m = u.module_from_spec(spec)\n"
        "spec.loader.exec_module(m)\n"
        "bad = [n for n in sys.modules if n.split('.')[0] in ('numpy', 'torch', 'rollingdepth_core')]\n"
        "print(m.describe_output_folder(sys.argv[2])); assert not bad, bad\n"
    )
    path = Path(protocol.__file__)
    done = subprocess.run([sys.executable, "-S", "-c", code, str(path), str(path.parent)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_the_command_line_records_the_front_end_and_requester(tmp_path, tiny_checkpoint) -> None:
    plate = make_image_sequence(tmp_path / "plate", 6, height=48, width=64, ext="png")
    out = tmp_path / "out"
    blend = "/shows/ép01/shot_v02.blend"
    args = ["run", plate, "-o", out, "--checkpoint", tiny_checkpoint, *FAST]
    done = subprocess.run(
        [sys.executable, "-m", "rollingdepth_core.cli", *map(str, args), "--front-end",
         "blender", "--requested-by", blend], capture_output=True, text=True, env=ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "depth_run.json").read_text())
    assert manifest["front_end"] == "blender" and manifest["requested_by"] == blend
    for frame in sorted(out.glob("depth.*.exr")):
        attrs = read_exr(frame)[1]
        assert attrs["rollingdepth/front_end"] == "blender"
        assert attrs["rollingdepth/requested_by"] == blend
    described = protocol.describe_output_folder(out)
    assert described["state"] == "complete" and described["requested_by"] == blend
    assert described["plate"] == manifest["source"] and described["frame_count"] == 6
    # not in the run id: the same request from another front-end is the same run
    again = subprocess.run(
        [sys.executable, "-m", "rollingdepth_core.cli", *map(str, args), "--front-end", "cli"],
        capture_output=True, text=True, env=ENV,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    rerun = json.loads((out / "depth_run.json").read_text())
    assert rerun["run_id"] == manifest["run_id"] and rerun["front_end"] == "cli"
    assert rerun["requested_by"] is None
    assert "rollingdepth/requested_by" not in read_exr(out / "depth.1001.exr")[1]


@pytest.mark.parametrize("bad", [["--front-end", "nuke"], ["--requested-by", "a\nb"]])
def test_a_bad_front_end_is_refused_in_one_line(tmp_path, tiny_checkpoint, bad) -> None:
    plate = make_image_sequence(tmp_path / "plate", 6, height=48, width=64, ext="png")
    args = ["run", plate, "-o", tmp_path / "out", "--checkpoint", tiny_checkpoint, *FAST, *bad]
    done = subprocess.run([sys.executable, "-m", "rollingdepth_core.cli", *map(str, args)],
                          capture_output=True, text=True, env=ENV)  # fmt: skip
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode in (1, 2) and ("front-end" in last or "requested-by" in last), last
    assert not (tmp_path / "out").exists()
