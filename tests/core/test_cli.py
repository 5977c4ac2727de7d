"""End to end through the `rollingdepth` command, with the tiny random checkpoint."""

import json
import os
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest

from rollingdepth_core.cli import main
from rollingdepth_core.exr import read_exr
from rollingdepth_core.sample import write_sample_video

from .cli_in_process import run_in_process
from .plate_fixtures import make_image_sequence

FAST = ["--res", "64", "--dilations", "1", "3", "--device", "cpu", "--seed", "3"]


def run_process(*args):
    """The command in a process of its own, as the add-on and a farm start it."""
    return subprocess.run(
        [sys.executable, "-m", "rollingdepth_core.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_sample_video(
        tmp_path_factory.mktemp("plate") / "plate.mp4", n_frames=10, height=48, width=80
    )


def exr_spec(path):
    inp = oiio.ImageInput.open(str(path))
    spec = inp.spec()
    inp.close()
    return spec


@pytest.mark.slow
def test_video_end_to_end(video, tmp_path, tiny_checkpoint):
    out = tmp_path / "depth"
    proc = run_in_process(
        "run",
        video,
        "-o",
        out,
        "--checkpoint",
        tiny_checkpoint,
        *FAST,
        "--confidence",
        "--preview",
        "--refine-steps",
        "2",
    )
    assert proc.returncode == 0, proc.stderr
    files = sorted(out.glob("depth.*.exr"))
    assert [f.name for f in files] == [f"depth.{i:04d}.exr" for i in range(10)]
    values = []
    for f in files:
        channels, attrs = read_exr(f)
        assert set(channels) == {"Z", "confidence"}
        assert channels["Z"].shape == (38, 64)  # 48x80 plate, longer edge -> 64
        assert channels["Z"].dtype == np.float32 and np.isfinite(channels["Z"]).all()
        assert exr_spec(f).channelformat(0) == oiio.FLOAT
        assert attrs["rollingdepth/model"] == str(tiny_checkpoint)
        assert attrs["rollingdepth/depth_mode"] == "inverse"
        assert attrs["rollingdepth/setting.dilations"] == "1 3"
        assert attrs["rollingdepth/setting.refine_steps"] == 2
        assert attrs["rollingdepth/source"] == str(video)
        values.append(channels["Z"])
    assert np.ptp(np.stack(values)) > 0
    assert (out / "depth_preview.mp4").stat().st_size > 0
    sidecar = json.loads((out / "depth_alignment.json").read_text())
    assert sidecar["method"] == "robust"
    assert not list(out.glob(".*"))  # no temp files left


@pytest.mark.slow
def test_exr_sequence_end_to_end(tmp_path, tiny_checkpoint):
    pattern = make_image_sequence(tmp_path / "plate", 8, 64, 48, start=1001, ext="exr")
    out = tmp_path / "depth"
    proc = run_in_process(
        "run",
        pattern,
        "-o",
        out,
        "--checkpoint",
        tiny_checkpoint,
        *FAST,
        "--frames",
        "1002-1007",
        "--half",
        "--channel",
        "depth.Z",
        "--restore-res",
        "--depth-mode",
        "depth",
        "--near",
        "2",
        "--far",
        "50",
    )
    assert proc.returncode == 0, proc.stderr
    files = sorted(out.glob("depth.*.exr"))
    assert [f.name for f in files] == [f"depth.{i}.exr" for i in range(1002, 1008)]
    for f in files:
        channels, attrs = read_exr(f)
        assert list(channels) == ["depth.Z"]
        assert channels["depth.Z"].shape == (48, 64)
        assert exr_spec(f).channelformat(0) == oiio.HALF
        z = channels["depth.Z"]
        assert z.min() >= 2 * 0.999 and z.max() <= 50 * 1.001
        assert attrs["rollingdepth/near"] == 2.0 and attrs["rollingdepth/far"] == 50.0


def test_same_seed_same_result(video, tmp_path, tiny_checkpoint):
    for name in ("a", "b"):
        assert (
            main(
                [
                    "run",
                    str(video),
                    "-o",
                    str(tmp_path / name),
                    "--checkpoint",
                    str(tiny_checkpoint),
                    *FAST,
                ]
            )
            == 0
        )
    a, _ = read_exr(tmp_path / "a" / "depth.0004.exr")
    b, _ = read_exr(tmp_path / "b" / "depth.0004.exr")
    np.testing.assert_array_equal(a["Z"], b["Z"])


@pytest.mark.slow
def test_json_progress_protocol(video, tmp_path, tiny_checkpoint):
    proc = run_process(
        "run", video, "-o", tmp_path, "--checkpoint", tiny_checkpoint, *FAST, "--progress", "json"
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    stages = [e["stage"] for e in events if e["event"] == "progress"]
    assert {"encode", "snippets", "align", "write"} <= set(stages)
    assert events[-1]["event"] == "result" and len(events[-1]["files"]) == 10
    assert events[-1]["first_frame"] == 0 and events[-1]["last_frame"] == 9


def one_line_error(capsys, argv, needle):
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rollingdepth: error:"), err
    assert needle in err[0]
    return err[0]


def test_bad_inputs(tmp_path, capsys, tiny_checkpoint):
    out = tmp_path / "out"
    out.mkdir()
    keep = out / "depth.0000.exr"
    keep.write_bytes(b"an earlier result")
    ck = ["--checkpoint", str(tiny_checkpoint)]
    one_line_error(
        capsys, ["run", str(tmp_path / "missing.mp4"), "-o", str(out), *ck], "missing.mp4"
    )
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(4000))
    one_line_error(capsys, ["run", str(garbage), "-o", str(out), *ck], "garbage.mp4")
    single = write_sample_video(tmp_path / "one.mp4", n_frames=1, height=32, width=32)
    one_line_error(capsys, ["run", str(single), "-o", str(out), *ck], "at least 2 frames")
    mixed = make_image_sequence(tmp_path / "mixed", 4, 32, 32, ext="png")
    other = make_image_sequence(tmp_path / "big", 1, 48, 32, start=1004, ext="png")
    Path(other.replace("####", "1004")).rename(Path(mixed.replace("####", "1004")))
    one_line_error(capsys, ["run", mixed, "-o", str(out), *ck], "1004")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    one_line_error(capsys, ["run", mixed, "-o", str(blocker / "sub"), *ck], "output folder")
    video = write_sample_video(tmp_path / "v.mp4", n_frames=6, height=32, width=32)
    one_line_error(capsys, ["run", str(video), "-o", str(out), "--frames", "50-60", *ck], "range")
    one_line_error(
        capsys, ["run", str(video), "-o", str(out), "--dilations", "2", *ck], "include 1"
    )
    one_line_error(
        capsys,
        ["run", str(video), "-o", str(out), "--device", "cpu", "--dtype", "fp16", *ck],
        "fp32",
    )
    one_line_error(
        capsys,
        ["run", str(video), "-o", str(out), "--checkpoint", str(tmp_path / "nowhere")],
        "does not exist",
    )
    line = one_line_error(
        capsys,
        ["run", str(video), "-o", str(out), "--checkpoint", "prs-eth/rollingdepth-v1-0"],
        "not available",
    )
    assert "--checkpoint" in line and "selftest" in line
    assert keep.read_bytes() == b"an earlier result"  # nothing already written is lost


def interrupt_during_snippets(child: subprocess.Popen) -> str:
    """SIGINT to a `--progress json` run while it predicts snippets; returns the rest of its
    output once it has exited with 130."""
    for line in child.stdout:
        event = json.loads(line)
        if event.get("stage") == "snippets" and event["done"] < event["total"]:
            child.send_signal(signal.SIGINT)
            break
    rest = child.stdout.read()
    assert child.wait(timeout=300) == 130  # a hang guard: it exits at the next report
    return rest


@pytest.mark.slow
def test_ctrl_c_leaves_no_partial_file(tmp_path, tiny_checkpoint):
    video = write_sample_video(tmp_path / "long.mp4", n_frames=40, height=48, width=64)
    out = tmp_path / "depth"
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rollingdepth_core.cli",
            "run",
            str(video),
            "-o",
            str(out),
            "--checkpoint",
            str(tiny_checkpoint),
            *FAST,
            "--progress",
            "json",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    # interrupt early in the longest stage, so the signal surely lands before the run ends
    # (the EXR writer's own temp-file handling is tested in test_exr.py)
    rest = interrupt_during_snippets(child)
    assert json.loads(rest.strip().splitlines()[-1])["kind"] == "cancelled"
    leftovers = [p for p in out.iterdir() if not p.name.startswith("depth.")]
    assert leftovers == []
    for f in out.glob("depth.*.exr"):  # whatever was written is whole
        channels, _ = read_exr(f)
        assert np.isfinite(channels["Z"]).all()


def test_check_reports_whether_a_run_would_find_the_weights(tmp_path, tiny_checkpoint):
    """`check --json --checkpoint`: the folder, or the run's own WeightsError; never a download."""

    def check(checkpoint):
        proc = run_in_process("check", "--json", "--checkpoint", checkpoint)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.splitlines()[-1])

    found = check(tiny_checkpoint)
    assert found["checkpoint_folder"] == str(tiny_checkpoint) and not found["checkpoint_download"]
    assert "lacks" in check(tmp_path)["checkpoint_error"]  # a folder without the layout
    # a hub id not in the cache while HF_HUB_OFFLINE is set: a run would fail
    assert "HF_HUB_OFFLINE" in check("nobody/no-such-model")["checkpoint_error"]


def test_selftest(capsys):
    assert main(["selftest"]) == 0
    assert "selftest PASSED" in capsys.readouterr().err


def test_sample_video_keeps_fractional_rate(video):
    from rollingdepth_core.plate import open_plate

    assert open_plate(video).info.fps == Fraction(24000, 1001)
