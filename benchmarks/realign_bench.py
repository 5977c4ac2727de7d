"""Re-alignment in a tuning session (the Qt panel's path): kept snippets, no model.

Opens a synthetic plate in a `DepthSession` with a random checkpoint, predicts the snippets
once (the model stage, timed but not the point), then times what the panel does when only
alignment settings change, each a fresh `align` on the kept snippets:

- ``cold``: the first alignment of these snippets (solve, full-resolution merge, renormalise);
- ``confidence on``: the same snippets with the confidence channel (the kept solve, merged
  again with the agreement pass);
- ``drop a dilation``: a subset of the dilations (a new solve and merge);
- ``back``: the first settings again (cached).

Every row is the best wall time of ``session.align`` over ``--repeat`` tries, for every
``--threads`` value, and the solver iterations; the snippets are float32 on the CPU (the
panel's CPU path; CUDA gives float16 snippets, half the bytes). The one-time work per snippet
set (its minimum and a contiguous copy of its reduced maps, at its first alignment, right after
the model ran) is in the first try only.

    .venv/bin/python benchmarks/realign_bench.py --frames 250 --res 768 --threads 1 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=250)
    ap.add_argument("--width", type=int, default=1280, help="plate width")
    ap.add_argument("--height", type=int, default=720, help="plate height")
    ap.add_argument("--res", type=int, default=768, help="processing resolution (longer edge)")
    ap.add_argument("--dilations", type=int, nargs="+", default=[1, 25])
    ap.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[os.cpu_count() or 1],
        help="torch threads; the rows are timed for each value (the model runs with the first)",
    )
    ap.add_argument("--repeat", type=int, default=3, help="best of this many for each row")
    ap.add_argument("--keep", default=None, help="keep the work folder (plate, checkpoint) here")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads[0])
    from rollingdepth_core.config import preset_config
    from rollingdepth_core.model import DepthModel
    from rollingdepth_core.plate import open_plate
    from rollingdepth_core.random_checkpoint import make_random_checkpoint
    from rollingdepth_core.sample import write_sample_video
    from rollingdepth_core.session import DepthSession

    work = Path(args.keep or tempfile.mkdtemp(prefix="rollingdepth-realign-"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "tiny-random"
    if not (ckpt / "unet").exists():
        make_random_checkpoint(ckpt, size="tiny")
    plate_path = work / f"plate-{args.frames}-{args.width}x{args.height}.mp4"
    if not plate_path.exists():
        write_sample_video(plate_path, args.frames, args.height, args.width)
    pipeline = DepthModel.from_pretrained(str(ckpt), device="cpu", dtype="fp32")
    session = DepthSession(pipeline, open_plate(plate_path))
    config = preset_config(
        "fast", dilations=tuple(args.dilations), processing_res=args.res, dtype="fp32"
    )

    clock = time.perf_counter()
    snippets = session.predict(config)
    predict = time.perf_counter() - clock
    size = "x".join(str(v) for v in snippets[0].shape[-2:])
    total_bytes = sum(a.nbytes for a in {id(a): a for a in snippets}.values())
    print(
        f"{args.frames} frames, snippets {size} float32, dilations {args.dilations}: "
        f"{sum(a.shape[0] for a in snippets)} snippets, {total_bytes / 2**30:.2f} GiB; "
        f"model stage {predict:.1f} s ({args.threads[0]} threads)"
    )

    def fresh(settings, keep_solve: bool = False) -> tuple[float, int, int]:
        """Best-of-``repeat`` wall time of an uncached ``align``: the session's kept results
        are dropped before each try (the solve too, unless ``keep_solve``)."""
        best, iterations, solves = float("inf"), 0, 0
        for _ in range(args.repeat):
            session._alignments.clear()  # noqa: SLF001 - time the work, not the cache
            if not keep_solve:
                session._solutions.clear()  # noqa: SLF001
            before = session.counters.solves
            clock = time.perf_counter()
            result = session.align(settings)
            best = min(best, time.perf_counter() - clock)
            iterations = result.alignment.iterations
            solves = session.counters.solves - before
        return best, iterations, solves

    subset = tuple(args.dilations[:-1]) or tuple(args.dilations)
    for threads in args.threads:
        torch.set_num_threads(threads)
        rows = [
            ("cold (solve + merge)", *fresh(config)),
            ("confidence on", *fresh(replace(config, confidence=True), keep_solve=True)),
            (f"drop a dilation -> {list(subset)}", *fresh(replace(config, dilations=subset))),
        ]
        session.align(config)
        clock = time.perf_counter()
        session.align(config)
        rows.append(("back (cached)", time.perf_counter() - clock, 0, 0))
        print(f"\n{threads} threads")
        print(f"{'change':<32} {'seconds':>8} {'iters':>6} {'solves':>6}")
        for name, seconds, iterations, solves in rows:
            print(f"{name:<32} {seconds:>8.3f} {iterations:>6} {solves:>6}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
