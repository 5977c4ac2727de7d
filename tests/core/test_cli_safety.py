"""The command's safety promises: early refusals, signals, help, memory."""

import argparse
import json
import os
import resource
import signal
import subprocess
import sys

import numpy as np
import OpenImageIO as oiio
import pytest

from rollingdepth_core.cli import build_parser, main
from rollingdepth_core.sample import write_sample_video

from .test_cli import interrupt_during_snippets

FAST = ["--res", "64", "--dilations", "1", "3", "--device", "cpu", "--seed", "3"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_sample_video(
        tmp_path_factory.mktemp("plate") / "plate.mp4", n_frames=6, height=32, width=48
    )


@pytest.mark.parametrize("command", ["run", "infer", "finalize"])
def test_every_flag_has_a_help_line_with_its_default(command):
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices[command]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        flag = action.option_strings[-1]
        assert action.help, f"{flag} has no help line"
        assert "default" in action.help or "required" in action.help, f"{flag}: {action.help}"
    text = parser.format_help()
    assert "(default: fast)" in text
    assert ("--overwrite" in text) == (command != "infer")  # infer writes no frames


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--depth-mode", "depth", "--far", "inf"], "finite"),
        (["--depth-mode", "depth", "--far", "1e6", "--half"], "--half"),
        (["--channel", "confidence", "--confidence"], "--channel confidence"),
        (["--name", "../../escaped"], "not a path"),
        (["--name", ""], "must not be empty"),
        (["--name", ".hidden"], "hidden"),
        (["--name", "a[1]*"], "may hold letters, digits, _ - . + and spaces only"),
    ],
)
def test_settings_that_fail_only_at_writing_are_refused_before_the_model(
    video, tmp_path, capsys, flags, message
):
    # A checkpoint that does not exist: the refusal must come before the model is looked for.
    out = tmp_path / "a" / "b" / "out"
    code = main(["run", str(video), "-o", str(out), "--checkpoint", str(tmp_path / "none"), *flags])
    assert code == 1
    error = capsys.readouterr().err.strip()
    assert message in error and "checkpoint" not in error
    assert list(tmp_path.rglob("*")) == []  # nothing written anywhere, escaped or hidden


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_sigint_stops_a_run_started_with_sigint_ignored(tmp_path, tiny_checkpoint):
    # Farm wrappers (and `nohup`-style launchers) start jobs with SIGINT ignored; Python then
    # installs no KeyboardInterrupt handler, and without our own the run went on to the end.
    video = write_sample_video(tmp_path / "long.mp4", n_frames=40, height=48, width=64)
    child = subprocess.Popen(
        [sys.executable, "-m", "rollingdepth_core.cli", "run", str(video), "-o",
         str(tmp_path / "depth"), "--checkpoint", str(tiny_checkpoint), *FAST,
         "--progress", "json"],
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
        preexec_fn=_ignore_sigint,
    )  # fmt: skip
    rest = interrupt_during_snippets(child)
    last = json.loads(rest.strip().splitlines()[-1])
    assert last["kind"] == "cancelled"
    assert "no partial files were left" not in last["message"]


_MAX_RSS_OF = """
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(proc.stderr)
print(proc.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


def test_a_frame_too_large_for_memory_is_refused_clearly(tmp_path, tiny_checkpoint):
    # 16384x16384 display windows (3 GiB per frame as float RGB) in three tiny EXR files:
    # the plate was decoded whole, framed in its display window, and kept.
    for number in (1, 2, 3):
        spec = oiio.ImageSpec(16, 16, 3, "half")
        spec.full_x, spec.full_y, spec.full_width, spec.full_height = 0, 0, 16384, 16384
        path = str(tmp_path / f"huge.{number}.exr")
        out = oiio.ImageOutput.create(path)
        assert out.open(path, spec) and out.write_image(np.full((16, 16, 3), 0.5, np.float32))
        assert out.close()
    # --res 0: processing at the plate's size cannot fit whatever the reader does
    command = [
        sys.executable, "-m", "rollingdepth_core.cli", "run", str(tmp_path / "huge.#.exr"),
        "-o", str(tmp_path / "out"), "--checkpoint", str(tiny_checkpoint), "--device", "cpu",
        "--res", "0",
    ]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", _MAX_RSS_OF, *command],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
        # a safety net for the machine if the guard fails: the run then dies, and the test too
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_DATA, (6 * 2**30, 6 * 2**30)),
    )
    code, peak = map(int, proc.stdout.split())
    assert code == 1, proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert "16384x16384" in error and "needs 3.00 GiB" in error
    assert "over the limit of 1.00 GiB" in error and "--max-frame-memory" in error
    assert peak < 1.5 * 2**30


def test_a_folder_with_another_runs_frames_is_refused_then_replaced_whole(
    video, tmp_path, capsys, tiny_checkpoint
):
    out = tmp_path / "out"
    base = ["run", str(video), "-o", str(out), "--checkpoint", str(tiny_checkpoint), *FAST]
    assert main(base) == 0
    assert main(base) == 0  # the same run again: allowed, the same frames
    # (taken after the rerun: each write stamps its own DateTime, the time of writing)
    first = {p.name: p.read_bytes() for p in out.glob("depth.*.exr")}
    assert len(first) == 6
    capsys.readouterr()
    # another plate's run (other frames and seed) into the same folder is refused ...
    other = write_sample_video(tmp_path / "other.mp4", n_frames=4, height=32, width=48)
    again = ["run", str(other), "-o", str(out), "--checkpoint", str(tiny_checkpoint), *FAST]
    assert main([*again, "--seed", "5"]) == 1
    err = capsys.readouterr().err
    assert "--overwrite" in err and err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in out.glob("depth.*.exr")} == first
    # ... and with --overwrite it replaces the old sequence only once the new one is complete
    assert main([*again, "--seed", "5", "--overwrite"]) == 0
    names = sorted(p.name for p in out.glob("depth.*.exr"))
    assert names == [f"depth.{n:04d}.exr" for n in range(4)]  # no stale frames 4 and 5
    manifest = json.loads((out / "depth_run.json").read_text())
    assert manifest["complete"] is True


def test_a_run_never_writes_over_its_own_plate(tmp_path, capsys, tiny_checkpoint):
    from .plate_fixtures import make_image_sequence

    plate = make_image_sequence(tmp_path / "shot", 6, 48, 32, ext="exr", name="plate")
    before = {p.name: p.read_bytes() for p in (tmp_path / "shot").iterdir()}
    args = ["run", plate, "-o", str(tmp_path / "shot"), "--name", "plate",
            "--checkpoint", str(tiny_checkpoint), *FAST]  # fmt: skip
    assert main(args) == 1
    assert "overwrite its input" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (tmp_path / "shot").iterdir()} == before
