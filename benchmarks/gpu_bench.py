"""One CUDA run of the whole engine at production size, per stage.

250 frames of a generated 1280x720 plate, the ``fast`` preset at 768 px (432x768 processing,
latents 54x96), full-size (SD2-shaped) random weights, fp16, in memory, EXRs written: the
run of ``rollingdepth run`` without the subprocess. Prints the run's own ``timings`` per
stage, frames per second, the UNet batch the engine chose and the peak GPU memory.

    .venv/bin/python benchmarks/gpu_bench.py                 # channels-last (the default)
    .venv/bin/python benchmarks/gpu_bench.py --compile       # + torch.compile (compile time
                                                             #   lands in `snippets`)
    .venv/bin/python benchmarks/gpu_bench.py --contiguous    # the reference's memory layout
    .venv/bin/python benchmarks/gpu_bench.py --frames 24     # a quick check

Refuses to run without a CUDA device (it is not a CPU benchmark: ``speed_bench.py`` is).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=250)
    ap.add_argument("--res", type=int, default=768, help="processing resolution (longer edge)")
    ap.add_argument("--dtype", default="fp16", choices=("fp16", "bf16", "fp32"))
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--batch-size", type=int, default=0, help="snippets per UNet call (0 = auto)")
    ap.add_argument("--vae-batch-size", type=int, default=None)
    layout = ap.add_mutually_exclusive_group()
    layout.add_argument("--compile", action="store_true", help="torch.compile the networks")
    layout.add_argument(
        "--contiguous",
        action="store_true",
        help="the reference's contiguous layout (DepthModel(reference=True)), to compare",
    )
    ap.add_argument("--checkpoint", default=None, help="weights folder (default: made, random)")
    ap.add_argument("--keep", default=None, help="work folder (plate, weights, EXRs)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print(
            "gpu_bench: no CUDA device is visible to torch "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
            "run it on a GPU machine, or use benchmarks/speed_bench.py on the CPU",
            file=sys.stderr,
        )
        return 2

    from rollingdepth_core.config import OutputConfig, preset_config
    from rollingdepth_core.model import DepthModel
    from rollingdepth_core.random_checkpoint import make_random_checkpoint
    from rollingdepth_core.runner import run_plate
    from rollingdepth_core.sample import write_sample_video

    work = Path(args.keep or tempfile.mkdtemp(prefix="rollingdepth-gpu-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = Path(args.checkpoint or work / "full-random")
    if not (checkpoint / "unet").exists():
        make_random_checkpoint(checkpoint, size="full")
    plate = write_sample_video(work / "plate.mp4", args.frames, 720, 1280)
    overrides = {"vae_batch_size": args.vae_batch_size} if args.vae_batch_size else {}
    config = preset_config(
        args.preset,
        processing_res=args.res,
        dtype=args.dtype,
        batch_size=args.batch_size,
        **overrides,
    )

    clock = time.perf_counter()
    model = DepthModel.from_pretrained(
        str(checkpoint),
        device="cuda",
        dtype=args.dtype,
        reference=args.contiguous,
        compile=args.compile,
    )
    load_s = time.perf_counter() - clock
    torch.cuda.reset_peak_memory_stats()
    clock = time.perf_counter()
    result = run_plate(
        str(plate),
        str(work / "depth"),
        config,
        OutputConfig(),
        str(checkpoint),
        preset=args.preset,
        model=model,
    )
    total = time.perf_counter() - clock
    latent = tuple(s // 8 for s in result.processing_size)
    batch = args.batch_size or model.auto_batch_size(latent, config.snippet_len)

    print(
        f"\n{args.frames} frames 1280x720 -> {result.processing_size[1]}x"
        f"{result.processing_size[0]}, preset {args.preset}, {args.dtype}, "
        f"{torch.cuda.get_device_name()}, compile={args.compile}, "
        f"{'contiguous' if args.contiguous else 'channels-last'}, "
        f"UNet batch {batch} snippets (automatic: {not args.batch_size}), "
        f"VAE batch {config.vae_batch_size}, dilations {result.dilations_run}"
    )
    print(f"{'stage':<10}{'seconds':>10}{'share':>8}")
    print(f"{'load':<10}{load_s:>10.2f}{'':>8}")
    for stage, seconds in result.timings.items():
        print(f"{stage:<10}{seconds:>10.2f}{seconds / total:>7.0%}")
    print(f"{'total':<10}{total:>10.2f}   {args.frames / total:.2f} frames/s")
    print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
