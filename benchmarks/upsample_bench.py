"""Depth upsampling to plate resolution: edge-aware vs bilinear on synthetic plates.

Each plate has ground-truth depth at plate resolution: a slanted, textured background; a disk of
strong colour contrast; a box of low colour contrast; a motion-blurred ellipse (its depth is
blended by the same blur, so there the plate's soft edge is the truth); a thin diagonal pole.
The model-resolution map is the ground truth area-averaged to 1/2 or 1/4 plus noise.

    PYTHONPATH=. .venv/bin/python benchmarks/upsample_bench.py            # quality + speed
    PYTHONPATH=. .venv/bin/python benchmarks/upsample_bench.py --crop     # + docs/screenshots

Errors are mean absolute depth error (depth spans 0..1), in the 3 px band around depth edges
and over the whole frame; "invented" counts band pixels of clean edges whose value is more than
10 % of the local step away from both sides' true values (the pole's true depth never appears
in the 4x map: every model pixel on it is a mix).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rollingdepth_core import upsample
from rollingdepth_core.upsample import resize_map, upsample_depth

ROOT = Path(__file__).resolve().parents[1]


def _smooth_noise(rng, H, W, cells, amp):
    low = torch.from_numpy(rng.random((3, cells, cells * W // H)).astype(np.float32))
    return amp * F.interpolate(low[None], size=(H, W), mode="bicubic")[0].numpy()


def _coverage(inside, H, W, ss=4):
    """Anti-aliased coverage of a shape given as ``inside(y, x)`` on a ss x ss subgrid."""
    off = (np.arange(ss) + 0.5) / ss
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    acc = np.zeros((H, W), np.float32)
    for dy in off:
        for dx in off:
            acc += inside(yy + dy, xx + dx)
    return acc / ss**2


def make_scene(H: int, W: int, seed: int = 0, ss: int = 4):
    """Plate ``[H,W,3]`` display RGB 0..1, true depth ``[H,W]``, and the edge pixels of the
    clean-edged objects labelled 1 disk, 2 low-contrast box, 3 thin pole (0 elsewhere).
    ``ss``: antialiasing subsamples per axis."""
    rng = np.random.default_rng(seed)
    s = H / 864  # shapes scale with the plate
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    bg_tex = _smooth_noise(rng, H, W, 24, 0.35) + _smooth_noise(rng, H, W, 96, 0.15)
    stripes = 0.08 * np.sin(xx / (7 * s) + yy / (13 * s))[None]
    plate = (np.array([0.25, 0.3, 0.35])[:, None, None] + bg_tex + stripes).astype(np.float32)
    depth = (0.1 + 0.2 * yy / H).astype(np.float32)  # slanted ground, farther at the top
    clean = np.zeros((H, W), np.uint8)

    def put(alpha, colour, z, texture=0.0, hard=True):
        nonlocal plate, depth
        col = np.asarray(colour, np.float32)[:, None, None] + texture
        plate = plate * (1 - alpha) + col * alpha
        if hard:  # the truth ZDefocus wants: the pixel belongs to the side covering its centre
            depth = np.where(alpha >= 0.5, np.float32(z), depth)
        else:  # soft edge: the plate itself blends, so does the depth
            depth = depth * (1 - alpha) + z * alpha
        return alpha

    # disk, strong contrast
    cy, cx, r = 0.45 * H, 0.25 * W, 150 * s
    a = put(
        _coverage(lambda y, x: (y - cy) ** 2 + (x - cx) ** 2 < r**2, H, W, ss),
        [0.85, 0.35, 0.2],
        0.8,
        _smooth_noise(rng, H, W, 48, 0.1),
    )
    clean[(a > 0) & (a < 1)] = 1
    # box, low contrast against the background's mean colour
    b = put(
        _coverage(
            lambda y, x: (abs(y - 0.5 * H) < 110 * s) & (abs(x - 0.55 * W) < 90 * s), H, W, ss
        ),
        [0.42, 0.47, 0.5],
        0.55,
        _smooth_noise(rng, H, W, 48, 0.08),
    )
    clean[(b > 0) & (b < 1)] = 2
    # ellipse, motion-blurred horizontally over 14 px
    ell = _coverage(
        lambda y, x: ((y - 0.35 * H) / (90 * s)) ** 2 + ((x - 0.8 * W) / (120 * s)) ** 2 < 1,
        H,
        W,
        ss,
    )
    k = max(3, int(14 * s)) | 1
    blur = F.avg_pool1d(torch.from_numpy(ell)[:, None], k, 1, k // 2, count_include_pad=False)
    put(blur[:, 0].numpy(), [0.2, 0.7, 0.3], 0.7, hard=False)
    # thin diagonal pole, 4 px wide
    t = put(
        _coverage(
            lambda y, x: (
                (abs((x - 0.4 * W) - 0.3 * (y - 0.1 * H)) < 2 * s) & (y > 0.1 * H) & (y < 0.9 * H)
            ),
            H,
            W,
            ss,
        ),
        [0.9, 0.9, 0.85],
        0.9,
    )
    clean[(t > 0) & (t < 1)] = 3
    plate = plate + rng.normal(0, 0.01, plate.shape).astype(np.float32)  # grain
    return np.clip(plate, 0, 1).transpose(1, 2, 0).copy(), depth, clean


def model_map(depth, factor, rng, noise=0.01):
    H, W = depth.shape
    low = F.adaptive_avg_pool2d(torch.from_numpy(depth)[None, None], (H // factor, W // factor))
    return low[0, 0].numpy() + rng.normal(0, noise, low.shape[2:]).astype(np.float32)


def _band(depth, clean, px=3):
    d = torch.from_numpy(depth)[None, None]
    grad = torch.zeros_like(d)
    grad[..., :, 1:] = (d[..., :, 1:] - d[..., :, :-1]).abs()
    grad[..., 1:, :] = torch.maximum(grad[..., 1:, :], (d[..., 1:, :] - d[..., :-1, :]).abs())
    edge = (grad > 0.02).float()  # the slanted ground changes by < 0.001 per pixel
    band = F.max_pool2d(edge, 2 * px + 1, 1, px)[0, 0].numpy() > 0
    k = 2 * px + 3
    lo = -F.max_pool2d(-d, k, 1, k // 2)[0, 0].numpy()
    hi = F.max_pool2d(d, k, 1, k // 2)[0, 0].numpy()
    near_clean = F.max_pool2d(torch.from_numpy(clean)[None, None].float(), k, 1, k // 2)
    return band, near_clean[0, 0].numpy().astype(np.uint8), lo, hi


def metrics(out, depth, band, clean_band, lo, hi):
    """Band MAE, overall MAE, invented pixels per clean object (disk, box, pole), band pixels
    of clean edges."""
    err = np.abs(out - depth)
    step = hi - lo
    invented = (np.abs(out - lo) > 0.1 * step) & (np.abs(out - hi) > 0.1 * step)
    invented &= band & (step > 0.1)
    per_object = [int((invented & (clean_band == i)).sum()) for i in (1, 2, 3)]
    return err[band].mean(), err.mean(), per_object, int(((clean_band > 0) & band).sum())


def _methods(factor):
    import kornia.filters

    def bilinear_up(low, plate):
        return resize_map(low, plate.shape[:2])

    def joint_bilateral(low, plate):
        d = torch.from_numpy(bilinear_up(low, plate))[None, None]
        g = torch.from_numpy(plate).permute(2, 0, 1)[None]
        k = 2 * factor + 1
        return kornia.filters.joint_bilateral_blur(d, g, k, 0.1, (factor, factor))[0, 0].numpy()

    def kornia_fast_guided(low, plate):
        d = torch.from_numpy(bilinear_up(low, plate))[None, None]
        g = torch.from_numpy(plate).permute(2, 0, 1)[None]
        k = 4 * factor + 1
        out = kornia.filters.guided_blur(g, d, k, upsample.GUIDE_EPS, subsample=factor)
        return out[0, 0].numpy()

    def edge_no_snap(low, plate):
        saved = upsample.CLEAN_WIDTH, upsample.SOFT_WIDTH
        upsample.CLEAN_WIDTH, upsample.SOFT_WIDTH = -1.0, 0.0  # every edge soft: guided only
        try:
            return upsample_depth(low, plate)
        finally:
            upsample.CLEAN_WIDTH, upsample.SOFT_WIDTH = saved

    return {
        "bilinear": bilinear_up,
        "kornia joint bilateral": joint_bilateral,
        "kornia fast guided": kornia_fast_guided,
        "edge, no snap": edge_no_snap,
        "edge": lambda low, plate: upsample_depth(low, plate),
    }


def quality(H, W):
    plate, depth, clean = make_scene(H, W)
    band, clean_band, lo, hi = _band(depth, clean)
    print(f"plate {W}x{H}; band = 3 px around depth edges ({band.mean():.1%} of the frame)")
    print(
        f"{'factor':>6} {'method':<24} {'band MAE':>9} {'x bilin':>8} {'all MAE':>8} "
        f"{'x bilin':>8}  invented: disk/box/pole of clean-edge band px"
    )
    for factor in (2, 4):
        low = model_map(depth, factor, np.random.default_rng(1))
        ref = None
        for name, fn in _methods(factor).items():
            b, a, inv, n = metrics(fn(low, plate), depth, band, clean_band, lo, hi)
            ref = ref or (b, a)
            print(
                f"{factor:>5}x {name:<24} {b:9.4f} {b / ref[0]:8.2f} {a:8.4f} {a / ref[1]:8.2f}"
                f"  {'/'.join(map(str, inv))} of {n}"
            )


def speed(runs):
    H, W, h, w = 2160, 3840, 576, 1024
    plate, depth, _ = make_scene(H, W, ss=1)  # antialiasing does not change the speed
    rng = np.random.default_rng(1)
    low = F.adaptive_avg_pool2d(torch.from_numpy(depth)[None, None], (h, w))[0, 0].numpy()
    low = low + rng.normal(0, 0.01, low.shape).astype(np.float32)
    conf = np.ones_like(low)
    # worst case: vertical stripes 6 cells wide, so most cells are within reach of a step
    stripes = np.where(np.arange(w) // 6 % 2 == 1, 0.8, 0.2).astype(np.float32)
    busy = np.broadcast_to(stripes, low.shape) + rng.normal(0, 0.01, low.shape).astype(np.float32)
    busy_frac = upsample._step_cells(
        torch.from_numpy(busy), upsample._noise_sigma(torch.from_numpy(busy))
    )

    def timed(fn):
        """Median wall and CPU seconds (CPU: all threads; the machine may be shared)."""
        fn()
        walls, cpus = [], []
        for _ in range(runs):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
        return statistics.median(walls), statistics.median(cpus)

    threads = torch.get_num_threads()
    d = torch.from_numpy(low)
    frac = upsample._step_cells(d, upsample._noise_sigma(d)).float().mean().item()
    print(
        f"speed {w}x{h} -> {W}x{H}, median of {runs}, load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores (wall s / CPU s of all threads); step cells {frac:.1%}:"
    )
    cases = [
        ("bilinear (resize_map)", lambda: resize_map(low, (H, W))),
        ("edge", lambda: upsample_depth(low, plate)),
        ("edge + confidence", lambda: upsample_depth(low, plate, extra=[conf])),
        (
            f"edge, stripes: step cells {busy_frac.float().mean():.0%}",
            lambda: upsample_depth(busy, plate),
        ),
    ]
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        for name, fn in cases[: None if n == 1 else 2]:
            wall, cpu = timed(fn)
            print(f"  {n} thread{'s' if n > 1 else ' '} {name:<34} {wall:6.3f} / {cpu:6.3f}")
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/plate.npy", plate)
        np.save(f"{tmp}/low.npy", low)
        probe = subprocess.run(
            [sys.executable, __file__, "--memory-probe", tmp],
            capture_output=True,
            text=True,
            check=True,
        )
    base, peak = (int(v) for v in probe.stdout.split())
    print(
        f"  peak memory of a fresh process: {base / 2**10:.0f} MiB after loading torch and the "
        f"inputs, {peak / 2**10:.0f} MiB after upsample_depth(extra=[confidence]): "
        f"+{(peak - base) / 2**10:.0f} MiB (plate {plate.nbytes / 2**20:.0f} MiB, "
        f"one output map {H * W * 4 / 2**20:.0f} MiB)"
    )


def _rss_kib(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))


def memory_probe(folder):
    """RSS (KiB) with the inputs loaded, then the peak during one upsampling with confidence
    (Linux: the high-water mark is reset first, so the imports' own peak does not count)."""
    plate, low = np.load(f"{folder}/plate.npy"), np.load(f"{folder}/low.npy")
    F.interpolate(torch.zeros(1, 1, 4, 4), size=(8, 8), mode="bilinear")  # load torch's kernels
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    base = _rss_kib("VmRSS:")
    upsample_depth(low, plate, extra=[np.ones_like(low)])
    print(base, _rss_kib("VmHWM:"))


def crop(H=864, W=1536, factor=4, zoom=4):
    """Plate | bilinear | edge at ``zoom`` x, depth as grey: the clean disk's top edge above,
    the motion-blurred ellipse's right edge below."""
    from PIL import Image

    plate, depth, _ = make_scene(H, W)
    low = model_map(depth, factor, np.random.default_rng(1))
    outs = [resize_map(low, (H, W)), upsample_depth(low, plate)]
    top_of_disk = (int(0.45 * H - 150 * H / 864) - 25, int(0.25 * W) - 50)
    right_of_ellipse = (int(0.35 * H) - 30, int(0.8 * W + 120 * H / 864) - 50)
    rows = []
    for y, x in (top_of_disk, right_of_ellipse):
        ys, xs = slice(y, y + 60), slice(x, x + 100)
        panels = [plate[ys, xs]] + [
            np.repeat(np.clip(o[ys, xs], 0, 1)[..., None], 3, 2) for o in outs
        ]
        sep = np.ones((60, 2, 3), np.float32)
        rows.append(np.concatenate([panels[0], sep, panels[1], sep, panels[2]], axis=1))
        rows.append(np.ones((2, rows[-1].shape[1], 3), np.float32))
    img = (np.concatenate(rows[:-1]) * 255).round().astype(np.uint8)
    im = Image.fromarray(img).resize((img.shape[1] * zoom, img.shape[0] * zoom), Image.NEAREST)
    path = ROOT / "docs" / "screenshots" / "upsample_crop.png"
    im.save(path)
    print(f"wrote {path.relative_to(ROOT)}: plate | bilinear | edge at {zoom * 100} %, {factor}x")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, nargs=2, default=(864, 1536), metavar=("H", "W"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--crop", action="store_true")
    ap.add_argument("--no-quality", action="store_true")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--memory-probe", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_probe:
        memory_probe(args.memory_probe)
        return
    if not args.no_quality:
        quality(*args.size)
    if not args.no_speed:
        speed(args.runs)
    if args.crop:
        crop()


if __name__ == "__main__":
    main()
