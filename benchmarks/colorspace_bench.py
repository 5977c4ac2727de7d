"""What the OCIO input transform costs next to decoding a 2K EXR frame.

Writes a 2048x1080 RGB half-float EXR (zip, a textured gradient as camera plates hold), then
times, within one run and as best-of-N: decoding it with OpenImageIO (what the plate reader
does), and converting the decoded pixels to model input through `DisplayTransform` (the
processor built once per plate) for a few input spaces and views. Also times OpenImageIO's
`ociodisplay` with a config name, which rebuilds its processor on every call.

    PYTHONPATH=. .venv/bin/python benchmarks/colorspace_bench.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import OpenImageIO as oiio

from rollingdepth_core.colorspace import (
    STUDIO_CONFIG,
    ColorRequest,
    DisplayTransform,
    image_color_hints,
    resolve_color,
)

WIDTH, HEIGHT = 2048, 1080
MODEL_EDGE = 768
CASES = (
    ("ACEScg", None),
    ("ARRI LogC4", None),
    ("ACEScg", "Un-tone-mapped"),
    ("ACEScg", "Video (colorimetric)"),
    ("srgb", None),
)


def best_of(repeat: int, fn) -> float:
    fn()  # warm: first-touch allocations, lazy OCIO setup
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def write_plate(path: Path) -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    base = np.stack([x / WIDTH, y / HEIGHT, 0.5 * (x + y) / (WIDTH + HEIGHT)], axis=-1)
    grain = rng.normal(0.0, 0.02, size=base.shape).astype(np.float32)
    pixels = np.clip(base * 1.5 + grain, 0.0, None).astype(np.float32)  # [H,W,3]
    spec = oiio.ImageSpec(WIDTH, HEIGHT, 3, "half")
    spec.attribute("compression", "zip")
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), spec) and out.write_image(pixels) and out.close(), oiio.geterror()


def decode(path: Path) -> np.ndarray:
    inp = oiio.ImageInput.open(str(path))
    pixels = inp.read_image("float")
    inp.close()
    return pixels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "plate.1001.exr"
        write_plate(path)
        inp = oiio.ImageInput.open(str(path))
        hints = image_color_hints(inp.spec(), inp.format_name())
        inp.close()
        decode_s = best_of(args.repeat, lambda: decode(path))
        pixels = decode(path)
        print(
            f"2K EXR {WIDTH}x{HEIGHT} half zip: decode {decode_s * 1000:.1f} ms (best of {args.repeat})"
        )
        print(f"{'input space':<14} {'view':<36} {'convert ms':>10} {'/ decode':>9}")
        for space, view in CASES:
            color = resolve_color(ColorRequest(space, view=view), hints)
            transform = DisplayTransform(color)
            seconds = best_of(args.repeat, lambda t=transform: t(pixels))
            print(
                f"{space:<14} {color.view if not color.passthrough else '(passthrough)':<36} "
                f"{seconds * 1000:>10.1f} {seconds / decode_s:>8.0%}"
            )
        # The model sees the plate at its processing size: the same transform on a frame
        # already resized to a 768 px longer edge (what converting after the resize would cost).
        small_h = round(HEIGHT * MODEL_EDGE / WIDTH)
        resized = np.ascontiguousarray(pixels[:: HEIGHT // small_h, :: WIDTH // MODEL_EDGE])
        resized = resized[:small_h, :MODEL_EDGE]
        transform = DisplayTransform(resolve_color(ColorRequest("ACEScg"), hints))
        seconds = best_of(args.repeat, lambda: transform(resized))
        print(
            f"ACEScg, default view, at {MODEL_EDGE}x{small_h}: {seconds * 1000:.1f} ms "
            f"({seconds / decode_s:.0%} of the 2K decode)"
        )
        buf = oiio.ImageBuf(pixels)
        view = "ACES 2.0 - SDR 100 nits (Rec.709)"
        oiio_s = best_of(
            args.repeat,
            lambda: oiio.ImageBufAlgo.ociodisplay(
                buf, "sRGB - Display", view, "ACEScg", colorconfig=STUDIO_CONFIG
            ),
        )
        print(
            f"OIIO ociodisplay, config by name (processor per call): {oiio_s * 1000:.1f} ms "
            f"({oiio_s / decode_s:.0%} of decode)"
        )
        small = oiio.ImageBuf(pixels[:8, :8].copy())
        build_s = best_of(
            args.repeat,
            lambda: oiio.ImageBufAlgo.ociodisplay(
                small, "sRGB - Display", view, "ACEScg", colorconfig=STUDIO_CONFIG
            ),
        )
        print(f"  of which per-call config + processor build (8x8 image): {build_s * 1000:.1f} ms")


if __name__ == "__main__":
    main()
