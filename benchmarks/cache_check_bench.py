"""What checking the cache costs: `finalize` of a 250-frame cache with and without the checks.

A 250-frame 80x48 plate, the tiny random checkpoint, ``--res 64``, the fast preset's
dilations: one ``infer`` fills the cache, then ``finalize`` runs in this process, alternately
as shipped (every block's meta checked against its own digest and its key, every array against
its digest) and with those checks switched off (meta read as plain JSON, arrays loaded
unhashed), ``--repeats`` times each. Two figures: the time spent inside the checks (the
digests of arrays and metas, the key derived from a meta) as a share of the same checked
finalize, which does not depend on how busy the machine is; and the ratio of the fastest
checked to the fastest unchecked finalize, which on a shared machine swings by more than the
checks cost.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/cache_check_bench.py --frames 250 --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rollingdepth_core import cache as cache_module
from rollingdepth_core.config import OutputConfig, preset_config
from rollingdepth_core.random_checkpoint import make_random_checkpoint
from rollingdepth_core.runner import run_plate
from rollingdepth_core.sample import write_sample_video

CHECKS = ("_file_digest", "_bytes_digest", "_meta_digest", "block_key")


@contextlib.contextmanager
def timed_checks(spent: list[float]):
    """Adds the seconds spent inside the cache's check functions to ``spent[0]``."""
    saved = {name: getattr(cache_module, name) for name in CHECKS}

    def timed(function):
        def wrapper(*args, **kwargs):
            clock = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - clock

        return wrapper

    for name, function in saved.items():
        setattr(cache_module, name, timed(function))
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(cache_module, name, function)


@contextlib.contextmanager
def unchecked():
    """The cache's readers with no digest or key check (what the checks are measured against)."""
    cls = cache_module.SnippetCache

    def block_meta(self, key):
        return json.loads((self.block_dir(key) / "meta.json").read_text())

    def load_reduced(self, key):
        return np.load(self.block_dir(key) / "reduced.npy")

    def open_block(self, key):
        return np.load(self.block_dir(key) / "maps.npy", mmap_mode="r")

    saved = {name: getattr(cls, name) for name in ("block_meta", "load_reduced", "open_block")}
    cls.block_meta, cls.load_reduced, cls.open_block = block_meta, load_reduced, open_block
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(cls, name, method)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("SOURCE_DATE_EPOCH", "1700000000")
    config = preset_config("fast", processing_res=64, seed=3, dtype="fp32")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = make_random_checkpoint(tmp / "ckpt", size="tiny")
        plate = write_sample_video(tmp / "plate.mp4", n_frames=args.frames, height=48, width=80)
        common = dict(cache_dir=str(tmp / "cache"), device="cpu")
        started = time.perf_counter()
        run_plate(str(plate), None, config, OutputConfig(), str(checkpoint), mode="infer",
                  **common)  # fmt: skip
        print(f"infer: {time.perf_counter() - started:.1f} s", flush=True)
        blocks = list((tmp / "cache" / "blocks").glob("*/meta.json"))
        size = sum(p.stat().st_size for p in (tmp / "cache").rglob("*") if p.is_file())
        print(f"cache: {len(blocks)} blocks, {size / 2**20:.1f} MiB", flush=True)

        def finalize(out: str) -> float:
            clock = time.perf_counter()
            run_plate(str(plate), str(tmp / out), config, OutputConfig(), str(checkpoint),
                      mode="finalize", overwrite=True, **common)  # fmt: skip
            return time.perf_counter() - clock

        finalize("warm")  # page cache and imports warm for both variants
        checked, plain, inside = [], [], []
        for _ in range(args.repeats):
            spent = [0.0]
            with timed_checks(spent):
                checked.append(finalize("checked"))
            inside.append(spent[0])
            with unchecked():
                plain.append(finalize("plain"))
        shares = [100 * s / t for s, t in zip(inside, checked, strict=True)]
        a, b = min(checked), min(plain)
        print(f"finalize with checks:    {[round(t, 2) for t in checked]} s, fastest {a:.2f} s")
        print(f"finalize without checks: {[round(t, 2) for t in plain]} s, fastest {b:.2f} s")
        print(f"inside the checks: {[round(t, 3) for t in inside]} s, "
              f"{statistics.median(shares):.2f} % of a finalize (median)")  # fmt: skip
        print(f"fastest checked / fastest unchecked: {100 * (a / b - 1):+.1f} %")
        if args.json:
            Path(args.json).write_text(json.dumps({
                "frames": args.frames, "blocks": len(blocks), "cache_mib": size / 2**20,
                "checked_s": checked, "unchecked_s": plain, "inside_checks_s": inside,
                "share_percent": shares, "fastest_ratio_percent": 100 * (a / b - 1),
            }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
