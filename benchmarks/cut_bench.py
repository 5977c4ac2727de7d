"""Cut detection on generated edits: short shots, flashes, grain and whip pans.

Each edit is encoded as h264 (yuv420p, crf 18) with PyAV and read back through `open_plate`,
as a run reads an offline edit. A detected cut counts as found when it is on the true cut's
frame; any other detected cut is a false cut. Settings compared: the old ones (shortest shot
15 frames, no flash check) and the new defaults.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/cut_bench.py
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from rollingdepth_core.cuts import detect_cuts
from rollingdepth_core.plate import open_plate
from tests.core.test_cuts import shot_frames

HEIGHT, WIDTH = 144, 256


def pan_frame(u0: float) -> np.ndarray:
    """`texture_frame`'s foliage, the camera panned to ``u0`` (in frame heights)."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    u = (x - WIDTH / 2) / HEIGHT + u0
    v = (y - HEIGHT / 2) / HEIGHT
    f = (
        np.sin(u * 11 + np.sin(v * 7) * 1.5) + np.sin(v * 13 - u * 5) + 0.6 * np.sin((u + v) * 23)
    ) / 2.6
    rgb = np.stack([0.2 + 0.15 * f, 0.45 + 0.3 * f, 0.3 + 0.1 * np.sin(u * 3)], axis=-1)
    return np.clip(rgb, 0, 1).astype(np.float32)


def whip_pan(
    n_frames: int,
    whip_at: int,
    whip_len: int = 6,
    abrupt: bool = False,
    top_speed: float = 1.5,
    shutter: float = 0.5,
) -> Iterator[np.ndarray]:
    """The texture panning slowly, then whipping away and settling: the speed eases in and out
    over ``whip_len`` frames, up to ``top_speed`` frame heights a frame (``abrupt``: at once,
    all the way); each frame is blurred over its shutter (8 positions over ``shutter`` of
    its interval: 0.5 is a 180 degree shutter)."""
    position = 0.0
    for index in range(n_frames):
        t = (index - whip_at + 0.5) / whip_len
        ease = 1.0 if abrupt else np.sin(np.pi * t) ** 2
        speed = 0.03 + (top_speed * ease if 0 <= t <= 1 else 0.0)
        yield np.mean([pan_frame(position + speed * shutter * k / 8) for k in range(8)], axis=0)
        position += speed


def flashed(frames, at: int, length: int, gain: float = 2.5) -> Iterator[np.ndarray]:
    """``length`` frames from ``at`` lit by a flash (muzzle flash, lightning, photographer)."""
    for index, rgb in enumerate(frames):
        yield np.clip(rgb * gain + 0.2, 0, 1) if at <= index < at + length else rgb


def grainy(frames, std: float, seed: int = 0) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    for rgb in frames:
        yield np.clip(rgb + std * rng.standard_normal(rgb.shape, np.float32), 0, 1)


def edit(lengths) -> Iterator[np.ndarray]:
    for kind, n_frames in enumerate(lengths):
        yield from shot_frames(kind % 3, n_frames, HEIGHT, WIDTH)


def cuts_of(lengths) -> list[int]:
    return [int(c) for c in np.cumsum(lengths)[:-1]]


def cases():
    """(name, frames, true cuts)"""
    short = (20, 4, 6, 5, 20)
    yield "short shots 4-6 frames", edit(short), cuts_of(short)
    quick = (12, 4, 4, 12, 8)
    yield "short shots 4 frames", edit(quick), cuts_of(quick)
    yield "short shots, grain 0.03", grainy(edit(short), 0.03), cuts_of(short)
    usual = (20, 17, 24)
    yield "long shots, grain 0.05", grainy(edit(usual), 0.05), cuts_of(usual)
    for length in (1, 2, 3):
        yield (
            f"flash {length} frame(s) in a shot",
            flashed(shot_frames(0, 40, HEIGHT, WIDTH), 20, length),
            [],
        )
    yield (
        "flashes in a short-shot edit",
        flashed(flashed(edit(short), 8, 2), 43, 1),
        cuts_of(short),
    )
    yield "whip pan in a shot", whip_pan(40, 18), []
    yield "whip pan in a shot, abrupt start and stop", whip_pan(40, 18, abrupt=True), []
    yield (
        "whip pan, abrupt, 2 heights a frame, 360 degree shutter",
        whip_pan(40, 18, whip_len=5, abrupt=True, top_speed=2.0, shutter=1.0),
        [],
    )
    yield (
        "whip pan, then a cut",
        (f for part in (whip_pan(30, 12), shot_frames(1, 10, HEIGHT, WIDTH)) for f in part),
        [30],
    )


def encode(frames, path: Path) -> Path:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(24000, 1001))
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"crf": "18"}
        for rgb in frames:
            pixels = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode(None))
    return path


SETTINGS = {
    "old (shortest shot 15)": {"min_shot_frames": 15, "flash_frames": 0},
    "new (shortest shot 4)": {},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    totals = {name: [0, 0, 0] for name in SETTINGS}  # found, true, false
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, (name, frames, truth) in enumerate(cases()):
            path = encode(frames, Path(tmp) / f"edit{index}.mp4")
            with open_plate(path) as plate:
                decoded = [rgb for _, rgb in plate.frames()]
            row = [name, str(truth)]
            for setting, kwargs in SETTINGS.items():
                found = detect_cuts(decoded, **kwargs)
                hits = len(set(found) & set(truth))
                false = len(set(found) - set(truth))
                totals[setting][0] += hits
                totals[setting][1] += len(truth)
                totals[setting][2] += false
                row.append(f"{found} ({hits}/{len(truth)}, {false} false)")
            rows.append(row)
    header = ["edit", "true cuts", *SETTINGS]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    summary = [
        f"{found}/{true} = {found / true:.0%} found, {false} false"
        for found, true, false in totals.values()
    ]
    print("| **total** | | " + " | ".join(summary) + " |")


if __name__ == "__main__":
    main()
