"""One run from a plate on disk to an EXR sequence: what the CLI and the front-ends call."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from .config import InferenceConfig, OutputConfig
from .output import ensure_writable, run_metadata, write_depth_sequence, write_preview
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
) -> dict:
    """Estimate depth for ``plate`` and write ``output_dir/NAME.####.exr``; returns a summary."""
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


def result_paths(result: dict) -> list[Path]:
    return [Path(p) for p in result["files"]]
