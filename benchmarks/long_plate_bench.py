"""Long plates: peak memory against clip length, resume after a kill, farm and Ray identity.

On a synthetic 1080p h264 plate with the tiny random checkpoint (``--res 128`` by default, so it
finishes on two CPU cores), through the real CLI in subprocesses:

1. peak resident memory (``VmHWM`` of the process) of ``run --cache`` at 250 and at 1000 frames,
   and for context of the in-memory ``run`` without a cache;
2. a ``run --cache`` killed (SIGKILL) once half of its snippets are done, then rerun: the
   snippets the rerun computes are counted against those stored before the kill;
3. ``infer --chunk 1/3 .. 3/3`` + ``finalize`` and ``run --executor ray`` (a local Ray
   instance) compared pixel for pixel with the plain cached run.

    .venv/bin/python benchmarks/long_plate_bench.py --json /tmp/long_plate.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rollingdepth_core.exr import read_exr
from rollingdepth_core.random_checkpoint import make_random_checkpoint
from rollingdepth_core.sample import write_sample_video

# runs the CLI in this process, then prints the process's peak resident memory (VmHWM)
PEAK_WRAPPER = """
import sys
from rollingdepth_core.cli import main
code = main(sys.argv[1:])
status = open("/proc/self/status").read().splitlines()
peak = [line.split()[1] for line in status if line.startswith("VmHWM:")][0]
print("PEAK_KIB", peak, file=sys.stderr)
sys.exit(code)
"""


def cli(args: list[str], peak: bool = False) -> tuple[dict, float, float]:
    """Run one command; returns (result event, seconds, peak MiB or nan)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    head = ["-c", PEAK_WRAPPER] if peak else ["-m", "rollingdepth_core.cli"]
    clock = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *head, *args, "--progress", "json"],
        capture_output=True,
        text=True,
        env=env,
    )
    seconds = time.perf_counter() - clock
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{proc.stderr[-3000:]}")
    mib = float("nan")
    for line in proc.stderr.splitlines():
        if line.startswith("PEAK_KIB"):
            mib = int(line.split()[1]) / 1024
    return events[-1], seconds, mib


def killed_at_half(args: list[str]) -> int:
    """Start a run, SIGKILL it once half of its snippets are done; returns snippets seen done."""
    child = subprocess.Popen(
        [sys.executable, "-m", "rollingdepth_core.cli", *args, "--progress", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    done = 0
    for line in child.stdout:
        event = json.loads(line)
        if event.get("stage") == "snippets" and event["done"] >= event["total"] / 2:
            done = event["done"]
            child.send_signal(signal.SIGKILL)
            break
    child.wait()
    return done


def cached_snippets(cache: Path) -> int:
    return sum(json.loads(p.read_text())["shape"][0] for p in cache.glob("blocks/*/meta.json"))


def same_exrs(a: Path, b: Path) -> dict:
    files_a = sorted(a.glob("depth.*.exr"))
    files_b = sorted(b.glob("depth.*.exr"))
    pixels = [p.name for p in files_a] == [p.name for p in files_b]
    same_bytes = pixels
    for fa, fb in zip(files_a, files_b, strict=False):
        ca, cb = read_exr(fa)[0], read_exr(fb)[0]
        pixels = pixels and set(ca) == set(cb) and all(np.array_equal(ca[k], cb[k]) for k in ca)
        same_bytes = same_bytes and fa.read_bytes() == fb.read_bytes()
    return {"frames": len(files_a), "pixels_identical": pixels, "files_identical": same_bytes}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", type=int, default=250)
    ap.add_argument("--long", type=int, default=1000)
    ap.add_argument("--res", type=int, default=128)
    ap.add_argument("--aligner", default="robust", choices=("robust", "adam"))
    ap.add_argument("--no-uncached", action="store_true", help="skip the in-memory context runs")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--workdir", default=None)
    opts = ap.parse_args()
    # "files_identical" compares whole files: pin the EXRs' DateTime (output.export_datetime)
    os.environ.setdefault("SOURCE_DATE_EPOCH", "1700000000")

    root = Path(opts.workdir or tempfile.mkdtemp(prefix="long_plate_bench_"))
    root.mkdir(parents=True, exist_ok=True)
    ckpt = root / "tiny"
    if not ckpt.exists():
        make_random_checkpoint(ckpt, "tiny")
    plates = {}
    for n in (opts.short, opts.long):
        plates[n] = root / f"plate_{n}.mp4"
        if not plates[n].exists():
            clock = time.perf_counter()
            write_sample_video(plates[n], n_frames=n, height=1080, width=1920)
            print(f"wrote {plates[n].name} in {time.perf_counter() - clock:.0f} s", flush=True)
    common = ["--checkpoint", str(ckpt), "--res", str(opts.res), "--device", "cpu", "--seed", "0"]
    common += ["--aligner", opts.aligner]
    report: dict = {"res": opts.res, "aligner": opts.aligner, "plate": "1920x1080", "memory": {}}

    # 1. peak memory against clip length
    for n in (opts.short, opts.long):
        out, cache = root / f"plain_{n}", root / f"cache_{n}"
        result, seconds, mib = cli(
            ["run", str(plates[n]), "-o", str(out), "--cache", str(cache), *common], peak=True
        )
        report["memory"][f"cached_{n}"] = {"peak_mib": round(mib, 1), "seconds": round(seconds)}
        print(f"run --cache, {n} frames: peak {mib:.0f} MiB, {seconds:.0f} s", flush=True)
        if not opts.no_uncached:
            _, seconds, mib = cli(
                ["run", str(plates[n]), "-o", str(root / f"mem_{n}"), *common], peak=True
            )
            report["memory"][f"in_memory_{n}"] = {
                "peak_mib": round(mib, 1),
                "seconds": round(seconds),
            }
            print(f"run (in memory), {n} frames: peak {mib:.0f} MiB, {seconds:.0f} s", flush=True)
    mem = report["memory"]
    ratio = mem[f"cached_{opts.long}"]["peak_mib"] / mem[f"cached_{opts.short}"]["peak_mib"]
    report["cached_peak_ratio"] = round(ratio, 3)
    print(f"cached peak ratio {opts.long}/{opts.short}: {ratio:.3f} (target <= 1.3)", flush=True)

    # 2. resume after SIGKILL at half of the snippets (short plate)
    plate, reference = plates[opts.short], root / f"plain_{opts.short}"
    cache, out = root / "cache_resume", root / "resumed"
    seen = killed_at_half(["run", str(plate), "-o", str(out), "--cache", str(cache), *common])
    stored = cached_snippets(cache)
    result, seconds, _ = cli(["run", str(plate), "-o", str(out), "--cache", str(cache), *common])
    stats = result["cache_stats"]
    total = stats["snippets_reused"] + stats["snippets_computed"]
    report["resume"] = {
        "snippets_total": total,
        "snippets_reported_done_at_kill": seen,
        "snippets_stored_before_kill": stored,
        "snippets_reused_on_resume": stats["snippets_reused"],
        "snippets_recomputed_on_resume": stats["snippets_computed"],
        "finished_snippets_recomputed": stored - stats["snippets_reused"],
        **same_exrs(reference, out),
    }
    print(f"resume: {json.dumps(report['resume'])}", flush=True)

    # 3. farm chunks + finalize, and Ray, against the plain cached run
    cache = root / "cache_chunks"
    for k in (1, 2, 3):
        cli(["infer", str(plate), "--cache", str(cache), "--chunk", f"{k}/3", *common])
    out = root / "chunks"
    cli(["finalize", str(plate), "-o", str(out), "--cache", str(cache), *common])
    report["chunks_3"] = same_exrs(reference, out)
    print(f"infer --chunk K/3 + finalize: {json.dumps(report['chunks_3'])}", flush=True)
    if not opts.no_ray:
        out = root / "ray"
        ray_args = ["--cache", str(root / "cache_ray"), "--executor", "ray"]
        _, seconds, _ = cli(["run", str(plate), "-o", str(out), *ray_args, *common])
        report["ray"] = {**same_exrs(reference, out), "seconds": round(seconds)}
        print(f"--executor ray: {json.dumps(report['ray'])}", flush=True)

    if opts.json:
        Path(opts.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
