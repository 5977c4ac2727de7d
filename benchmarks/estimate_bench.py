"""How close the cost estimate (`rollingdepth estimate`) is to what a run then takes.

3 plate sizes x 2 processing sizes, each run as a front-end runs it: `rollingdepth run` in a
fresh engine process (the model loaded, the plate read, EXRs written at processing size).
Predicted twice: without any earlier run on this machine (the rough first guess from the
model's size), and after one earlier run (the first combination, run once into an otherwise
empty cost book; each combination is then estimated from that book alone and run into a copy
of it, so no run learns from another). Actual = the run's own `seconds` (its wall time inside
the engine, what the estimate covers; Python's start-up is not in either).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/estimate_bench.py [--checkpoint DIR]

Without ``--checkpoint`` a tiny random checkpoint is made (the runs are then short and their
overheads weigh more than a real model's would). Keep it small on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PLATES = ((64, 48), (128, 96), (192, 108))  # (width, height)
RESOLUTIONS = (64, 128)
FRAMES = 12
SETTINGS = ["--dilations", "1", "3", "--device", "cpu", "--dtype", "fp32"]


def engine(args: list[str], config: Path) -> dict:
    env = {**os.environ, "ROLLINGDEPTH_CONFIG_DIR": str(config), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "rollingdepth_core.cli", *args],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    events = [json.loads(line) for line in lines]
    return events[-1]


def estimate(plate: tuple[int, int], res: int, checkpoint: str, config: Path) -> float:
    w, h = plate
    report = engine(["estimate", "--plate-size", f"{w}x{h}", "--shots", str(FRAMES), "--res",
                     str(res), "--checkpoint", checkpoint, *SETTINGS, "--json"], config)  # fmt: skip
    return report["seconds"]


def run(clip: Path, res: int, checkpoint: str, out: Path, config: Path) -> float:
    result = engine(["run", str(clip), "-o", str(out), "--res", str(res), "--checkpoint",
                     checkpoint, *SETTINGS, "--progress", "json"], config)  # fmt: skip
    return result["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None)
    args = parser.parse_args()
    from rollingdepth_core.random_checkpoint import make_random_checkpoint
    from rollingdepth_core.sample import write_sample_video

    root = Path(tempfile.mkdtemp(prefix="estimate-bench-"))
    checkpoint = args.checkpoint or str(make_random_checkpoint(root / "tiny", "tiny"))
    clips = {p: write_sample_video(root / f"plate_{p[0]}x{p[1]}.mp4", FRAMES, p[1], p[0], 24)
             for p in PLATES}  # fmt: skip
    combos = [(p, r) for p in PLATES for r in RESOLUTIONS]
    fresh = root / "fresh"
    cold = {c: estimate(c[0], c[1], checkpoint, fresh) for c in combos}
    learned = root / "learned"  # one earlier run: the first combination
    first = combos[0]
    run(clips[first[0]], first[1], checkpoint, root / "warm", learned)
    rows = []
    for combo in combos:
        book = root / f"book_{combo[0][0]}_{combo[1]}"
        shutil.copytree(learned, book)
        warm = estimate(combo[0], combo[1], checkpoint, book)
        actual = run(clips[combo[0]], combo[1], checkpoint, root / f"out_{len(rows)}", book)
        rows.append((combo, cold[combo], warm, actual))
    print(f"{'plate':>9} {'res':>4} {'actual s':>9} {'no run s':>9} {'err':>7} "
          f"{'1 run s':>8} {'err':>7}")  # fmt: skip
    for (plate, res), cold_s, warm_s, actual in rows:
        print(f"{plate[0]:>4}x{plate[1]:<4} {res:>4} {actual:>9.2f} {cold_s:>9.2f} "
              f"{(cold_s - actual) / actual:>+7.0%} {warm_s:>8.2f} "
              f"{(warm_s - actual) / actual:>+7.0%}")  # fmt: skip
    worst = max(abs(w - a) / a for _, _, w, a in rows)
    print(f"after one earlier run: worst error {worst:.0%} (target 25 %)")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
