"""`rollingdepth selftest`: the whole pipeline on a generated clip with a tiny random model.

It proves the installation (decoding, model loading, cross-frame attention, alignment,
refinement, EXR writing), not the depth: the random checkpoint predicts nothing meaningful.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .config import OutputConfig, preset_config
from .errors import RollingDepthError
from .exr import read_exr
from .progress import ProgressCallback
from .random_checkpoint import make_random_checkpoint
from .runner import run_plate
from .sample import write_sample_video

N_FRAMES = 12


def run_selftest(
    keep: str | None = None,
    progress: ProgressCallback | None = None,
    message: Callable[[str], None] | None = None,
) -> dict:
    say = message or (lambda text: None)
    work = Path(tempfile.mkdtemp(prefix="rollingdepth-selftest-"))
    try:
        say("selftest: tiny RANDOM checkpoint - proves the installation, not the depth")
        checkpoint = make_random_checkpoint(work / "tiny-random-checkpoint", size="tiny")
        plate = write_sample_video(work / "plate.mp4", n_frames=N_FRAMES, height=72, width=128)
        out = Path(keep) if keep else work / "depth"
        config = preset_config(
            "fast", processing_res=64, dtype="fp32", dilations=(1, 3), refine_steps=2
        )
        run = run_plate(
            str(plate),
            str(out),
            config,
            OutputConfig(),
            str(checkpoint),
            preset="fast",
            device="auto",
            progress=progress,
            message=message,
        )
        result = run.to_message()
        problems = []
        if len(result["files"]) != N_FRAMES:
            problems.append(f"expected {N_FRAMES} EXRs, got {len(result['files'])}")
        for path in result["files"]:
            channels, _ = read_exr(path)
            z = channels.get("Z")
            if z is None or not np.isfinite(z).all():
                problems.append(f"{Path(path).name}: missing or non-finite Z channel")
                break
        if problems:
            raise RollingDepthError("selftest FAILED: " + "; ".join(problems))
        result["summary"] = (
            f"selftest PASSED on {result['device']}: {N_FRAMES} frames through every stage "
            f"in {result['seconds']:.1f} s (tiny random checkpoint: proves the installation, "
            f"not the depth)"
        )
        result["selftest"] = "passed"
        return result
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
