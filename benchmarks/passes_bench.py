"""What P and N cost the write stage at plate resolution (issue 31: at most +10 %).

The write stage of a run, frame by frame, through the one writer
(:func:`rollingdepth_core.output.write_depth_frames`): a processing-size depth (768 x 432) to
the plate's 1920 x 1080 (``--restore-res``, edge-aware upsampling guided by the plate), the
EXR written, read back, flushed and renamed. Timed twice per frame, alternating: Z only, and
Z + P + N with a camera (``--passes Z,P,N``; the 6 extra float32 channels in the same file).
One thread, as a busy farm node would give it.

    PYTHONPATH=. .venv/bin/python benchmarks/passes_bench.py [--frames 4] [--size 1080 1920]

Also prints the geometry alone (depth -> P, N at plate size) and the EXR alone, so a change in
either shows where it went.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rollingdepth_core.cameras import CameraRequest, load_camera
from rollingdepth_core.config import OutputConfig
from rollingdepth_core.exr import write_depth_exr
from rollingdepth_core.geometry import normal_planes, position_planes
from rollingdepth_core.output import write_depth_frames
from rollingdepth_core.passes import FrameGeometry


def synthetic(size, scale, rng):
    """A plate [H,W,3] and a depth [h,w] at 1/scale: a slanted floor, a box, a pole."""
    H, W = size
    yy, xx = np.mgrid[0:H, 0:W] / np.array([H, W])[:, None, None]
    z = 3.0 + 20.0 * (1 - yy) ** 2
    z = np.where((abs(xx - 0.4) < 0.12) & (abs(yy - 0.55) < 0.2), 4.0, z)
    z = np.where(abs(xx - 0.75) < 0.004, 2.5, z).astype(np.float32)
    plate = np.stack([1 / z * 2, xx, yy], -1).astype(np.float32)
    plate += 0.02 * rng.random(plate.shape, dtype=np.float32)
    small = z[scale // 2 :: scale, scale // 2 :: scale]
    small = small + 0.01 * rng.random(small.shape, dtype=np.float32)
    return np.clip(plate, 0, 1), small


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--size", type=int, nargs=2, default=(1080, 1920), metavar=("H", "W"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    size = tuple(args.size)
    rng = np.random.default_rng(0)
    plate, small = synthetic(size, 2, rng)
    numbers = list(range(1001, 1001 + args.frames))
    camera = load_camera(CameraRequest(focal_length=35.0), numbers, size)
    output = OutputConfig(depth_mode="depth", near=2.0, far=30.0, restore_res=True)
    lo, hi = 1 / 30.0, 1 / 2.0
    inverse = (1.0 / small - lo) / (hi - lo)  # relative inverse depth the writer converts
    times = {"Z": [], "Z,P,N": []}
    with tempfile.TemporaryDirectory() as tmp:
        for number in numbers:
            for label in ("Z", "Z,P,N"):
                geometry = FrameGeometry(camera, ("Z", "P", "N")) if label != "Z" else None
                started = time.perf_counter()
                write_depth_frames(
                    [inverse.astype(np.float32)], (0.0, 1.0), [number],
                    str(Path(tmp) / f"{label.replace(',', '')}.####.exr"), output, {},
                    plate_size=size, guides=[plate], geometry=geometry,
                )  # fmt: skip
                times[label].append(time.perf_counter() - started)
        z = np.ascontiguousarray(1.0 / (small.repeat(2, 0).repeat(2, 1)[: size[0], : size[1]]))
        z = (1.0 / z).astype(np.float32)
        geo = []
        for _ in range(3):
            started = time.perf_counter()
            position_planes(z, camera.at(numbers[0]))
            normal_planes(z, camera.at(numbers[0]))
            geo.append(time.perf_counter() - started)
        exr = []
        for channels in (1, 7):
            planes = {f"c{i}": z for i in range(channels - 1)}
            started = time.perf_counter()
            write_depth_exr(Path(tmp) / f"x{channels}.exr", z, extra_channels=planes or None)
            exr.append(time.perf_counter() - started)
    z_only, with_pn = statistics.median(times["Z"]), statistics.median(times["Z,P,N"])
    print(f"plate {size[1]}x{size[0]}, depth {small.shape[1]}x{small.shape[0]}, "
          f"{args.frames} frames, 1 thread (medians)")  # fmt: skip
    print(f"write stage, Z only:      {z_only * 1000:8.1f} ms/frame")
    print(f"write stage, Z + P + N:   {with_pn * 1000:8.1f} ms/frame  "
          f"(+{(with_pn / z_only - 1) * 100:.1f} %)")  # fmt: skip
    print(f"  geometry alone (P, N):  {statistics.median(geo) * 1000:8.1f} ms")
    print(f"  EXR alone, 1 channel:   {exr[0] * 1000:8.1f} ms; 7 channels: {exr[1] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
