"""What a run will cost on this machine, learned from what earlier runs here measured.

A run's time is the sum of its stages (`STAGE_WORK`: the process's start, the model's load,
encode, model passes, align, merge, refine, write, publish), each grown by what it does:
frames x pixels, model passes x latent pixels, the model's size, a fixed cost per network
call (`RunShape.work`, in a nominal model's seconds). Each finished run records its stage
times under a key of device, precision, model and driver (the CLI's run and the panel's
session time their stages differently). An estimate scales each stage by what the runs of
its key measured of it: one earlier run gives this machine's factor per stage; runs of
different sizes give a fixed part and a factor. Without any earlier run the estimate is the
nominal model with the networks at this device's pace, timed now (`device_flops`): rough.

A running job's remaining time (protocol.RemainingClock, which the add-on shares) starts
from the estimate and follows what the run measures as it goes.

The book is a small JSON file in the user's config folder (``$ROLLINGDEPTH_CONFIG_DIR``, else
the platform's config folder): both front-ends' runs on this machine add to it.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .atomic import write_text_atomic
from .errors import OutputError
from .protocol import STAGE_WORK, duration_text
from .snippets import resolve_dilations

BOOK_NAME = "costs.json"
# The stages a run's time is the sum of (`scan` is a cached run's `encode`, timed as it;
# `preview` is the panel's, untimed)
RUN_STAGES = tuple(s for s in STAGE_WORK if s not in ("scan", "preview"))
BOOK_VERSION = 2  # what an observation's `work` means (below); other versions start afresh
KEEP_OBSERVATIONS = 12  # per key: the latest; a machine's speed drifts with drivers, load
# The nominal cost model. Each stage's time is the sum of what it does, each part scaled by
# what it grows with (frames x pixels, model passes x latent pixels, the model's size); its
# constants are a 2-core CPU's (this project's machines, measured with the tiny and the
# full-size random models). An observation stores, per stage, its nominal seconds as its
# `work`: the book learns one factor per stage (or a fixed part and a factor, from runs of
# different sizes), so the nominal model only has to get how a stage grows right.
# The FLOP/s the nominal model's network stages assume: this project's 2-core CPU, one
# thread (the full-size random model's passes ran at 50-58 GFLOP/s at 64x48 to 256x192).
REFERENCE_FLOPS = 5e10
# FLOPs per pixel of one frame per parameter, counted with torch's FlopCounterMode on the
# SD2-sized networks (`random_checkpoint` "full"): the UNet per latent pixel (0.19-0.22), the
# VAE's decoder and encoder per processing pixel (0.19, 0.12: few parameters, full size).
UNET_FLOPS_PER_PARAM_PIXEL = 0.2
DECODER_FLOPS_PER_PARAM_PIXEL = 0.19
ENCODER_FLOPS_PER_PARAM_PIXEL = 0.12
# Self-attention over a snippet's frames at the UNet's top level grows with the square of its
# tokens (frames x latent pixels): per score, per head and layer, on a 2-core CPU (measured
# once here: the tiny random model at 768 px spent ~11 s per snippet there). SD2's top level:
# 5 heads, 2 + 3 attention layers.
ATTENTION_SECONDS_PER_SCORE = 7.5e-9
SD2_ATTENTION = {"heads": 5, "layers": 5}
SD2_PARAMETERS = {"unet": 865_000_000, "vae_encoder": 34_000_000,
                  "vae_decoder": 49_500_000, "tensors": 934}  # fmt: skip
# What does not grow with pixels: Python and the framework per weight tensor of a network
# call (the tiny model's passes are all this: ~7 ms per snippet for ~300 tensors).
SECONDS_PER_TENSOR_CALL = 2.3e-5
SECONDS_PER_FRAME = 3e-3  # reading, resizing or writing one frame, besides its pixels
SECONDS_PER_PLATE_PIXEL = 2e-8  # decoding the plate, per plate pixel of a frame
SECONDS_PER_OUTPUT_PIXEL = 2e-7  # writing EXRs, per frame pixel
SECONDS_PER_ALIGN_PIXEL = 5e-8  # alignment and merge, per processing pixel of a frame
START_SECONDS = 3.0  # a fresh engine process: Python, torch, the request checked
LOAD_SECONDS = 3.5  # the model's libraries, before the weights are read
LOAD_BYTES_PER_SECOND = 6e8  # reading float32 weights (the full-size model: 7-12 s)
PUBLISH_SECONDS = 0.05
# Without a measurement (`device_flops`): the networks' pace by device type.
DEVICE_FLOPS = {"cpu": REFERENCE_FLOPS, "mps": 3e12, "cuda": 3e13}
# Of a square matmul's FLOP/s (`device_flops`), what the networks reach: measured on this
# project's CPU (matmul ~100 GFLOP/s a thread, passes 50-58); a GPU's share is not measured
# here (small kernels and memory-bound layers reach less of its peak: a guess).
NETWORK_SHARE = {"cpu": 0.5, "cuda": 0.25, "mps": 0.25}


# ---------------------------------------------------------------------------- where
def config_dir() -> Path:
    """The user's config folder for RollingDepth (not created here)."""
    if os.environ.get("ROLLINGDEPTH_CONFIG_DIR"):
        return Path(os.environ["ROLLINGDEPTH_CONFIG_DIR"])
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home())) / "rollingdepth"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "rollingdepth"
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "rollingdepth"


# ---------------------------------------------------------------------------- a process's start
_process_start: float | None = None  # time.monotonic() when this engine process began


def note_process_start() -> None:
    """This process was started for one run (the command line's entry): its first run
    records the process's start-up (Python, torch, the request checked) as its `start`."""
    global _process_start
    _process_start = time.monotonic() - process_age()


def take_process_start(now: float) -> float | None:
    """Seconds from the process's start to ``now`` (monotonic), once per process: a second
    run in it started nothing."""
    global _process_start
    began, _process_start = _process_start, None
    return None if began is None else max(now - began, 0.0)


def process_age() -> float:
    """Seconds since this process began: the kernel's word on Linux, else since the
    engine's package was imported (the interpreter's own start, a few ms, is then missed)."""
    try:
        stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(uptime - int(stat[19]) / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError, AttributeError):
        from . import IMPORTED

        return time.monotonic() - IMPORTED


# ---------------------------------------------------------------------------- what a run does
@dataclass(frozen=True)
class RunShape:
    """The work of one run, in what the stages' times grow with."""

    frames: int
    snippets: int  # model passes to run (snippets not yet predicted), over every shot
    processing: tuple[int, int]  # (h, w) the model works at
    output: tuple[int, int]  # (h, w) of the written frames
    refine_steps: int = 0
    snippet_len: int = 3
    load: bool = True  # the model is loaded for this run (not already in memory)
    write: bool = True  # frames are written (the panel's run writes none)
    plate: tuple[int, int] | None = None  # (h, w) of the plate read; None: the processing's
    model: dict = field(default_factory=dict)  # `model_parameters`; empty: SD2's
    start: bool = True  # a process is started for the run (the CLI's; not a panel session)

    def work(self, stage: str, flops: float = REFERENCE_FLOPS) -> float:
        """``stage``'s nominal seconds: what it does, each part by what it grows with, at
        ``flops`` for the networks (the book's unit of work: see REFERENCE_FLOPS)."""
        m = {**SD2_PARAMETERS, **SD2_ATTENTION, **self.model}
        h, w = self.processing
        pixels, latent = h * w, h * w / 64
        plate = (self.plate or self.processing)[0] * (self.plate or self.processing)[1]
        tensors = m["tensors"] * SECONDS_PER_TENSOR_CALL  # one call of each network
        if stage == "start":
            return START_SECONDS if self.start else 0.0
        if stage == "load":
            weights = 4 * (m["unet"] + m["vae_encoder"] + m["vae_decoder"])
            return LOAD_SECONDS + weights / LOAD_BYTES_PER_SECOND if self.load else 0.0
        if stage == "publish":
            return PUBLISH_SECONDS if self.write else 0.0
        if stage in ("encode", "scan"):
            vae = m["vae_encoder"] * ENCODER_FLOPS_PER_PARAM_PIXEL * pixels / flops
            return self.frames * (SECONDS_PER_FRAME + plate * SECONDS_PER_PLATE_PIXEL + vae)
        if stage == "snippets":
            frames = self.snippet_len
            unet = frames * latent * m["unet"] * UNET_FLOPS_PER_PARAM_PIXEL / flops
            decode = frames * pixels * m["vae_decoder"] * DECODER_FLOPS_PER_PARAM_PIXEL / flops
            scores = (frames * latent) ** 2 * m["heads"] * m["layers"]
            attention = scores * ATTENTION_SECONDS_PER_SCORE * REFERENCE_FLOPS / flops
            return self.snippets * (unet + decode + attention + tensors)
        if stage == "refine":
            unet = latent * m["unet"] * UNET_FLOPS_PER_PARAM_PIXEL / flops
            return self.frames * self.refine_steps * (unet + tensors)
        if stage in ("write", "preview"):
            if not self.write:
                return 0.0
            out = self.output[0] * self.output[1]
            return self.frames * (SECONDS_PER_FRAME + out * SECONDS_PER_OUTPUT_PIXEL)
        return self.frames * (SECONDS_PER_FRAME / 10 + pixels * SECONDS_PER_ALIGN_PIXEL)


def run_shape(
    shot_frames: list[int],
    plate: tuple[int, int],
    processing: tuple[int, int],
    dilations: tuple[int, ...],
    snippet_len: int = 3,
    cap: bool = True,
    refine_steps: int = 0,
    restore_res: bool = False,
    load: bool = True,
    write: bool = True,
    parameters: dict | None = None,
    start: bool = True,
) -> RunShape:
    """The work of a run over shots of ``shot_frames`` frames each (one shot: one length)."""
    snippets = 0
    for n in shot_frames:
        # dilations capped to one value share their model passes
        for d in set(resolve_dilations(n, snippet_len, dilations, cap)):
            snippets += max(0, n - (snippet_len - 1) * d)
    return RunShape(
        frames=sum(shot_frames),
        snippets=snippets,
        processing=processing,
        output=plate if restore_res else processing,
        refine_steps=refine_steps,
        snippet_len=snippet_len,
        load=load,
        write=write,
        plate=plate,
        model=dict(parameters or {}),
        start=start,
    )


# ---------------------------------------------------------------------------- estimates
@dataclass
class Estimate:
    seconds: float
    stages: dict[str, float]
    measured: bool  # from this machine's earlier runs (else a rough first guess)

    def to_message(self) -> dict:
        return asdict(self)


def cost_key(device: str, dtype: str, parameters: dict[str, int], driver: str = "run") -> str:
    """Runs that cost alike: one device, precision, model size (`model_parameters`) and
    driver (the CLI's run; the panel's session, which writes no frames)."""
    model = f"unet {parameters.get('unet', 0)}"
    return f"{device}|{dtype}|{model}|{driver}"


def model_parameters(folder: str | Path | None) -> dict[str, int]:
    """What a checkpoint's cost grows with, from its configs and safetensors headers (no
    weights are read): the parameters of its UNet (``unet``), VAE (``vae``, and its
    ``vae_encoder`` and ``vae_decoder``), their weight ``tensors``, and the UNet's top-level
    attention (``heads``, ``layers``); empty where a folder or file is missing."""
    found: dict[str, int] = {}
    if folder is None:
        return found
    try:  # the top level's attention: its heads and layers (legacy name: head "dim")
        unet = json.loads(Path(folder, "unet", "config.json").read_text(encoding="utf-8"))
        heads = unet.get("num_attention_heads") or unet.get("attention_head_dim") or 8
        heads = heads[0] if isinstance(heads, list) else heads
        per_block = unet.get("layers_per_block", 2)
        per_block = per_block[0] if isinstance(per_block, list) else per_block
        if "CrossAttn" in (unet.get("down_block_types") or [""])[0]:
            found["heads"] = int(heads)
            found["layers"] = 2 * int(per_block) + 1
    except (OSError, ValueError, TypeError):
        pass
    tensors = 0
    for part in ("unet", "vae"):
        sizes: dict[str, int] = {}
        for file in sorted(Path(folder, part).glob("*.safetensors")):
            try:
                with open(file, "rb") as handle:
                    length = int.from_bytes(handle.read(8), "little")
                    header = json.loads(handle.read(length))
            except (OSError, ValueError):
                continue
            for name, entry in header.items():
                if name != "__metadata__":
                    count = 1
                    for dim in entry.get("shape", []):
                        count *= int(dim)
                    sizes[name] = count
        if not sizes:
            continue
        found[part] = sum(sizes.values())
        if part == "unet":
            tensors += len(sizes)
        else:  # the encoder runs once a frame; a pass runs the UNet and the decoder
            decoder = [n for n in sizes if n.startswith(("decoder.", "post_quant"))]
            found["vae_decoder"] = sum(sizes[n] for n in decoder)
            found["vae_encoder"] = found[part] - found["vae_decoder"]
            tensors += len(decoder)
    if tensors:
        found["tensors"] = tensors
    return found


@functools.lru_cache(maxsize=8)  # once a process (the panel asks at every setting)
def device_flops(device_type: str, dtype: str = "fp32") -> float:
    """The FLOP/s the networks reach on ``device_type`` (``cpu``, ``cuda``, ``mps``): a
    square matmul timed here (the best of 7, after a warm-up; ~30 ms on a CPU), times the share of
    it a UNet's convolutions and attention reach (NETWORK_SHARE). DEVICE_FLOPS where
    torch or the device cannot say."""
    try:
        import torch

        kind = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype, torch.float32)
        if device_type == "cpu":
            kind = torch.float32 if kind == torch.float16 else kind
        n = 512 if device_type == "cpu" else 4096
        a = torch.randn(n, n, device=device_type, dtype=kind)
        sync = getattr(getattr(torch, device_type, None), "synchronize", lambda: None)
        best = float("inf")
        for _ in range(8):  # the first is the warm-up; the best of the rest: the pace unshared
            sync()
            clock = time.perf_counter()
            _ = a @ a
            sync()
            best = min(best, time.perf_counter() - clock)
        return 2 * n**3 / best * NETWORK_SHARE.get(device_type, 0.25)
    except (ImportError, RuntimeError, AttributeError):  # the run will say it; rough it is
        return DEVICE_FLOPS.get(device_type, REFERENCE_FLOPS)


def first_guess(shape: RunShape, device_type: str, flops: float | None = None) -> Estimate:
    """An estimate without any earlier run of its kind: the nominal cost model with the
    networks at ``flops`` (`device_flops`: this device's measured rate), the rest at a
    2-core CPU's pace."""
    flops = flops or DEVICE_FLOPS.get(device_type, REFERENCE_FLOPS)
    stages = {stage: shape.work(stage, flops) for stage in RUN_STAGES}
    stages = {k: v for k, v in stages.items() if v > 0}
    return Estimate(sum(stages.values()), stages, measured=False)


@dataclass
class CostBook:
    """Observations per key: ``{key: [{"work": {stage: nominal s}, "seconds": {stage: s}}]}``
    (`RunShape.work`: what the stage did, in the nominal model's seconds)."""

    path: Path
    observations: dict[str, list[dict]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path | None = None) -> CostBook:
        path = Path(path) if path is not None else config_dir() / BOOK_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            current = isinstance(data, dict) and data.get("version") == BOOK_VERSION
            observations = data.get("observations", {}) if current else {}
        except (OSError, ValueError):
            observations = {}  # none yet, unreadable or of other units: start afresh
        return cls(path, observations)

    def record(self, key: str, shape: RunShape, seconds: dict[str, float]) -> None:
        """Add a finished run's stage times (written at once; best effort: a read-only
        config folder only costs the next estimate its learning)."""
        entry = {
            "work": {stage: shape.work(stage) for stage in seconds},
            "seconds": {stage: float(s) for stage, s in seconds.items()},
            "time": time.time(),
        }
        kept = [*self.observations.get(key, []), entry][-KEEP_OBSERVATIONS:]
        self.observations[key] = kept
        text = json.dumps({"version": BOOK_VERSION, "observations": self.observations})
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.path, text)
        except (OSError, OutputError):
            pass

    def estimate(self, key: str, shape: RunShape, fallback: Estimate | None = None) -> Estimate:
        """``shape``'s time from the key's observations; ``fallback`` for the stages they
        never measured (or all of them, with none)."""
        seen = self.observations.get(key, [])
        stages: dict[str, float] = {}
        for stage in RUN_STAGES:
            work = shape.work(stage)
            points = [
                (o["work"][stage], o["seconds"][stage])
                for o in seen
                if stage in o.get("seconds", {}) and o["work"].get(stage, 0) > 0
            ]
            if work <= 0:
                continue
            if points:
                stages[stage] = _predict(points, work)
            elif fallback is not None and stage in fallback.stages:
                stages[stage] = fallback.stages[stage]
        measured = bool(seen) and any(
            stage in o.get("seconds", {}) for o in seen for stage in ("snippets",)
        )
        if not seen and fallback is not None:
            return fallback
        return Estimate(sum(stages.values()), stages, measured=measured)


def _predict(points: list[tuple[float, float]], work: float) -> float:
    """Seconds for ``work`` (nominal seconds: `RunShape.work`) from (work, seconds) points:
    a fixed part and a per-unit part fitted when the points span different amounts of work,
    else this machine's factor over the nominal model alone."""
    works = [w for w, _ in points]
    if max(works) > 1.5 * min(works):
        n = len(points)
        mean_w = sum(works) / n
        mean_s = sum(s for _, s in points) / n
        var = sum((w - mean_w) ** 2 for w in works)
        slope = sum((w - mean_w) * (s - mean_s) for w, s in points) / var
        fixed = mean_s - slope * mean_w
        if slope > 0 and fixed >= 0:
            return fixed + slope * work
    # per unit, from the observations nearest in size (overheads weigh alike there), the
    # latest first among equals (the points come oldest first)
    order = sorted(range(len(points)), key=lambda i: (abs(points[i][0] - work), -i))
    nearest = [points[i] for i in order[:3]]
    rate = sum(s for _, s in nearest) / sum(w for w, _ in nearest)
    return rate * work


def estimate_run(
    shot_frames: list[int],
    plate: tuple[int, int],
    config,
    device: str,
    dtype: str,
    checkpoint_folder: str | Path | None,
    restore_res: bool = False,
    driver: str = "run",
    load: bool = True,
    write: bool = True,
    book: CostBook | None = None,
    pending: int | None = None,
) -> dict:
    """What a run of ``config`` over shots of ``shot_frames`` frames of a ``plate`` (h, w)
    will cost on ``device`` (`device.describe_device`'s words): frames, shots, sizes, seconds
    (and whether this machine measured them), and, when the processing size is larger than
    the plate, the same run at the plate's own size (the faster choice: no detail is lost).
    ``pending``: the model passes still to run (a session keeps those it ran), else all."""
    from .model import processing_size

    book = book if book is not None else CostBook.load()
    parameters = model_parameters(checkpoint_folder)
    key = cost_key(device, dtype, parameters, driver)
    device_type = device.split(" ")[0]
    # without an earlier run of its kind, the networks' pace is this device's, measured now
    flops = None if book.observations.get(key) else device_flops(device_type, dtype)

    def one(res: int) -> tuple[tuple[int, int], Estimate]:
        size = processing_size(plate[0], plate[1], res)
        shape = run_shape(shot_frames, plate, size, config.dilations, config.snippet_len,
                          config.cap_dilation, config.refine_steps, restore_res, load,
                          write, parameters, start=driver == "run")  # fmt: skip
        if pending is not None and res == config.processing_res:
            shape = replace(shape, snippets=pending)
        return size, book.estimate(key, shape, first_guess(shape, device_type, flops))

    size, estimate = one(config.processing_res)
    larger = size[0] * size[1] > plate[0] * plate[1]
    report = {
        "frames": sum(shot_frames),
        "shots": len(shot_frames),
        "plate_size": list(plate),
        "processing_size": list(size),
        "seconds": round(estimate.seconds, 1),
        "stages": {k: round(v, 2) for k, v in estimate.stages.items()},
        "measured": estimate.measured,
        "larger_than_plate": larger,
        "at_plate_size": None,
    }
    if larger:
        plate_size, faster = one(0)
        report["at_plate_size"] = {
            "processing_size": list(plate_size),
            "seconds": round(faster.seconds, 1),
        }
    return report


def estimate_text(report: dict) -> str:
    """The estimate in an artist's words, one or two sentences."""
    h, w = report["processing_size"]
    ph, pw = report["plate_size"]
    shots = f" in {report['shots']} shots" if report["shots"] > 1 else ""
    rough = "" if report["measured"] else " (rough: no earlier run on this device)"
    text = (
        f"{report['frames']} frames{shots} at {w}x{h}: {duration_text(report['seconds'])}{rough}."
    )
    faster = report.get("at_plate_size")
    if report["larger_than_plate"] and faster:
        text += (
            f" That is larger than the plate ({pw}x{ph}), which adds time but no detail; at "
            f"the plate's size: {duration_text(faster['seconds'])}."
        )
    return text
