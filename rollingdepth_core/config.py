"""Run settings as frozen dataclasses; presets are plain data over them."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace

from . import protocol
from .errors import ConfigError

DEFAULT_CHECKPOINT = "prs-eth/rollingdepth-v1-0"
DTYPES = ("fp32", "fp16", "bf16")
DEVICES = ("auto", "cuda", "mps", "cpu")
ALIGNERS = ("robust", "adam")
DEPTH_MODES = tuple(protocol.DEPTH_MODES)
HALF_MAX = 65504.0  # the largest finite 16-bit float
CONFIDENCE_CHANNEL = "confidence"
# Largest decoded frame (float RGB) a plate may need at once; the plate reader refuses more.
DEFAULT_MAX_FRAME_GIB = 1.0
# The shortest shot that cut detection reports, in frames (see cuts.py).
DEFAULT_MIN_SHOT_FRAMES = 4


@dataclass(frozen=True)
class InferenceConfig:
    """Everything that changes what the model and the aligner compute."""

    dilations: tuple[int, ...] = (1, 25)
    snippet_len: int = 3
    denoise_steps: int = 1
    cap_dilation: bool = True
    refine_steps: int = 0
    refine_snippet_len: int = 3
    refine_start_dilation: int = 6
    processing_res: int = 768
    dtype: str = "fp16"
    seed: int = 0
    aligner: str = "robust"
    batch_size: int = 0  # snippets per UNet call; 0 = chosen from the device's memory
    vae_batch_size: int = 4
    confidence: bool = False
    min_shot_frames: int = DEFAULT_MIN_SHOT_FRAMES

    def check(self) -> None:
        """Raise ConfigError for any value outside what the method supports."""
        if not self.dilations:
            raise ConfigError("`dilations` must name at least one dilation, e.g. `1 10 25`")
        if any(d < 1 for d in self.dilations):
            raise ConfigError(f"`dilations` must be >= 1; got {list(self.dilations)}")
        if 1 not in self.dilations:
            raise ConfigError(
                f"`dilations` must include 1 so that neighbouring frames are linked; "
                f"got {list(self.dilations)}"
            )
        if not 2 <= self.snippet_len <= 4:
            raise ConfigError(f"`snippet_len` must be 2, 3 or 4; got {self.snippet_len}")
        if not 2 <= self.refine_snippet_len <= 4:
            raise ConfigError(
                f"`refine_snippet_len` must be 2, 3 or 4; got {self.refine_snippet_len}"
            )
        if self.denoise_steps < 1:
            raise ConfigError(f"`denoise_steps` must be >= 1; got {self.denoise_steps}")
        if not 0 <= self.refine_steps <= 500:
            raise ConfigError(f"`refine_steps` must be in 0..500; got {self.refine_steps}")
        if self.refine_start_dilation < 1:
            raise ConfigError(
                f"`refine_start_dilation` must be >= 1; got {self.refine_start_dilation}"
            )
        if self.processing_res < 0 or (0 < self.processing_res < 16):
            raise ConfigError(
                f"`processing_res` must be 0 (keep the plate's size) or >= 16; "
                f"got {self.processing_res}"
            )
        if self.dtype not in DTYPES:
            raise ConfigError(f"`dtype` must be one of {', '.join(DTYPES)}; got {self.dtype!r}")
        if self.aligner not in ALIGNERS:
            raise ConfigError(
                f"`aligner` must be one of {', '.join(ALIGNERS)}; got {self.aligner!r}"
            )
        if self.batch_size < 0 or self.vae_batch_size < 1:
            raise ConfigError("`batch_size` must be >= 0 and `vae_batch_size` >= 1")
        if self.min_shot_frames < 2:
            raise ConfigError(
                f"`--min-shot-frames` must be >= 2 (a shot needs 2 frames); "
                f"got {self.min_shot_frames}"
            )


@dataclass(frozen=True)
class OutputConfig:
    """How the aligned inverse depth is turned into files."""

    depth_mode: str = "inverse"
    near: float = 1.0
    far: float = 100.0
    half: bool = False
    channel: str = "Z"
    restore_res: bool = False
    preview: bool = False
    name: str = "depth"
    upsample: str = "edge"  # how --restore-res reaches the plate's size: edge | bilinear
    # what every frame carries (protocol.PASSES); None: Z, and P and N when a camera is given
    passes: tuple[str, ...] | None = None

    def check(self, confidence: bool = False) -> None:
        """Raise ConfigError for any setting that could only fail when the files are written.

        ``confidence``: whether the run adds a ``confidence`` channel (InferenceConfig's).
        """
        if self.upsample not in protocol.UPSAMPLE_METHODS:
            raise ConfigError(
                f"`upsample` must be one of {', '.join(protocol.UPSAMPLE_METHODS)}; "
                f"got {self.upsample!r}"
            )
        if self.depth_mode not in DEPTH_MODES:
            raise ConfigError(
                f"`depth_mode` must be one of {', '.join(DEPTH_MODES)}; got {self.depth_mode!r}"
            )
        if not (math.isfinite(self.near) and math.isfinite(self.far) and 0 < self.near < self.far):
            raise ConfigError(
                f"`near` and `far` must be finite with 0 < near < far; got near={self.near}, "
                f"far={self.far}"
            )
        if self.half and self.depth_mode == "depth" and self.far > HALF_MAX:
            raise ConfigError(
                f"`--half` stores values up to {HALF_MAX:g}, but `--depth-mode depth` writes "
                f"values up to `--far` {self.far:g}: lower `--far` or drop `--half`"
            )
        if not self.channel or any(c.isspace() for c in self.channel):
            raise ConfigError(
                f"`channel` must be a non-empty name without spaces; got {self.channel!r}"
            )
        if confidence and self.channel == CONFIDENCE_CHANNEL:
            raise ConfigError(
                f"`--channel {CONFIDENCE_CHANNEL}` is the name `--confidence` writes its own "
                "channel under: choose another depth channel name"
            )
        check_name(self.name)
        if self.passes is not None:
            unknown = [p for p in self.passes if p not in protocol.PASSES]
            if unknown or len(set(self.passes)) != len(self.passes) or "Z" not in self.passes:
                raise ConfigError(
                    f"`--passes` lists each of {', '.join(protocol.PASSES)} at most once, Z "
                    f"always (e.g. Z,P,N); got {','.join(self.passes)}"
                )
        taken = [c for names in protocol.PASS_CHANNELS.values() for c in names]
        if self.channel in taken:
            raise ConfigError(f"`--channel {self.channel}` is a channel of the P or N pass")


@dataclass(frozen=True)
class Preset:
    name: str
    inference: InferenceConfig = field(default_factory=InferenceConfig)


PRESETS: dict[str, Preset] = {
    name: Preset(name, InferenceConfig(**spec["settings"]))
    for name, spec in protocol.PRESETS.items()
}


def preset_config(name: str, **overrides) -> InferenceConfig:
    """The preset's settings with every non-None override applied."""
    if name not in PRESETS:
        raise ConfigError(f"`preset` must be one of {', '.join(PRESETS)}; got {name!r}")
    known = {f.name for f in fields(InferenceConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    given = {k: v for k, v in overrides.items() if v is not None}
    if "dilations" in given:
        given["dilations"] = tuple(int(d) for d in given["dilations"])
    config = replace(PRESETS[name].inference, **given)
    config.check()
    return config


# What a sequence name may hold besides letters and digits (any script): the POSIX portable
# file-name set, '+', and spaces inside it (an artist's "sh010 depth"; every file system holds
# them, a glob matches them). No glob or shell characters ([ ] * ? { } ! $ ` ' " ; & |),
# nothing Windows or SMB refuse (: \ < > | " ?), no frame tokens (# @ %).
NAME_PUNCTUATION = ("_", "-", ".", "+", " ")
WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)),
                   *(f"LPT{i}" for i in range(10))}  # fmt: skip


def check_name(name: str) -> None:
    """ConfigError unless ``name`` is a plain file-name prefix that stays in the folder."""
    if not name or not name.strip():
        raise ConfigError("`name` must not be empty: it is the prefix of NAME.####.exr")
    if "/" in name or "\\" in name or os.sep in name or name in (".", ".."):
        raise ConfigError(f"`name` must be a file-name prefix, not a path; got {name!r}")
    if name.startswith("."):
        raise ConfigError(f"`name` must not start with '.' (hidden files); got {name!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ConfigError(f"`name` must not hold control characters; got {name!r}")
    refused = sorted({c for c in name if not (c.isalnum() or c in NAME_PUNCTUATION)})
    if refused:
        shown = " ".join(repr(c) for c in refused)
        raise ConfigError(
            "`name` may hold letters, digits, _ - . + and spaces only (it names files on every "
            f"file system and in shell globs); got {name!r}, with {shown}"
        )
    if name != name.strip():
        raise ConfigError(f"`name` must not start or end with a space; got {name!r}")
    if name.split(".")[0].upper() in WINDOWS_DEVICES:
        raise ConfigError(f"`name` {name!r} is a device name on Windows; choose another")
    if len(f"{name}.{'#' * 9}.exr".encode()) > 255:
        raise ConfigError(f"`name` is too long for a file name ({len(name.encode())} bytes)")
