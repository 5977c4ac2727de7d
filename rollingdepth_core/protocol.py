"""What the engine and its front-ends must agree on, in the standard library only.

The Blender add-on runs inside Blender's own Python (no torch, no numpy needed) and drives the
engine in a subprocess; it bundles this one file (``scripts/build_addon.py`` copies it in) and
restates none of it. The engine's config, progress and output modules read the same values.
"""

from __future__ import annotations

import re
import time

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
        "description": "The paper's settings (full precision, dilations never shortened, 768 px)",
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
        "description": "relative inverse depth (like disparity): larger = nearer, with no set scale or offset",
    },
    "normalized": {
        "label": "Normalized",
        "description": "relative inverse depth mapped to 0..1 over the clip, 1 = nearest",
    },
    "depth": {
        "label": "Depth",
        "description": "distance in scene units, spread between Near and Far",
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
# A frame whose depth is Blender's channel (`Y`) and that carries P or N also holds the depth as
# plain half-float R, G, B: Blender 5.0.1 reads an EXR with layers (`P.X`...) as a multilayer
# file, whose picture in the Sequencer (and in a render of it) comes only from plain `R G B`
# channels: beside `Y` alone it showed black, and a background render of the strip crashed.
DISPLAY_CHANNELS = ("R", "G", "B")
DISPLAY_BYTES_PER_PIXEL = 2 * len(DISPLAY_CHANNELS)


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
    "encode": "reading the plate",
    "scan": "reading the plate",
    "snippets": "estimating depth",
    "align": "lining up the depth",
    "merge": "merging frames",
    "refine": "refining",
    "write": "writing EXRs",
    "preview": "writing preview",
    "publish": "putting the files in place",
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


# The stages a run's time is the sum of, in order, and what each grows with (the cost
# model: `costs.RunShape.work`). ``start``: a fresh engine process, until the model loads.
STAGE_WORK = {
    "start": "once",
    "load": "once",
    "encode": "frame_pixels",
    "scan": "frame_pixels",
    "snippets": "snippet_pixels",
    "align": "frame_pixels",
    "merge": "frame_pixels",
    "refine": "refine_pixels",
    "write": "output_pixels",
    "preview": "output_pixels",
    "publish": "once",
}


# ---------------------------------------------------------------------------- time left
# A stage's own rate is trusted fully once this many reports followed its first (whose
# time carries the stage's warm-up: the first batch, a first network call); before that,
# in proportion. A rough first estimate can be 10x off: a few reports outweigh it.
RATE_REPORTS = 2
RATIO_LIMITS = (0.05, 20.0)  # how far what was measured may scale what was estimated


class RemainingClock:
    """Seconds left of a run, from its estimate (seconds per stage, `costs.Estimate`) and
    what it has measured so far: the current stage's own rate as soon as a few of its
    reports are in (counted from its first report, which carries its warm-up), and, for the
    stages to come, the ratio of measured to estimated over the stages finished and the one
    in progress. A clock started with the engine's process counts the time before the first
    report as the estimate's ``start``. ``rough``: the estimate is a first guess (no earlier
    run on this device, `costs.Estimate.measured` false), which can be several times off
    either way and wrong by a different factor for each stage: a stage's own pace is then
    trusted from its first report (its warm-up included, so at most a few times high), and
    from its second on without the warm-up."""

    def __init__(
        self, stages: dict[str, float], start: float | None = None, rough: bool = False
    ) -> None:
        self.stages = dict(stages)  # the estimate's seconds per stage
        self.rough = rough
        self.start = time.monotonic() if start is None else start
        self.stage: str | None = None
        self.stage_start = self.start
        self.first: tuple[float, int] | None = None  # the stage's first report with work done
        self.reports = 0  # the stage's reports since that first one
        self.last_done = 0  # the stage's work done as last reported
        self.complete: float | None = None  # when the stage reported its last unit
        self.finished: dict[str, float] = {}  # stage -> measured seconds

    def update(self, stage: str, done: int, total: int, now: float | None = None) -> float:
        """Seconds left after the report ``stage`` ``done``/``total`` at ``now``; a front-end
        may ask again with the same report as time passes (a status line's redraw)."""
        now = time.monotonic() if now is None else now
        if stage != self.stage:
            # stages report their work done, not their start: one began when the one
            # before reported its last unit (else: now)
            began = self.complete if self.complete is not None else now
            if self.stage is not None:
                self.finished[self.stage] = began - self.stage_start
            elif "start" in self.stages and stage != "start":
                self.finished["start"] = began - self.start  # the process's start-up
            self.stage, self.stage_start, self.first, self.reports = stage, began, None, 0
            self.complete, self.last_done = None, 0
        if total > 0 and done >= total:
            self.complete = self.complete if self.complete is not None else now
        else:
            self.complete = None
        # a stage whose last unit is in ended then: the time since is the next one's
        ended = self.complete if self.complete is not None else now
        spent = ended - self.stage_start
        planned = self.stages.get(stage, 0.0)
        # the stage's own pace: seconds per unit since its first report with work done
        trust, projected = 0.0, planned
        if done > 0 and total > 0:
            if self.first is None:
                self.first = (ended, done)
            elif done > self.last_done:
                self.reports += 1
            at, first_done = self.first
            if done > first_done and ended > at:
                rate = (ended - at) / (done - first_done)
                trust = min(1.0, self.reports / (1 if self.rough else RATE_REPORTS))
            else:  # one report: its time over its units, warm-up and all
                rate = spent / done
                trust = 0.0 if planned > 0 and not self.rough else 1.0
            projected = spent + rate * (total - done)
        self.last_done = max(self.last_done, done)
        # measured over estimated, the stage in progress counted as far as it is trusted; a
        # rough guess is wrong by another factor for each stage, so the stages to come keep
        # its figures rather than this one's factor
        estimated = sum(self.stages.get(s, 0.0) for s in self.finished) + trust * planned
        measured = sum(self.finished.values()) + trust * projected
        ratio = measured / estimated if estimated > 0 and measured > 0 else 1.0
        ratio = min(max(ratio, RATIO_LIMITS[0]), RATIO_LIMITS[1])
        planned_left = max(ratio * planned - spent, 0.0)
        current = trust * max(projected - spent, 0.0) + (1 - trust) * planned_left
        later = [s for s in self.stages if s not in self.finished and s != stage]
        to_come = sum(self.stages[s] for s in later if _after(s, stage))
        return max(current + (1.0 if self.rough else ratio) * to_come - (now - ended), 0.0)


def remaining_times(
    stages: dict[str, float], events: list[tuple[float, str, int, int]], rough: bool = False
):
    """The time left after each of a run's progress reports ``(elapsed, stage, done,
    total)`` (seconds since the engine's process started), from its estimate ``stages``
    (``rough``: a first guess, see `RemainingClock`)."""
    clock = RemainingClock(stages, start=0.0, rough=rough)
    return [clock.update(stage, done, total, now=t) for t, stage, done, total in events]


def _after(stage: str, current: str) -> bool:
    order = list(STAGE_WORK)
    if current not in order:
        return True
    return order.index(stage) > order.index(current)


def duration_text(seconds: float) -> str:
    """``seconds`` as an artist reads a wait: "about 40 s", "about 6 min", "about 1 h 20 min"."""
    if seconds < 60:
        return f"about {max(5, round(seconds / 5) * 5)} s"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"about {hours} h {minutes} min" if minutes else f"about {hours} h"


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


# ---------------------------------------------------------------------------- artists' words
# The method words the front-ends keep, each explained once where it first appears (the
# control that sets it). Every other engine word (snippets, co-alignment, flags, dtypes) stays
# out of what an artist reads; tests/artist_words.py holds the tells it looks for.
GLOSSARY: dict[str, str] = {
    "dilation": (
        "A dilation is how many frames apart the frames are that the model looks at together: "
        "1 = neighbouring frames, 25 = frames a second apart at 25 fps. Longer dilations keep "
        "far-apart frames consistent"
    ),
    "shot": (
        "A shot is the stretch of the plate between two cuts; each shot's depth is estimated "
        "and scaled on its own"
    ),
    "holdout": (
        "A holdout is a matte of what the depth must not be lined up on (white areas): sky, "
        "glass, a moving actor"
    ),
    "anchors": (
        "Anchors are points of known distance (a survey, a camera solve) that put the depth in "
        "scene units"
    ),
}

# The engine's error kinds (`error` events' `kind`: the nearest of these in the error's
# class hierarchy) and what a front-end leads its message with.
ERROR_KINDS: dict[str, str] = {
    "ConfigError": "A setting cannot be used",
    "InputError": "The plate or a file it needs cannot be read",
    "OutputError": "The depth cannot be written",
    "WeightsError": "The model's weights are not there",
    "DeviceError": "The chosen device is not available",
    "NonFiniteDepth": "The model produced invalid depth",
    "RollingDepthError": "The depth could not be made",
    "ClusterLost": "The render farm lost the machines the run needed",
    "EngineCrash": "The engine stopped unexpectedly",
    KIND_CANCELLED: "Cancelled",
}


def error_kind(error: BaseException) -> str:
    """The protocol kind of an engine error: its class or the nearest base in ERROR_KINDS."""
    for cls in type(error).__mro__:
        if cls.__name__ in ERROR_KINDS:
            return cls.__name__
    return "RollingDepthError"


# Neutral names of the settings engine messages name by their flags; a front-end passes its
# own (with where the setting is) to `artist_text`, these fill the rest.
SETTING_NAMES: dict[str, str] = {
    "--res": "Resolution",
    "--dilations": "Dilations",
    "--refine-steps": "Refinement Steps",
    "--snippet-len": "the number of frames looked at together",
    "--preset": "Preset",
    "--device": "Device",
    "--dtype": "Precision",
    "--half": "Half Float",
    "--checkpoint": "Checkpoint",
    "--depth-mode": "Convention",
    "--near": "Near",
    "--far": "Far",
    "--channel": "the depth channel",
    "--confidence": "the confidence channel",
    "--restore-res": "Plate Size output",
    "--upsample": "Upsample Edges",
    "--input-colorspace": "the plate's colour space",
    "--ocio-config": "the OCIO config",
    "--ocio-view": "the OCIO view",
    "--holdout": "Holdout Matte",
    "--holdout-alpha": "the holdout matte's alpha",
    "--anchors": "Anchors",
    "--anchor-fit": "the anchor fit",
    "--frames": "the frame range",
    "--cuts": "the shot cuts",
    "--min-shot-frames": "the shortest shot",
    "--name": "the file name",
    "--output": "Output Folder",
    "-o": "Output Folder",
    "--overwrite": "replacing the folder's frames",
    "--max-frame-memory": "the memory limit per frame",
    "--cache": "the kept predictions",
}
# What a front-end has no use for: sentences that send the reader to a command line, a
# download tool or an environment variable (a front-end says its own fix by kind).
_COMMAND_SENTENCE = re.compile(
    r"\s*\(?[^.;()]*(?:`(?:rollingdepth|hf|pip|ray) [^`]*`|\b[A-Z]+_[A-Z_]+\b|\$[A-Z]\w*)"
    r"[^.;()]*\)?[.;]?"
)
# "pip install x (or pip install y)": an installation's fix, not an artist's
_PIP = re.compile(r"\s*\(?(?:and then |or )?pip install (?:--[\w-]+ )?[\w'\[\]=.-]+\)?:?")
_FLAG = re.compile(r"(?:([Pp]ass|[Uu]se|[Ss]et|with) )?`(-o|--[a-z][\w-]*)(?: ([^`]*))?`")
_CODE = re.compile(r"`([^`]*)`")


def artist_text(message: str, settings: dict[str, str] | None = None) -> str:
    """An engine message in an artist's words: flags become the settings' names
    (``settings`` first, then SETTING_NAMES), command-line sentences go, code loses its
    quotes. The kind's lead and the front-end's fix are the front-end's to add."""
    names = {**SETTING_NAMES, **(settings or {})}

    def setting(match: re.Match) -> str:
        verb, name, value = match[1], names.get(match[2], "a setting"), match[3]
        if verb and verb.lower() in ("pass", "use", "set"):
            word = "Set" if verb[0].isupper() else "set"
            return f"{word} {name}" + (f" to {value}" if value else "")
        lead = f"{verb} " if verb else ""
        return (
            lead + name + (f" set to {value}" if value and verb else f" ({value})" if value else "")
        )

    text = _PIP.sub("", _COMMAND_SENTENCE.sub("", message)).strip()
    text = _FLAG.sub(setting, text)
    text = _CODE.sub(lambda m: m[1], text)
    return re.sub(r"\s+([.;,])", r"\1", text).strip(" ;,")


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


# ---------------------------------------------------------------------------- provenance
# Who asked for a run: the front-end that built the request (`--front-end`), and free text
# naming what asked (`--requested-by`: the add-on passes its .blend file's path). Both are
# recorded in the manifest and the EXR headers; neither changes the run id.
FRONT_ENDS = ("cli", "panel", "blender")
DEFAULT_FRONT_END = "cli"

# ---------------------------------------------------------------------------- output folders
# A published sequence NAME.####.exr has a manifest NAME_run.json beside it (written by
# rollingdepth_core.publish; these are its keys, read by every front-end from here).
MANIFEST_SUFFIX = "_run.json"
DEFAULT_SEQUENCE_NAME = "depth"
# A sequence's files besides its frames NAME.####.exr: NAME + each suffix. They belong to the
# sequence: staged and swapped with its frames, and removed with them when a run replaces it.
SIDECAR_SUFFIXES = ("_alignment.json", "_anchors.json", "_preview.mp4", ".otio", MANIFEST_SUFFIX)
STAGING_SUFFIX = ".staging"  # `.NAME.staging/`: a run's files before the swap
JOURNAL_NAME = "swap.json"  # in the staging folder: the swap's commit point
KEY_VERSION = "rollingdepth"
KEY_RUN_ID = "run_id"
KEY_SOURCE = "source"  # the plate
KEY_NAME = "name"  # the sequence name
KEY_FRAMES = "frames"  # the frame numbers, ascending
KEY_STATE = "state"  # one of MANIFEST_STATES
KEY_COMPLETE = "complete"  # True once the sequence is whole (older manifests: the only key)
KEY_FILES = "files"  # every file of the sequence: frames, sidecars (names in the folder)
KEY_REPLACED = "replaced"  # the earlier sequence's files the swap removed
KEY_FRONT_END = "front_end"
KEY_REQUESTED_BY = "requested_by"
KEY_SETTINGS = "settings"  # what shapes the result (what the run id hashes)
KEY_USED = "used"  # holdout, anchors, cuts the run used
KEY_TIMECODE = "timecode"
# The manifest's states. "being swapped": the new sequence's files are being renamed into the
# folder (or a kill cut that short): the folder may hold a mix of two runs until the next run or
# `rollingdepth check --output` completes it. A reader takes only "complete" as whole.
STATE_COMPLETE = "complete"
STATE_SWAPPING = "being swapped"
MANIFEST_STATES = (STATE_COMPLETE, STATE_SWAPPING)
# What `describe_output_folder` adds: the manifest is unreadable, lists frames the folder lacks,
# or frames no manifest accounts for are in the folder.
STATE_UNREADABLE = "unreadable"
STATE_INCOMPLETE = "incomplete"
STATE_NO_MANIFEST = "no manifest"
# The settings `describe_output_folder` sums up, in this order.
SUMMARY_SETTINGS = ("preset", "depth_mode", "processing_res", "dilations", "refine_steps")


def describe_output_folder(path, name: str | None = None) -> dict | None:
    """What an output folder holds, for showing an artist before a run writes there.

    ``name``: the sequence (default: the folder's only sequence; with several, ``depth`` if
    present, else the most recently published). Returns None where the folder holds no run
    (no manifest and no frames of the sequence). Otherwise a dict with ``state`` (one of
    ``complete``, ``being swapped``, ``incomplete``, ``no manifest``, ``unreadable``),
    ``name``, ``front_end``, ``requested_by``, ``plate``, ``first_frame``, ``last_frame``,
    ``frame_count``, ``run_id``, ``settings`` (a short text) and ``detail`` (one line, for
    the states other than ``complete``). Reads only; never raises on what the folder holds.
    """
    import json
    import os

    folder = os.fspath(path)
    try:
        entries = os.listdir(folder)
    except OSError:
        return None
    manifests = sorted(e[: -len(MANIFEST_SUFFIX)] for e in entries if e.endswith(MANIFEST_SUFFIX))
    if name is None:
        if len(manifests) == 1 or (manifests and DEFAULT_SEQUENCE_NAME not in manifests):
            name = max(manifests, key=lambda n: _mtime(folder, n + MANIFEST_SUFFIX))
        else:
            name = DEFAULT_SEQUENCE_NAME
    frame_name = re.compile(re.escape(name) + r"\.(-?\d+)\.exr")
    present = sorted(int(m.group(1)) for e in entries if (m := frame_name.fullmatch(e)))
    staging = os.path.join(folder, f".{name}{STAGING_SUFFIX}")
    swap_cut_short = os.path.isfile(os.path.join(staging, JOURNAL_NAME))
    described: dict = {
        "name": name,
        "state": STATE_NO_MANIFEST,
        "front_end": None,
        "requested_by": None,
        "plate": None,
        "first_frame": present[0] if present else None,
        "last_frame": present[-1] if present else None,
        "frame_count": len(present),
        "run_id": None,
        "settings": "",
        "detail": "",
    }
    manifest_path = os.path.join(folder, name + MANIFEST_SUFFIX)
    if name not in manifests:
        if not present and not swap_cut_short:
            return None
        described["detail"] = f"{len(present)} frames that no run's record accounts for"
        if swap_cut_short:
            described["state"] = STATE_SWAPPING
            described["detail"] = "a replacement was cut short; it completes on the next run"
        return described
    try:
        with open(manifest_path, encoding="utf-8") as handle:
            manifest = json.load(handle)
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
        frames = [int(n) for n in manifest.get(KEY_FRAMES) or []]
        files = [str(f) for f in manifest.get(KEY_FILES) or []]
    except (OSError, ValueError, TypeError) as exc:
        described["state"] = STATE_UNREADABLE
        described["detail"] = f"{os.path.basename(manifest_path)} cannot be read ({exc})"
        return described
    settings = manifest.get(KEY_SETTINGS)
    described.update(
        front_end=_text(manifest.get(KEY_FRONT_END)),
        requested_by=_text(manifest.get(KEY_REQUESTED_BY)),
        plate=_text(manifest.get(KEY_SOURCE)),
        first_frame=min(frames) if frames else described["first_frame"],
        last_frame=max(frames) if frames else described["last_frame"],
        frame_count=len(frames),
        run_id=_text(manifest.get(KEY_RUN_ID)),
        settings=_summary(settings) if isinstance(settings, dict) else "",
    )
    state = manifest.get(KEY_STATE)
    if state is None:  # manifests from before `state`: judged by their frames below
        state = STATE_COMPLETE if manifest.get(KEY_COMPLETE, True) is True else STATE_SWAPPING
    missing = [f for f in files if f not in entries] or sorted(set(frames) - set(present))
    extra = sorted(set(present) - set(frames))
    if state == STATE_SWAPPING or swap_cut_short:
        described["state"] = STATE_SWAPPING
        described["detail"] = (
            "a replacement is being swapped in (or was cut short: it completes on the next run)"
        )
    elif state != STATE_COMPLETE:
        described["state"] = STATE_UNREADABLE
        described["detail"] = f"{os.path.basename(manifest_path)} has an unknown state {state!r}"
    elif missing:
        described["state"] = STATE_INCOMPLETE
        described["detail"] = f"{len(missing)} of its files are missing"
    elif extra:
        described["state"] = STATE_INCOMPLETE
        described["detail"] = f"{len(extra)} frames that its record does not list"
    else:
        described["state"] = STATE_COMPLETE
    return described


def _mtime(folder: str, entry: str) -> float:
    import os

    try:
        return os.stat(os.path.join(folder, entry)).st_mtime
    except OSError:
        return 0.0


def _text(value) -> str | None:
    return None if value is None else str(value)


def _summary(settings: dict) -> str:
    parts = []
    for key in SUMMARY_SETTINGS:
        value = settings.get(key)
        if value is None:
            continue
        if isinstance(value, list | tuple):
            value = " ".join(str(v) for v in value)
        parts.append(f"{key.replace('_', ' ')} {value}")
    return ", ".join(parts)
