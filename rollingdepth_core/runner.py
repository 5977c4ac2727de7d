"""One run from a plate on disk to an EXR sequence: the driver the CLI and the add-on use.

It only chooses: a store (memory, or the disk cache with ``cache_dir``), an executor (local or
Ray) and what share of the work to do (``mode``: a whole run, a farm ``infer`` chunk, or
``finalize``); :func:`.method.run_method` does the method and :func:`.output.write_depth_frames`
writes the frames.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from .anchors import load_anchors
from .config import InferenceConfig, OutputConfig
from .errors import ConfigError
from .executors import LocalExecutor, RayExecutor
from .method import AnchorRequest, run_method
from .model import DepthModel
from .output import (
    ensure_writable,
    run_metadata,
    sequence_pattern,
    write_depth_frames,
    write_preview,
    write_text_atomic,
    written_range,
)
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
    chunk_blocks: list[int] | None = None
    model_loaded: bool = False
    anchors: dict | None = None  # with --anchors: the fit's summary and its sidecar

    def to_message(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


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
    (``"smooth"``). ``reference`` loads the model in the reference's memory layout (see
    :class:`.model.DepthModel`); ``compile`` torch-compiles its networks.
    """
    from .checkpoint import locate_checkpoint
    from .device import resolve_device, resolve_dtype

    started = time.perf_counter()
    # cheap checks first, so bad input fails before the model loads
    config.check()
    output.check()
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
    source = open_plate(plate, frames=frame_range, input_colorspace=input_colorspace)
    info = source.info
    check_clip_length(len(source), config.snippet_len)
    if message:
        message(info.color.summary)
    if info.missing_frames and message:
        missing = ", ".join(str(f) for f in info.missing_frames[:10])
        message(f"warning: the sequence has gaps (missing frames {missing}); they are skipped")

    if model is not None:
        torch_device, dtype = model.device, model.dtype_name
    else:
        torch_device = resolve_device(device)
        dtype = resolve_dtype(config.dtype, torch_device, explicit=dtype_explicit)
    config = replace(config, dtype=dtype)
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

    if cache_dir is None:
        from .stores import MemoryStore

        store = MemoryStore()
        get_model()  # the in-memory run always needs it: load before reading the plate
    else:
        from .cache import model_fingerprint
        from .stores import DiskStore

        store = DiskStore(cache_dir, model_fingerprint(locate_checkpoint(checkpoint)))
    runner = (
        RayExecutor(checkpoint, str(torch_device), ray_address)
        if executor == "ray"
        else LocalExecutor()
    )
    result = RunResult(
        processing_size=[],
        depth_mode=output.depth_mode,
        channel=output.channel,
        near=output.near if output.depth_mode == "depth" else None,
        far=output.far if output.depth_mode == "depth" else None,
        device=str(torch_device),
        dtype=dtype,
        cache=str(store.folder) if cache_dir is not None else None,
    )
    try:
        depth = run_method(
            (rgb for _, rgb in source.frames()),
            len(source),
            config,
            store,
            runner,
            get_model,
            blocks={"run": "all", "infer": "chunk", "finalize": "none"}[mode],
            chunk=share,
            anchors=None
            if anchor_points is None
            else AnchorRequest(anchor_points, info.frame_numbers, anchor_fit),
            progress=progress,
        )
        result.model_loaded = bool(loaded) and model is None
        if cache_dir is not None:
            result.cache_stats = store.stats.to_dict()
        if depth is None:  # an infer chunk: the blocks are in the cache, nothing to write
            seconds = time.perf_counter() - started
            stats = store.stats
            mine = [b.number for b in _chunk_blocks(len(source), config, store, share)]
            result.chunk, result.chunk_blocks = f"{share[0]}/{share[1]}", mine
            result.seconds = round(seconds, 3)
            result.summary = (
                f"chunk {share[0]}/{share[1]}: {len(mine)} blocks ({stats.blocks_computed} "
                f"computed, {stats.blocks_reused} cached) in {store.folder} in {seconds:.1f} s"
            )
            return result

        # 8. frames out, through the one writer
        clock = time.perf_counter()
        metadata = run_metadata(
            checkpoint, preset, config, output, str(plate), depth.value_range,
            depth.plan.dilations, depth.anchor_fit, depth.metric_range, info.color,
        )  # fmt: skip
        pattern = sequence_pattern(folder, output.name, info.frame_numbers)
        written = write_depth_frames(
            depth.frames(),
            depth.value_range,
            info.frame_numbers,
            pattern,
            output,
            metadata,
            plate_size=(info.height, info.width),
            confidence=depth.confidence(),
            progress=progress,
            anchor_fit=depth.anchor_fit,
        )
        depth.timings["write"] = time.perf_counter() - clock
        anchors_json = None
        if depth.anchor_fit is not None:
            anchors_json = folder / f"{output.name}_anchors.json"
            write_text_atomic(anchors_json, depth.anchor_fit.to_json())
        alignment_json = folder / f"{output.name}_alignment.json"
        depth.alignment.save_json(alignment_json)
        preview = None
        if output.preview:
            report(progress, "preview", 0, 1)
            preview = write_preview(
                depth.frames(), depth.value_range, folder, output.name, info.fps
            )
            report(progress, "preview", 1, 1)
    finally:
        store.close()

    seconds = time.perf_counter() - started
    first, last = info.frame_numbers[0], info.frame_numbers[-1]
    out_size = (info.height, info.width) if output.restore_res else depth.size
    cached = ""
    if cache_dir is not None:
        stats = store.stats
        cached = f"; snippet blocks: {stats.blocks_computed} computed, {stats.blocks_reused} cached"
    result.output_dir = str(folder)
    result.files = [str(p) for p in written]
    result.frame_numbers = list(info.frame_numbers)
    result.first_frame, result.last_frame = first, last
    result.pattern = pattern
    result.alignment = str(alignment_json)
    result.preview = str(preview) if preview else None
    result.processing_size = list(depth.size)
    result.output_size = list(out_size)
    result.value_range = list(written_range(depth.value_range, output, depth.metric_range))
    if depth.anchor_fit is not None:
        fit = depth.anchor_fit
        result.anchors = {
            "file": str(anchors_json),
            "units": fit.units,
            "mode": fit.mode,
            "used": fit.n_used,
            "rejected": fit.n_rejected,
            "skipped": fit.n_outside + fit.n_unprocessed,
            "residual_median": fit.residual_median,
            "residual_p90": fit.residual_p90,
        }
    result.dilations_run = depth.plan.dilations
    result.timings = {k: round(v, 3) for k, v in depth.timings.items()}
    result.seconds = round(seconds, 3)
    result.summary = (
        f"wrote {len(written)} EXRs ({first}-{last}) to {folder} in {seconds:.1f} s "
        f"[{torch_device}, {dtype}, dilations {depth.plan.dilations}{cached}]"
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


def _chunk_blocks(n_frames: int, config: InferenceConfig, store, share: tuple[int, int]):
    from .method import make_plan

    return make_plan(n_frames, config, store.block_snippets).chunk(*share)
