"""The `rollingdepth` command: run, infer, finalize, jobs, selftest, check, colorspaces.

Every RollingDepthError becomes one line on stderr and a non-zero exit; Ctrl-C or SIGTERM (also
when the job was started with SIGINT ignored) stops with exit code 130. No file is ever
half-written; an interrupt while writing says how much of the sequence is on disk.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import NoReturn

from . import __version__, protocol
from .config import (
    ALIGNERS,
    DEFAULT_CHECKPOINT,
    DEFAULT_MAX_FRAME_GIB,
    DEFAULT_MIN_SHOT_FRAMES,
    DEPTH_MODES,
    DEVICES,
    DTYPES,
    PRESETS,
    InferenceConfig,
    OutputConfig,
    preset_config,
)
from .errors import Cancelled, ConfigError, RollingDepthError
from .jobs import add_jobs_arguments
from .progress import STAGES

EXIT_ERROR = 1
EXIT_CANCELLED = 130
# `check --output`: the folder was read, and one of its sequences is not complete (being
# written or swapped, frames missing, no manifest, a swap journal left for a person)
EXIT_NOT_COMPLETE = 3


# ---------------------------------------------------------------------------- progress sinks
class TerminalProgress:
    """One tqdm bar per stage, with counts and ETA."""

    def __init__(self) -> None:
        self.stage: str | None = None
        self.bar = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if stage == "load":  # a 0/1 bar says nothing; a failed load must stay one line
            return
        if stage != self.stage or self.bar is None:
            self.close()
            self.stage = stage
            self.bar = tqdm(
                total=total, desc=f"{STAGES.get(stage, stage):<22}", unit="", leave=True
            )
        if self.bar.total != total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def message(self, text: str) -> None:
        self.close()
        print(text, file=sys.stderr)

    def result(self, payload: dict) -> None:
        self.close()

    def error(self, text: str, kind: str) -> None:
        self.close()
        print(f"rollingdepth: error: {text}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class JsonProgress:
    """The machine-readable protocol: one JSON object per line on stdout.

    ``{"event": "progress", "stage", "done", "total", "message"}`` while running, then exactly one
    ``{"event": "result", ...}`` or ``{"event": "error", "kind", "message"}``.
    """

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stdout
        self.start = time.monotonic()

    def emit(self, payload: dict) -> None:
        self.stream.write(json.dumps(payload) + "\n")
        self.stream.flush()

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.emit(
            {
                "event": "progress",
                "stage": stage,
                "done": done,
                "total": total,
                "message": STAGES.get(stage, stage),
                "elapsed": round(time.monotonic() - self.start, 3),
            }
        )

    def message(self, text: str) -> None:
        self.emit({"event": "message", "message": text})

    def result(self, payload: dict) -> None:
        self.emit({"event": "result", **payload})

    def error(self, text: str, kind: str) -> None:
        self.emit({"event": "error", "kind": kind, "message": text})

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------- arguments
def _preset_default(setting: str) -> str:
    """Help text for a setting the preset decides: its value in the default preset."""
    value = getattr(PRESETS["fast"].inference, setting)
    if isinstance(value, tuple):
        value = " ".join(str(v) for v in value)
    return f"default: the preset's; fast: {value}"


def add_run_arguments(p: argparse.ArgumentParser, command: str = "run") -> None:
    """The plate, output and settings flags of `run`, `infer` and `finalize`.

    Every flag's help line ends with its default, so `--help` is the reference for them.
    """
    p.add_argument(
        "plate", help="video file, image sequence (plate.####.exr, plate.%%04d.png) or folder"
    )
    if command != "infer":
        p.add_argument(
            "-o", "--output", required=True, help="output folder for the EXR sequence (required)"
        )
    p.add_argument(
        "--cache",
        default=None,
        required=command != "run",
        metavar="DIR",
        help="snippet cache folder: bounded memory, resumable runs, reuse across setting changes"
        + (
            " (shared by every farm job of the shot; required)"
            if command != "run"
            else " (default: none, in memory)"
        ),
    )
    if command == "infer":
        p.add_argument(
            "--chunk",
            default=None,
            metavar="K/N",
            help="compute only share K of N, 1-based (default: all blocks)",
        )
    if command != "finalize":
        p.add_argument(
            "--executor",
            default="local",
            choices=("local", "ray"),
            help="ray: send snippet blocks to a Ray cluster, needs --cache on shared storage "
            "(default: %(default)s)",
        )
        p.add_argument(
            "--ray-address",
            default=None,
            help="Ray cluster address (default: $RAY_ADDRESS, else a local instance)",
        )
    p.add_argument(
        "--checkpoint",
        default=DEFAULT_CHECKPOINT,
        help="hub id or local folder in the diffusers layout (default: %(default)s)",
    )
    p.add_argument(
        "--preset",
        default="fast",
        choices=list(PRESETS),
        help="settings bundle; every setting also has its own flag (default: %(default)s)",
    )
    p.add_argument(
        "--device",
        default="auto",
        choices=DEVICES,
        help="auto picks CUDA, then MPS, then CPU (default: %(default)s)",
    )
    p.add_argument(
        "--dtype",
        default=None,
        choices=DTYPES,
        help=f"model precision ({_preset_default('dtype')}; fp32 on CPU)",
    )
    p.add_argument(
        "--dilations",
        type=int,
        nargs="+",
        default=None,
        metavar="D",
        help=f"frame spacings of the snippets, must include 1 ({_preset_default('dilations')})",
    )
    p.add_argument(
        "--snippet-len",
        type=int,
        default=None,
        help=f"frames per snippet, 2-4 ({_preset_default('snippet_len')})",
    )
    p.add_argument(
        "--denoise-steps",
        type=int,
        default=None,
        help=f"denoising steps per snippet ({_preset_default('denoise_steps')})",
    )
    p.add_argument(
        "--refine-steps",
        type=int,
        default=None,
        help=f"refinement steps, 0 = none ({_preset_default('refine_steps')})",
    )
    p.add_argument(
        "--refine-snippet-len",
        type=int,
        default=None,
        help=f"frames per refinement snippet ({_preset_default('refine_snippet_len')})",
    )
    p.add_argument(
        "--refine-start-dilation",
        type=int,
        default=None,
        help=f"first refinement dilation ({_preset_default('refine_start_dilation')})",
    )
    cap = p.add_mutually_exclusive_group()
    cap.add_argument(
        "--cap-dilation",
        dest="cap_dilation",
        action="store_true",
        default=None,
        help="cap dilations that do not fit the clip, as the reference does "
        f"({_preset_default('cap_dilation')})",
    )
    cap.add_argument(
        "--no-cap-dilation",
        dest="cap_dilation",
        action="store_false",
        help="refuse a dilation that does not fit the clip (default: off; on in `paper`)",
    )
    p.add_argument(
        "--res",
        type=int,
        default=None,
        help=f"longer edge for processing, 0 = plate size ({_preset_default('processing_res')})",
    )
    p.add_argument("--seed", type=int, default=None, help=f"noise seed ({_preset_default('seed')})")
    p.add_argument(
        "--aligner",
        default=None,
        choices=ALIGNERS,
        help=f"robust, or adam (the reference solver) ({_preset_default('aligner')})",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="snippets per UNet call, 0 = from the device's memory (default: 0)",
    )
    p.add_argument(
        "--vae-batch-size",
        type=int,
        default=None,
        help=f"frames per VAE call ({_preset_default('vae_batch_size')})",
    )
    p.add_argument(
        "--reference",
        action="store_true",
        help="reproduce the reference implementation: adam aligner, one snippet per UNet call, "
        "VAE batches of 4, its attention layout (with --dtype fp32 --device cpu --seed S; "
        "default: off)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the networks: each new frame size first compiles (about a minute); "
        "pays off on long GPU runs (default: off)",
    )
    p.add_argument(
        "--frames",
        default=None,
        help="frames in the plate's numbering: 1001-1100, every 2nd 1001-1100x2, a set "
        "1001-1020,1050-1100, negative --frames=-10-20 (default: every frame); the chosen "
        "frames run as one clip, frames left out or not on disk are skipped (and said)",
    )
    p.add_argument(
        "--input-colorspace",
        default="auto",
        metavar="NAME",
        help="auto (from file metadata), srgb, linear, or any colour space of the OCIO config; "
        "`rollingdepth colorspaces` lists them (default: %(default)s)",
    )
    add_ocio_config_argument(p)
    p.add_argument(
        "--ocio-view",
        default=None,
        metavar="VIEW",
        help="view of the sRGB display the model sees the plate through "
        "(default: the config's default view)",
    )
    p.add_argument(
        "--ocio-exact",
        action="store_true",
        help="convert every pixel with OCIO's exact processor (default: large frames through "
        "the processor baked into a 3D LUT, within about 1/255)",
    )
    p.add_argument(
        "--max-frame-memory",
        type=float,
        default=DEFAULT_MAX_FRAME_GIB,
        metavar="GIB",
        help="largest decoded frame (float RGB) a plate may need, in GiB; larger image frames "
        "are read in strips and resized on the way, other plates are refused "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--depth-mode",
        default="inverse",
        choices=DEPTH_MODES,
        help="inverse (relative inverse depth), normalized (0..1) or depth (scene units "
        "between --near and --far) (default: %(default)s)",
    )
    p.add_argument(
        "--near",
        type=float,
        default=1.0,
        help="nearest depth, --depth-mode depth (default: %(default)s)",
    )
    p.add_argument(
        "--far",
        type=float,
        default=100.0,
        help="farthest depth, --depth-mode depth (default: %(default)s)",
    )
    p.add_argument("--half", action="store_true", help="write half floats (default: float32)")
    p.add_argument(
        "--channel", default="Z", help="EXR depth channel name, e.g. depth.Z (default: %(default)s)"
    )
    p.add_argument(
        "--name",
        default="depth",
        help="file name prefix NAME.####.exr, no path (default: %(default)s)",
    )
    if command != "infer":
        p.add_argument(
            "--overwrite",
            action="store_true",
            help="replace another run's NAME.*.exr frames in the output folder; they are "
            "removed once the new sequence is complete (default: off, such a folder is refused)",
        )
    p.add_argument(
        "--restore-res",
        action="store_true",
        help="write at the plate's resolution and windows (default: off, processing size)",
    )
    p.add_argument(
        "--upsample",
        default="edge",
        choices=protocol.UPSAMPLE_METHODS,
        help="how --restore-res reaches the plate's size: edge (depth edges follow the plate's "
        "edges, hard where they are clean) or bilinear (default: %(default)s)",
    )
    p.add_argument(
        "--cuts",
        default=None,
        metavar="auto|none|LIST|EDIT",
        help="where the plate changes shot: auto (detect; the default for videos), none (the "
        "default for image sequences), plate frame numbers where a new shot starts, e.g. "
        "1024,1077, or the edit itself (edit.otio, a CMX 3600 .edl or an FCP .xml), its clips "
        "mapped to plate frames by source timecode; every shot gets its own snippets, "
        "alignment and normalisation, and NAME.otio beside the depth conforms it",
    )
    p.add_argument(
        "--min-shot-frames",
        type=int,
        default=None,
        metavar="N",
        help="shortest shot --cuts auto reports, in frames; a flash shorter than this is not "
        f"a cut (default: {DEFAULT_MIN_SHOT_FRAMES})",
    )
    p.add_argument(
        "--holdout",
        default=None,
        metavar="PATTERN",
        help="matte sequence (or movie) of what the alignment must not trust, 1 = ignore: sky, "
        "passing vehicles, glass, burn-ins; matched to the plate's frame numbers, any "
        "resolution of its aspect, alpha or first channel (default: none)",
    )
    p.add_argument(
        "--holdout-alpha",
        action="store_true",
        help="use the plate's own alpha as the holdout matte, image sequences (default: off)",
    )
    if command != "infer":
        p.add_argument(
            "--anchors",
            default=None,
            metavar="FILE",
            help="points of known depth (CSV `frame,x,y,depth[,weight]` in plate pixels, or "
            "JSON): the depth is fitted to them and written in scene units (default: none)",
        )
        p.add_argument(
            "--anchor-fit",
            default="global",
            choices=("global", "smooth"),
            help="one scale/shift for the clip, or one that varies slowly over time "
            "(default: global)",
        )
        p.add_argument(
            "--camera",
            default=None,
            metavar="FILE",
            help="the shot's camera per frame: a USD stage (its first camera, time code = "
            "frame) or a Nuke/Houdini .chan (frame tx ty tz rx ry rz vfov, degrees); the frames "
            "then carry world position P and normals N (default: none)",
        )
        p.add_argument(
            "--focal-length",
            type=float,
            default=None,
            metavar="MM",
            help="no camera file: a fixed camera at the origin with this lens (P in camera space; "
            "default: none)",
        )
        p.add_argument(
            "--film-back",
            type=float,
            nargs=2,
            default=None,
            metavar=("W", "H"),
            help="film back (sensor) width and height in mm, with --focal-length or a .chan "
            "(default: 36 mm wide, the plate's aspect)",
        )
        p.add_argument(
            "--fov",
            type=float,
            default=None,
            metavar="DEG",
            help="no camera file: a fixed camera at the origin with this vertical field of view "
            "(default: none)",
        )
        p.add_argument(
            "--rotation-order",
            default="ZXY",
            metavar="ORDER",
            help="a .chan's rotation order, the first axis applied first (default: ZXY, Nuke's)",
        )
        p.add_argument(
            "--passes",
            default=None,
            metavar="Z,P,N",
            help="what each frame carries: Z (depth), P (position P.X/Y/Z), N (normals "
            "N.X/Y/Z); P and N need a camera and depth in scene units (default: Z, and P and "
            "N with a camera)",
        )
        p.add_argument(
            "--points",
            default=None,
            metavar="FILE.usd",
            help="also write the plate as a time-sampled point cloud with the camera, a USD "
            "file of this name in the output folder (default: none)",
        )
        p.add_argument(
            "--points-budget",
            type=int,
            default=50_000,
            metavar="N",
            help="most points per frame in --points (default: %(default)s)",
        )
    p.add_argument(
        "--confidence",
        action="store_true",
        help="add a `confidence` channel (default: off)",
    )
    p.add_argument(
        "--preview",
        action="store_true",
        help="also write a colourised NAME_preview.mp4 (default: off)",
    )
    p.add_argument(
        "--front-end",
        default=protocol.DEFAULT_FRONT_END,
        choices=protocol.FRONT_ENDS,
        help="which front-end asks for the run, recorded in NAME_run.json and the EXR headers "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--requested-by",
        default=None,
        metavar="TEXT",
        help="who or what asked for the run (e.g. the .blend file), recorded beside the "
        "front-end (default: none)",
    )
    p.add_argument(
        "--progress",
        default="bar",
        choices=("bar", "json"),
        help="bar, or json: one object per line on stdout (default: %(default)s)",
    )


def add_ocio_config_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ocio-config",
        default=None,
        metavar="PATH|URI",
        help="OCIO config (default: $OCIO, else ocio://studio-config-latest)",
    )


class _NoAbbreviations(argparse.ArgumentParser):
    """A subcommand's parser that takes options only by their full names."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})


def build_parser() -> argparse.ArgumentParser:
    # no abbreviations: `jobs --chunk 1/2` must be an unknown option, not `--chunks`
    parser = argparse.ArgumentParser(
        prog="rollingdepth",
        description="Temporally consistent depth for VFX plates.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"rollingdepth {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_NoAbbreviations)
    add_run_arguments(sub.add_parser("run", help="estimate depth for a plate and write EXRs"))
    add_run_arguments(
        sub.add_parser(
            "infer", help="farm step 1: compute snippet blocks (a --chunk K/N share) into --cache"
        ),
        "infer",
    )
    add_run_arguments(
        sub.add_parser(
            "finalize", help="farm step 2: align, merge and write EXRs from a complete --cache"
        ),
        "finalize",
    )
    jobs = sub.add_parser(
        "jobs", help="print the farm job list: N `infer --chunk` jobs, then `finalize` after them"
    )
    add_run_arguments(jobs, "jobs")
    add_jobs_arguments(jobs)
    selftest = sub.add_parser("selftest", help="run the whole pipeline with a tiny random model")
    selftest.add_argument("--keep", default=None, help="keep the outputs in this folder")
    selftest.add_argument(
        "--progress",
        default="bar",
        choices=("bar", "json"),
        help="bar, or json: one object per line on stdout, as `run` (default: %(default)s)",
    )
    check = sub.add_parser(
        "check", help="report Python, torch, devices (and a checkpoint, or an output folder)"
    )
    check.add_argument("--json", action="store_true")
    check.add_argument(
        "--output",
        default=None,
        metavar="DIR",
        help="report the depth sequences in DIR: complete, being written, or what an "
        "interrupted run left (a cut-short swap is completed, an unpublished staging removed); "
        "exit 0 when every sequence is complete, 3 when one is not",
    )
    check.add_argument(
        "--checkpoint",
        default=None,
        help="also check these weights (hub id or folder) without downloading: reports "
        "checkpoint_folder, or checkpoint_error (a run would fail), or checkpoint_download",
    )
    estimate = sub.add_parser(
        "estimate",
        help="what a run of a plate of this size would cost on this machine, learned from "
        "its earlier runs (no plate is read, no model loaded)",
    )
    add_estimate_arguments(estimate)
    spaces = sub.add_parser(
        "colorspaces", help="list the OCIO config's colour spaces, displays and views"
    )
    add_ocio_config_argument(spaces)
    return parser


# ---------------------------------------------------------------------------- commands
REFERENCE_SETTINGS = {"aligner": "adam", "batch_size": 1, "vae_batch_size": 4}


def inference_config(args: argparse.Namespace) -> InferenceConfig:
    """The inference settings the run flags in ``args`` ask for (preset, then flags)."""
    return preset_config(
        args.preset,
        dilations=args.dilations,
        snippet_len=args.snippet_len,
        denoise_steps=args.denoise_steps,
        cap_dilation=args.cap_dilation,
        refine_steps=args.refine_steps,
        refine_snippet_len=args.refine_snippet_len,
        refine_start_dilation=args.refine_start_dilation,
        processing_res=args.res,
        dtype=args.dtype,
        seed=args.seed,
        aligner=args.aligner,
        batch_size=args.batch_size,
        vae_batch_size=args.vae_batch_size,
        confidence=args.confidence or None,
        min_shot_frames=args.min_shot_frames,
    )


def command_run(args: argparse.Namespace, sink) -> dict:
    from .cameras import CameraRequest
    from .colorspace import ColorRequest
    from .runner import run_plate

    if args.reference and args.cache:
        raise ConfigError("`--reference` runs in memory at full precision; it cannot use `--cache`")
    if args.reference and args.compile:
        raise ConfigError("`--reference` runs the reference's kernels; it cannot `--compile`")
    if args.reference:
        for key, value in REFERENCE_SETTINGS.items():
            given = getattr(args, key)
            if given is not None and given != value:
                flag = "--" + key.replace("_", "-")
                raise ConfigError(f"`--reference` sets `{flag} {value}`; got `{flag} {given}`")
            setattr(args, key, value)

    config = inference_config(args)
    output = OutputConfig(
        depth_mode=args.depth_mode,
        near=args.near,
        far=args.far,
        half=args.half,
        channel=args.channel,
        restore_res=args.restore_res,
        upsample=args.upsample,
        preview=args.preview,
        name=args.name,
        passes=_passes(getattr(args, "passes", None)),
    )
    output.check(confidence=config.confidence)
    common = dict(  # what `run`, `infer` and `finalize` all pass on
        plate=args.plate,
        config=config,
        output=output,
        checkpoint=args.checkpoint,
        preset=args.preset,
        device=args.device,
        dtype_explicit=args.dtype is not None,
        frames=args.frames,
        input_colorspace=ColorRequest(
            args.input_colorspace, args.ocio_config, args.ocio_view, args.ocio_exact
        ),
        progress=sink,
        message=sink.message,
    )
    return run_plate(
        **common,
        output_dir=getattr(args, "output", None),
        cache_dir=args.cache,
        mode=args.command,
        chunk=getattr(args, "chunk", None),
        executor=getattr(args, "executor", "local"),
        ray_address=getattr(args, "ray_address", None),
        anchors=getattr(args, "anchors", None),
        anchor_fit=getattr(args, "anchor_fit", "global"),
        cuts=args.cuts,
        holdout=args.holdout,
        holdout_alpha=args.holdout_alpha,
        overwrite=getattr(args, "overwrite", False),
        max_frame_memory=args.max_frame_memory,
        reference=args.reference,
        compile=args.compile,
        front_end=args.front_end,
        requested_by=args.requested_by,
        camera=CameraRequest(
            file=getattr(args, "camera", None),
            focal_length=getattr(args, "focal_length", None),
            film_back=None if getattr(args, "film_back", None) is None else tuple(args.film_back),
            fov=getattr(args, "fov", None),
            rotation_order=getattr(args, "rotation_order", "ZXY"),
        ),
        points=getattr(args, "points", None),
        points_budget=getattr(args, "points_budget", 50_000),
    ).to_message()


def _passes(text: str | None) -> tuple[str, ...] | None:
    """``"Z,P,N"`` -> ("Z", "P", "N"); checked by the output settings."""
    if text is None:
        return None
    return tuple(p.strip().upper() for p in text.split(",") if p.strip())


def command_selftest(args: argparse.Namespace, sink) -> dict:
    from .selftest import run_selftest

    return run_selftest(keep=args.keep, progress=sink, message=sink.message)


def add_estimate_arguments(p: argparse.ArgumentParser) -> None:
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--plate-size", metavar="WxH", help="the plate's size")
    size.add_argument("--plate", help="the plate (only its size is read)")
    p.add_argument(
        "--shots",
        type=int,
        nargs="+",
        required=True,
        metavar="N",
        help="frames of each shot (one number: one shot)",
    )
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT)
    p.add_argument("--preset", default="fast", choices=list(PRESETS))
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--dtype", default=None, choices=DTYPES)
    p.add_argument("--dilations", type=int, nargs="+", default=None, metavar="D")
    p.add_argument("--snippet-len", type=int, default=None)
    p.add_argument("--refine-steps", type=int, default=None)
    p.add_argument("--res", type=int, default=None)
    p.add_argument("--restore-res", action="store_true")
    p.add_argument(
        "--kept",
        action="store_true",
        help="the model's work for these settings is kept (a --cache rerun that only "
        "re-aligns): no model passes, and no model loads unless refinement needs it",
    )
    p.add_argument("--json", action="store_true")


def command_estimate(args: argparse.Namespace) -> dict:
    from .checkpoint import find_checkpoint
    from .costs import estimate_run
    from .device import describe_device, resolve_device, resolve_dtype

    if args.plate:
        from .plate import open_plate

        plate = open_plate(args.plate)
        width, height = plate.info.width, plate.info.height
        plate.close()
    else:
        try:
            width, height = (int(v) for v in args.plate_size.lower().split("x"))
        except ValueError as exc:
            raise ConfigError(
                f"`--plate-size` is WxH, e.g. 1920x1080; got {args.plate_size!r}"
            ) from exc
    config = preset_config(
        args.preset,
        dilations=args.dilations,
        snippet_len=args.snippet_len,
        refine_steps=args.refine_steps,
        processing_res=args.res,
        dtype=args.dtype,
    )
    device = resolve_device(args.device)
    dtype = resolve_dtype(config.dtype, device, explicit=args.dtype is not None)
    try:
        folder = find_checkpoint(args.checkpoint)
    except RollingDepthError:
        folder = None  # the estimate does without the model's size; the run will say why
    kept = {"pending": 0, "load": config.refine_steps > 0} if args.kept else {}
    return estimate_run(
        list(args.shots), (height, width), config, describe_device(device), dtype, folder,
        restore_res=args.restore_res, **kept,
    )  # fmt: skip


def command_check(args: argparse.Namespace) -> dict:
    import platform

    import torch

    from .device import describe_device, resolve_device

    info = {
        "rollingdepth": __version__,
        "python": platform.python_version(),
        "executable": sys.executable,
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
        "device": describe_device(resolve_device("auto")),
    }
    if args.checkpoint:
        from .checkpoint import find_checkpoint, hub_offline, locate_checkpoint

        info["checkpoint"] = args.checkpoint
        try:
            folder = find_checkpoint(args.checkpoint)
            if folder is None and hub_offline():
                locate_checkpoint(args.checkpoint)  # raises the run's own WeightsError
        except RollingDepthError as exc:
            info["checkpoint_error"] = str(exc)
        else:
            info["checkpoint_folder"] = str(folder) if folder else None
            info["checkpoint_download"] = folder is None
    return info


def _to_stderr(text: str) -> None:
    print(text, file=sys.stderr)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # a process started for this command (not a caller's own)
        from .costs import note_process_start

        note_process_start()  # its start-up is part of a run's cost
        _leave(_command(None))
    return _command(argv)


def _leave(code: int) -> NoReturn:
    """End the command's own process once its work and its words are out, without the
    interpreter's teardown: the last garbage collections over torch's and diffusers' objects
    took 1.3 s of every run on a 2-core CPU (0.2 s without), after the result was printed,
    and a front-end or a farm waits for the process, not the line. What a normal exit does
    that matters is done first, in its order: other threads joined, exit handlers run (Ray's
    shutdown, logging's flush), the streams flushed."""
    main_thread = threading.main_thread()
    for thread in threading.enumerate():
        if thread is not main_thread and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # a reader that has gone, a stream already closed: nothing more can reach them
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def _command(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="rollingdepth: %(message)s")
    for name in ("diffusers", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Farm wrappers start jobs with SIGINT ignored, and Python then installs no handler of
    # its own: set both explicitly so that Ctrl-C and a kill always stop the run.
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)

    if args.command == "check" and args.output:
        from .publish import SETTLED_STATES, check_output

        try:
            report = check_output(args.output, message=lambda text: print(text, file=sys.stderr))
        except RollingDepthError as exc:
            print(f"rollingdepth: error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        if args.json:
            print(json.dumps(report))
        for entry in [] if args.json else report:
            print(f"{entry['name']}: {entry['state']}" + (
                f" (frames {entry['frames']})" if entry.get("frames") else ""
            ) + (", read-only" if entry.get("read_only") else "") + (
                f": {entry['detail']}" if entry.get("detail") else ""
            ))  # fmt: skip
        settled = all(entry["state"] in SETTLED_STATES for entry in report)
        return 0 if settled else EXIT_NOT_COMPLETE

    if args.command == "check":
        info = command_check(args)
        if args.json:
            print(json.dumps(info))
        else:
            for key, value in info.items():
                print(f"{key:>12}: {value}")
        return 0

    if args.command == "estimate":
        from .costs import estimate_text

        try:
            report = command_estimate(args)
        except RollingDepthError as exc:
            print(f"rollingdepth: error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        print(json.dumps(report) if args.json else estimate_text(report))
        return 0

    if args.command == "colorspaces":
        from .colorspace import describe_config

        try:
            print(describe_config(args.ocio_config))
        except RollingDepthError as exc:
            print(f"rollingdepth: error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        return 0

    if args.command == "jobs":
        from .jobs import command_jobs

        try:
            config = inference_config(args)
            config.check()
            sys.stdout.write(command_jobs(args, build_parser(), config, _to_stderr))
        except RollingDepthError as exc:
            print(f"rollingdepth: error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        return 0

    sink = JsonProgress() if getattr(args, "progress", "bar") == "json" else TerminalProgress()
    try:
        command = command_selftest if args.command == "selftest" else command_run
        result = command(args, sink)
    except KeyboardInterrupt:
        # Writing turns an interrupt into Cancelled with what is on disk; here it came
        # earlier or from outside the writer, so claim nothing about the output folder.
        sink.error("cancelled", protocol.KIND_CANCELLED)
        return EXIT_CANCELLED
    except Cancelled as exc:
        sink.error(str(exc), protocol.KIND_CANCELLED)
        return EXIT_CANCELLED
    except RollingDepthError as exc:
        sink.error(str(exc), protocol.error_kind(exc))
        return EXIT_ERROR
    sink.result(result)
    if isinstance(sink, TerminalProgress):
        print(result.get("summary", ""), file=sys.stderr)
    return 0 if result.get("ok", True) else EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
