"""What P and N cost the write stage at plate resolution (issue 31: at most +10 %).

**The write stage** is stage 8 of a run as the runner times it (``timings["write"]`` in the
run's result): the wall time of one call of the one writer
(:func:`rollingdepth_core.output.write_depth_frames`) over a sequence, fed as a run feeds it:
the processing-size depths (960 x 540) arriving one at a time, the plate's frames read from
their files as they are needed (half-float EXRs, linear, through the plate reader and its
colour conversion: the guides), each depth upsampled edge-aware to the plate's 1920 x 1080
(``--restore-res``), then the EXR written, read back, flushed and renamed (and, with a
camera, P and N computed from the written depth and added as six float32 channels, stored
uncompressed: ``passes.PASSES_COMPRESSION``). The writer makes frame k+1 while frame k is
written in its own thread, so the stage's wall time, not the sum of its parts, is what a
user waits for. torch runs one thread (the upsampling), as a busy farm node would give it;
the writer's thread needs a second core for the overlap. The CPU time of all the process's
threads is printed too: the work P and N add, whatever the overlap hides.

Z only and Z + P + N (``--passes Z,P,N`` with a fixed camera) alternate, ``--repeat`` times
each, on the same plate in the same process, so the machine's load hits both alike; medians.

    PYTHONPATH=. .venv/bin/python benchmarks/passes_bench.py [--frames 6] [--repeat 3]

Also prints the geometry alone (depth -> P, N at plate size) and one frame's EXR alone, so a
change in either shows where it went.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import torch

from rollingdepth_core.cameras import CameraRequest, load_camera
from rollingdepth_core.config import OutputConfig
from rollingdepth_core.exr import write_depth_exr
from rollingdepth_core.geometry import normal_planes, position_planes
from rollingdepth_core.output import write_depth_frames
from rollingdepth_core.passes import PASSES_COMPRESSION, FrameGeometry
from rollingdepth_core.plate import open_plate


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


def write_plate(folder: Path, plate: np.ndarray, numbers) -> str:
    """The plate as half-float linear EXRs, one per frame (a VFX plate's usual form)."""
    linear = (plate**2.2).astype(np.float32)
    for number in numbers:
        spec = oiio.ImageSpec(plate.shape[1], plate.shape[0], 3, "half")
        spec.attribute("compression", "zip")
        out = oiio.ImageOutput.create(str(folder / f"plate.{number}.exr"))
        out.open(str(folder / f"plate.{number}.exr"), spec)
        out.write_image(linear)
        out.close()
    return str(folder / "plate.####.exr")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=3)
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
    inverse = ((1.0 / small - lo) / (hi - lo)).astype(np.float32)  # relative inverse depth
    times: dict[str, list[float]] = {"Z": [], "Z,P,N": []}
    cpu: dict[str, list[float]] = {"Z": [], "Z,P,N": []}
    with tempfile.TemporaryDirectory() as tmp:
        source = open_plate(write_plate(Path(tmp), plate, numbers))
        for run in range(-1, args.repeat):  # run -1: warming up, not timed
            for label in times:
                folder = Path(tmp) / f"{label.replace(',', '')}{run}"
                folder.mkdir()
                geometry = FrameGeometry(camera, ("Z", "P", "N")) if label != "Z" else None
                started, used = time.perf_counter(), time.process_time()
                write_depth_frames(
                    (inverse for _ in numbers), (0.0, 1.0), numbers,
                    str(folder / "depth.####.exr"), output, {}, plate_size=size,
                    guides=(rgb for _, rgb in source.frames()), geometry=geometry,
                )  # fmt: skip
                if run >= 0:
                    times[label].append((time.perf_counter() - started) / len(numbers))
                    cpu[label].append((time.process_time() - used) / len(numbers))
        z = np.ascontiguousarray(small.repeat(2, 0).repeat(2, 1)[: size[0], : size[1]])
        geo, exr = [], {"Z": [], "Z,P,N": []}
        for _ in range(3):
            started = time.perf_counter()
            position = position_planes(z, camera.at(numbers[0]))
            normals, _ = normal_planes(z, camera.at(numbers[0]))
            geo.append(time.perf_counter() - started)
            planes = dict(
                zip(("P.X", "P.Y", "P.Z", "N.X", "N.Y", "N.Z"), [*position, *normals], strict=True)
            )
            for label, extra, compression in (
                ("Z", None, "zip"), ("Z,P,N", planes, PASSES_COMPRESSION)
            ):  # fmt: skip
                started = time.perf_counter()
                write_depth_exr(Path(tmp) / "x.exr", z, extra_channels=extra,
                                compression=compression)  # fmt: skip
                exr[label].append(time.perf_counter() - started)
    z_only, with_passes = (statistics.median(times[k]) for k in ("Z", "Z,P,N"))
    print(f"plate {size[1]}x{size[0]}, depth {small.shape[1]}x{small.shape[0]}, "
          f"{args.frames} frames x {args.repeat} alternating runs, 1 torch thread (medians)")  # fmt: skip
    print(f"write stage, Z only:      {z_only * 1000:8.1f} ms/frame  "
          f"(runs: {', '.join(f'{t * 1000:.0f}' for t in times['Z'])})")  # fmt: skip
    print(f"write stage, Z + P + N:   {with_passes * 1000:8.1f} ms/frame  "
          f"(runs: {', '.join(f'{t * 1000:.0f}' for t in times['Z,P,N'])})")  # fmt: skip
    print(f"P and N add:              {(with_passes / z_only - 1) * 100:+8.1f} %  (wall time)")
    z_cpu, passes_cpu = (statistics.median(cpu[k]) for k in ("Z", "Z,P,N"))
    print(f"  CPU time, all threads:  {z_cpu * 1000:8.1f} / {passes_cpu * 1000:.1f} ms/frame  "
          f"({(passes_cpu / z_cpu - 1) * 100:+.1f} %: the work P and N add)")  # fmt: skip
    print(f"  geometry alone (P, N):  {statistics.median(geo) * 1000:8.1f} ms/frame")
    for label, t in exr.items():
        print(f"  one EXR alone, {label + ':':8s}{statistics.median(t) * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
