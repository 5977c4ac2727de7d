"""What the engine and its front-ends must agree on, in the standard library only.

The Blender add-on runs inside Blender's own Python (no torch, no numpy needed) and drives the
engine in a subprocess; it bundles this one file (``scripts/build_addon.py`` copies it in) and
restates none of it. The engine's config, progress and output modules read the same values.
"""

from __future__ import annotations

import re

ENGINE_MODULE = "rollingdepth_core.cli"

# ---------------------------------------------------------------------------- presets
# Plain data over rollingdepth_core.config.InferenceConfig's fields; a missing field keeps the
# dataclass default.
PRESETS: dict[str, dict] = {
    "fast": {
        "label": "Fast",
        "description": "Dilations 1 25, no refinement, 768 px",
        "settings": {"dilations": (1, 25), "dtype": "fp16", "refine_steps": 0,
                     "processing_res": 768},
    },
    "fast1024": {
        "label": "Fast 1024",
        "description": "Dilations 1 25, no refinement, 1024 px",
        "settings": {"dilations": (1, 25), "dtype": "fp16", "refine_steps": 0,
                     "processing_res": 1024},
    },
    "full": {
        "label": "Full",
        "description": "Dilations 1 10 25, 10 refinement steps, 1024 px",
        "settings": {"dilations": (1, 10, 25), "dtype": "fp16", "refine_steps": 10,
                     "processing_res": 1024},
    },
    "paper": {
        "label": "Paper",
        "description": "The paper's settings (fp32, uncapped dilations, 768 px)",
        "settings": {"dilations": (1, 10, 25), "cap_dilation": False, "dtype": "fp32",
                     "refine_steps": 10, "processing_res": 768},
    },
}  # fmt: skip
DEFAULT_PRESET = "fast"
# Recorded as the preset when settings were edited by hand away from every preset.
CUSTOM_PRESET = "custom"

# ---------------------------------------------------------------------------- depth conventions
DEPTH_MODES: dict[str, dict[str, str]] = {
    "inverse": {
        "label": "Inverse depth",
        "description": "relative inverse depth (disparity-like), larger = nearer, affine-invariant",
    },
    "normalized": {
        "label": "Normalized",
        "description": "relative inverse depth mapped to 0..1 over the clip, 1 = nearest",
    },
    "depth": {
        "label": "Depth",
        "description": "metric-like depth in scene units: inverse depth mapped to [1/far, 1/near]",
    },
}
DEFAULT_DEPTH_MODE = "inverse"
# How depth at processing size reaches the plate's size (`--restore-res`): edge-aware (depth
# edges on the plate's edges, hard where the plate's edge is clean) or plain bilinear.
UPSAMPLE_METHODS = ("edge", "bilinear")
# Blender (5.0.1, 4.5) reads an EXR whose only channel is `Z` as garbage; `Y` loads as grey.
BLENDER_CHANNEL = "Y"
DEFAULT_CHANNEL = "Z"
# What a frame may carry (`--passes`): Z (the depth, always), P (position, x y z) and N
# (normals); P and N need a camera and depth in scene units. EXR channel names as Nuke and
# Blender read them without a Shuffle: `layer.X/Y/Z` (Blender's own passes, e.g. Position.X).
PASSES = ("Z", "P", "N")
PASS_CHANNELS = {"P": ("P.X", "P.Y", "P.Z"), "N": ("N.X", "N.Y", "N.Z")}


def nearness_affine(
    depth_mode: str, near: float, far: float, value_range: tuple[float, float] | None
) -> tuple[float, float]:
    """``(scale, offset)`` so that ``scale * value + offset`` is 0 (far) .. 1 (near) nearness.

    For ``depth`` files the value is first turned into inverse depth (``1 / value``); the
    nearness then is ``scale / value + offset``. ``value_range`` is the file's (min, max).
    """
    if depth_mode == "depth":
        span = 1.0 / near - 1.0 / far
        return 1.0 / span, -(1.0 / far) / span
    if depth_mode == "inverse" and value_range and value_range[1] > value_range[0]:
        lo, hi = value_range
        return 1.0 / (hi - lo), -lo / (hi - lo)
    return 1.0, 0.0


# ---------------------------------------------------------------------------- stages
STAGES: dict[str, str] = {
    "load": "loading the model",
    "encode": "reading + encoding",
    "scan": "reading + hashing frames",
    "snippets": "predicting snippets",
    "align": "co-aligning snippets",
    "merge": "merging frames",
    "refine": "refining",
    "write": "writing EXRs",
    "preview": "writing preview",
    "publish": "publishing the sequence",
}
# Rough share of a run each stage takes, for one overall progress value.
STAGE_WEIGHTS: dict[str, float] = {
    "load": 0.02,
    "encode": 0.18,
    "scan": 0.18,
    "snippets": 0.5,
    "align": 0.05,
    "merge": 0.05,
    "refine": 0.1,
    "write": 0.08,
    "preview": 0.02,
    "publish": 0.01,
}


def overall_fraction(stage: str, done: int, total: int) -> float:
    """Progress of the whole run (0..1) from the stage the engine reports.

    ``encode`` and ``scan`` are alternatives (in-memory and cached runs): only one is counted.
    """
    order = [s for s in STAGE_WEIGHTS if s != ("scan" if stage != "scan" else "encode")]
    if stage not in order:
        return 0.0
    before = sum(STAGE_WEIGHTS[s] for s in order[: order.index(stage)])
    part = STAGE_WEIGHTS[stage] * (done / total if total else 0.0)
    return min(1.0, (before + part) / sum(STAGE_WEIGHTS[s] for s in order))


# ---------------------------------------------------------------------------- messages
# `--progress json`: one object per line; `event` is one of these.
EVENT_PROGRESS = "progress"  # stage, done, total, message, elapsed
EVENT_MESSAGE = "message"  # message
EVENT_RESULT = "result"  # the RunResult fields below, exactly once at the end
EVENT_ERROR = "error"  # kind, message, and `hint` where the error has one
# The error `kind` of a run stopped on request (SIGTERM, Ctrl-C): not a failure to report.
KIND_CANCELLED = "cancelled"
# What a `result` carries (rollingdepth_core.engine.RunResult.to_message()).
RESULT_KEYS = (
    "ok",
    "output_dir",
    "files",
    "frame_numbers",
    "first_frame",
    "last_frame",
    "pattern",
    "alignment",
    "preview",
    "processing_size",
    "output_size",
    "value_range",
    "depth_mode",
    "channel",
    "near",
    "far",
    "dilations_run",
    "device",
    "dtype",
    "timings",
    "seconds",
    "summary",
    "anchors",  # only with --anchors: units, mode, used, rejected, residuals, sidecar file
    "fps",  # the plate's frame rate ("24", "30000/1001"), null when it states none
    "timecodes",  # each frame's source timecode, as frame_numbers; null without timecode
)


# ---------------------------------------------------------------------------- frame numbers
# A numbered file name: the last run of digits before the extension is the frame number. The
# add-on's rule for the image strips it hands over (it cannot import fileseq, which the engine
# parses sequences with: same digits, same frame number for such names).
NUMBERED_NAME = re.compile(r"^(?P<head>.*?)(?P<digits>\d+)(?P<tail>\.[A-Za-z0-9]+)$")


def parse_dilations(text: str) -> tuple[int, ...]:
    """``"1 10 25"`` (spaces or commas) -> ``(1, 10, 25)``; empty -> ``()`` (preset default).

    Raises ValueError with a message naming the bad part.
    """
    parts = [p for p in re.split(r"[\s,]+", text.strip()) if p]
    values = []
    for part in parts:
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"dilations must be whole numbers >= 1, e.g. `1 10 25`; got {part!r}")
        values.append(int(part))
    if values and 1 not in values:
        raise ValueError(f"dilations must include 1, e.g. `1 10 25`; got {text!r}")
    return tuple(values)
