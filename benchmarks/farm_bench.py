"""A multi-node Ray run against a local run of the same plate: wall time and the ratio.

Starts a real cluster on this machine (a 0-CPU head and worker nodes as separate `ray start`
processes, tests/core/ray_cluster.py), then runs the same `rollingdepth run --cache` twice, as
separate processes with the same torch thread count: locally, and with `--executor ray
--ray-address`; checks that both wrote the same bytes and prints the times.

    PYTHONPATH=. .venv/bin/python benchmarks/farm_bench.py --frames 60 --workers 1 1

On one machine the nodes share its cores, so this measures the executor's overhead (actor start,
model load per worker, scheduling), not a farm's speed-up.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rollingdepth_core.random_checkpoint import make_random_checkpoint  # noqa: E402
from rollingdepth_core.sample import write_sample_video  # noqa: E402
from tests.core.ray_cluster import RayCluster  # noqa: E402

FAST = ["--res", "64", "--dilations", "1", "3", "--device", "cpu", "--seed", "3"]


def run(args: list, env: dict) -> tuple[float, dict]:
    argv = [sys.executable, "-m", "rollingdepth_core.cli", *map(str, args), "--progress", "json"]
    started = time.perf_counter()
    out = subprocess.run(argv, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if out.returncode:
        raise SystemExit(f"failed: {' '.join(argv)}\n{out.stderr[-2000:]}")
    result = [json.loads(line) for line in out.stdout.splitlines() if '"result"' in line][-1]
    return seconds, result


def digest(folder: Path) -> str:
    return hashlib.sha256(
        b"".join(p.read_bytes() for p in sorted(folder.glob("*.exr")))
    ).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 1], help="CPUs per node")
    parser.add_argument("--threads", default="2", help="the driver's torch threads")
    opts = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="farm-bench-"))
    try:
        measure(root, opts)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def measure(root: Path, opts: argparse.Namespace) -> None:
    checkpoint = make_random_checkpoint(root / "tiny", size="tiny")
    plate = write_sample_video(root / "plate.mp4", n_frames=opts.frames, height=48, width=80)
    # the EXRs' DateTime is the time of writing unless SOURCE_DATE_EPOCH pins it: pinned, so
    # the two runs' files can be compared byte for byte
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": opts.threads}
    env.setdefault("SOURCE_DATE_EPOCH", "1700000000")
    env["RAY_AUTH_MODE"] = "disabled"  # as the cluster of tests/core/ray_cluster.py runs
    common = ["--checkpoint", checkpoint, *FAST]

    local_s, local = run(["run", plate, "-o", root / "local", "--cache", root / "c1", *common], env)
    with RayCluster(worker_cpus=tuple(opts.workers)) as cluster:
        ray_args = ["--executor", "ray", "--ray-address", cluster.address]
        ray_s, remote = run(
            ["run", plate, "-o", root / "ray", "--cache", root / "c2", *common, *ray_args], env
        )
    same = digest(root / "local") == digest(root / "ray")
    blocks = local["cache_stats"]["blocks_computed"]
    print(f"plate: {opts.frames} frames 48x80 at --res 64, {blocks} blocks, tiny random model")
    print(f"nodes: head 0 CPUs + workers {opts.workers} CPUs; driver {opts.threads} threads")
    print(f"{'':<8}{'wall s':>8}{'snippets s':>12}")
    for name, seconds, result in (("local", local_s, local), ("ray", ray_s, remote)):
        print(f"{name:<8}{seconds:>8.1f}{result['timings']['snippets']:>12.1f}")
    print(
        f"ratio ray/local: wall {ray_s / local_s:.2f}, snippet stage "
        f"{remote['timings']['snippets'] / local['timings']['snippets']:.2f}; "
        f"EXRs byte-identical: {same}"
    )


if __name__ == "__main__":
    main()
