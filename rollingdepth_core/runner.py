"""One run from a plate on disk to an EXR sequence: the driver the CLI and the add-on use.

A run is three steps: the request checked whole before the model loads
(:class:`.request.RunRequest`), the method (:func:`.method.run_method`) over the store and
executor the request chooses (memory or the disk cache with ``cache_dir``; local or Ray; a
whole run, a farm ``infer`` chunk, or ``finalize``), and the publisher (:mod:`.publish`),
which swaps the written sequence in whole.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from . import protocol
from .anchors import warn_about_fits, write_fits_json
from .config import HALF_MAX, InferenceConfig, OutputConfig
from .costs import (
    STAGE_WORK,
    CostBook,
    RunShape,
    cost_key,
    model_parameters,
    take_process_start,
)
from .device import describe_device
from .editorial import write_depth_timeline
from .errors import OutputError
from .executors import LocalExecutor, RayExecutor
from .method import run_method
from .model import DepthModel
from .output import run_metadata, unit_frames, write_depth_frames, write_preview, written_range
from .passes import FrameGeometry, check_half_positions
from .points import PointCloud
from .progress import ProgressCallback, report
from .publish import write_text_atomic
from .request import PreparedRun, RunRequest, header_record
from .timecode import rate_text, stalled_timecode_warning


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
    fps: str | None = None  # the plate's rate ("24", "30000/1001"), as the EXRs carry it
    timecodes: list[str] | None = None  # each frame's timecode, as `frame_numbers`
    passes: list[str] | None = None  # what the frames carry, when more than Z
    points: str | None = None  # with --points: the USD stage of points and camera

    def to_message(self) -> dict:
        # the protocol's keys always (null where they do not apply), the others when set
        return {k: v for k, v in asdict(self).items() if v is not None or k in protocol.RESULT_KEYS}


def run_plate(
    plate: str,
    output_dir: str | None,
    config: InferenceConfig,
    output: OutputConfig,
    checkpoint: str,
    *,
    progress: ProgressCallback | None = None,
    message: Callable[[str], None] | None = None,
    model: DepthModel | None = None,
    **options,
) -> RunResult:
    """Estimate depth for ``plate`` and write ``output_dir/NAME.####.exr``: builds a
    :class:`.request.RunRequest` from the arguments (``options`` are its other fields) and
    runs it (:func:`run`).

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
    the co-alignment which pixels not to trust (:mod:`.mattes`). The output folder follows
    :mod:`.publish` (the sequence is swapped in whole once complete; another run's frames
    refused unless ``overwrite``; never over the plate's own files; one writer at a time).
    Frames larger than ``max_frame_memory`` GiB are read in strips and resized on the way, or
    refused. ``reference`` runs the reference's call structure, memory layout and attention
    layout (:class:`.model.DepthModel`); ``compile`` torch-compiles its networks.
    """
    request = RunRequest(plate, output_dir, config, output, checkpoint, **options)
    return run(request, progress=progress, message=message, model=model)


def run(
    request: RunRequest,
    progress: ProgressCallback | None = None,
    message: Callable[[str], None] | None = None,
    model: DepthModel | None = None,
) -> RunResult:
    """One run: the request checked (:meth:`.RunRequest.prepare`, before the model loads),
    the method (:func:`.method.run_method`), then the publisher (:mod:`.publish`)."""
    started = time.perf_counter()
    process = take_process_start(time.monotonic())  # the process's start-up, when it ran for this
    with request.prepare(message, model) as prepared:
        _tell(prepared, message)
        store, executor, get_model, loaded = _resources(prepared, progress, model, message)
        # before the method: the request checked, and (an in-memory run) the model loaded
        ready = time.perf_counter() - started
        try:
            shots = run_method(
                lambda: (rgb for _, rgb in prepared.source.frames(prepared.fit)),
                prepared.info.frame_numbers,
                prepared.config,
                store,
                executor,
                get_model,
                blocks={"run": "all", "infer": "chunk", "finalize": "none"}[request.mode],
                chunk=prepared.share,
                cuts=prepared.cuts,
                anchors=prepared.anchors,
                anchor_mode=request.anchor_fit,
                holdout=None if prepared.mattes is None else prepared.mattes.frames,
                plate_size=(prepared.info.height, prepared.info.width),
                progress=progress,
            )
            if shots is None:  # an infer chunk: the blocks are in the cache, nothing to write
                return _chunk_result(prepared, store, bool(loaded) and model is None, started)
            warn_about_fits([d.anchor_fit for d in shots], (prepared.info.height,
                            prepared.info.width), message)  # fmt: skip
            # what only the fit knows, before the first frame is written
            for depth in shots:
                check_half_range(depth, request.output)
                if request.output.half and prepared.camera is not None and "P" in request.passes:
                    lo, hi = written_range(depth.value_range, request.output, depth.metric_range)
                    farthest = hi if request.output.depth_mode == "depth" else 1.0 / lo
                    numbers = prepared.info.frame_numbers
                    shot = depth.shot
                    check_half_positions(prepared.camera, numbers if shot is None else
                                         numbers[shot.start : shot.stop], farthest)  # fmt: skip
            # 8. frames out, shot by shot, through the one writer, into the staging folder
            publisher = prepared.publisher
            with publisher.writing():
                written = _write_shots(shots, prepared, progress)
            # the swap: the whole sequence takes the folder's, or nothing does
            report(progress, "publish", 0, 1)
            clock = time.perf_counter()
            publisher.publish(written.extras)
            published = time.perf_counter() - clock
            report(progress, "publish", 1, 1)
        finally:
            store.close()
    result = _result(prepared, shots, written, store, bool(loaded) and model is None, started)
    result.timings["publish"] = round(published, 3)
    if request.mode == "run" and request.executor != "ray":
        load = getattr(get_model, "seconds", 0.0) if model is None else 0.0
        if request.cache_dir is None:
            _record_costs(prepared, shots, result, ready - load, process, load)
        elif not (store.stats.latents_reused or store.stats.blocks_reused) and model is None:
            # a cold cache did the whole run's work: the model loaded while the first frames
            # were encoded (get_model timed it), the rest of the encode stage is encoding
            _record_costs(prepared, shots, result, ready, process, load, load_in_encode=True)
    return result


def _record_costs(
    prepared: PreparedRun,
    shots,
    result: RunResult,
    checked: float,
    process: float | None,
    load: float,
    load_in_encode: bool = False,
) -> None:
    """Add this run's stage times to the machine's cost book (`costs`): the next estimate of
    a run like it learns from them. ``checked``: seconds the request took to check (with
    ``process``, the process's start-up before the run, when it was started for it: the
    run's `start`); ``load``: the model's load (a cached run loads it on first use, inside
    its encode stage: ``load_in_encode``)."""
    info, config = prepared.info, prepared.config
    h, w = shots[0].size
    shape = RunShape(
        frames=len(info.frame_numbers),
        snippets=sum(len(b.indices) for d in shots for b in d.plan.blocks),
        processing=(h, w),
        output=tuple(result.output_size),
        refine_steps=config.refine_steps,
        snippet_len=config.snippet_len,
        load=load > 0,
        plate=(info.height, info.width),
        model=model_parameters(prepared.checkpoint_folder),
        start=process is not None,
    )
    seconds = {k: v for k, v in result.timings.items() if k in STAGE_WORK}
    if load_in_encode:
        seconds["encode"] = max(seconds.get("encode", 0.0) - load, 0.0)
    if load > 0:
        seconds["load"] = load
    if process is not None:
        seconds["start"] = process + checked
    key = cost_key(describe_device(prepared.torch_device), prepared.dtype, shape.model)
    CostBook.load().record(key, shape, seconds)


def _tell(prepared: PreparedRun, message: Callable[[str], None] | None) -> None:
    info = prepared.info
    if message and not info.color.passthrough:
        message(info.color.summary)  # what the model sees the plate through, and why
    if info.variable_rate is not None and message:
        message(
            f"warning: {info.source} has a variable frame rate (frames unevenly spaced in "
            f"time, {float(info.variable_rate):.4g} fps on average): its frames are taken one "
            f"after another, and the EXRs carry its nominal rate, {rate_text(info.fps)} fps"
        )
    if info.missing_frames and message:
        missing = ", ".join(str(f) for f in info.missing_frames[:10])
        message(f"warning: the sequence has gaps (missing frames {missing}); they are skipped")
    stalled = stalled_timecode_warning(info.timecodes, info.frame_numbers)
    if stalled and message:
        message(stalled)
    if info.frames_outside and message:
        first, last = info.plate_span
        message(
            f"warning: frames {info.frames_outside} are not in the plate (its frames are "
            f"{first}-{last}); they are skipped"
        )


def _resources(prepared: PreparedRun, progress, model: DepthModel | None, message=None):
    """The store, the executor and the model loader the request asks for."""
    request = prepared.request
    loaded: list[DepthModel] = [model] if model is not None else []

    def get_model() -> DepthModel:
        if not loaded:
            clock = time.perf_counter()
            report(progress, "load", 0, 1)
            loaded.append(
                DepthModel.from_pretrained(
                    request.checkpoint,
                    device=str(prepared.torch_device),
                    dtype=prepared.dtype,
                    dtype_explicit=True,
                    reference=request.reference,
                    compile=request.compile,
                )
            )
            report(progress, "load", 1, 1)
            get_model.seconds = time.perf_counter() - clock
        return loaded[0]

    if request.cache_dir is None:
        from .stores import MemoryStore

        store = MemoryStore()
        get_model()  # the in-memory run always needs it: load before reading the plate
    else:
        from .cache import model_fingerprint
        from .stores import DiskStore

        store = DiskStore(request.cache_dir, model_fingerprint(prepared.checkpoint_folder))
        if request.mode == "infer":
            store.cache.check_writable("`rollingdepth infer` stores its snippet blocks there")
    executor = (
        RayExecutor(request.checkpoint, str(prepared.torch_device), request.ray_address, message)
        if request.executor == "ray"
        else LocalExecutor()
    )
    if request.executor == "ray" and request.mode != "finalize":
        executor.check()  # before the model loads: a cluster that cannot work says so now
    return store, executor, get_model, loaded


def check_half_range(depth, output: OutputConfig) -> None:
    """OutputError before any frame is written when ``--half`` cannot hold the values."""
    if not output.half:
        return
    lo, hi = written_range(depth.value_range, output, depth.metric_range)
    if max(abs(lo), abs(hi)) > HALF_MAX:
        shot = depth.shot
        where = "" if shot is None or shot.index == 0 and shot.stop == depth.plan.n_frames else (
            f" in shot {shot.index} (frames {shot.first_frame}-{shot.last_frame})"
        )  # fmt: skip
        raise OutputError(
            f"the depth values{where} reach {max(abs(lo), abs(hi)):.6g}, beyond the half "
            f"range ({HALF_MAX:g}): drop `--half`, or anchor in other units"
        )


def _chunk_result(prepared: PreparedRun, store, model_loaded: bool, started: float) -> RunResult:
    seconds = time.perf_counter() - started
    stats = store.stats
    k, n = prepared.share
    return RunResult(
        depth_mode=prepared.request.output.depth_mode,
        channel=prepared.request.output.channel,
        near=prepared.request.output.near,
        far=prepared.request.output.far,
        device=str(prepared.torch_device),
        dtype=prepared.dtype,
        cache=str(store.folder),
        cache_stats=stats.to_dict(),
        chunk=f"{k}/{n}",
        model_loaded=model_loaded,
        seconds=round(seconds, 3),
        summary=(
            f"chunk {k}/{n}: {stats.blocks_computed + stats.blocks_reused} blocks "
            f"({stats.blocks_computed} computed, {stats.blocks_reused} cached) in "
            f"{store.folder} in {seconds:.1f} s"
        ),
    )


def _result(prepared: PreparedRun, shots, written, store, model_loaded, started) -> RunResult:
    request, info = prepared.request, prepared.info
    output = request.output
    folder = prepared.publisher.folder
    seconds = time.perf_counter() - started
    first, last = info.frame_numbers[0], info.frame_numbers[-1]
    out_size = (info.height, info.width) if output.restore_res else shots[0].size
    cached = ""
    result = RunResult(
        depth_mode=output.depth_mode,
        channel=output.channel,
        near=output.near,
        far=output.far,
        device=str(prepared.torch_device),
        dtype=prepared.dtype,
        model_loaded=model_loaded,
    )
    if request.cache_dir is not None:
        stats = store.stats
        result.cache = str(store.folder)
        result.cache_stats = stats.to_dict()
        cached = f"; snippet blocks: {stats.blocks_computed} computed, {stats.blocks_reused} cached"
    ranges = [written_range(d.value_range, output, d.metric_range) for d in shots]
    result.output_dir = str(folder)
    result.files = [str(prepared.publisher.frame_path(n)) for n in written.frames]
    result.frame_numbers = list(info.frame_numbers)
    result.first_frame, result.last_frame = first, last
    result.pattern = prepared.publisher.pattern
    result.alignment = str(folder / written.alignment)
    result.preview = str(folder / written.preview) if written.preview else None
    result.processing_size = list(shots[0].size)
    result.output_size = list(out_size)
    result.value_range = [min(r[0] for r in ranges), max(r[1] for r in ranges)]
    clock = info.timecodes
    if clock is not None:
        result.fps = None if clock.rate is None else rate_text(clock.rate)
        timecodes = [clock.of(n) for n in info.frame_numbers]
        result.timecodes = timecodes if all(timecodes) else None
    if len(shots) > 1:
        result.shots = [asdict(d.shot) for d in shots]
    if prepared.anchors is not None:
        fits = [d.anchor_fit for d in shots]
        result.anchors = {
            "file": str(folder / written.anchors),
            "units": fits[0].units,
            "mode": fits[0].mode,
            "used": sum(f.n_used for f in fits),
            "rejected": sum(f.n_rejected for f in fits),
            "skipped": sum(f.n_outside + f.n_unprocessed for f in fits),
            "residual_median": max(f.residual_median for f in fits),
            "residual_p90": max(f.residual_p90 for f in fits),
        }
    if written.points:
        result.points = str(folder / written.points)
    if request.passes != ("Z",) and prepared.camera is not None:
        result.passes = list(request.passes)
    result.dilations_run = shots[0].plan.dilations
    timings: dict[str, float] = {}
    for d in shots:
        for k, v in d.timings.items():
            timings[k] = timings.get(k, 0.0) + v
    timings["write"] = written.seconds
    result.timings = {k: round(v, 3) for k, v in timings.items()}
    result.seconds = round(seconds, 3)
    result.summary = (
        f"wrote {len(written.frames)} EXRs ({first}-{last}) to {folder} in {seconds:.1f} s "
        f"[{prepared.torch_device}, {prepared.dtype}, dilations {shots[0].plan.dilations}{cached}"
        + (f", {len(shots)} shots" if len(shots) > 1 else "")
        + "]"
    )
    return result


@dataclass
class Written:
    """What stage 8 wrote into the staging folder (file names there)."""

    frames: list[int]
    alignment: str
    anchors: str | None
    preview: str | None
    timeline: str  # the OTIO timeline of the depth sequence
    seconds: float
    points: str | None = None

    @property
    def extras(self) -> list[str]:
        names = (self.alignment, self.anchors, self.preview, self.timeline, self.points)
        return [p for p in names if p]


def _write_shots(shots, prepared: PreparedRun, progress) -> Written:
    """Stage 8 for every shot into the publisher's staging folder: the EXRs, the sidecars
    and the preview."""
    request, info, publisher = prepared.request, prepared.info, prepared.publisher
    output, staging = request.output, publisher.staging
    clock = time.perf_counter()
    pattern = publisher.staging_pattern()
    frames: list[int] = []
    # the plate again, for edge-aware upsampling to its size (one shot after the other)
    plates = (rgb for _, rgb in prepared.source.frames()) if output.restore_res else None
    provenance = header_record(prepared.record)
    geometry = None
    colours = None
    if prepared.camera is not None:
        cloud = PointCloud(request.points_budget) if request.points else None
        geometry = FrameGeometry(prepared.camera, request.passes, cloud)
        if cloud is not None and plates is None:  # the points' colours at processing size
            colours = (rgb for _, rgb in prepared.source.frames(prepared.fit))
    for depth in shots:
        shot = depth.shot
        metadata = run_metadata(
            request.checkpoint, request.preset, prepared.config, output, str(request.plate),
            depth.value_range, depth.plan.dilations, depth.anchor_fit, depth.metric_range,
            info.color,
        )  # fmt: skip
        metadata.update(info.header_metadata())
        metadata.update(provenance)
        if len(shots) > 1:
            metadata["shot"] = shot.index
            metadata["shot_frames"] = f"{shot.first_frame}-{shot.last_frame}"
        numbers = info.frame_numbers[shot.start : shot.stop]
        write_depth_frames(
            depth.frames(),
            depth.value_range,
            numbers,
            pattern,
            output,
            metadata,
            plate_size=(info.height, info.width),
            confidence=depth.confidence(),
            progress=progress,
            anchor_fit=depth.anchor_fit,
            guides=None if plates is None else itertools.islice(plates, shot.n_frames),
            windows=info.exr_windows(),
            on_written=publisher.wrote,
            timecodes=info.timecodes,
            geometry=geometry,
            colours=None if colours is None else itertools.islice(colours, shot.n_frames),
        )
        frames += numbers
    points = None
    if geometry is not None and geometry.points is not None:
        geometry.points.save(staging / request.points, prepared.camera, info.fps)
        points = request.points
    seconds = time.perf_counter() - clock
    sidecars = write_sidecars(
        publisher, output, info, [d.shot for d in shots], [d.alignment for d in shots],
        [d.anchor_fit for d in shots] if prepared.anchors is not None else None,
        lambda: ((d.frames(), d.value_range) for d in shots), progress,
    )  # fmt: skip
    return Written(list(frames), *sidecars, seconds, points)


def write_sidecars(
    publisher,
    output: OutputConfig,
    info,
    shots: list,
    alignments: list,
    anchor_fits: list | None,
    shot_frames: Callable[[], Iterable],
    progress: ProgressCallback | None = None,
    timeline: bool = True,
) -> tuple[str, str | None, str | None, str | None]:
    """The sequence's sidecars into the publisher's staging folder, for a run and the panel's
    export alike: the alignment report, the anchors report (with ``anchor_fits``, one per
    shot), the preview (``output.preview``; ``shot_frames()`` gives each shot's frames and
    value range) and the OTIO timeline (unless ``timeline`` is False: a partial export's
    frames are not the plate's). Returns their names (alignment, anchors, preview, timeline;
    None for those not written), which the publisher swaps in with the frames."""
    staging = publisher.staging
    anchors_json = None
    if anchor_fits is not None:
        anchors_json = f"{publisher.name}_anchors.json"
        write_fits_json(staging / anchors_json, anchor_fits)
    alignment_json = f"{publisher.name}_alignment.json"
    if len(shots) == 1:
        alignments[0].save_json(staging / alignment_json)
    else:
        write_text_atomic(staging / alignment_json, json.dumps({"shots": [
            {**asdict(shot), "alignment": alignment.to_dict()}
            for shot, alignment in zip(shots, alignments, strict=True)
        ]}, indent=1))  # fmt: skip
    preview = None
    if output.preview:
        report(progress, "preview", 0, 1)
        preview = write_preview(
            (f for frames, value_range in shot_frames() for f in unit_frames(frames, value_range)),
            staging,
            publisher.name,
            info.fps,
        ).name
        report(progress, "preview", 1, 1)
    otio = None
    if timeline:
        otio = write_depth_timeline(publisher.folder, publisher.name, info, shots,
                                    publisher.padding, staging).name  # fmt: skip
    return alignment_json, anchors_json, preview, otio
