"""RollingDepth: temporally consistent depth for VFX plates (engine; no bpy, no Qt)."""

from __future__ import annotations

import importlib
import os
import sys
import time

IMPORTED = time.monotonic()  # a process's start where the kernel cannot say (costs)

__version__ = "0.1.0"


def enable_mps_fallback(platform: str = sys.platform, environ=os.environ) -> None:
    """On macOS, ops Apple's MPS backend lacks run on the CPU instead of stopping the run.
    torch reads the switch when it is imported, so it is set here, before any module of the
    engine imports torch; a value the user set is kept."""
    if platform == "darwin":
        environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")


enable_mps_fallback()

# The pure functions, usable without the pipeline; imported on first use so that
# `import rollingdepth_core` (the panel's version check, the protocol) stays light.
_EXPORTS = {
    "coalign": ".alignment",
    "solve_reduced": ".alignment",
    "merge_solution": ".alignment",
    "upsample_depth": ".upsample",
    "load_anchors": ".anchors",
    "fit_anchors": ".anchors",
    "AnchorSampler": ".anchors",
    "AnchorFit": ".anchors",
    "estimate_depth": ".method",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
