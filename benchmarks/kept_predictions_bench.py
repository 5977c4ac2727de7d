"""A Blender rerun with a holdout added: first run against rerun from the kept predictions.

Runs the engine as the Blender add-on runs it (``rollingdepth run ... --cache <the strip's
kept predictions> --front-end blender --progress json``, a fresh process per run, as Blender
starts one) on a synthetic plate with a random checkpoint: once cold, then again with a
holdout matte added, which only the co-alignment reads. Prints each run's wall time (what
the artist waits for), the engine's own time and stages, and the rerun's share of the first.
``tests/blender/test_kept_predictions.py`` drives the same two runs through the real add-on
(tiny model) and prints its wall times too.

    .venv/bin/python benchmarks/kept_predictions_bench.py --size full --frames 24
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import OpenImageIO as oiio

from rollingdepth_core.random_checkpoint import make_random_checkpoint
from rollingdepth_core.sample import sample_frame


def write_png(path: Path, pixels: np.ndarray) -> None:
    out = oiio.ImageOutput.create(str(path))
    h, w, c = pixels.shape
    assert out.open(str(path), oiio.ImageSpec(w, h, c, "uint8")), oiio.geterror()
    out.write_image(pixels)
    out.close()


def run(argv: list[str]) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    events = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    if not events or events[-1].get("event") != "result":
        sys.exit(f"the run failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds, events[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--checkpoint", help="an existing checkpoint folder (else a random one)")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--plate", default="64x48", help="WxH")
    parser.add_argument("--res", type=int, default=64)
    parser.add_argument("--dilations", default="1 3")
    parser.add_argument("--dtype", default="fp32")
    args = parser.parse_args()
    w, h = (int(v) for v in args.plate.split("x"))
    with tempfile.TemporaryDirectory(prefix="kept-bench-") as tmp:
        root = Path(tmp)
        checkpoint = args.checkpoint or str(make_random_checkpoint(root / "ckpt", args.size))
        (root / "plate").mkdir()
        for i in range(args.frames):
            rgb = sample_frame(i, args.frames, h, w)
            write_png(
                root / "plate" / f"plate.{1001 + i:04d}.png", (rgb * 255 + 0.5).astype(np.uint8)
            )
            matte = np.zeros((h, w, 1), np.uint8)
            matte[:, 2 * w // 3 :] = 255
            write_png(root / "plate" / f"matte.{1001 + i:04d}.png", matte)
        base = [sys.executable, "-m", "rollingdepth_core.cli", "run",
                str(root / "plate" / "plate.####.png"), "-o", str(root / "depth" / "plate"),
                "--preset", "fast", "--device", "cpu", "--front-end", "blender", "--overwrite",
                "--checkpoint", checkpoint, "--dtype", args.dtype, "--res", str(args.res),
                "--dilations", *args.dilations.split(), "--depth-mode", "normalized",
                "--restore-res", "--cache", str(root / "depth" / ".rollingdepth-cache" / "plate"),
                "--progress", "json"]  # fmt: skip
        first_s, first = run(base)
        second_s, second = run([*base, "--holdout", str(root / "plate" / "matte.####.png")])
    print(f"{args.frames} frames {w}x{h} at {args.res} px, {args.size} model, {args.dtype}")
    for name, wall, result in (("first", first_s, first), ("rerun + holdout", second_s, second)):
        print(f"  {name:16s} wall {wall:6.1f} s  engine {result['seconds']:6.1f} s  "
              f"model loaded {result['model_loaded']}  blocks {result['cache_stats']}  "
              f"stages {result['timings']}")  # fmt: skip
    print(f"  rerun / first: wall {second_s / first_s:.1%}, engine "
          f"{second['seconds'] / first['seconds']:.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
