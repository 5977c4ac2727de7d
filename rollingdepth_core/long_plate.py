"""Long plates in bounded memory, resumable, splittable across machines.

The cached run does what :class:`RollingDepthPipeline` does, with every clip-sized array on disk:

1. **Scan**: frames stream from the plate; each is hashed, and the frames a run needs are
   encoded by the VAE in the same fixed groups of ``vae_batch_size`` frames the in-memory path
   uses; latents go to the cache (:mod:`.cache`), one file per frame.
2. **Snippets**: the snippets of every dilation are cut into blocks of ``BLOCK_SNIPPETS``; a
   block missing from the cache is predicted from the latents of its frames and stored as
   float16 with its reduced maps (the aligner's view). ``--chunk K/N`` computes blocks
   ``K-1, K-1+N, ...`` only; ``--executor ray`` sends the blocks to a Ray cluster.
3. **Finalize**: the scales and shifts are solved from the reduced maps; every frame is merged
   from the blocks covering it (memory-mapped, a few at a time), renormalised and, with
   refinement, re-encoded; the EXRs are written frame by frame.

Memory: latents of one block's frames, one block of predictions, the reduced maps (1/100 of the
pixels), a few memory-mapped blocks and one frame at a time. Refinement additionally holds the
clip's latents (``[N,4,h,w]``, 1/16 of the pixels at 4 channels) and its depth latents.

The snippets are stored in float16 (half the disk and bandwidth); the in-memory path keeps
float32 on CPU for reference parity, so a cached run and an uncached fp32 run may differ in the
last bits. Cached runs agree bit for bit with each other, however the blocks were computed
(one machine, chunks, Ray), given the same device type, dtype and ``--batch-size``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .alignment import (
    AlignmentResult,
    covering_order,
    merge_frame,
    reduce_maps,
    rescale_depth,
    solve_reduced,
)
from .cache import REDUCE_BORDER, REDUCE_SUBSAMPLE, SnippetCache, block_key, frame_hash, latent_key
from .config import InferenceConfig
from .errors import ConfigError, InputError, RollingDepthError
from .pipeline import RollingDepthPipeline, check_frame_size, processing_size
from .progress import ProgressCallback, report
from .snippets import check_clip_length, resolve_dilations, snippet_indices

BLOCK_SNIPPETS = 16  # snippets per cache block: the unit of caching, resuming and farming
CACHED_BATCH_SIZE = 4  # snippets per UNet call when `batch_size` is automatic (0): fixed, so
# that every machine batches alike and results agree bit for bit


class CacheIncomplete(RollingDepthError):
    """``finalize`` found snippet blocks missing from the cache."""


@dataclass(frozen=True)
class Block:
    """A run of consecutive snippets of one dilation: the unit of caching and of farm chunks."""

    number: int  # position in the run's plan
    dilation: int
    start: int  # first snippet of the dilation
    indices: np.ndarray  # [b, L] frame numbers


@dataclass
class Plan:
    """Which snippets a run needs and how they fall into blocks."""

    n_frames: int
    dilations: list[int]  # as run, after capping (duplicates kept)
    indices: list[np.ndarray]  # per dilation entry [n, L]
    blocks: list[Block]
    first_block: dict[int, int]  # dilation -> number of its first block

    def chunk(self, k: int, n: int) -> list[Block]:
        return [b for b in self.blocks if b.number % n == k - 1]

    def needed_groups(self, blocks: Iterable[Block], group: int) -> set[int]:
        return {int(f) // group for b in blocks for f in np.unique(b.indices)}


@dataclass
class Scan:
    """What the pass over the plate learnt: per-frame latent keys and the sizes."""

    latent_keys: list[str]
    plate_size: tuple[int, int]
    size: tuple[int, int]  # processing (H, W)
    latent_shape: tuple[int, int] = (0, 0)


@dataclass
class CachedContext:
    """Everything a block computation needs besides the model: picklable, for Ray workers."""

    cache_folder: str
    config: InferenceConfig
    model: str
    size: tuple[int, int]
    latent_shape: tuple[int, int]
    keys: dict[int, str] = field(default_factory=dict)  # block number -> key
    checkpoint: str = ""  # as given (hub id or folder), for workers that load the model


def parse_chunk(text: str) -> tuple[int, int]:
    """``"K/N"`` → (K, N) with 1 <= K <= N."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"`--chunk` must look like K/N, e.g. 2/8; got {text!r}") from None
    if not 1 <= k <= n:
        raise ConfigError(f"`--chunk` K/N needs 1 <= K <= N; got {text!r}")
    return k, n


def unet_batch_size(config: InferenceConfig) -> int:
    return config.batch_size or CACHED_BATCH_SIZE


def make_plan(n_frames: int, config: InferenceConfig) -> Plan:
    check_clip_length(n_frames, config.snippet_len)
    dilations = resolve_dilations(
        n_frames, config.snippet_len, config.dilations, config.cap_dilation
    )
    indices = [snippet_indices(n_frames, config.snippet_len, d) for d in dilations]
    blocks: list[Block] = []
    first: dict[int, int] = {}
    for d, idx in zip(dilations, indices, strict=True):
        if d in first:
            continue
        first[d] = len(blocks)
        for start in range(0, len(idx), BLOCK_SNIPPETS):
            blocks.append(Block(len(blocks), d, start, idx[start : start + BLOCK_SNIPPETS]))
    return Plan(n_frames, dilations, indices, blocks, first)


# ------------------------------------------------------------------------------ 1. scan
def scan_plate(
    frames: Iterable[np.ndarray],
    n_frames: int,
    config: InferenceConfig,
    model: str,
    cache: SnippetCache,
    encode_groups: set[int] | None,
    pipeline: Callable[[], RollingDepthPipeline],
    progress: ProgressCallback | None = None,
) -> Scan:
    """Hash every frame; encode the latents of ``encode_groups`` (None = all) not yet cached.

    ``pipeline()`` loads the model on first use, so a run that finds everything cached never
    loads it.
    """
    group = config.vae_batch_size
    keys: list[str] = []
    pending: list[np.ndarray] = []
    plate_size: tuple[int, int] | None = None
    size: tuple[int, int] = (0, 0)
    latent_shape: tuple[int, int] = (0, 0)

    def flush() -> None:
        nonlocal latent_shape
        g = len(keys) // group
        new = [
            latent_key(frame_hash(f), model, config.processing_res, config.dtype, g)
            for f in pending
        ]
        keys.extend(new)
        missing = not all(cache.has_latent(k) for k in new)
        if missing and (encode_groups is None or g in encode_groups):
            pipe = pipeline()
            images = torch.cat([pipe.preprocess(f, size) for f in pending])
            latents = pipe.encode(images).cpu()  # [b,4,h,w]
            # stored in the compute dtype (numpy has no bfloat16: that one goes as float32)
            latents = (latents.float() if latents.dtype == torch.bfloat16 else latents).numpy()
            for k, latent in zip(new, latents, strict=True):
                cache.save_latent(k, latent)
            cache.stats.latents_computed += len(new)
            latent_shape = tuple(latents.shape[-2:])
        elif not missing:
            cache.stats.latents_reused += len(new)
        pending.clear()
        report(progress, "scan", len(keys), n_frames)

    for count, frame in enumerate(frames):
        if plate_size is None:
            plate_size = frame.shape[:2]
            size = processing_size(*plate_size, config.processing_res)
        check_frame_size(frame, plate_size, count)
        pending.append(frame)
        if len(pending) == group:
            flush()
    if pending:
        flush()
    if plate_size is None:
        raise InputError("the plate has no frames")
    if len(keys) != n_frames:
        raise InputError(f"the plate announced {n_frames} frames but {len(keys)} were decoded")
    if latent_shape == (0, 0):
        latent_shape = (-(-size[0] // 8), -(-size[1] // 8))
    return Scan(keys, plate_size, size, latent_shape)


def block_keys(plan: Plan, scan: Scan, config: InferenceConfig, model: str) -> dict[int, str]:
    return {
        b.number: block_key(
            [[scan.latent_keys[f] for f in row] for row in b.indices.tolist()],
            model,
            config.snippet_len,
            config.denoise_steps,
            config.seed,
            config.dtype,
            unet_batch_size(config),
            config.vae_batch_size,
        )
        for b in plan.blocks
    }


# ------------------------------------------------------------------------------ 2. snippets
def compute_block(
    pipe: RollingDepthPipeline, block: Block, context: CachedContext, latent_keys: dict[int, str]
) -> int:
    """Predict one block from its frames' cached latents and store it; returns its snippets."""
    cache = SnippetCache(context.cache_folder)
    frames = np.unique(block.indices)
    latents = np.stack([cache.load_latent(latent_keys[int(f)]) for f in frames])
    latents = torch.from_numpy(latents).to(pipe.device, pipe.dtype)  # [F,4,h,w]
    local = np.searchsorted(frames, block.indices)  # [b, L] rows of `latents`
    noise = pipe.shared_noise(context.latent_shape, context.config.seed)
    config = replace(context.config, batch_size=unet_batch_size(context.config))
    maps = pipe.predict_snippets(latents, noise, local, context.size, config)  # [b,L,H,W]
    if not np.isfinite(maps).all():
        raise RollingDepthError(
            "the model produced non-finite depth; with fp16 try `--dtype bf16` or `fp32`"
        )
    maps = maps.astype(np.float16)
    cache.save_block(
        context.keys[block.number], maps, reduce_maps(maps, REDUCE_BORDER, REDUCE_SUBSAMPLE)
    )
    return len(block.indices)


def compute_blocks_locally(
    blocks: list[Block],
    context: CachedContext,
    scan: Scan,
    pipeline: Callable[[], RollingDepthPipeline],
    cache: SnippetCache,
    progress: ProgressCallback | None = None,
) -> None:
    total = sum(len(b.indices) for b in blocks)
    done = 0
    for block in blocks:
        if cache.has_block(context.keys[block.number]):
            cache.stats.blocks_reused += 1
            cache.stats.snippets_reused += len(block.indices)
        else:
            keys = {int(f): scan.latent_keys[int(f)] for f in np.unique(block.indices)}
            cache.stats.snippets_computed += compute_block(pipeline(), block, context, keys)
            cache.stats.blocks_computed += 1
            cache.stats.computed_blocks.append(block.number)
        done += len(block.indices)
        report(progress, "snippets", done, total)


def missing_blocks(plan: Plan, keys: dict[int, str], cache: SnippetCache) -> list[int]:
    return [b.number for b in plan.blocks if not cache.has_block(keys[b.number])]


def check_complete(plan: Plan, keys: dict[int, str], cache: SnippetCache) -> None:
    missing = missing_blocks(plan, keys, cache)
    if missing:
        shown = ", ".join(str(m) for m in missing[:12]) + (" ..." if len(missing) > 12 else "")
        raise CacheIncomplete(
            f"the cache {str(cache.folder)!r} lacks {len(missing)} of {len(plan.blocks)} snippet "
            f"blocks (blocks {shown}; block b belongs to chunk b % N + 1 of N): run the missing "
            f"`rollingdepth infer --chunk K/N` jobs with the same plate and settings first"
        )


# ------------------------------------------------------------------------------ 3. finalize
def solve_from_cache(
    plan: Plan,
    keys: dict[int, str],
    cache: SnippetCache,
    config: InferenceConfig,
    progress: ProgressCallback | None = None,
) -> AlignmentResult:
    """Co-align from the blocks' reduced maps (never their full-resolution maps)."""
    check_complete(plan, keys, cache)
    offset = min(cache.block_meta(keys[b.number])["min"] for b in plan.blocks)
    per_dilation: dict[int, np.ndarray] = {}
    for b in plan.blocks:
        per_dilation.setdefault(b.dilation, [])
        per_dilation[b.dilation].append(cache.load_reduced(keys[b.number]))
    reduced = {d: np.concatenate(parts) for d, parts in per_dilation.items()}
    return solve_reduced(
        [reduced[d] for d in plan.dilations],
        plan.indices,
        np.float32(offset),
        method=config.aligner,
        progress=None if progress is None else lambda d, t: progress("align", d, t),
    )


class _BlockReader:
    """Memory-mapped blocks, the most recently used few kept open."""

    def __init__(self, cache: SnippetCache, keys: dict[int, str], keep: int):
        self.cache, self.keys, self.keep = cache, keys, keep
        self.open: OrderedDict[int, np.ndarray] = OrderedDict()

    def frame(self, block: int, row: int, position: int) -> np.ndarray:
        if block not in self.open:
            self.open[block] = self.cache.open_block(self.keys[block])
            while len(self.open) > self.keep:
                self.open.popitem(last=False)
        self.open.move_to_end(block)
        return np.array(self.open[block][row, position])  # [H,W] float16, a copy


def merge_frames(
    plan: Plan,
    keys: dict[int, str],
    cache: SnippetCache,
    result: AlignmentResult,
    confidence: bool,
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """The full-resolution merge, one frame at a time, in :func:`coalign`'s order."""
    length = plan.indices[0].shape[1]
    spans = [(length - 1) * d // BLOCK_SNIPPETS + 2 for d in dict.fromkeys(plan.dilations)]
    reader = _BlockReader(cache, keys, keep=sum(spans) + 2)
    for f, cover in enumerate(covering_order(plan.indices, plan.n_frames)):
        maps, scales, shifts, weights = [], [], [], []
        for i, n, j in cover.tolist():
            block = plan.first_block[plan.dilations[i]] + n // BLOCK_SNIPPETS
            maps.append(reader.frame(block, n % BLOCK_SNIPPETS, j))
            scales.append(result.scales[i][n])
            shifts.append(result.shifts[i][n])
            if result.merge_weights is not None:
                weights.append(result.merge_weights[i][n])
        sigma = float(result.frame_sigma[f]) if confidence else None
        yield merge_frame(
            maps,
            scales,
            shifts,
            result.offset,
            weights if result.merge_weights is not None else None,
            sigma,
        )


class FrameStore:
    """A clip of ``[H,W]`` float32 frames in a scratch file, written in order, read by index.

    Plain file I/O rather than a memory map, so the frames live in the page cache and never in
    the process's resident memory.
    """

    def __init__(self, folder: Path, name: str, shape: tuple[int, int]):
        self.path = folder / f"{name}.f32"
        self.shape = shape
        self.count = 0
        self.lo, self.hi = np.inf, -np.inf
        self._out = self.path.open("wb")

    def append(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame, dtype=np.float32)
        self.lo = min(self.lo, float(frame.min()))
        self.hi = max(self.hi, float(frame.max()))
        self._out.write(frame.tobytes())
        self.count += 1

    def close(self) -> None:
        self._out.close()

    def __iter__(self) -> Iterator[np.ndarray]:
        n = self.shape[0] * self.shape[1]
        with self.path.open("rb") as fh:
            for _ in range(self.count):
                yield np.frombuffer(fh.read(4 * n), dtype=np.float32).reshape(self.shape)

    def chunks(self, size: int) -> Iterator[np.ndarray]:
        batch: list[np.ndarray] = []
        for frame in self:
            batch.append(frame)
            if len(batch) == size:
                yield np.stack(batch)
                batch = []
        if batch:
            yield np.stack(batch)


def normalized(frames: Iterable[np.ndarray], lo: float, hi: float) -> Iterator[np.ndarray]:
    """:func:`normalize_depth` frame by frame, given the clip's extremes."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise RollingDepthError(
            "the model produced non-finite depth; with fp16 try `--dtype bf16` or `fp32`"
        )
    for frame in frames:
        yield rescale_depth(frame, lo, hi)


@dataclass
class FinalDepth:
    """The finished clip, on disk: iterate ``frames()`` (and ``confidence()``) to write it."""

    store: FrameStore
    value_range: tuple[float, float]
    normalize: tuple[float, float] | None  # the store holds raw merged frames: normalise on read
    confidence_store: FrameStore | None
    alignment: AlignmentResult

    def frames(self) -> Iterator[np.ndarray]:
        if self.normalize is None:
            return iter(self.store)
        return normalized(self.store, *self.normalize)

    def confidence(self) -> Iterator[np.ndarray] | None:
        return None if self.confidence_store is None else iter(self.confidence_store)


def finalize_depth(
    plan: Plan,
    keys: dict[int, str],
    cache: SnippetCache,
    scan: Scan,
    config: InferenceConfig,
    scratch: Path,
    pipeline: Callable[[], RollingDepthPipeline],
    progress: ProgressCallback | None = None,
) -> FinalDepth:
    """Align, merge frame by frame into a scratch file and, with refinement, refine."""
    result = solve_from_cache(plan, keys, cache, config, progress)
    merged = FrameStore(scratch, "merged", scan.size)
    conf = FrameStore(scratch, "confidence", scan.size) if config.confidence else None
    for f, (frame, confidence) in enumerate(
        merge_frames(plan, keys, cache, result, config.confidence)
    ):
        merged.append(frame)
        if conf is not None:
            conf.append(confidence)
        report(progress, "merge", f + 1, plan.n_frames)
    merged.close()
    if conf is not None:
        conf.close()
    lo, hi = merged.lo, merged.hi
    if config.refine_steps == 0:
        first = next(normalized(iter([np.array([lo, hi], np.float32)]), lo, hi))
        return FinalDepth(merged, (float(first[0]), float(first[1])), (lo, hi), conf, result)

    pipe = pipeline()
    latents = torch.from_numpy(np.stack([cache.load_latent(k) for k in scan.latent_keys]))
    latents = latents.to(pipe.device, pipe.dtype)  # [N,4,h,w]
    batches = (
        np.stack(list(normalized(chunk, lo, hi))) for chunk in merged.chunks(config.vae_batch_size)
    )
    encoded = pipe.encode_depth(batches)  # [N,4,h,w]
    noise = pipe.shared_noise(tuple(latents.shape[-2:]), config.seed)
    current = pipe.refine_latents(latents, encoded, noise, config, progress)
    del latents, encoded
    refined = FrameStore(scratch, "refined", scan.size)
    for chunk in current.split(config.vae_batch_size):
        for frame in pipe.decode_depth(chunk, scan.size).float().cpu().numpy():
            refined.append(frame)
    refined.close()
    if not (np.isfinite(refined.lo) and np.isfinite(refined.hi)):
        raise RollingDepthError(
            "the model produced non-finite depth; with fp16 try `--dtype bf16` or `fp32`"
        )
    return FinalDepth(refined, (refined.lo, refined.hi), None, conf, result)


def scratch_folder(cache: SnippetCache) -> Path:
    """A private scratch folder inside the cache (same disk), removed by :func:`drop_scratch`."""
    folder = cache.folder / "scratch"
    folder.mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=folder))


def drop_scratch(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
