"""The run contract through the `rollingdepth` command as a farm calls it: a sequence is
published whole or not at all (kills, Ctrl-C, a full disk, a second writer), and what can be
known before the model runs is refused before any snippet is predicted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import pytest

from rollingdepth_core.exr import read_exr

from .cli_in_process import run_in_process
from .plate_fixtures import make_image_sequence

FAST = ["--res", "64", "--dilations", "1", "3", "--device", "cpu", "--seed", "3"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
N_FRAMES = 24


def cli(*args, **kw) -> list[str]:
    return [sys.executable, "-m", "rollingdepth_core.cli", *map(str, args)]


def run_process(*args, timeout=300):
    """The command in a process of its own (a hang guard around it: ``timeout``)."""
    return subprocess.run(cli(*args), capture_output=True, text=True, timeout=timeout, env=ENV)


# The command where its process is not what is tested: in this process (tests/core/cli_in_process)
run_cli = run_in_process


def depth_state(folder: Path) -> dict[str, np.ndarray]:
    """The folder's depth frames by name, as arrays (what a reader of the folder sees)."""
    return {p.name: read_exr(p)[0]["Z"] for p in sorted(folder.glob("depth.*.exr"))}


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def farm(tmp_path_factory, tiny_checkpoint):
    """A PNG plate, its snippet blocks in a cache (so each `finalize` runs no model), and
    the two sequences a folder may legitimately hold: OLD (inverse) and NEW (normalized)."""
    root = tmp_path_factory.mktemp("contract")
    plate = make_image_sequence(root / "plate", N_FRAMES, height=96, width=128, ext="png")
    cache = root / "cache"
    common = [plate, "--checkpoint", tiny_checkpoint, "--cache", cache, *FAST]
    done = run_cli("infer", *common)
    assert done.returncode == 0, done.stderr
    old, new = root / "old", root / "new"
    for folder, mode in ((old, "inverse"), (new, "normalized")):
        done = run_cli("finalize", *common, "-o", folder, "--depth-mode", mode, "--restore-res")
        assert done.returncode == 0, done.stderr
    return {"plate": plate, "common": common, "old": old, "new": new, "root": root}


def new_run(farm, out: Path, *extra) -> list[str]:
    return cli("finalize", *farm["common"], "-o", out, "--depth-mode", "normalized",
               "--restore-res", "--progress", "json", *extra)  # fmt: skip


def stop_at(child: subprocess.Popen, stage: str, done: int | None) -> list[dict]:
    """Read ``--progress json`` events until ``stage`` reaches ``done`` (None: its first
    event), then SIGSTOP the child; returns the events read."""
    events = []
    for line in child.stdout:
        event = json.loads(line)
        events.append(event)
        if event.get("stage") == stage and (done is None or event["done"] >= done):
            child.send_signal(signal.SIGSTOP)
            return events
    raise AssertionError(f"the run ended before {stage} {done}: {events[-3:]}")


POINTS = {
    "first frame": ("write", 1),
    "half": ("write", N_FRAMES // 2),
    "last frame": ("write", N_FRAMES),
    "the swap": ("publish", None),
}


# every point under both signals, over an earlier sequence (--overwrite) or into a fresh folder
CASES = [
    ("first frame", signal.SIGKILL, True),
    ("half", signal.SIGKILL, False),
    ("last frame", signal.SIGKILL, True),
    ("the swap", signal.SIGKILL, True),
    ("first frame", signal.SIGINT, False),
    ("half", signal.SIGINT, True),
    ("last frame", signal.SIGINT, False),
    ("the swap", signal.SIGINT, True),
]


@pytest.mark.parametrize(("point", "sig", "overwrite"), CASES)
def test_an_interrupted_publish_leaves_the_old_sequence_or_the_new_one(
    farm, tmp_path, point, sig, overwrite
):
    out = tmp_path / "depth"
    if overwrite:
        shutil.copytree(farm["old"], out)
    before = depth_state(out) if overwrite else {}
    new = depth_state(farm["new"])
    child = subprocess.Popen(
        new_run(farm, out, *(["--overwrite"] if overwrite else [])),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    try:
        stage, done = POINTS[point]
        stop_at(child, stage, done)
        # frozen mid-run: a reader sees the old sequence or (the swap done) the new one
        seen = depth_state(out)
        assert same_state(seen, before) or same_state(seen, new), point
        child.send_signal(sig)
        child.send_signal(signal.SIGCONT)
        code = child.wait(timeout=300)  # a hang guard
        events = [json.loads(line) for line in child.stdout.read().splitlines() if line]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    after = depth_state(out)
    assert same_state(after, before) or same_state(after, new), (point, code)
    if sig == signal.SIGINT:
        # Ctrl-C always stops the run (130, cancelled): before the swap nothing of it is
        # published; a swap already begun runs to its end first and says so
        assert code == 130, (point, code)
        (error,) = [e for e in events if e.get("event") == "error"]
        assert error["kind"] == "cancelled" and "cancelled" in error["message"]
        assert not (out / ".depth.staging").exists()
        if point != "the swap" or not same_state(after, new):
            assert same_state(after, before), point
        else:
            assert "holds the new depth sequence, complete" in error["message"]
    else:
        assert code == -signal.SIGKILL
    if not out.exists():  # a cancelled run leaves no folder it made behind
        assert sig == signal.SIGINT and not overwrite and not after
        return
    # the next look at the folder finishes or cleans what the kill left; the folder is whole
    check = run_cli("check", "--output", out, "--json")
    assert check.returncode == 0, check.stderr
    assert not (out / ".depth.staging").exists()
    final = depth_state(out)
    assert same_state(final, before) or same_state(final, new)
    if point == "half":  # the same command run again publishes the new sequence
        again = run_cli(*new_run(farm, out, "--overwrite")[len(cli()) :])
        assert again.returncode == 0, again.stderr
        assert same_state(depth_state(out), new)


def test_a_second_writer_of_the_sequence_is_refused_at_once(farm, tmp_path):
    out = tmp_path / "depth"
    first = subprocess.Popen(new_run(farm, out), stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        stop_at(first, "merge", None)  # holds the lock, frozen before writing
        # "at once": the first writer is frozen and never lets go, so a second that waited for
        # the lock could not come back at all (its own process: the timeout is a hang guard)
        second = run_process("finalize", *farm["common"], "-o", out, "--depth-mode", "normalized",
                         "--restore-res", "--overwrite")  # fmt: skip
        assert second.returncode == 1
        error = [x for x in second.stderr.splitlines() if x.startswith("rollingdepth: error")]
        assert len(error) == 1 and "is being written by another run (pid" in error[0]
        assert f"pid {first.pid} on" in error[0]
        first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=600) == 0  # a hang guard: the run finishes, under load too
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert same_state(depth_state(out), depth_state(farm["new"]))


def test_a_full_disk_midway_keeps_the_old_sequence(farm, tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    old_bytes = sum(p.stat().st_size for p in farm["old"].iterdir())
    new_bytes = sum(p.stat().st_size for p in farm["new"].iterdir())
    size_kib = (old_bytes + new_bytes // 2) // 1024 + 64
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs",
                              str(mount)], capture_output=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        out = mount / "depth"
        shutil.copytree(farm["old"], out)
        before = depth_state(out)
        done = subprocess.run(new_run(farm, out, "--overwrite"), capture_output=True,
                              text=True, env=ENV, timeout=300)  # fmt: skip
        assert done.returncode == 1
        error = json.loads(done.stdout.strip().splitlines()[-1])
        assert "No space left on device" in error["message"]
        assert "nothing of this run was published" in error["message"]
        assert f"keeps its earlier depth sequence ({N_FRAMES} frames)" in error["message"]
        assert same_state(depth_state(out), before)
        assert not (out / ".depth.staging").exists()
        assert sorted(p.name for p in out.iterdir()) == sorted(
            p.name for p in farm["old"].iterdir()
        )
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_another_frame_range_is_refused_then_replaces_the_sequence_saying_so(farm, tmp_path):
    out = tmp_path / "depth"
    shutil.copytree(farm["new"], out)
    part = ["--frames", "1011-1022"]
    refused = run_cli("finalize", *farm["common"], "-o", out, "--depth-mode", "normalized",
                      "--restore-res", *part)  # fmt: skip
    assert refused.returncode == 1
    assert "own depth scale" in refused.stderr and "infer --chunk K/N" in refused.stderr
    assert len(depth_state(out)) == N_FRAMES
    # with --overwrite the range's sequence replaces the folder's whole, saying what went
    replaced = run_cli("run", farm["plate"], "--checkpoint", farm["common"][2], *FAST, "-o", out,
                       "--depth-mode", "normalized", *part, "--overwrite")  # fmt: skip
    assert replaced.returncode == 0, replaced.stderr
    assert "removed 12 frames of the earlier sequence that the new one does not have " \
           "(1001-1010, 1023-1024)" in replaced.stderr  # fmt: skip
    assert sorted(depth_state(out)) == [f"depth.{n}.exr" for n in range(1011, 1023)]


# ------------------------------------------------------------------ refused before the model
def refused_before_snippets(capsys, argv: list) -> str:
    """Run the CLI in this process with JSON progress: it must fail with one error event and
    never reach the model (no `load`, no `snippets`). Returns the error message."""
    from rollingdepth_core.cli import main

    assert main([str(a) for a in argv] + ["--progress", "json"]) == 1
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    stages = {e.get("stage") for e in events}
    assert not stages & {"load", "snippets", "encode", "scan"}, stages
    (error,) = [e for e in events if e.get("event") == "error"]
    return error["message"]


@pytest.fixture(scope="module")
def small_plate(tmp_path_factory):
    return make_image_sequence(tmp_path_factory.mktemp("small"), 8, height=48, width=64)


def anchors_file(path: Path, rows: list[tuple]) -> Path:
    path.write_text("frame,x,y,depth\n" + "".join(f"{f},{x},{y},{z}\n" for f, x, y, z in rows))
    return path


@pytest.mark.parametrize(
    ("rows", "needle"),
    [
        ([(1001, 500, 10, 2.0), (1002, -3, 10, 4.0)], "none of its 2 anchors can be used"),
        ([(2001, 5, 10, 2.0), (2002, 6, 10, 4.0)], "on frames not processed"),
        ([(1001, 5, 10, 2.0)], "1 usable anchor(s)"),
        ([(1001, 5, 10, 3.0), (1002, 30, 20, 3.0), (1003, 9, 9, 3.0)], "all at one depth"),
    ],
    ids=["outside", "unprocessed", "single", "one-depth"],
)
def test_anchors_that_cannot_fit_are_refused_before_the_model(
    capsys, tmp_path, small_plate, tiny_checkpoint, rows, needle
):
    anchors = anchors_file(tmp_path / "a.csv", rows)
    message = refused_before_snippets(capsys, ["run", small_plate, "-o", tmp_path / "out",
        "--checkpoint", tiny_checkpoint, *FAST, "--anchors", anchors, "--depth-mode", "depth"])  # fmt: skip
    assert needle in message and "`--anchors` a.csv" in message


def test_each_shot_needs_its_anchors(capsys, tmp_path, small_plate, tiny_checkpoint):
    anchors = anchors_file(tmp_path / "a.csv", [(1001, 5, 10, 2.0), (1002, 30, 20, 5.0)])
    message = refused_before_snippets(capsys, ["run", small_plate, "-o", tmp_path / "out",
        "--checkpoint", tiny_checkpoint, *FAST, "--anchors", anchors, "--cuts", "1005"])  # fmt: skip
    assert "0 usable anchor(s) in shot 1 (frames 1005-1008)" in message


def write_matte(path: Path, width: int, height: int, value: float = 0.0) -> None:
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), oiio.ImageSpec(width, height, 1, "uint8"))
    assert out.write_image(np.full((height, width, 1), int(value * 255), np.uint8))
    out.close()


def test_a_matte_whose_later_frame_has_another_aspect_is_refused(
    capsys, tmp_path, small_plate, tiny_checkpoint
):
    for n in range(1001, 1009):
        write_matte(tmp_path / f"m.{n}.png", *((64, 48) if n != 1006 else (64, 64)))
    message = refused_before_snippets(capsys, ["run", small_plate, "-o", tmp_path / "out",
        "--checkpoint", tiny_checkpoint, *FAST, "--holdout", tmp_path / "m.####.png"])  # fmt: skip
    assert "aspects differ" in message and "frame 1006" in message


def test_a_corrupt_matte_frame_is_refused(capsys, tmp_path, small_plate, tiny_checkpoint):
    for n in range(1001, 1009):
        write_matte(tmp_path / f"m.{n}.png", 64, 48)
    (tmp_path / "m.1007.png").write_bytes(b"\x89PNG\r\n\x1a\n but not a PNG")
    message = refused_before_snippets(capsys, ["run", small_plate, "-o", tmp_path / "out",
        "--checkpoint", tiny_checkpoint, *FAST, "--holdout", tmp_path / "m.####.png"])  # fmt: skip
    assert "m.1007.png" in message and "frame 1007" in message


def test_a_movie_matte_on_a_sequence_plate_is_refused(
    capsys, tmp_path, small_plate, tiny_checkpoint
):
    from rollingdepth_core.sample import write_sample_video

    matte = write_sample_video(tmp_path / "matte.mp4", n_frames=8, height=48, width=64)
    message = refused_before_snippets(capsys, ["run", small_plate, "-o", tmp_path / "out",
        "--checkpoint", tiny_checkpoint, *FAST, "--holdout", matte])  # fmt: skip
    assert "the movie has 8 frames (0-7)" in message and "1008" in message


def test_a_huge_anchors_file_is_read_in_bounded_memory(tmp_path):
    """1e6 anchors (a 23 MB CSV): loading them must not take GiBs (it took 6.5 GiB)."""
    path = tmp_path / "many.csv"
    with open(path, "w") as handle:
        handle.write("frame,x,y,depth,weight,track\n")
        for k in range(1_000_000):
            handle.write(
                f"{1001 + k % 100},{k % 640}.5,{k % 480}.25,{1 + k % 97 * 0.1:.3f},1,t{k % 50}\n"
            )
    # VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child forked from a large pytest
    # process reports the parent's size (1.5 GiB on CI); exec gives VmHWM a fresh start
    code = (
        "from pathlib import Path\n"
        "from rollingdepth_core.anchors import load_anchors\n"
        f"a = load_anchors({str(path)!r})\n"
        "assert len(a) == 1_000_000, len(a)\n"
        "status = Path('/proc/self/status').read_text().splitlines()\n"
        "print('peak-kib', [s.split()[1] for s in status if s.startswith('VmHWM:')][0])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stdout + done.stderr
    peaks = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("peak-kib ")]
    assert peaks, done.stdout + done.stderr
    peak_mib = int(peaks[-1]) / 1024
    assert peak_mib < 900, f"loading 1e6 anchors peaked at {peak_mib:.0f} MiB"


def test_half_overflow_is_refused_before_any_frame_and_provenance_is_recorded(
    tmp_path, small_plate, tiny_checkpoint
):
    # the plate at its own size (--res 64 of a 64x48 plate): anchor pixels are depth pixels;
    # one cache for every run below (mattes and anchors change the alignment, not snippets)
    ref, cache = tmp_path / "ref", tmp_path / "cache"
    done = run_cli("run", small_plate, "-o", ref, "--checkpoint", tiny_checkpoint, *FAST,
                   "--cache", cache)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = []
    for n in range(1001, 1009):
        d = read_exr(ref / f"depth.{n}.exr")[0]["Z"]
        for i, j in ((5, 5), (40, 30), (60, 10), (20, 40)):
            rows.append((n, i + 0.5, j + 0.5, repr(1.0 / (1e-6 * float(d[j, i]) + 2e-6))))
    anchors = anchors_file(tmp_path / "far.csv", rows)
    for n in range(1001, 1009):
        write_matte(tmp_path / f"m.{n}.png", 64, 48)
    args = ["run", small_plate, "--checkpoint", tiny_checkpoint, *FAST, "--anchors", anchors,
            "--depth-mode", "depth", "--holdout", tmp_path / "m.####.png", "--cache", cache]  # fmt: skip
    half = run_cli(*args, "-o", tmp_path / "half", "--half")
    assert half.returncode == 1
    assert "beyond the half range (65504)" in half.stderr and "drop `--half`" in half.stderr
    assert list((tmp_path / "half").glob("*.exr")) == []
    assert not (tmp_path / "half" / ".depth.staging").exists()

    full = run_cli(*args, "-o", tmp_path / "full")
    assert full.returncode == 0, full.stderr
    channels, header = read_exr(tmp_path / "full" / "depth.1001.exr")
    assert channels["Z"].min() > 65504  # the values the half run could not hold
    assert header["rollingdepth/holdout"] == str(tmp_path / "m.####.png")
    assert len(header["rollingdepth/holdout.sha256"]) == 16
    assert header["rollingdepth/anchors.file"] == str(anchors)
    assert header["rollingdepth/anchors.count"] == len(rows)
    assert header["rollingdepth/cuts"] == "none"
    assert "rollingdepth/ocio.view" not in header  # an sRGB plate: no view transform ran
    used = json.loads((tmp_path / "full" / "depth_run.json").read_text())["used"]
    assert used["holdout"]["sha256"] == header["rollingdepth/holdout.sha256"]
    assert used["anchors"]["count"] == len(rows) and used["cuts"]["starts"] == []
    # another matte content is another run: its hash differs
    write_matte(tmp_path / "m.1004.png", 64, 48, value=0.5)
    again = run_cli(*args, "-o", tmp_path / "full2")
    assert again.returncode == 0, again.stderr
    other = read_exr(tmp_path / "full2" / "depth.1001.exr")[1]["rollingdepth/holdout.sha256"]
    assert other != header["rollingdepth/holdout.sha256"]


# ------------------------------------------------------------------ signals inside the swap
# The command line in a child process whose swap renames are slowed down (in that process
# only) so that a signal lands inside the swap, while a thread keeps torch's threads busy:
# a process-directed signal is then taken by whichever thread the kernel picks.
SLOW_SWAP = """
import os, sys, threading, time
from pathlib import Path
import torch
from rollingdepth_core.cli import main

stop = threading.Event()

def busy():
    a = torch.randn(192, 192)
    while not stop.is_set():
        a = torch.tanh(a @ a)

torch.set_num_threads(2)
worker = threading.Thread(target=busy)
worker.start()
replace = os.replace
hold_after, gate = int(os.environ["SWAP_HOLD_AFTER"]), os.environ["SWAP_GATE"]
renamed = 0

def slow(source, target, *args, **kwargs):
    global renamed
    source, target = Path(source), Path(target)
    # a frame leaving the staging folder for the output folder: the swap
    leaving = source.parent.name.endswith(".staging") and target.parent != source.parent \
        and source.suffix == ".exr"
    if leaving and renamed == hold_after:
        # the swap holds here until the test has sent its signal or kill, however busy the
        # machine (the deadline is a hang guard only)
        deadline = time.monotonic() + 600
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.02)
    replace(source, target, *args, **kwargs)
    if leaving:
        renamed += 1
        print("renamed", source.name, file=sys.stderr, flush=True)

os.replace = slow
code = 1
try:
    code = main(sys.argv[1:])
finally:
    stop.set()  # torch must not be mid-operation in a thread when the interpreter exits
    worker.join()
sys.exit(code)
"""


def _hangup(disposition):
    """The child's SIGHUP as a launcher leaves it: a terminal's default, or ignored (`nohup`).
    Set explicitly: the suite itself may run under `nohup`, whose ignored SIGHUP children
    inherit (and the run rightly keeps ignoring)."""

    def preexec() -> None:
        signal.signal(signal.SIGHUP, disposition)

    return preexec


def slow_swap_run(farm, out: Path, *extra, hold_after: int, hangup=signal.SIG_DFL):
    """The run in a child whose swap stops after ``hold_after`` frames until `release` (a
    signal or a kill then lands inside the swap on a busy machine too)."""
    argv = new_run(farm, out, *extra)[3:]  # without `python -m rollingdepth_core.cli`
    gate = out.parent / f".{out.name}.gate"
    env = {**ENV, "SWAP_HOLD_AFTER": str(hold_after), "SWAP_GATE": str(gate)}
    return subprocess.Popen([sys.executable, "-c", SLOW_SWAP, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_hangup(hangup))  # fmt: skip


def release(out: Path) -> None:
    """Let the held swap of `slow_swap_run` go on."""
    (out.parent / f".{out.name}.gate").touch()


def wait_for_renames(child: subprocess.Popen, count: int) -> list[str]:
    """Read the child's stderr until ``count`` frames were renamed into the folder."""
    lines = []
    for line in child.stderr:
        lines.append(line)
        if sum(x.startswith("renamed ") for x in lines) >= count:
            return lines
    raise AssertionError(f"the run ended before its swap: {''.join(lines)[-2000:]}")


def folder_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=str)
def test_a_signal_inside_the_swap_waits_for_it_then_exits_130(farm, tmp_path, sig):
    out = tmp_path / "depth"
    shutil.copytree(farm["old"], out)
    new = depth_state(farm["new"])
    child = slow_swap_run(farm, out, "--overwrite", hold_after=3)
    try:
        wait_for_renames(child, 3)
        # mid-swap: three new frames are in, the rest of the old ones still there
        child.send_signal(sig)
        release(out)
        code = child.wait(timeout=600)  # a hang guard only
        events = [json.loads(line) for line in child.stdout.read().splitlines() if line]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert code == 130, (code, child.stderr.read()[-2000:])
    (error,) = [e for e in events if e.get("event") == "error"]
    assert error["kind"] == "cancelled"
    assert f"{signal.Signals(sig).name} waited for the swap" in error["message"]
    assert "holds the new depth sequence, complete (24 frames)" in error["message"]
    # exactly the new sequence: its frames, its sidecars, its manifest, nothing else
    assert same_state(depth_state(out), new)
    assert folder_files(out) == folder_files(farm["new"])
    manifest = json.loads((out / "depth_run.json").read_text())
    assert manifest["state"] == "complete"
    assert manifest["run_id"] == json.loads((farm["new"] / "depth_run.json").read_text())["run_id"]


def test_a_hangup_under_nohup_stays_ignored_through_the_swap(farm, tmp_path):
    # started with SIGHUP ignored (`nohup`, many farm wrappers): a hangup during the swap is
    # not taken as a cancel; the run finishes and says nothing of it
    out = tmp_path / "depth"
    shutil.copytree(farm["old"], out)
    child = slow_swap_run(farm, out, "--overwrite", hold_after=3, hangup=signal.SIG_IGN)
    try:
        wait_for_renames(child, 3)
        child.send_signal(signal.SIGHUP)
        release(out)
        code = child.wait(timeout=600)  # a hang guard only
        events = [json.loads(line) for line in child.stdout.read().splitlines() if line]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert code == 0, (code, child.stderr.read()[-2000:])
    assert not [e for e in events if e.get("event") == "error"]
    assert same_state(depth_state(out), depth_state(farm["new"]))
    assert folder_files(out) == folder_files(farm["new"])


def test_a_kill_inside_the_swap_is_never_read_as_complete_and_a_retry_rolls_forward(farm, tmp_path):
    from rollingdepth_core import protocol

    out = tmp_path / "depth"
    shutil.copytree(farm["old"], out)
    child = slow_swap_run(farm, out, "--overwrite", hold_after=3)
    try:
        wait_for_renames(child, 3)
        child.kill()  # SIGKILL: nothing runs after it
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # a mix of two runs is in the folder now: every reader is told so
    assert not same_state(depth_state(out), depth_state(farm["old"]))
    manifest = json.loads((out / "depth_run.json").read_text())
    assert manifest["state"] == "being swapped" and manifest["complete"] is False
    assert protocol.describe_output_folder(out)["state"] == protocol.STATE_SWAPPING
    # the killed command, retried as a farm retries it: the swap is completed first, then
    # the run is the same run (its frames are its own, not another run's)
    again = subprocess.run(new_run(farm, out, "--overwrite"), capture_output=True, text=True,
                           env=ENV, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "completed the interrupted publish of depth" in again.stdout
    assert same_state(depth_state(out), depth_state(farm["new"]))
    assert folder_files(out) == folder_files(farm["new"])
    assert json.loads((out / "depth_run.json").read_text())["state"] == "complete"


def test_check_rolls_a_killed_swap_forward_and_reports_it(farm, tmp_path):
    out = tmp_path / "depth"
    shutil.copytree(farm["old"], out)
    child = slow_swap_run(farm, out, "--overwrite", hold_after=2)
    try:
        wait_for_renames(child, 2)
        child.kill()
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    check = run_cli("check", "--output", out, "--json")
    assert check.returncode == 0, check.stderr
    (entry,) = json.loads(check.stdout)
    assert (
        entry["state"] == "complete" and "completed the interrupted publish" in entry["recovered"]
    )
    assert same_state(depth_state(out), depth_state(farm["new"]))
    assert folder_files(out) == folder_files(farm["new"])


# ------------------------------------------------------------------ sidecars
def test_an_earlier_runs_sidecars_go_with_its_frames(farm, tmp_path):
    out = tmp_path / "depth"
    rows = []  # points whose depth agrees with the old sequence's (inverse) depth
    for n in (1001, 1005, 1010):
        d = read_exr(farm["old"] / f"depth.{n}.exr")[0]["Z"]
        for i, j in ((10, 10), (60, 40), (100, 80)):
            rows.append((n, i + 0.5, j + 0.5, repr(1.0 / (0.5 * float(d[j, i]) + 2.0))))
    anchors = anchors_file(tmp_path / "a.csv", rows)
    first = run_cli("finalize", *farm["common"], "-o", out, "--restore-res", "--preview",
                    "--anchors", anchors)  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert {"depth_preview.mp4", "depth_anchors.json"} <= set(folder_files(out))
    second = subprocess.run(new_run(farm, out, "--overwrite"), capture_output=True, text=True,
                            env=ENV, timeout=300)  # fmt: skip
    assert second.returncode == 0, second.stderr
    # the new sequence's files and nothing of the earlier one's
    assert folder_files(out) == folder_files(farm["new"])
    events = [json.loads(line) for line in second.stdout.splitlines()]
    said = [e["message"] for e in events if "of the earlier sequence" in e.get("message", "")]
    assert len(said) == 1 and "depth_anchors.json" in said[0] and "depth_preview.mp4" in said[0]
    manifest = json.loads((out / "depth_run.json").read_text())
    assert sorted(manifest["replaced"]) == ["depth_anchors.json", "depth_preview.mp4"]


# ------------------------------------------------------------------ journals left for a person
def test_a_journal_without_its_keys_is_refused_in_one_line_by_run_and_check(farm, tmp_path):
    out = tmp_path / "depth"
    shutil.copytree(farm["old"], out)
    staging = out / ".depth.staging"
    staging.mkdir()
    (staging / "swap.json").write_text(json.dumps({"files": ["depth.1001.exr"]}))
    before = folder_files(out)
    check = run_cli("check", "--output", out)
    assert check.returncode == 3, check.stderr
    assert "Traceback" not in check.stderr + check.stdout
    (line,) = check.stdout.splitlines()
    assert "swap journal refused" in line and "`remove` is missing" in line
    refused = subprocess.run(new_run(farm, out, "--overwrite"), capture_output=True, text=True,
                             env=ENV, timeout=300)  # fmt: skip
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    error = json.loads(refused.stdout.splitlines()[-1])
    assert "swap.json" in error["message"] and "left as it is for a person" in error["message"]
    assert not {"load", "snippets", "write"} & {json.loads(x).get("stage")
                                                 for x in refused.stdout.splitlines()}  # fmt: skip
    assert folder_files(out) == before and (staging / "swap.json").exists()


# ------------------------------------------------------------------ check on a read-only folder
def test_check_reports_a_complete_sequence_in_a_read_only_folder(farm, tmp_path):
    mount = tmp_path / "ro"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                             capture_output=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        shutil.copytree(farm["new"], mount / "depth")
        done = subprocess.run(["mount", "-o", "remount,ro", str(mount)], capture_output=True)
        assert done.returncode == 0, done.stderr
        check = run_cli("check", "--output", mount / "depth")
        assert check.returncode == 0, check.stdout + check.stderr
        assert check.stdout.strip() == "depth: complete (frames 1001-1024), read-only"
        report = json.loads(run_cli("check", "--output", mount / "depth", "--json").stdout)
        assert report == [{"name": "depth", "frames": "1001-1024", "state": "complete",
                           "run_id": report[0]["run_id"], "source": str(farm["plate"]),
                           "read_only": True}]  # fmt: skip
    finally:
        subprocess.run(["umount", str(mount)], check=False)


# ------------------------------------------------------------------ refusals leave no folder
@pytest.mark.parametrize("case", ["finalize before infer", "another seed", "cache is a file"])
def test_a_refused_finalize_leaves_no_output_folder(farm, tmp_path, case):
    common = list(farm["common"])
    cache_at = common.index("--cache") + 1
    if case == "finalize before infer":
        common[cache_at] = tmp_path / "empty-cache"
    elif case == "another seed":
        common[common.index("--seed") + 1] = "4"
    else:
        (tmp_path / "cache-file").write_text("not a cache")
        common[cache_at] = tmp_path / "cache-file"
    out = tmp_path / "shots" / "sh010" / "depth"
    done = run_cli("finalize", *common, "-o", out)
    assert done.returncode == 1, done.stderr
    assert not (tmp_path / "shots").exists(), case
