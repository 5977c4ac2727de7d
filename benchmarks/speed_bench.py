"""Our engine against the reference's call structure, in one process, on the same weights.

Two measurements, both with full-size (SD2-shaped) random weights, since speed does not depend
on weight values:

``components``: each network alone (VAE encoder, VAE decoder, UNet with cross-frame
attention), contiguous NCHW against channels-last, optionally also ``torch.compile`` (which
prints its compile time), with the largest difference between the layouts' outputs.

``e2e``: the whole method twice on the same frames, per stage (the run's ``timings``):
the *reference structure* (``DepthModel(reference=True)``: contiguous memory, nothing
compiled; one snippet per UNet call, VAE batches of 4, the ``adam`` aligner) against ours
(``DepthModel()``: channels-last; the automatic UNet batch, VAE batches of ``--vae-batch``,
the ``robust`` aligner). The aligners differ on purpose, as they do between ``--reference``
and a default run; ``align_bench.py`` compares them on their own.

Speed is reported as ratios within the run (the machine may be shared). Torch threads are set
explicitly (``--threads``).

    .venv/bin/python benchmarks/speed_bench.py components --threads 2
    .venv/bin/python benchmarks/speed_bench.py e2e --threads 2 --frames 12 --res 128
    .venv/bin/python benchmarks/speed_bench.py e2e --order reference ours ours-bf16
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from rollingdepth_core.checkpoint import load_components
from rollingdepth_core.config import preset_config
from rollingdepth_core.method import estimate_depth
from rollingdepth_core.model import DepthModel, SubPixelUpsample
from rollingdepth_core.random_checkpoint import make_random_checkpoint
from rollingdepth_core.sample import sample_frame


def checkpoint_folder(given: str | None) -> Path:
    folder = Path(given or Path(tempfile.gettempdir()) / "rollingdepth-speed-bench" / "full")
    if not (folder / "unet").exists():
        print(f"writing full-size random weights to {folder} (once)", flush=True)
        make_random_checkpoint(folder, size="full")
    return folder


def best_of(call, module, x, repeats: int) -> float:
    call(module, x)  # warm-up: allocator, oneDNN primitive caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(module, x)
        times.append(time.perf_counter() - start)
    return min(times)


@torch.inference_mode()
def components(args: argparse.Namespace) -> None:
    comps = load_components(
        str(checkpoint_folder(args.checkpoint)), torch.device("cpu"), torch.float32
    )
    vae, unet = comps.vae, comps.unet
    h = w = args.res
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(args.frames, 3, h, w, generator=gen) * 2 - 1
    latents = torch.randn(args.frames, 4, h // 8, w // 8, generator=gen)
    snippets = torch.randn(args.frames, 8, h // 8, w // 8, generator=gen)
    embedding = torch.randn(args.frames, 2, unet.config.cross_attention_dim, generator=gen)
    t = torch.full((args.frames,), 999)
    kwargs = {"num_frames": args.frames}
    nets = {
        "encoder": (vae.encoder, images, lambda m, x: m(x)),
        "decoder": (vae.decoder, latents, lambda m, x: m(x)),
        "unet": (
            unet,
            snippets,
            lambda m, x: m(x, t, embedding, cross_attention_kwargs=kwargs).sample,
        ),
    }
    print(
        f"{args.frames} frames {h}x{w} (latents {h // 8}x{w // 8}), fp32 CPU, "
        f"{torch.get_num_threads()} threads, best of {args.repeats}"
    )
    print(f"{'network':<10}{'NCHW s':>9}{'CL s':>9}{'speed-up':>10}{'max |diff|':>12}", end="")
    print(f"{'compiled s':>12}{'compile s':>11}" if args.compile else "")
    for name in args.nets:
        module, x, call = nets[name]
        module.to(memory_format=torch.contiguous_format)
        ref = call(module, x)
        t_nchw = best_of(call, module, x, args.repeats)
        module.to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        out = call(module, x_cl)
        t_cl = best_of(call, module, x_cl, args.repeats)
        diff = (out - ref).abs().max().item()
        line = f"{name:<10}{t_nchw:>9.2f}{t_cl:>9.2f}{t_nchw / t_cl:>9.2f}x{diff:>12.2e}"
        if name == "decoder":  # and with the sub-pixel upsamplers (what DepthModel uses on CPU)
            for block in module.up_blocks:
                for i, up in enumerate(block.upsamplers or []):
                    block.upsamplers[i] = SubPixelUpsample(up)
            diff = (call(module, x_cl) - ref).abs().max().item()
            t_sub = best_of(call, module, x_cl, args.repeats)
            line += f"\n{'+subpixel':<10}{'':>9}{t_sub:>9.2f}{t_nchw / t_sub:>9.2f}x{diff:>12.2e}"
        if args.compile:
            compiled = torch.compile(module)
            start = time.perf_counter()
            call(compiled, x_cl)
            compile_s = time.perf_counter() - start
            t_comp = best_of(call, compiled, x_cl, args.repeats)
            line += f"{t_comp:>12.2f}{compile_s:>11.1f}"
        print(line, flush=True)


def e2e(args: argparse.Namespace) -> None:
    folder = str(checkpoint_folder(args.checkpoint))
    frames = [sample_frame(i, args.frames, args.res, args.res) for i in range(args.frames)]
    base = preset_config(
        "fast", dilations=args.dilations, processing_res=args.res, dtype="fp32", refine_steps=0
    )
    setups = {
        "reference": (
            dict(reference=True),
            replace(base, aligner="adam", batch_size=1, vae_batch_size=4),
        ),
        "ours": (
            dict(compile=args.compile),
            replace(base, batch_size=args.batch, vae_batch_size=args.vae_batch),
        ),
        # opt-in `--dtype bf16`, on a CPU with native bfloat16 (device.cpu_has_native_bf16)
        "ours-bf16": (
            dict(compile=args.compile),
            replace(base, batch_size=args.batch, vae_batch_size=args.vae_batch, dtype="bf16"),
        ),
    }
    # the machine's load drifts: alternate the two setups and keep each stage's best
    timings: dict[str, dict[str, float]] = {name: {} for name in args.order}
    for _ in range(args.rounds):
        for name in args.order:
            flags, config = setups[name]
            model = DepthModel.from_pretrained(folder, device="cpu", dtype=config.dtype, **flags)
            start = time.perf_counter()
            result = estimate_depth(model, frames, config)
            run = dict(result.timings, total=time.perf_counter() - start)
            print(f"{name}: {config}\n  {run}", flush=True)
            for stage, seconds in run.items():
                timings[name][stage] = min(seconds, timings[name].get(stage, float("inf")))
            del model
    first, others = args.order[0], args.order[1:]
    stages = [s for s in timings[first] if all(s in timings[o] for o in others)]
    print(
        f"\n{args.frames} frames {args.res}x{args.res}, dilations {args.dilations}, no refinement, "
        f"CPU, {torch.get_num_threads()} threads, full-size random weights, "
        f"best of {args.rounds} alternating rounds; ratio = {first} s / setup s"
    )
    print(
        f"{'stage':<10}{first + ' s':>13}" + "".join(f"{o + ' s':>14}{'ratio':>8}" for o in others)
    )
    for stage in stages:
        ref = timings[first][stage]
        line = f"{stage:<10}{ref:>13.2f}"
        for other in others:
            ours = timings[other][stage]
            line += f"{ours:>14.2f}{ref / max(ours, 1e-9):>7.2f}x"
        print(line)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch threads (set explicitly)")
    ap.add_argument("--checkpoint", default=None, help="full-size weights folder (made if absent)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("components", help="each network: NCHW vs channels-last")
    c.add_argument("--frames", type=int, default=3)
    c.add_argument("--res", type=int, default=128)
    c.add_argument("--repeats", type=int, default=2)
    c.add_argument("--nets", nargs="+", default=["encoder", "decoder", "unet"])
    e = sub.add_parser("e2e", help="the whole method: reference structure vs ours")
    e.add_argument("--frames", type=int, default=12)
    e.add_argument("--res", type=int, default=128)
    e.add_argument("--dilations", type=int, nargs="+", default=[1, 3])
    e.add_argument("--batch", type=int, default=0, help="our snippets per UNet call (0 = auto)")
    e.add_argument("--vae-batch", type=int, default=4, help="our VAE batch")
    e.add_argument(
        "--order",
        nargs="+",
        choices=["reference", "ours", "ours-bf16"],
        default=["reference", "ours"],
        help="setups, run in this order each round; ratios against the first",
    )
    e.add_argument("--rounds", type=int, default=2, help="alternations (best of, per stage)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    (components if args.command == "components" else e2e)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
