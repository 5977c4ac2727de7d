"""Time and peak memory of every stage of a CLI run on a synthetic clip.

Runs ``rollingdepth run --progress json`` as a subprocess on a generated plate with a random
checkpoint (tiny by default; ``--size full`` gives SD2-sized weights for honest speed), samples
the child's resident memory every 20 ms from /proc and attributes it to the stage the JSON
stream says is running. Prints one row per stage.

    .venv/bin/python benchmarks/run_bench.py --frames 250
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from rollingdepth_core.random_checkpoint import make_random_checkpoint
from rollingdepth_core.sample import write_sample_video


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=250)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=144)
    ap.add_argument("--size", choices=("tiny", "full"), default="tiny")
    ap.add_argument("--res", type=int, default=0, help="processing resolution (0 = plate size)")
    ap.add_argument("--keep", default=None, help="keep the work folder here")
    ap.add_argument(
        "run_args", nargs=argparse.REMAINDER, help="extra `rollingdepth run` flags after --"
    )
    args = ap.parse_args()

    work = Path(args.keep or tempfile.mkdtemp(prefix="rollingdepth-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / f"{args.size}-random"
    if not (ckpt / "unet").exists():
        make_random_checkpoint(ckpt, size=args.size)
    plate = write_sample_video(work / "plate.mp4", args.frames, args.height, args.width)
    extra = [a for a in args.run_args if a != "--"]
    cmd = [
        sys.executable,
        "-m",
        "rollingdepth_core.cli",
        "run",
        str(plate),
        "-o",
        str(work / "depth"),
        "--checkpoint",
        str(ckpt),
        "--progress",
        "json",
        "--res",
        str(args.res),
        *extra,
    ]
    print("command:", " ".join(cmd[2:]), flush=True)

    started = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    stage = {"name": "load"}
    stats: dict[str, dict[str, float]] = {}
    order: list[str] = []

    def enter(name: str, now: float) -> None:
        if name not in stats:
            stats[name] = {"start": now, "end": now, "peak": 0.0}
            order.append(name)
        stage["name"] = name

    enter("load", started)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            s = stats[stage["name"]]
            s["peak"] = max(s["peak"], rss_mib(child.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = None
    for line in child.stdout:
        event = json.loads(line)
        now = time.perf_counter()
        stats[stage["name"]]["end"] = now
        if event["event"] == "progress" and event["stage"] != stage["name"]:
            enter(event["stage"], now)
        elif event["event"] in ("result", "error"):
            result = event
    child.wait()
    done.set()
    sampler.join()
    total = time.perf_counter() - started
    if result is None or result["event"] == "error":
        print("run failed:", result, file=sys.stderr)
        return 1

    print(
        f"\n{args.frames} frames {args.width}x{args.height}, {args.size} random checkpoint, "
        f"processing {result['processing_size']}, dilations {result['dilations_run']}"
    )
    print(f"{'stage':<10}{'seconds':>10}{'peak RSS MiB':>15}")
    for name in order:
        s = stats[name]
        print(f"{name:<10}{s['end'] - s['start']:>10.2f}{s['peak']:>15.0f}")
    print(f"{'total':<10}{total:>10.2f}{max(s['peak'] for s in stats.values()):>15.0f}")
    print("engine timings:", result["timings"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
