"""One run from a plate on disk to an EXR sequence: the driver the CLI and the add-on use.

It only chooses: a store (memory, or the disk cache with ``cache_dir``), an executor (local or
Ray) and what share of the work to do (``mode``: a whole run, a farm ``infer`` chunk, or
``finalize``); :func:`.method.run_method` does the method and :func:`.output.write_depth_frames`
writes the frames.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from . import protocol
from .anchors import load_anchors
from .config import DEFAULT_MAX_FRAME_GIB, InferenceConfig, OutputConfig
from .cuts import parse_cuts
from .errors import ConfigError
from .executors import LocalExecutor, RayExecutor
from .mattes import MatteSource
from .method import run_method
from .model import DepthModel, processing_size
from .output import (
    ensure_writable,
    run_metadata,
    sequence_pattern,
    unit_frames,
    write_depth_frames,
    write_preview,
    written_range,
)
from .output_guard import OutputGuard, write_text_atomic
from .plate import open_plate, parse_frame_range
from .progress import ProgressCallback, report
from .snippets import check_clip_length

MODES = ("run", "infer", "finalize")
ANCHOR_FITS = ("global", "smooth")
EXECUTORS = ("local", "ray")


@dataclass
class RunResult:
    """What a run did; :meth:`to_message` is the ``result`` event of ``--progress json``
    (its keys are :data:`.protocol.RESULT_KEYS`, plus the cache's counts for cached runs)."""

    ok: bool = True
    output_dir: str | None = None
    files: list[str] = field(default_factory=list)
    frame_numbers: list[int] = field(default_factory=list)
    first_frame: int | None = None
    last_frame: int | None = None
    pattern: str | None = None
    alignment: str | None = None
    preview: str | None = None
    processing_size: list[int] = field(default_factory=list)
    output_size: list[int] = field(default_factory=list)
    value_range: list[float] = field(default_factory=list)  # of the values in the files
    depth_mode: str = "inverse"
    channel: str = "Z"
    near: float | None = None
    far: float | None = None
    dilations_run: list[int] = field(default_factory=list)
    device: str = ""
    dtype: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    summary: str = ""
    cache: str | None = None
    cache_stats: dict | None = None
    chunk: str | None = None
    model_loaded: bool = False
    anchors: dict | None = None  # with --anchors: the fit's summary and its sidecar
    shots: list[dict] | None = None  # a plate with cuts: each shot's positions and frames

    def to_message(self) -> dict:
        # the protocol's keys always (null where they do not apply), the others when set
        return {k: v for k, v in asdict(self).items() if v is not None or k in protocol.RESULT_KEYS}


def run_plate(
    plate: str,
    output_dir: str | None,
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
    model: DepthModel | None = None,
    cache_dir: str | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    mode: str = "run",
    chunk: str | None = None,
    anchors: str | None = None,
    anchor_fit: str = "global",
    cuts: str | None = None,
    holdout: str | None = None,
    holdout_alpha: bool = False,
    overwrite: bool = False,
    max_frame_memory: float = DEFAULT_MAX_FRAME_GIB,
    reference: bool = False,
    compile: bool = False,
) -> RunResult:
    """Estimate depth for ``plate`` and write ``output_dir/NAME.####.exr``.

    ``cache_dir`` keeps latents and snippet blocks on disk (bounded memory, resumable, shared
    by farm jobs); ``mode="infer"`` computes only snippet blocks (all, or the share
    ``chunk="K/N"``) into it, ``mode="finalize"`` aligns, merges and writes from a complete
    cache without running the snippet model. ``executor="ray"`` sends snippet blocks to a Ray
    cluster (``ray_address``, else ``RAY_ADDRESS``, else a local instance). ``anchors`` (a
    CSV or JSON file of points of known depth, see :mod:`.anchors`) anchors the depth to scene
    units with one (a, b) for the clip (``anchor_fit="global"``) or a slowly varying one
    (``"smooth"``). ``cuts`` (``auto``, ``none`` or plate frame numbers where a shot starts;
    default: ``auto`` for videos, ``none`` for image sequences) runs every shot on its own.
    ``holdout`` (a matte sequence or movie; or ``holdout_alpha``, the plate's own alpha) tells
    the co-alignment which pixels not to trust (:mod:`.mattes`). The output folder follows the
    policy of :mod:`.output_guard` (another run's frames refused unless ``overwrite``, removed
    only once the new sequence is complete; never over the plate's own files). Frames larger
    than ``max_frame_memory`` GiB are read in strips and resized on the way, or refused.
    ``reference`` runs the reference's call structure, memory layout and attention layout
    (:class:`.model.DepthModel`); ``compile`` torch-compiles its networks.
    """
    from .checkpoint import locate_checkpoint
    from .device import resolve_device, resolve_dtype

    started = time.perf_counter()
    # cheap checks first, so bad input fails before the model loads
    config.check()
    output.check(confidence=config.confidence)
    if mode not in MODES:
        raise ConfigError(f"`mode` must be one of {', '.join(MODES)}; got {mode!r}")
    if executor not in EXECUTORS:
        raise ConfigError(f"`executor` must be one of {', '.join(EXECUTORS)}; got {executor!r}")
    if cache_dir is None and (mode != "run" or executor != "local"):
        need = "`--executor ray`" if mode == "run" else f"`rollingdepth {mode}`"
        raise ConfigError(f"{need} needs `--cache DIR` on storage every node sees")
    if chunk is not None and mode != "infer":
        raise ConfigError("`--chunk` belongs to `rollingdepth infer`; finalize with all chunks")
    share = parse_chunk(chunk) if chunk else (1, 1)
    anchor_points = None
    if anchors is not None and mode != "infer":
        if anchor_fit not in ANCHOR_FITS:
            raise ConfigError(
                f"`--anchor-fit` must be one of {', '.join(ANCHOR_FITS)}; got {anchor_fit!r}"
            )
        if output.depth_mode == "normalized":
            raise ConfigError(
                "`--anchors` gives scene units: use `--depth-mode depth` (Z) or `inverse` (1/Z)"
            )
        anchor_points = load_anchors(anchors)
    folder = ensure_writable(output_dir) if mode != "infer" else None
    frame_range = parse_frame_range(frames) if frames else None
    source = open_plate(
        plate, frames=frame_range, input_colorspace=input_colorspace, max_frame_gib=max_frame_memory
    )
    info = source.info
    if model is not None:
        torch_device, dtype = model.device, model.dtype_name
    else:
        torch_device = resolve_device(device)
        dtype = resolve_dtype(config.dtype, torch_device, explicit=dtype_explicit)
    config = replace(config, dtype=dtype)
    # huge frames are read in strips and resized on the way (not under --reference, which
    # resizes as the reference does); what cannot fit is refused before anything is decoded
    fit = None if reference else processing_size(info.height, info.width, config.processing_res)
    source.check_memory(fit)
    guard = None
    if mode != "infer":
        settings = {
            "checkpoint": checkpoint,
            "preset": preset,
            **asdict(config),
            **asdict(output),
            "anchors": anchors,
            "cuts": cuts,
            "holdout": holdout,
        }
        guard = OutputGuard.for_plate(folder, output.name, source, settings, overwrite)
    check_clip_length(len(source), config.snippet_len)
    shot_cuts = parse_cuts(cuts or ("auto" if info.kind == "video" else "none"),
                           info.frame_numbers)  # fmt: skip
    mattes = None
    if holdout is not None or holdout_alpha:
        if holdout is not None and holdout_alpha:
            raise ConfigError("pass `--holdout PATTERN` or `--holdout-alpha`, not both")
        mattes = MatteSource(
            holdout if holdout is not None else plate,
            info.frame_numbers,
            (info.height, info.width),
            alpha_only=holdout_alpha,
        )
    if message and not info.color.passthrough:
        message(info.color.summary)  # what the model sees the plate through, and why
    if info.missing_frames and message:
        missing = ", ".join(str(f) for f in info.missing_frames[:10])
        message(f"warning: the sequence has gaps (missing frames {missing}); they are skipped")

    loaded: list[DepthModel] = [model] if model is not None else []

    def get_model() -> DepthModel:
        if not loaded:
            report(progress, "load", 0, 1)
            loaded.append(
                DepthModel.from_pretrained(
                    checkpoint,
                    device=str(torch_device),
                    dtype=dtype,
                    dtype_explicit=True,
                    reference=reference,
                    compile=compile,
                )
            )
            report(progress, "load", 1, 1)
        return loaded[0]

    # the checkpoint is found (or fetched) first: its errors come before the folder's policy,
    # and that before the model loads
    located = locate_checkpoint(checkpoint)
    if guard is not None:
        guard.check()
    if cache_dir is None:
        from .stores import MemoryStore

        store = MemoryStore()
        get_model()  # the in-memory run always needs it: load before reading the plate
    else:
        from .cache import model_fingerprint
        from .stores import DiskStore

        store = DiskStore(cache_dir, model_fingerprint(located))
    runner = (
        RayExecutor(checkpoint, str(torch_device), ray_address, message)
        if executor == "ray"
        else LocalExecutor()
    )
    result = RunResult(
        processing_size=[],
        depth_mode=output.depth_mode,
        channel=output.channel,
        near=output.near,
        far=output.far,
        device=str(torch_device),
        dtype=dtype,
        cache=str(store.folder) if cache_dir is not None else None,
    )
    try:
        shots = run_method(
            lambda: (rgb for _, rgb in source.frames(fit)),
            info.frame_numbers,
            config,
            store,
            runner,
            get_model,
            blocks={"run": "all", "infer": "chunk", "finalize": "none"}[mode],
            chunk=share,
            cuts=shot_cuts,
            anchors=anchor_points,
            anchor_mode=anchor_fit,
            holdout=None if mattes is None else mattes.frames,
            plate_size=(info.height, info.width),
            progress=progress,
        )
        result.model_loaded = bool(loaded) and model is None
        if cache_dir is not None:
            result.cache_stats = store.stats.to_dict()
        if shots is None:  # an infer chunk: the blocks are in the cache, nothing to write
            seconds = time.perf_counter() - started
            stats = store.stats
            result.chunk = f"{share[0]}/{share[1]}"
            result.seconds = round(seconds, 3)
            result.summary = (
                f"chunk {share[0]}/{share[1]}: {stats.blocks_computed + stats.blocks_reused} "
                f"blocks ({stats.blocks_computed} computed, {stats.blocks_reused} cached) in "
                f"{store.folder} in {seconds:.1f} s"
            )
            return result

        # 8. frames out, shot by shot, through the one writer, under the folder's guard
        with guard.writing():
            written, write_seconds, alignment_json, anchors_json, preview = _write_shots(
                shots, info, folder, config, output, checkpoint, preset, str(plate),
                source, anchor_points is not None, guard, progress,
            )  # fmt: skip
            guard.finish([p for p in (alignment_json, anchors_json, preview) if p])
    finally:
        store.close()

    seconds = time.perf_counter() - started
    first, last = info.frame_numbers[0], info.frame_numbers[-1]
    out_size = (info.height, info.width) if output.restore_res else shots[0].size
    cached = ""
    if cache_dir is not None:
        stats = store.stats
        cached = f"; snippet blocks: {stats.blocks_computed} computed, {stats.blocks_reused} cached"
    ranges = [written_range(d.value_range, output, d.metric_range) for d in shots]
    result.output_dir = str(folder)
    result.files = [str(p) for p in written]
    result.frame_numbers = list(info.frame_numbers)
    result.first_frame, result.last_frame = first, last
    result.pattern = sequence_pattern(folder, output.name, info.frame_numbers)
    result.alignment = str(alignment_json)
    result.preview = str(preview) if preview else None
    result.processing_size = list(shots[0].size)
    result.output_size = list(out_size)
    result.value_range = [min(r[0] for r in ranges), max(r[1] for r in ranges)]
    if len(shots) > 1:
        result.shots = [asdict(d.shot) for d in shots]
    if anchor_points is not None:
        fits = [d.anchor_fit for d in shots]
        result.anchors = {
            "file": str(anchors_json),
            "units": fits[0].units,
            "mode": fits[0].mode,
            "used": sum(f.n_used for f in fits),
            "rejected": sum(f.n_rejected for f in fits),
            "skipped": sum(f.n_outside + f.n_unprocessed for f in fits),
            "residual_median": max(f.residual_median for f in fits),
            "residual_p90": max(f.residual_p90 for f in fits),
        }
    result.dilations_run = shots[0].plan.dilations
    timings: dict[str, float] = {}
    for d in shots:
        for k, v in d.timings.items():
            timings[k] = timings.get(k, 0.0) + v
    timings["write"] = write_seconds
    result.timings = {k: round(v, 3) for k, v in timings.items()}
    result.seconds = round(seconds, 3)
    result.summary = (
        f"wrote {len(written)} EXRs ({first}-{last}) to {folder} in {seconds:.1f} s "
        f"[{torch_device}, {dtype}, dilations {shots[0].plan.dilations}{cached}"
        + (f", {len(shots)} shots" if len(shots) > 1 else "")
        + "]"
    )
    return result


def parse_chunk(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 1 <= K <= N."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"`--chunk` must look like K/N, e.g. 2/8; got {text!r}") from None
    if not 1 <= k <= n:
        raise ConfigError(f"`--chunk` K/N needs 1 <= K <= N; got {text!r}")
    return k, n


def _write_shots(shots, info, folder, config, output, checkpoint, preset, plate, source,
                 anchored, guard, progress):  # fmt: skip
    """Stage 8 for every shot: the EXRs, the sidecars and the preview."""
    clock = time.perf_counter()
    pattern = sequence_pattern(folder, output.name, info.frame_numbers)
    written: list = []
    # the plate again, for edge-aware upsampling to its size (one shot after the other)
    plates = (rgb for _, rgb in source.frames()) if output.restore_res else None
    for depth in shots:
        shot = depth.shot
        metadata = run_metadata(
            checkpoint, preset, config, output, plate, depth.value_range,
            depth.plan.dilations, depth.anchor_fit, depth.metric_range, info.color,
        )  # fmt: skip
        metadata.update(info.header_metadata())
        if len(shots) > 1:
            metadata["shot"] = shot.index
            metadata["shot_frames"] = f"{shot.first_frame}-{shot.last_frame}"
        written += write_depth_frames(
            depth.frames(),
            depth.value_range,
            info.frame_numbers[shot.start : shot.stop],
            pattern,
            output,
            metadata,
            plate_size=(info.height, info.width),
            confidence=depth.confidence(),
            progress=progress,
            anchor_fit=depth.anchor_fit,
            guides=None if plates is None else itertools.islice(plates, shot.n_frames),
            windows=info.exr_windows(),
            on_written=guard.wrote,
        )
    write_seconds = time.perf_counter() - clock
    anchors_json = None
    if anchored:
        anchors_json = folder / f"{output.name}_anchors.json"
        fits = [d.anchor_fit.to_dict() for d in shots]
        write_text_atomic(
            anchors_json, json.dumps(fits[0] if len(shots) == 1 else {"shots": fits}, indent=1)
        )
    alignment_json = folder / f"{output.name}_alignment.json"
    if len(shots) == 1:
        shots[0].alignment.save_json(alignment_json)
    else:
        write_text_atomic(alignment_json, json.dumps({"shots": [
            {**asdict(d.shot), "alignment": d.alignment.to_dict()} for d in shots
        ]}, indent=1))  # fmt: skip
    preview = None
    if output.preview:
        report(progress, "preview", 0, 1)
        preview = write_preview(
            (f for d in shots for f in unit_frames(d.frames(), d.value_range)),
            folder,
            output.name,
            info.fps,
        )
        report(progress, "preview", 1, 1)
    return written, write_seconds, alignment_json, anchors_json, preview
