"""What the OCIO input transform costs next to decoding a 2K EXR frame, exact and baked.

The headline is the last table: what a run pays per frame, the conversion of the frame
resized to the processing size (768 px) in its input space, as `Plate.frames(fit)` does. The
first table converts whole 2K frames (what the panel's full-size view and the edge-aware
upsampling's guides pay).

Writes a 2048x1080 RGB half-float EXR (zip, a textured gradient), then times, within one run
and as best-of-N: decoding it with OpenImageIO (what the plate reader does), and converting
the decoded pixels in place (as the plate reader does) through `DisplayTransform`, for a few
input spaces and views: with the exact OCIO processor and with it baked into a 3D LUT
(`BakedDisplayTransform`, the default where `worthwhile`), on the decoded plate (a saturated
gradient: many pixels fall in cells the LUT hands back to the exact processor) and on the
realistic scene. For the baked path it reports the one-off bake time and
its error against the exact processor on the decoded plate, on a realistic scene (blotchy
texture over 12 stops, mild tints, a light source) and on a dense sample of the input range
(each channel log-uniform over 2^-12..2^16 with some negatives for scene-linear input, uniform
over [0, 1] for encoded input). Also times OpenImageIO's `ociodisplay` with a config name,
which rebuilds its processor on every call.

    PYTHONPATH=. .venv/bin/python benchmarks/colorspace_bench.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import OpenImageIO as oiio
import PyOpenColorIO as ocio

from rollingdepth_core.colorspace import (
    STUDIO_CONFIG,
    ColorRequest,
    DisplayTransform,
    image_color_hints,
    load_config,
    resolve_color,
)
from rollingdepth_core.plate import resize_rgb

WIDTH, HEIGHT = 2048, 1080
MODEL_EDGE = 768
CASES = (
    ("ACEScg", None),
    ("ARRI LogC4", None),
    ("ACEScg", "Un-tone-mapped"),
    ("srgb", None),
)


def best_of(repeat: int, fn, setup=lambda: None) -> float:
    setup()
    fn()  # warm: first-touch allocations, lazy OCIO setup
    times = []
    for _ in range(repeat):
        setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def in_place_seconds(repeat: int, convert, pixels: np.ndarray) -> float:
    """Best time of ``convert`` on a fresh copy of ``pixels`` (the copy not timed)."""
    work = np.empty_like(pixels)
    return best_of(repeat, lambda: convert(work), lambda: np.copyto(work, pixels))


def exact_in_place(transform: DisplayTransform):
    """The exact path of ``transform`` on any frame size (as ``--ocio-exact`` runs it)."""
    exact = DisplayTransform(replace(transform.color, exact=True))
    return exact.in_place


def realistic_scene(seed: int = 0) -> np.ndarray:
    """float32 [H,W,3] scene-linear: blotchy texture over 12 stops, mild tints, a light."""
    rng = np.random.default_rng(seed)
    blotches = np.kron(rng.normal(0.0, 1.0, (HEIGHT // 8 + 1, WIDTH // 8 + 1)), np.ones((8, 8)))
    stops = np.clip(2.5 * blotches[:HEIGHT, :WIDTH], -8, 4) + rng.normal(0, 0.1, (HEIGHT, WIDTH))
    tint = np.kron(
        rng.uniform(0.6, 1.4, (HEIGHT // 32 + 1, WIDTH // 32 + 1, 3)), np.ones((32, 32, 1))
    )
    pixels = 0.18 * 2.0 ** stops[..., None] * tint[:HEIGHT, :WIDTH]
    pixels[: HEIGHT // 16, : WIDTH // 16] *= 50.0
    return np.ascontiguousarray(pixels, dtype=np.float32)


def dense_sample(linear: bool, n: int = 1 << 20) -> np.ndarray:
    rng = np.random.default_rng(1)
    if linear:
        values = 2.0 ** rng.uniform(-12.0, 16.0, (n, 3)) * np.where(
            rng.random((n, 3)) < 0.05, -0.002, 1.0
        )
    else:
        values = rng.uniform(0.0, 1.0, (n, 3))
    return values.astype(np.float32).reshape(1024, -1, 3)


def errors(transform: DisplayTransform, exact, pixels: np.ndarray) -> str:
    """max and 99.9th percentile of |baked - exact| in display values, in 1/255 units."""
    error = np.abs(transform(pixels) - exact(pixels.copy()))
    return f"{error.max() * 255:6.2f} {np.quantile(error, 0.999) * 255:5.2f}"


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
    parser.add_argument("--repeat", type=int, default=3)
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
        print(
            "ms: in place on the decoded frame; x decode: ms / decode ms; err: |baked - exact| "
            "in 1/255, max and p99.9, on the decoded plate / a realistic scene / a dense sample"
        )
        print(
            f"{'input space':<11} {'view':<34} {'dec ms':>6} {'exact ms':>8} {'x dec':>6} {'baked ms':>8} "
            f"{'x dec':>6} {'speedup':>7} {'bake s':>6}  {'plate':>12}  {'scene':>12}  {'dense':>12}"
        )
        scene = realistic_scene()
        config = load_config(STUDIO_CONFIG)
        for space, view in CASES:
            # Decode timed again next to each row: the machine's load drifts within a run.
            decode_s = best_of(args.repeat, lambda: decode(path))
            color = resolve_color(ColorRequest(space, view=view), hints)
            transform = DisplayTransform(color)
            exact = exact_in_place(transform)
            exact_s = in_place_seconds(args.repeat, exact, pixels)
            label = color.view if not color.passthrough else "(passthrough)"
            row = f"{space:<11} {label:<34} {decode_s * 1000:>6.1f} {exact_s * 1000:>8.1f} {exact_s / decode_s:>6.2f}"
            if color.passthrough:
                print(row)
                continue
            start = time.perf_counter()
            transform.baked()
            bake_s = time.perf_counter() - start
            fast_s = in_place_seconds(args.repeat, transform.in_place, pixels)
            baked = transform.baked()
            linear = config.isColorSpaceLinear(color.input_space, ocio.REFERENCE_SPACE_SCENE)
            encoded = scene.copy()
            if not linear:  # the same scene as the camera encodes it
                config.getProcessor("ACEScg", color.input_space).getDefaultCPUProcessor().applyRGB(
                    encoded
                )
            scene_exact_s = in_place_seconds(args.repeat, exact, encoded)
            scene_fast_s = in_place_seconds(args.repeat, baked.in_place, encoded)
            print(
                f"{row} {fast_s * 1000:>8.1f} {fast_s / decode_s:>6.2f} {exact_s / fast_s:>6.1f}x "
                f"{bake_s:>6.1f}  {errors(transform, exact, pixels)}  "
                f"{errors(transform, exact, encoded)}  "
                f"{errors(transform, exact, dense_sample(linear))}"
                + ("" if baked.worthwhile else "  (LUT not worthwhile: the default stays exact)")
            )
            print(
                f"{'':<11} {'  on the realistic scene':<34} {'':>6} {scene_exact_s * 1000:>8.1f} "
                f"{scene_exact_s / decode_s:>6.2f} {scene_fast_s * 1000:>8.1f} "
                f"{scene_fast_s / decode_s:>6.2f} {scene_exact_s / scene_fast_s:>6.1f}x"
            )
        # What a run pays per frame: the plate reader resizes each frame to the processing
        # size in the input space and converts the resized pixels (plate.Plate.frames(fit)).
        small_h = round(HEIGHT * MODEL_EDGE / WIDTH)
        print(
            f"\nthe run's conversion, at the processing size {MODEL_EDGE}x{small_h} "
            "(resized in the input space, then converted; the default path):"
        )
        print(
            f"{'input space':<11} {'view':<34} {'dec ms':>6} {'resize ms':>9} "
            f"{'plate ms':>8} {'x dec':>6} {'scene ms':>8} {'x dec':>6} {'exact ms':>8} {'x dec':>6}"
        )
        plate_small = resize_rgb(pixels, (small_h, MODEL_EDGE))
        scene_small = resize_rgb(scene, (small_h, MODEL_EDGE))
        for space, view in CASES:
            color = resolve_color(ColorRequest(space, view=view), hints)
            transform = DisplayTransform(color)
            encoded = scene_small.copy()
            linear = config.isColorSpaceLinear(color.input_space, ocio.REFERENCE_SPACE_SCENE)
            if not linear and not color.passthrough:
                config.getProcessor("ACEScg", color.input_space).getDefaultCPUProcessor().applyRGB(
                    encoded
                )
            decode_s = best_of(args.repeat, lambda: decode(path))
            resize_s = best_of(args.repeat, lambda: resize_rgb(pixels, (small_h, MODEL_EDGE)))
            plate_s = in_place_seconds(args.repeat, transform.in_place, plate_small)
            scene_s = in_place_seconds(args.repeat, transform.in_place, encoded)
            exact_s = in_place_seconds(args.repeat, exact_in_place(transform), encoded)
            label = color.view if not color.passthrough else "(passthrough)"
            print(
                f"{space:<11} {label:<34} {decode_s * 1000:>6.1f} {resize_s * 1000:>9.1f} "
                f"{plate_s * 1000:>8.1f} {plate_s / decode_s:>6.1%} "
                f"{scene_s * 1000:>8.1f} {scene_s / decode_s:>6.1%} "
                f"{exact_s * 1000:>8.1f} {exact_s / decode_s:>6.1%}"
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
