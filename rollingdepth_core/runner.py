"""One run from a plate on disk to an EXR sequence: what the CLI and the front-ends call."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from .config import InferenceConfig, OutputConfig
from .errors import ConfigError
from .output import (
    convert_depth,
    ensure_writable,
    run_metadata,
    write_depth_sequence,
    write_depth_stream,
    write_preview,
)
from .pipeline import RollingDepthPipeline
from .plate import open_plate, parse_frame_range
from .progress import ProgressCallback, report
from .snippets import check_clip_length


def run_plate(
    plate: str,
    output_dir: str,
    config: InferenceConfig,
    output: OutputConfig,
    checkpoint: str,
    preset: str = "fast",
    device: str = "auto",
    dtype_explicit: bool = False,
    frames: str | None = None,
    input_colorspace: str = "auto",
    progress: ProgressCallback | None = None,
    message: Callable[[str], None] | None = None,
    pipeline: RollingDepthPipeline | None = None,
    cache_dir: str | None = None,
    executor: str = "local",
    ray_address: str | None = None,
) -> dict:
    """Estimate depth for ``plate`` and write ``output_dir/NAME.####.exr``; returns a summary.

    With ``cache_dir`` (or ``executor="ray"``, which needs one) the run goes through the on-disk
    snippet cache: bounded memory, resumable; see :func:`run_plate_cached`.
    """
    if cache_dir is not None or executor != "local":
        if cache_dir is None:
            raise ConfigError("`--executor ray` needs `--cache DIR` on storage every node sees")
        return run_plate_cached(
            plate, output_dir, config, output, checkpoint, cache_dir, "run", None, executor,
            ray_address, preset, device, dtype_explicit, frames, input_colorspace, progress,
            message, pipeline,
        )  # fmt: skip
    started = time.perf_counter()
    config.check()
    output.check()
    # cheap checks first, so bad input fails before the model loads
    folder = ensure_writable(output_dir)
    frame_range = parse_frame_range(frames) if frames else None
    source = open_plate(plate, frames=frame_range, input_colorspace=input_colorspace)
    info = source.info
    check_clip_length(len(source), config.snippet_len)
    if info.missing_frames and message:
        missing = ", ".join(str(f) for f in info.missing_frames[:10])
        message(f"warning: the sequence has gaps (missing frames {missing}); they are skipped")

    if pipeline is None:
        report(progress, "load", 0, 1)
        pipeline = RollingDepthPipeline.from_pretrained(
            checkpoint, device=device, dtype=config.dtype, dtype_explicit=dtype_explicit
        )
        report(progress, "load", 1, 1)
    config = replace(config, dtype=pipeline.dtype_name)

    frames_rgb = (rgb for _, rgb in source.frames())
    prediction = pipeline(frames_rgb, config, n_frames=len(source), progress=progress)
    lo, hi = float(prediction.depth.min()), float(prediction.depth.max())
    metadata = run_metadata(
        checkpoint, preset, config, output, str(plate), (lo, hi), prediction.dilations
    )
    clock = time.perf_counter()
    written = write_depth_sequence(
        prediction.depth,
        info.frame_numbers,
        folder,
        output,
        metadata,
        plate_size=(info.height, info.width),
        confidence=prediction.alignment.confidence,
        progress=progress,
    )
    prediction.timings["write"] = time.perf_counter() - clock
    alignment_json = folder / f"{output.name}_alignment.json"
    prediction.alignment.save_json(alignment_json)
    preview = None
    if output.preview:
        report(progress, "preview", 0, 1)
        preview = write_preview(prediction.depth, folder, output.name, info.fps)
        report(progress, "preview", 1, 1)
    seconds = time.perf_counter() - started
    first, last = info.frame_numbers[0], info.frame_numbers[-1]
    return {
        "ok": True,
        "output_dir": str(folder),
        "files": [str(p) for p in written],
        "frame_numbers": list(info.frame_numbers),
        "first_frame": first,
        "last_frame": last,
        "pattern": str(folder / f"{output.name}.{'#' * max(4, len(str(last)))}.exr"),
        "alignment": str(alignment_json),
        "preview": str(preview) if preview else None,
        "processing_size": list(prediction.processing_size),
        **_written_values(output, (lo, hi), (info.height, info.width), prediction.depth.shape[1:]),
        "dilations_run": prediction.dilations,
        "device": str(pipeline.device),
        "dtype": pipeline.dtype_name,
        "timings": {k: round(v, 3) for k, v in prediction.timings.items()},
        "seconds": round(seconds, 3),
        "summary": (
            f"wrote {len(written)} EXRs ({first}-{last}) to {folder} in {seconds:.1f} s "
            f"[{pipeline.device}, {pipeline.dtype_name}, dilations {prediction.dilations}]"
        ),
    }


def _written_values(
    output: OutputConfig,
    inverse_range: tuple[float, float],
    plate_size: tuple[int, int],
    processing_size,
) -> dict:
    """What the files hold (protocol.RESULT_KEYS): front-ends read this, not the EXR headers."""
    lo, hi = inverse_range
    ends = convert_depth(np.array([lo, hi]), output.depth_mode, output.near, output.far, lo, hi)
    return {
        "value_range": [float(ends.min()), float(ends.max())],
        "output_size": list(plate_size if output.restore_res else processing_size),
        "depth_mode": output.depth_mode,
        "channel": output.channel,
        "near": output.near,
        "far": output.far,
    }


def result_paths(result: dict) -> list[Path]:
    return [Path(p) for p in result["files"]]


MODES = ("run", "infer", "finalize")
EXECUTORS = ("local", "ray")


def run_plate_cached(
    plate: str,
    output_dir: str | None,
    config: InferenceConfig,
    output: OutputConfig,
    checkpoint: str,
    cache_dir: str,
    mode: str = "run",
    chunk: str | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    preset: str = "fast",
    device: str = "auto",
    dtype_explicit: bool = False,
    frames: str | None = None,
    input_colorspace: str = "auto",
    progress: ProgressCallback | None = None,
    message: Callable[[str], None] | None = None,
    pipeline: RollingDepthPipeline | None = None,
) -> dict:
    """A run through the on-disk snippet cache (:mod:`.long_plate`): bounded memory, resumable.

    ``mode``: ``"run"`` computes what the cache lacks and writes the EXRs; ``"infer"`` only
    computes snippet blocks (all, or the share ``chunk="K/N"``); ``"finalize"`` aligns, merges
    and writes from a complete cache and never runs the snippet model. ``executor="ray"`` sends
    the snippet blocks to a Ray cluster (``ray_address``, else ``RAY_ADDRESS``, else a local
    instance). Returns a summary like :func:`run_plate`'s, with the cache's counts.
    """
    from .cache import SnippetCache, model_fingerprint
    from .checkpoint import locate_checkpoint
    from .device import resolve_device, resolve_dtype
    from .long_plate import (
        CachedContext,
        block_keys,
        compute_blocks_locally,
        drop_scratch,
        finalize_depth,
        make_plan,
        parse_chunk,
        scan_plate,
        scratch_folder,
    )

    started = time.perf_counter()
    config.check()
    output.check()
    if mode not in MODES:
        raise ConfigError(f"`mode` must be one of {', '.join(MODES)}; got {mode!r}")
    if executor not in EXECUTORS:
        raise ConfigError(f"`executor` must be one of {', '.join(EXECUTORS)}; got {executor!r}")
    if chunk is not None and mode != "infer":
        raise ConfigError("`--chunk` belongs to `rollingdepth infer`; finalize with all chunks")
    share = parse_chunk(chunk) if chunk else (1, 1)
    folder = ensure_writable(output_dir) if mode != "infer" else None
    frame_range = parse_frame_range(frames) if frames else None
    source = open_plate(plate, frames=frame_range, input_colorspace=input_colorspace)
    info = source.info
    check_clip_length(len(source), config.snippet_len)
    if info.missing_frames and message:
        missing = ", ".join(str(f) for f in info.missing_frames[:10])
        message(f"warning: the sequence has gaps (missing frames {missing}); they are skipped")

    if pipeline is not None:
        torch_device, dtype = pipeline.device, pipeline.dtype_name
    else:
        torch_device = resolve_device(device)
        dtype = resolve_dtype(config.dtype, torch_device, explicit=dtype_explicit)
    config = replace(config, dtype=dtype)
    model = model_fingerprint(locate_checkpoint(checkpoint))
    cache = SnippetCache(cache_dir)
    plan = make_plan(len(source), config)
    loaded: list[RollingDepthPipeline] = [pipeline] if pipeline is not None else []

    def get_pipeline() -> RollingDepthPipeline:
        if not loaded:
            loaded.append(
                RollingDepthPipeline.from_pretrained(
                    checkpoint, device=str(torch_device), dtype=dtype, dtype_explicit=True
                )
            )
        return loaded[0]

    mine = plan.chunk(*share) if mode != "finalize" else []
    if mode == "finalize":
        encode_groups = None if config.refine_steps > 0 else set()
    else:
        encode_groups = plan.needed_groups(mine, config.vae_batch_size)
    clock = time.perf_counter()
    timings: dict[str, float] = {}
    frames_rgb = (rgb for _, rgb in source.frames())
    scan = scan_plate(
        frames_rgb, len(source), config, model, cache, encode_groups, get_pipeline, progress
    )
    keys = block_keys(plan, scan, config, model)
    context = CachedContext(
        str(cache.folder), config, model, scan.size, scan.latent_shape, keys, checkpoint
    )
    timings["scan"] = time.perf_counter() - clock

    clock = time.perf_counter()
    if executor == "ray" and mode != "finalize":
        from .ray_executor import compute_blocks_on_ray

        compute_blocks_on_ray(mine, context, scan, cache, str(torch_device), ray_address, progress)
    elif mode != "finalize":
        compute_blocks_locally(mine, context, scan, get_pipeline, cache, progress)
    timings["snippets"] = time.perf_counter() - clock
    summary = {
        "ok": True,
        "cache": str(cache.folder),
        "cache_stats": cache.stats.to_dict(),
        "blocks": len(plan.blocks),
        "dilations_run": plan.dilations,
        "processing_size": list(scan.size),
        "device": str(torch_device),
        "dtype": dtype,
        "model_loaded": bool(loaded) and pipeline is None,
    }
    if mode == "infer":
        seconds = time.perf_counter() - started
        stats = cache.stats
        summary.update(
            chunk=f"{share[0]}/{share[1]}",
            chunk_blocks=[b.number for b in mine],
            timings={k: round(v, 3) for k, v in timings.items()},
            seconds=round(seconds, 3),
            summary=(
                f"chunk {share[0]}/{share[1]}: {len(mine)} of {len(plan.blocks)} blocks "
                f"({stats.blocks_computed} computed, {stats.blocks_reused} cached) in "
                f"{cache.folder} in {seconds:.1f} s"
            ),
        )
        return summary

    scratch = scratch_folder(cache)
    try:
        clock = time.perf_counter()
        final = finalize_depth(plan, keys, cache, scan, config, scratch, get_pipeline, progress)
        timings["align_merge"] = time.perf_counter() - clock
        summary["model_loaded"] = bool(loaded) and pipeline is None
        metadata = run_metadata(
            checkpoint, preset, config, output, str(plate), final.value_range, plan.dilations
        )
        clock = time.perf_counter()
        written = write_depth_stream(
            final.frames(),
            final.value_range,
            info.frame_numbers,
            folder,
            output,
            metadata,
            plate_size=(info.height, info.width),
            confidence=final.confidence(),
            progress=progress,
        )
        timings["write"] = time.perf_counter() - clock
        alignment_json = folder / f"{output.name}_alignment.json"
        final.alignment.save_json(alignment_json)
        preview = None
        if output.preview:
            from .preview import write_preview_video

            report(progress, "preview", 0, 1)
            lo, hi = final.value_range
            preview = folder / f"{output.name}_preview.mp4"
            write_preview_video(
                preview, ((d - lo) / max(hi - lo, 1e-12) for d in final.frames()), info.fps
            )
            report(progress, "preview", 1, 1)
    finally:
        drop_scratch(scratch)
    seconds = time.perf_counter() - started
    first, last = info.frame_numbers[0], info.frame_numbers[-1]
    stats = cache.stats
    summary.update(
        output_dir=str(folder),
        files=[str(p) for p in written],
        frame_numbers=list(info.frame_numbers),
        first_frame=first,
        last_frame=last,
        pattern=str(folder / f"{output.name}.{'#' * max(4, len(str(last)))}.exr"),
        alignment=str(alignment_json),
        preview=str(preview) if preview else None,
        **_written_values(output, final.value_range, (info.height, info.width), scan.size),
        timings={k: round(v, 3) for k, v in timings.items()},
        seconds=round(seconds, 3),
        summary=(
            f"wrote {len(written)} EXRs ({first}-{last}) to {folder} in {seconds:.1f} s "
            f"[{torch_device}, {dtype}, dilations {plan.dilations}; snippet blocks: "
            f"{stats.blocks_computed} computed, {stats.blocks_reused} cached]"
        ),
    )
    return summary
