"""What a run will cost on this machine, learned from what earlier runs here measured.

Each finished run records, per stage, how long it took and how much work it did (frames x
pixels, model passes x pixels) under a key of device, precision, model and driver (the CLI's
run and the panel's session time their stages differently). An estimate divides a new run's
work by what the runs of its key measured: one earlier run gives a cost per unit of work; two
runs of different sizes give a fixed part and a per-unit part (small runs carry overheads a
per-unit cost alone overstates). Without any earlier run the estimate is rough: the model's
size and a device's typical speed.

A running job's remaining time (protocol.RemainingClock, which the add-on shares) starts
from the estimate and follows what the run measures as it goes.

The book is a small JSON file in the user's config folder (``$ROLLINGDEPTH_CONFIG_DIR``, else
the platform's config folder): both front-ends' runs on this machine add to it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .protocol import STAGE_WORK, duration_text
from .snippets import resolve_dilations

BOOK_NAME = "costs.json"
KEEP_OBSERVATIONS = 12  # per key: the latest; a machine's speed drifts with drivers, load
# Rough speeds for a first estimate (no earlier run of the key): effective FLOP/s of the model
# by device type, and what a frame costs outside the model per pixel. Measured loosely on
# this project's machines (2-core CPU: ~30 GFLOP/s in fp32); a first estimate says it is rough.
DEVICE_FLOPS = {"cpu": 3e10, "mps": 3e12, "cuda": 3e13}
# UNet FLOPs per latent pixel of one frame per parameter (SD2: ~0.4 TFLOP for a 64x64 latent
# with 865 M parameters), and the VAE encoder's per plate pixel of one frame per parameter.
UNET_FLOPS_PER_PARAM_PIXEL = 0.11
VAE_FLOPS_PER_PARAM_PIXEL = 0.012
# Self-attention over a snippet's frames at the UNet's top level grows with the square of its
# tokens (frames x latent pixels): per score, per head and layer, on a 2-core CPU (measured
# once here: the tiny random model at 768 px spent ~11 s per snippet there); faster devices
# in proportion to DEVICE_FLOPS. SD2's top level: 5 heads, 2 + 3 attention layers.
ATTENTION_SECONDS_PER_SCORE = 7.5e-9
SD2_ATTENTION = {"heads": 5, "layers": 5}
SECONDS_PER_OUTPUT_PIXEL = 2e-7  # writing EXRs, per frame pixel
SECONDS_PER_ALIGN_PIXEL = 5e-8  # alignment and merge, per processing pixel of a frame
LOAD_SECONDS = 3.0  # starting the engine, before the weights are read
LOAD_BYTES_PER_SECOND = 2e8  # reading float32 weights from disk


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


# ---------------------------------------------------------------------------- what a run does
@dataclass(frozen=True)
class RunShape:
    """The work of one run, in the units the stages' times grow with."""

    frames: int
    snippets: int  # model passes to run (snippets not yet predicted), over every shot
    processing: tuple[int, int]  # (h, w) the model works at
    output: tuple[int, int]  # (h, w) of the written frames
    refine_steps: int = 0
    snippet_len: int = 3
    load: bool = True  # the model is loaded for this run (not already in memory)
    write: bool = True  # frames are written (the panel's run writes none)

    def work(self, stage: str) -> float:
        """Units of work of ``stage`` (megapixels, or 1 for a once-per-run stage)."""
        p = self.processing[0] * self.processing[1] / 1e6
        unit = STAGE_WORK.get(stage, "frame_pixels")
        if unit == "once":
            return 1.0 if stage != "load" or self.load else 0.0
        if unit == "snippet_pixels":
            return self.snippets * self.snippet_len * p
        if unit == "refine_pixels":
            return self.frames * self.refine_steps * p
        if unit == "output_pixels":
            return self.frames * self.output[0] * self.output[1] / 1e6 if self.write else 0.0
        return self.frames * p


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
    """Parameters of the checkpoint's UNet and VAE, from their safetensors headers (no
    weights are read); empty where a folder or file is missing."""
    found = {}
    if folder is None:
        return found
    try:  # the top level's attention: its heads and layers (legacy name: head "dim")
        unet = json.loads(Path(folder, "unet", "config.json").read_text(encoding="utf-8"))
        heads = unet.get("num_attention_heads") or unet.get("attention_head_dim") or 8
        heads = heads[0] if isinstance(heads, list) else heads
        per_block = unet.get("layers_per_block", 2)
        per_block = per_block[0] if isinstance(per_block, list) else per_block
        if "CrossAttn" in (unet.get("down_block_types") or [""])[0]:
            found["attention_heads"] = int(heads)
            found["attention_layers"] = 2 * int(per_block) + 1
    except (OSError, ValueError, TypeError):
        pass
    for part in ("unet", "vae"):
        total = 0
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
                    total += count
        if total:
            found[part] = total
    return found


def first_guess(shape: RunShape, device_type: str, parameters: dict[str, int]) -> Estimate:
    """A rough estimate without any earlier run: the model's size at a device's usual speed."""
    flops = DEVICE_FLOPS.get(device_type, DEVICE_FLOPS["cpu"])
    unet = parameters.get("unet", 865_000_000)
    vae = parameters.get("vae", 84_000_000)
    latent = 1e6 / 64  # latent pixels per megapixel
    tokens = shape.snippet_len * shape.processing[0] * shape.processing[1] / 64
    scores = (
        tokens**2
        * parameters.get("attention_heads", SD2_ATTENTION["heads"])
        * (parameters.get("attention_layers", SD2_ATTENTION["layers"]))
    )
    attention = (
        shape.snippets * scores * ATTENTION_SECONDS_PER_SCORE * (DEVICE_FLOPS["cpu"] / flops)
    )
    stages = {
        "load": LOAD_SECONDS + 4 * (unet + vae) / LOAD_BYTES_PER_SECOND if shape.load else 0.0,
        "encode": shape.work("encode") * 1e6 * vae * VAE_FLOPS_PER_PARAM_PIXEL / flops,
        "snippets": shape.work("snippets") * latent * unet * UNET_FLOPS_PER_PARAM_PIXEL / flops
        + attention,
        "align": shape.work("align") * 1e6 * SECONDS_PER_ALIGN_PIXEL,
        "refine": shape.work("refine") * latent * unet * UNET_FLOPS_PER_PARAM_PIXEL / flops,
        "write": shape.work("write") * 1e6 * SECONDS_PER_OUTPUT_PIXEL,
    }
    stages = {k: v for k, v in stages.items() if v > 0}
    return Estimate(sum(stages.values()), stages, measured=False)


@dataclass
class CostBook:
    """Observations per key: ``{key: [{"work": {stage: units}, "seconds": {stage: s}}]}``."""

    path: Path
    observations: dict[str, list[dict]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path | None = None) -> CostBook:
        path = Path(path) if path is not None else config_dir() / BOOK_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            observations = data.get("observations", {}) if isinstance(data, dict) else {}
        except (OSError, ValueError):
            observations = {}  # none yet, or unreadable: estimates start afresh
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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            temp.write_text(json.dumps({"observations": self.observations}), encoding="utf-8")
            os.replace(temp, self.path)
        except OSError:
            pass

    def estimate(self, key: str, shape: RunShape, fallback: Estimate | None = None) -> Estimate:
        """``shape``'s time from the key's observations; ``fallback`` for the stages they
        never measured (or all of them, with none)."""
        seen = self.observations.get(key, [])
        stages: dict[str, float] = {}
        for stage in STAGE_WORK:
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
    """Seconds for ``work`` from (work, seconds) points: a fixed part and a per-unit part
    fitted when the points span different amounts of work, else per unit alone."""
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
    # per unit, from the observations nearest in size (overheads weigh alike there)
    nearest = sorted(points, key=lambda p: abs(p[0] - work))[:3]
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

    def one(res: int) -> tuple[tuple[int, int], Estimate]:
        size = processing_size(plate[0], plate[1], res)
        shape = run_shape(shot_frames, plate, size, config.dilations, config.snippet_len,
                          config.cap_dilation, config.refine_steps, restore_res, load,
                          write)  # fmt: skip
        if pending is not None and res == config.processing_res:
            shape = replace(shape, snippets=pending)
        return size, book.estimate(key, shape, first_guess(shape, device_type, parameters))

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
