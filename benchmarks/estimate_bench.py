"""How close the cost estimate (`rollingdepth estimate`) is to what a run then takes.

3 plate sizes x 2 processing sizes, each run as a user runs it: `rollingdepth run` in a
fresh process (Python and torch started, the model loaded, the plate read, EXRs written at
processing size). Actual = the wall time of that process, start to exit. Predicted by
`rollingdepth estimate` just before the run, with the cost book as it stood: without any
earlier run on this machine (the first guess: the model's size at this device's measured
pace), and after one earlier run (the first combination, run once into an otherwise empty
book; each combination is then estimated from that book alone and run into a copy of it,
so no run learns from another).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/estimate_bench.py [--checkpoint DIR]
        [--plates 64x48 128x96 192x108] [--res 64 128] [--frames 12]

Without ``--checkpoint`` a tiny random checkpoint is made (the runs are then short, and
the fixed costs, start-up and model load, are most of them). Keep it small on a shared
machine; a full-size checkpoint (`random_checkpoint.py` ``full``) with ``--frames 4
--plates 64x48 --res 64`` is about a minute a run on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETTINGS = ["--dilations", "1", "3", "--device", "cpu", "--dtype", "fp32"]


def engine(args: list[str], config: Path, events: list | None = None) -> tuple[dict, float]:
    """The last JSON line of ``rollingdepth ARGS`` in a fresh process, and its wall time;
    ``events`` collects its progress reports as a front-end sees them: (seconds since the
    process was started, stage, done, total)."""
    env = {**os.environ, "ROLLINGDEPTH_CONFIG_DIR": str(config), "OMP_NUM_THREADS": "1"}
    clock = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stderr, subprocess.Popen(
        [sys.executable, "-m", "rollingdepth_core.cli", *args],
        stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
    ) as process:  # fmt: skip
        lines = []
        for line in process.stdout:
            if line.startswith("{"):
                lines.append(json.loads(line))
                if events is not None and lines[-1].get("event") == "progress":
                    e = lines[-1]
                    events.append((time.perf_counter() - clock, e["stage"], e["done"], e["total"]))
        process.wait()
        stderr.seek(0)
        error = stderr.read()
    wall = time.perf_counter() - clock
    if process.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(args)} failed:\n{lines}\n{error}")
    return lines[-1], wall


def estimate(plate, res: int, frames: int, checkpoint: str, config: Path) -> dict:
    w, h = plate
    report, _ = engine(["estimate", "--plate-size", f"{w}x{h}", "--shots", str(frames),
                        "--res", str(res), "--checkpoint", checkpoint, *SETTINGS, "--json"],
                       config)  # fmt: skip
    return report


def run(clip: Path, res: int, checkpoint: str, out: Path, config: Path, events=None):
    return engine(["run", str(clip), "-o", str(out), "--res", str(res), "--checkpoint",
                   checkpoint, *SETTINGS, "--progress", "json"], config, events)  # fmt: skip


def time_left(stages: dict, events: list, wall: float) -> str:
    """What a front-end's time left said at a tenth, a quarter, half and three quarters of
    a run (its progress reports replayed through protocol.RemainingClock), and the truth."""
    from rollingdepth_core.protocol import remaining_times

    left = remaining_times(stages, events)
    said = []
    for share in (0.1, 0.25, 0.5, 0.75):
        i = min(range(len(events)), key=lambda k: abs(events[k][0] - share * wall))
        t, stage = events[i][:2]
        said.append(f"at {t:.0f} s ({stage}): {left[i]:.0f} s left, truly {wall - t:.0f}")
    return "; ".join(said)


def size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--plates", type=size, nargs="+", default=[(64, 48), (128, 96),
                        (192, 108)])  # fmt: skip
    parser.add_argument("--res", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--frames", type=int, default=12)
    args = parser.parse_args()
    from rollingdepth_core.random_checkpoint import make_random_checkpoint
    from rollingdepth_core.sample import write_sample_video

    root = Path(tempfile.mkdtemp(prefix="estimate-bench-"))
    checkpoint = args.checkpoint or str(make_random_checkpoint(root / "tiny", "tiny"))
    clips = {p: write_sample_video(root / f"plate_{p[0]}x{p[1]}.mp4", args.frames, p[1], p[0],
                                   24) for p in args.plates}  # fmt: skip
    combos = [(p, r) for p in args.plates for r in args.res]
    fresh = root / "fresh"
    cold = {c: estimate(c[0], c[1], args.frames, checkpoint, fresh) for c in combos}
    learned = root / "learned"  # one earlier run: the first combination
    first = combos[0]
    events: list = []
    _, first_wall = run(clips[first[0]], first[1], checkpoint, root / "warm", learned, events)
    print(f"earlier run: {first[0][0]}x{first[0][1]} at {first[1]}: {first_wall:.2f} s")
    print(
        f"  time left from the first guess: {time_left(cold[first]['stages'], events, first_wall)}"
    )
    rows = []
    for combo in combos:
        book = root / f"book_{combo[0][0]}_{combo[1]}"
        shutil.copytree(learned, book)
        warm = estimate(combo[0], combo[1], args.frames, checkpoint, book)
        result, actual = run(clips[combo[0]], combo[1], checkpoint, root / f"o{len(rows)}", book)
        rows.append((combo, cold[combo], warm, actual, result))
    print(f"{'plate':>9} {'res':>4} {'actual s':>9} {'no run s':>9} {'err':>7} "
          f"{'1 run s':>8} {'err':>7}   stages (1 run: predicted / measured s)")  # fmt: skip
    for (plate, res), cold_r, warm_r, actual, result in rows:
        cold_s, warm_s = cold_r["seconds"], warm_r["seconds"]
        measured = dict(result.get("timings", {}))
        stages = " ".join(f"{k} {v:.2f}/{measured[k]:.2f}" if k in measured else
                          f"{k} {v:.2f}" for k, v in warm_r["stages"].items())  # fmt: skip
        print(f"{plate[0]:>4}x{plate[1]:<4} {res:>4} {actual:>9.2f} {cold_s:>9.2f} "
              f"{(cold_s - actual) / actual:>+7.0%} {warm_s:>8.2f} "
              f"{(warm_s - actual) / actual:>+7.0%}   {stages}")  # fmt: skip
    worst = max(abs(w["seconds"] - a) / a for _, _, w, a, _ in rows)
    worst_cold = max(abs(c["seconds"] - a) / a for _, c, _, a, _ in rows)
    again = rows[0][3]  # the first combination's second run: the same work as the earlier
    print(f"the same run twice (the earlier one, then its row): {first_wall:.2f} s, "
          f"{again:.2f} s ({(first_wall - again) / again:+.0%}: what no estimate from one "
          f"run can beat on this machine now)")  # fmt: skip
    print(
        f"after one earlier run: worst error {worst:.0%} (target 25 %); "
        f"without any: worst {worst_cold:.0%}"
    )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
