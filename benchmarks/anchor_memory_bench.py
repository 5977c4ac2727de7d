"""Peak memory of a run with many anchors: 0, 1e4, 1e5 and 1e6 rows of an anchors CSV.

A 12-frame 80x48 plate and the tiny random checkpoint (``--res 64``), through the real CLI in
subprocesses, one per count. The anchors are random plate points on every frame whose depths
follow ``1/Z = d + 2`` exactly, with ``d`` read off a first run without anchors (bilinear, as
the fit samples), so every fit succeeds and the whole anchored path runs: load, checks,
sampling, fit, the sidecar, the EXR headers. Each child prints its peak resident memory
(``VmHWM``) when it ends.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/anchor_memory_bench.py --counts 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rollingdepth_core.anchors import sample_frame
from rollingdepth_core.exr import read_exr
from rollingdepth_core.random_checkpoint import make_random_checkpoint
from rollingdepth_core.sample import write_sample_video

PEAK_WRAPPER = """
import sys
from rollingdepth_core.cli import main
code = main(sys.argv[1:])
status = open("/proc/self/status").read().splitlines()
peak = [line.split()[1] for line in status if line.startswith("VmHWM:")][0]
print("PEAK_KIB", peak, file=sys.stderr)
sys.exit(code)
"""
HEIGHT, WIDTH, FRAMES = 48, 80, 12
FAST = ["--res", "64", "--dilations", "1", "3", "--device", "cpu", "--seed", "3"]


def run_cli(args: list[str]) -> tuple[int, float, float, str]:
    """(exit code, peak RSS in MiB, seconds, last stderr line) of one CLI run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SOURCE_DATE_EPOCH": "1700000000"}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", PEAK_WRAPPER, *args], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    lines = proc.stderr.strip().splitlines()
    peak = [int(line.split()[1]) for line in lines if line.startswith("PEAK_KIB")]
    last = next((line for line in reversed(lines) if not line.startswith("PEAK_KIB")), "")
    return proc.returncode, (peak[0] / 1024 if peak else float("nan")), seconds, last


def write_anchors(path: Path, count: int, depth_maps: list[np.ndarray], rng) -> None:
    frame = rng.integers(0, FRAMES, count)
    x = rng.uniform(0, WIDTH, count)
    y = rng.uniform(0, HEIGHT, count)
    d = np.empty(count)
    for f in range(FRAMES):
        rows = frame == f
        d[rows] = sample_frame(depth_maps[f], x[rows], y[rows], (HEIGHT, WIDTH))
    z = 1.0 / (d + 2.0)
    with path.open("w") as fh:
        fh.write("# units: m\nframe,x,y,depth\n")
        np.savetxt(fh, np.column_stack([frame, x, y, z]), fmt=["%d", "%.4f", "%.4f", "%.9g"],
                   delimiter=",")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = make_random_checkpoint(tmp / "ckpt", size="tiny")
        plate = write_sample_video(tmp / "plate.mp4", n_frames=FRAMES, height=HEIGHT, width=WIDTH)
        common = ["--checkpoint", str(checkpoint), *FAST]
        code, peak, seconds, last = run_cli(["run", str(plate), "-o", str(tmp / "plain"), *common])
        assert code == 0, last
        rows = [{"anchors": 0, "peak_mib": round(peak, 1), "seconds": round(seconds, 1)}]
        print(f"anchors 0: peak {peak:.0f} MiB, {seconds:.1f} s", flush=True)
        maps = [read_exr(p)[0]["Z"] for p in sorted((tmp / "plain").glob("depth.*.exr"))]
        for count in args.counts:
            csv = tmp / f"anchors_{count}.csv"
            write_anchors(csv, count, maps, rng)
            out = tmp / f"out_{count}"
            code, peak, seconds, last = run_cli(
                ["run", str(plate), "-o", str(out), "--anchors", str(csv), "--depth-mode",
                 "depth", *common]
            )  # fmt: skip
            row = {
                "anchors": count,
                "csv_mib": round(csv.stat().st_size / 2**20, 1),
                "exit": code,
                "peak_mib": round(peak, 1),
                "seconds": round(seconds, 1),
                "last_line": last,
            }
            rows.append(row)
            print(f"anchors {count}: exit {code}, peak {peak:.0f} MiB, {seconds:.1f} s: {last}",
                  flush=True)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
