"""The method, once: frames in, temporally consistent depth frames out (docs/method.md).

:func:`run_method` is the one sequence every way of running RollingDepth goes through, top to
bottom like a diffusers pipeline's ``__call__``:

1. scan: frames stream from the plate and are encoded to latents once (a store may find them
   cached); 2. plan: dilated snippets (capped for short clips), cut into blocks; 3. predict:
   the blocks the store lacks are denoised and decoded by an executor (here, or on a Ray
   cluster); 4. solve: scales and shifts from the reduced maps alone; 5. merge: frame by
   frame at full resolution; 6. normalise to [-1, 1] over the clip; 7. refine (optional);
   8. frames out, to the one writer (:mod:`.output`).

The store (:mod:`.stores`: memory or disk) decides where things live, the executor
(:mod:`.executors`: local or Ray) where blocks are computed; the stages are the same. The
front-ends are thin drivers: :mod:`.runner` (CLI runs, farm chunks, Ray, ``--reference``) and
:mod:`.session` (the panel's tuning session) choose a store and an executor and call these
stages.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .alignment import (
    AlignmentResult,
    covering_order,
    merge_frame,
    reduce_holdout,
    rescale_depth,
    solve_reduced,
)
from .anchors import AnchorFit, Anchors, AnchorSampler, fit_anchors
from .cache import REDUCE_BORDER, REDUCE_SUBSAMPLE
from .config import InferenceConfig
from .cuts import Shot, shots_from_cuts
from .errors import ConfigError, NonFiniteDepth, RollingDepthError
from .model import DepthModel
from .plan import (
    Plan,
    check_complete,
    make_plan,
    needed_frames,
)
from .progress import ProgressCallback, report
from .snippets import check_clip_length, refine_dilations, snippet_indices


# ------------------------------------------------------------------------------ 4. solve
def solve(
    plan: Plan,
    store,
    config: InferenceConfig,
    progress: ProgressCallback | None = None,
    holdout: np.ndarray | None = None,
) -> AlignmentResult:
    """Co-align from the blocks' reduced maps (never their full-resolution maps); ``holdout``:
    the clip's mattes reduced the same way ``[N, h, w]`` (:func:`reduce_mattes`)."""
    offset = np.inf
    per_dilation: dict[int, list[np.ndarray]] = {}
    for b in plan.blocks:
        lo, reduced = store.block_min_and_reduced(store.block_key(b, config))
        offset = min(offset, lo)  # the global minimum of the snippets, the reference's offset
        per_dilation.setdefault(b.dilation, []).append(reduced)
    if not np.isfinite(offset):
        raise NonFiniteDepth()
    # one array per dilation: a dilation repeated by capping passes the same object again
    reduced = {d: p[0] if len(p) == 1 else np.concatenate(p) for d, p in per_dilation.items()}
    return solve_reduced(
        [reduced[d] for d in plan.dilations],
        plan.indices,
        np.float32(offset),
        method=config.aligner,
        progress=None if progress is None else lambda d, t: progress("align", d, t),
        holdout=holdout,
    )


def reduce_mattes(mattes: Iterable[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Holdout mattes ``[H,W]`` of any resolution, frame by frame -> what the solver sees,
    ``[N, h, w]``: resized to the processing ``size`` (area-averaged when shrinking), then
    reduced as the snippets' maps are (border cropped, subsampled)."""
    from .upsample import resize_map

    return np.stack([
        np.array(reduce_holdout(resize_map(m, size)[None], REDUCE_BORDER, REDUCE_SUBSAMPLE)[0])
        for m in mattes
    ])  # fmt: skip


# ------------------------------------------------------------------------------ 5. merge
def merge(
    plan: Plan,
    store,
    config: InferenceConfig,
    solution: AlignmentResult,
    merged,
    confidence=None,
    progress: ProgressCallback | None = None,
) -> None:
    """The full-resolution merge, one frame at a time, into the frame buffer ``merged`` (and
    the agreement confidence into ``confidence`` when given)."""
    keys = {b.number: store.block_key(b, config) for b in plan.blocks}
    cover = covering_order(plan.indices, plan.n_frames)  # per frame [c_f, 3]: (i, n, j)
    for f in range(plan.n_frames):
        maps, scales, shifts, weights = [], [], [], []
        for i, n, j in cover[f].tolist():
            block, row = plan.block_of(plan.dilations[i], n)
            maps.append(store.frame_map(keys[block.number], row, j))
            scales.append(solution.scales[i][n])
            shifts.append(solution.shifts[i][n])
            if solution.merge_weights is not None:
                weights.append(solution.merge_weights[i][n])
        sigma = float(solution.frame_sigma[f]) if confidence is not None else None
        depth, conf = merge_frame(
            maps,
            scales,
            shifts,
            solution.offset,
            weights if solution.merge_weights is not None else None,
            sigma,
        )
        merged.append(depth)
        if confidence is not None:
            confidence.append(conf)
        report(progress, "merge", f + 1, plan.n_frames)
    merged.close()
    if confidence is not None:
        confidence.close()


# ------------------------------------------------------------------------------ 6. normalise
def normalised(frames: Iterable[np.ndarray], lo: float, hi: float) -> Iterator[np.ndarray]:
    """Frames min-max mapped to [-1, 1] with the clip's extremes ``lo``, ``hi``."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise NonFiniteDepth()
    for frame in frames:
        yield rescale_depth(frame, lo, hi)


# ------------------------------------------------------------------------------ 7. refine
@torch.no_grad()
def refine_latents(
    model: DepthModel,
    latents: torch.Tensor,
    encoded: torch.Tensor,
    noise: torch.Tensor,
    config: InferenceConfig,
    progress: ProgressCallback | None = None,
) -> torch.Tensor:
    """The refinement loop: encoded aligned depth ``[N,4,h,w]`` -> refined latents, with
    snippets of shrinking dilations over the second half of the schedule."""
    n_frames = encoded.shape[0]
    steps = config.refine_steps
    scheduler = model.new_scheduler()
    total_steps = int(steps / 0.5)
    if total_steps > scheduler.config.num_train_timesteps:
        raise ConfigError(
            f"`refine_steps` {steps} needs {total_steps} scheduler steps; the checkpoint "
            f"has {scheduler.config.num_train_timesteps}"
        )
    scheduler.set_timesteps(total_steps, device=model.device)
    timesteps = scheduler.timesteps[int(total_steps * 0.5) :]  # keep the second half

    current = scheduler.add_noise(encoded, noise.expand_as(encoded), timesteps[0])  # [N,4,h,w]
    dilations = refine_dilations(
        n_frames,
        config.refine_snippet_len,
        config.refine_start_dilation,
        steps,
        config.cap_dilation,
    )
    batch_size = config.batch_size or model.auto_batch_size(
        latents.shape[-2:], config.refine_snippet_len
    )
    for step, (t, dilation) in enumerate(zip(timesteps, dilations, strict=True)):
        indices = snippet_indices(n_frames, config.refine_snippet_len, dilation)
        summed = torch.zeros_like(current, dtype=torch.float32)
        counts = torch.zeros(n_frames, device=model.device)
        for start in range(0, len(indices), batch_size):
            flat = torch.from_numpy(indices[start : start + batch_size].reshape(-1)).to(
                model.device
            )
            pred = model.unet_step(
                scheduler, latents[flat], current[flat], t, config.refine_snippet_len
            )
            summed.index_add_(0, flat, pred.float())
            counts.index_add_(0, flat, torch.ones_like(flat, dtype=counts.dtype))
        current = (summed / counts[:, None, None, None]).to(model.dtype)
        report(progress, "refine", step + 1, steps)
    return current


@torch.no_grad()
def refine(
    model: DepthModel,
    latents: torch.Tensor,
    aligned_chunks: Iterable[np.ndarray],
    config: InferenceConfig,
    size: tuple[int, int],
    out,
    progress: ProgressCallback | None = None,
) -> None:
    """Diffusion refinement of the aligned clip (chunks of ``[b,H,W]`` in [-1, 1]) into the
    frame buffer ``out``."""
    noise = model.shared_noise(tuple(latents.shape[-2:]), config.seed)  # [1,4,h,w]
    encoded = model.encode_depth(aligned_chunks)  # [N,4,h,w]
    current = refine_latents(model, latents, encoded, noise, config, progress)
    del encoded
    for chunk in current.split(config.vae_batch_size):
        for frame in model.decode_depth(chunk, size).float().cpu().numpy():
            out.append(frame)
    out.close()
    if not (np.isfinite(out.lo) and np.isfinite(out.hi)):
        raise NonFiniteDepth()


# ------------------------------------------------------------------------------ 7b. anchor
@dataclass(frozen=True)
class AnchorRequest:
    """Points of known depth to anchor the clip to (``--anchors``): see :mod:`.anchors`."""

    anchors: Anchors
    frame_numbers: Sequence[int]  # the plate's numbers of the processed frames, in order
    mode: str = "global"  # or "smooth"


def anchor(
    frames: Iterable[np.ndarray],
    request: AnchorRequest,
    plate_size: tuple[int, int],
    value_range: tuple[float, float],
) -> tuple[AnchorFit, tuple[float, float]]:
    """Sample the anchors off the final frames (one pass) and fit ``1/Z = a d + b``.

    Returns the fit and the clip's range of metric inverse depth ``1/Z`` (min, max).
    """
    sampler = AnchorSampler(request.anchors, request.frame_numbers, plate_size)
    for k, frame in enumerate(frames):
        sampler.add(k, frame)
    samples = sampler.samples()
    fit = fit_anchors(samples, request.mode, d_range=value_range)
    # a > 0 (the fit refuses otherwise): each frame's extremes map to its extremes of 1/Z
    inv_lo = samples.frame_min * fit.a + fit.b
    inv_hi = samples.frame_max * fit.a + fit.b
    return fit, (float(np.nanmin(inv_lo)), float(np.nanmax(inv_hi)))


# ------------------------------------------------------------------------------ the sequence
@dataclass
class DepthFrames:
    """The finished clip, in its store: iterate :meth:`frames` (and :meth:`confidence`)."""

    buffer: object  # a frame buffer of the store (.stores.ArrayFrames or FileFrames)
    value_range: tuple[float, float]  # of the frames as iterated
    normalize: tuple[float, float] | None  # the buffer holds the raw merge: normalise on read
    confidence_buffer: object | None
    alignment: AlignmentResult
    plan: Plan
    size: tuple[int, int]  # processing (H, W)
    plate_size: tuple[int, int]
    store: object = None
    config: InferenceConfig | None = None
    timings: dict[str, float] = field(default_factory=dict)
    shot: Shot | None = None  # which shot of the plate (clip positions start..stop-1)
    anchor_fit: AnchorFit | None = None  # with anchors: 1/Z = a d + b per frame
    metric_range: tuple[float, float] | None = None  # with anchors: the clip's 1/Z range

    def frames(self) -> Iterator[np.ndarray]:
        if self.normalize is None:
            return iter(self.buffer)
        return normalised(self.buffer, *self.normalize)

    def confidence(self) -> Iterator[np.ndarray] | None:
        return None if self.confidence_buffer is None else iter(self.confidence_buffer)

    def snippet_maps(self) -> list[np.ndarray]:
        """Per dilation entry its snippets ``[n, L, H, W]`` as the store holds them."""
        per_dilation = {}
        for b in self.plan.blocks:
            rows = [self.store.frame_map(self.store.block_key(b, self.config), r, j)
                    for r in range(len(b.indices)) for j in range(b.indices.shape[1])]  # fmt: skip
            per_dilation.setdefault(b.dilation, []).append(
                np.stack(rows).reshape(*b.indices.shape, *self.size)
            )
        return [np.concatenate(per_dilation[d]) for d in self.plan.dilations]

    def to_array(self) -> np.ndarray:
        """The whole clip ``[N,H,W]`` float32 in memory."""
        return np.stack(list(self.frames()))


def check_inputs(n_frames: int, config: InferenceConfig) -> None:
    """Every setting and the clip length, before any tensor work."""
    config.check()
    check_clip_length(n_frames, config.snippet_len)


def run_method(
    frames: Callable[[], Iterable[np.ndarray]],
    frame_numbers: Sequence[int],
    config: InferenceConfig,
    store,
    executor,
    model: Callable[[], DepthModel],
    *,
    blocks: str = "all",
    chunk: tuple[int, int] = (1, 1),
    cuts: Sequence[int] | None = (),
    anchors: Anchors | None = None,
    anchor_mode: str = "global",
    holdout: Callable[[], Iterable[np.ndarray]] | None = None,
    plate_size: tuple[int, int] | None = None,
    progress: ProgressCallback | None = None,
) -> list[DepthFrames] | None:
    """Run the stages over ``store`` with ``executor``; ``model()`` loads the model on first use.

    ``frames()`` gives a fresh pass over the plate's frames ``[H,W,3]`` (RGB in [0,1]);
    ``frame_numbers`` are the plate's numbers of those frames. ``blocks``: ``"all"`` predicts
    what the store lacks and finishes the clip; ``"chunk"`` predicts share ``chunk`` = (K, N)
    of the blocks and stops (a farm's infer job, returns None); ``"none"`` predicts nothing
    and finishes from a complete store (finalize). ``cuts``: clip positions where a new shot
    starts (``()``: one shot; None: detect them, one extra pass over the frames). Every shot
    runs the stages on its own (its own snippets, alignment and normalisation) and gives one
    :class:`DepthFrames`. ``anchors`` fits each shot to points of known depth (stage 7b), so
    the writer can give scene units. ``holdout()`` gives a pass over the frames' mattes
    ``[H,W]`` (1 = do not trust; any resolution of the plate's aspect), which weight the
    co-alignment (stage 4); the merge still fills those pixels. ``plate_size`` (H, W): the
    plate's own size, which anchors' pixels refer to (default: the first frame's; frames may
    arrive already shrunk when the plate is too large to decode whole).
    """
    config.check()

    # 0. shots: a plate that is an edit runs the method once per shot
    if cuts is None:
        from .cuts import detect_cuts

        cuts = detect_cuts(frames(), min_shot_frames=config.min_shot_frames)
    shots = shots_from_cuts(frame_numbers, cuts)
    for shot in shots:
        try:
            check_inputs(shot.n_frames, config)
        except RollingDepthError as exc:
            if len(shots) == 1:
                raise
            raise type(exc)(f"shot {shot.index} (frames {shot.first_frame}-{shot.last_frame}): "
                            f"{exc}") from exc  # fmt: skip
    stream = iter(frames())
    mattes = iter(holdout()) if holdout is not None and blocks != "chunk" else None
    results = []
    for shot in shots:
        request = None
        if anchors is not None:
            request = AnchorRequest(anchors, frame_numbers[shot.start : shot.stop], anchor_mode)
        result = _run_shot(
            itertools.islice(stream, shot.n_frames), shot, config, store, executor, model,
            blocks, chunk, request, "" if len(shots) == 1 else f"-{shot.index}", progress,
            None if mattes is None else itertools.islice(mattes, shot.n_frames), plate_size,
        )  # fmt: skip
        if result is not None:
            result.shot = shot
            results.append(result)
    return results if blocks != "chunk" else None


def _run_shot(
    frames: Iterable[np.ndarray],
    shot: Shot,
    config: InferenceConfig,
    store,
    executor,
    model: Callable[[], DepthModel],
    blocks: str,
    chunk: tuple[int, int],
    anchors: AnchorRequest | None,
    suffix: str,
    progress: ProgressCallback | None,
    mattes: Iterable[np.ndarray] | None = None,
    true_plate_size: tuple[int, int] | None = None,
) -> DepthFrames | None:
    """Stages 1-7b for one shot (the whole clip when it has no cuts)."""
    n_frames = shot.n_frames
    timings: dict[str, float] = {}

    # 2. the plan (before the scan: a chunk encodes only its blocks' frames)
    plan = make_plan(n_frames, config, store.block_snippets)  # blocks of [b, L] indices
    mine = plan.chunk(*chunk) if blocks != "none" else []
    if blocks == "none":
        needed: set[int] | None = None if config.refine_steps > 0 else set()
    else:
        needed = needed_frames(mine)

    # 1. scan/encode: latents [N,4,h,w] of the frames a run needs
    clock = time.perf_counter()
    plate_size, size = store.scan(
        frames, n_frames, config, model, needed, progress, clip=(shot.start, shot.stop)
    )
    timings["encode"] = time.perf_counter() - clock

    # 3. predict the blocks the store lacks: [b,L,H,W] maps each
    clock = time.perf_counter()
    if blocks != "none":
        executor.compute(mine, plan, store, config, size, model, progress)
    timings["snippets"] = time.perf_counter() - clock
    if blocks == "chunk":
        return None
    check_complete(plan, store, config)

    # 4. solve scales and shifts on the reduced maps (holdout mattes reduced alike)
    clock = time.perf_counter()
    reduced_mattes = None if mattes is None else reduce_mattes(mattes, size)  # [N,h,w]
    solution = solve(plan, store, config, progress, reduced_mattes)
    timings["align"] = time.perf_counter() - clock

    # 5-6. merge frame by frame into a clip buffer; normalised to [-1, 1] on read
    clock = time.perf_counter()
    result = merge_shot(plan, store, config, solution, size, suffix, progress)
    result.plate_size = plate_size
    timings["merge"] = time.perf_counter() - clock
    if config.refine_steps > 0:
        # 7. refinement of the normalised clip
        clock = time.perf_counter()
        refine_shot(result, model(), suffix, progress)
        timings["refine"] = time.perf_counter() - clock
    if anchors is not None:
        # 7b. anchor the clip to scene units (one pass over the final frames)
        clock = time.perf_counter()
        result.anchor_fit, result.metric_range = anchor(
            result.frames(), anchors, true_plate_size or plate_size, result.value_range
        )
        timings["anchor"] = time.perf_counter() - clock
    result.timings = timings
    # 8. frames out: the caller hands result.frames() to the writer
    return result


def merge_shot(
    plan: Plan,
    store,
    config: InferenceConfig,
    solution: AlignmentResult,
    size: tuple[int, int],
    suffix: str = "",
    progress: ProgressCallback | None = None,
) -> DepthFrames:
    """Stages 5-6 for one shot: the full-resolution merge into a buffer of ``store`` (and the
    confidence with ``config.confidence``), normalised to [-1, 1] with the shot's extremes
    when read (nothing is rewritten). Every driver (a run, the panel's session) merges here."""
    n_frames = plan.n_frames
    if hasattr(store, "keep_open"):
        length = config.snippet_len
        spans = [(length - 1) * d // plan.block_snippets + 2 for d in dict.fromkeys(plan.dilations)]
        store.keep_open(sum(spans) + 2)
    merged = store.frames_buffer("merged" + suffix, n_frames, size)
    conf = None
    if config.confidence:
        conf = store.frames_buffer("confidence" + suffix, n_frames, size)
    merge(plan, store, config, solution, merged, conf, progress)
    lo, hi = merged.lo, merged.hi
    (lo_n, hi_n), *_ = normalised([np.array([lo, hi], np.float32)], lo, hi)
    return DepthFrames(
        merged, (float(lo_n), float(hi_n)), (lo, hi), conf, solution, plan, size, None,
        store, config,
    )  # fmt: skip


def refine_shot(
    result: DepthFrames,
    model: DepthModel,
    suffix: str = "",
    progress: ProgressCallback | None = None,
) -> None:
    """Stage 7 for one shot: the diffusion refinement of its normalised frames into a new
    buffer of its store; ``result`` then reads the refined frames."""
    config, store, size = result.config, result.store, result.size
    refined = store.frames_buffer("refined" + suffix, result.plan.n_frames, size)
    chunks = (
        np.stack(list(normalised(chunk, *result.normalize)))
        if result.normalize is not None
        else chunk
        for chunk in result.buffer.chunks(config.vae_batch_size)
    )
    refine(model, store.all_latents(model), chunks, config, size, refined, progress)
    result.buffer, result.normalize = refined, None
    result.value_range = (refined.lo, refined.hi)


def estimate_depth(
    model: DepthModel,
    frames: Iterable[np.ndarray],
    config: InferenceConfig,
    progress: ProgressCallback | None = None,
) -> DepthFrames:
    """The whole method in memory on frames ``[H,W,3]`` (RGB in [0,1]) from Python: a
    :class:`.stores.MemoryStore` and this process, as ``rollingdepth run`` without ``--cache``.
    """
    from .executors import LocalExecutor
    from .stores import MemoryStore

    frames = list(frames)
    (result,) = run_method(
        lambda: iter(frames), range(len(frames)), config, MemoryStore(), LocalExecutor(),
        lambda: model, progress=progress,
    )  # fmt: skip
    return result
