"""Where the method keeps what it computes: a snippet store, in memory or on disk.

:mod:`.method` runs the same stages over either store; a store decides only *where* latents,
snippet blocks and the clip's frames live, never what is computed:

``MemoryStore``
    Everything in RAM in the compute dtype (float32 on the CPU, as the reference keeps it):
    the latents of every frame, one block per dilation (the whole dilation's snippets, predicted
    in one pass), the merged clip as one ``[N,H,W]`` array. The one-shot run, ``--reference``
    and the panel's tuning session (which keeps the store between runs) use it.
``DiskStore``
    The on-disk snippet cache (:mod:`.cache`): per-frame latents and blocks of
    ``BLOCK_SNIPPETS`` snippets in float16 with their reduced maps, content-keyed, written whole
    and checked on read (:mod:`.cache`), so a run resumes, farm chunks and duplicate farm tasks
    share it and memory stays bounded; the merged clip goes to a scratch file read frame by
    frame.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from .alignment import reduce_maps
from .cache import (
    BLOCK_SETTINGS,
    REDUCE_BORDER,
    REDUCE_SUBSAMPLE,
    CacheStats,
    SnippetCache,
    block_key,
    frame_hash,
    latent_key,
)
from .config import InferenceConfig
from .errors import InputError, OutputError
from .model import DepthModel, processing_size
from .progress import ProgressCallback, report

BLOCK_SNIPPETS = 16  # snippets per cache block: the unit of caching, resuming and farming
CACHED_BATCH_SIZE = 4  # snippets per UNet call when `batch_size` is automatic (0): fixed, so
# that every machine batches alike and cached results agree bit for bit
DEFAULT_MEMORY_BYTES = 4 * 1024**3

ModelLoader = Callable[[], DepthModel]


def check_frame_size(frame: np.ndarray, plate_size: tuple[int, int], count: int) -> None:
    """InputError unless frame number ``count`` (``[H,W,3]``) has the first frame's size."""
    if frame.shape[:2] != plate_size:
        raise InputError(
            f"frame {count} is {frame.shape[1]}x{frame.shape[0]}, the first frame "
            f"{plate_size[1]}x{plate_size[0]}: every frame must have one size"
        )


def _groups(
    frames: Iterable[np.ndarray], group: int, config: InferenceConfig
) -> Iterator[tuple[list[np.ndarray], tuple[tuple[int, int], tuple[int, int]]]]:
    """Frames in the fixed VAE groups both stores encode in: (frames, (plate size, size))."""
    pending: list[np.ndarray] = []
    plate_size: tuple[int, int] | None = None
    size = (0, 0)
    for count, frame in enumerate(frames):
        if plate_size is None:
            plate_size = frame.shape[:2]
            size = processing_size(*plate_size, config.processing_res)
        check_frame_size(frame, plate_size, count)
        pending.append(frame)
        if len(pending) == group:
            yield pending, (plate_size, size)
            pending = []
    if pending:
        yield pending, (plate_size, size)
    if plate_size is None:
        raise InputError("the plate has no frames")


# ------------------------------------------------------------------------------ frame buffers
def _track_extremes(buffer, frame: np.ndarray) -> None:
    """The clip's extremes so far; a non-finite value makes them NaN for good (Python's
    min/max keep their first argument when a comparison with NaN fails)."""
    lo, hi = float(frame.min()), float(frame.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        buffer.lo = buffer.hi = float("nan")
    buffer.lo = min(buffer.lo, lo)
    buffer.hi = max(buffer.hi, hi)


class ArrayFrames:
    """The clip's ``[H,W]`` float32 frames in one in-memory ``[N,H,W]`` array."""

    def __init__(self, n_frames: int, shape: tuple[int, int]):
        self.array = np.empty((n_frames, *shape), np.float32)
        self.count = 0
        self.lo, self.hi = np.inf, -np.inf

    def append(self, frame: np.ndarray) -> None:
        self.array[self.count] = frame
        _track_extremes(self, frame)
        self.count += 1

    def close(self) -> None:
        pass

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.array[: self.count])

    def chunks(self, size: int) -> Iterator[np.ndarray]:
        for start in range(0, self.count, size):
            yield self.array[start : min(start + size, self.count)]


class FileFrames:
    """A clip of ``[H,W]`` float32 frames in a scratch file, written in order, read in order.

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
        _track_extremes(self, frame)
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


# ------------------------------------------------------------------------------ memory
class MemoryStore:
    """Latents, snippet blocks and frames in RAM; kept between runs by a tuning session.

    Latents are kept for one processing resolution at a time. Blocks beyond ``max_bytes`` are
    dropped, least recently used first, except those the current plan uses (:meth:`trim`).
    """

    block_snippets: int | None = None  # one block per dilation

    def __init__(self, max_bytes: int = DEFAULT_MEMORY_BYTES):
        self.max_bytes = max_bytes
        self.latents: torch.Tensor | None = None  # [N,4,h,w] on the model's device
        self.latents_key: tuple | None = None
        self.plate_size: tuple[int, int] | None = None
        self.blocks: OrderedDict[tuple, np.ndarray] = OrderedDict()  # [n,L,H,W]
        self.stats = CacheStats()
        self.clip: tuple[int, int] = (0, 0)  # the part of the plate the latents are of
        self._reduced: dict[tuple, tuple[float, np.ndarray]] = {}  # min, contiguous reduced

    @staticmethod
    def unet_batch_size(config: InferenceConfig, model: DepthModel, latent_shape) -> int:
        return config.batch_size or model.auto_batch_size(latent_shape, config.snippet_len)

    # ---- 1. latents
    def needs_scan(self, config: InferenceConfig, clip: tuple[int, int] = (0, 0)) -> bool:
        return self.latents is None or self.latents_key != (config.processing_res, clip)

    def scan(
        self,
        frames: Iterable[np.ndarray],
        n_frames: int,
        config: InferenceConfig,
        model: ModelLoader,
        needed_frames: set[int] | None = None,
        progress: ProgressCallback | None = None,
        clip: tuple[int, int] = (0, 0),
    ) -> tuple[tuple[int, int], tuple[int, int]]:
        """Encode every frame (groups of ``vae_batch_size``); returns (plate size, size).

        ``clip``: which part of the plate these frames are (a shot's start and stop): blocks
        are keyed by it, so one store can hold several shots' snippets apart."""
        self.latents = None  # free the old size before encoding the new one
        parts: list[torch.Tensor] = []
        count = 0
        sizes = ((0, 0), (0, 0))
        # the stage is named before its first group, which can take a minute at a large size:
        # until then a progress line would still show the finished previous stage
        report(progress, "encode", 0, n_frames)
        for group, sizes in _groups(frames, config.vae_batch_size, config):
            size = sizes[1]
            pipe = model()
            parts.append(pipe.encode(torch.cat([pipe.preprocess(f, size) for f in group])))
            count += len(group)
            report(progress, "encode", count, max(n_frames, count))
        self.latents = torch.cat(parts)  # [N,4,h,w]
        self.latents_key = (config.processing_res, clip)
        self.clip = clip
        self.plate_size = sizes[0]
        return sizes

    @property
    def latent_shape(self) -> tuple[int, int]:
        return tuple(self.latents.shape[-2:])

    def block_latents(self, frames: np.ndarray, model: DepthModel) -> torch.Tensor:
        """Latents ``[F,4,h,w]`` of the (sorted, unique) frame numbers ``frames``."""
        return self.latents[torch.from_numpy(frames).to(self.latents.device)]

    def all_latents(self, model: DepthModel) -> torch.Tensor:
        return self.latents

    # ---- 2. blocks
    def block_key(self, block, config: InferenceConfig) -> tuple:
        # what a block's prediction depends on besides the model: the part of the plate
        # (a shot), the dilation and its snippets, the settings that change them
        return (
            self.clip,
            block.dilation,
            block.start,
            config.snippet_len,
            config.denoise_steps,
            config.seed,
            config.processing_res,
        )

    def has_block(self, key: tuple) -> bool:
        return key in self.blocks

    reusable_block = has_block

    def put_block(self, key: tuple, maps: np.ndarray, block=None, config=None) -> None:
        self.blocks[key] = maps

    def block(self, key: tuple) -> np.ndarray:
        self.blocks.move_to_end(key)
        return self.blocks[key]

    def block_min_and_reduced(self, key: tuple) -> tuple[float, np.ndarray]:
        """The block's minimum and its reduced maps, computed once and kept (1 % of its
        bytes; the solver reads them every pass, and strided reads from the full maps would
        cost about a third of the solve)."""
        if key not in self._reduced:
            maps = self.blocks[key]
            lo = float(torch.from_numpy(maps).min())
            self._reduced[key] = (lo, np.ascontiguousarray(reduce_maps(maps)))
        return self._reduced[key]

    def frame_map(self, key: tuple, row: int, position: int) -> np.ndarray:
        return self.blocks[key][row, position]  # [H,W], a view

    def trim(self, keep: set[tuple]) -> list[tuple]:
        """Drop least recently used blocks beyond ``max_bytes``; returns the dropped keys."""
        total = sum(a.nbytes for a in self.blocks.values())
        dropped = []
        for key in list(self.blocks):
            if total <= self.max_bytes:
                break
            if key not in keep:
                total -= self.blocks.pop(key).nbytes
                self._reduced.pop(key, None)
                dropped.append(key)
        return dropped

    # ---- 3. frames
    def frames_buffer(self, name: str, n_frames: int, shape: tuple[int, int]) -> ArrayFrames:
        return ArrayFrames(n_frames, shape)

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------ disk
def _scratch_folder(preferred: Path) -> Path:
    """A private scratch folder in ``preferred`` (inside the cache: the blocks' disk), else,
    when the cache cannot take it (a filled cache on a read-only mount, which a finalize or a
    rerun only reads), in the system's temporary folder."""
    prefix = f"run-{os.getpid()}-"
    try:
        preferred.mkdir(exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=prefix, dir=preferred))
    except OSError:
        pass
    try:
        return Path(tempfile.mkdtemp(prefix=f"rollingdepth-{prefix}"))
    except OSError as exc:
        raise OutputError(
            f"cannot create a scratch folder in the cache ({preferred}) nor in "
            f"{tempfile.gettempdir()}: {exc.strerror}"
        ) from exc


class DiskStore:
    """The on-disk snippet cache: bounded memory, resumable, shared by farm chunks."""

    block_snippets: int | None = BLOCK_SNIPPETS

    def __init__(self, folder: str | Path, model_fingerprint: str):
        self.cache = SnippetCache(folder)
        self.model = model_fingerprint
        self.latent_keys: list[str] = []
        self.latent_shape: tuple[int, int] = (0, 0)
        self._reader: _BlockReader | None = None
        self._scratch: Path | None = None

    def to_state(self) -> dict:
        """What a worker on another machine needs to use this store (picklable)."""
        return {
            "folder": str(self.cache.folder),
            "model": self.model,
            "latent_keys": self.latent_keys,
            "latent_shape": self.latent_shape,
        }

    @classmethod
    def from_state(cls, state: dict) -> DiskStore:
        store = cls(state["folder"], state["model"])
        store.latent_keys = list(state["latent_keys"])
        store.latent_shape = tuple(state["latent_shape"])
        return store

    @property
    def folder(self) -> Path:
        return self.cache.folder

    @property
    def stats(self):
        return self.cache.stats

    @staticmethod
    def unet_batch_size(config: InferenceConfig, model: DepthModel | None, latent_shape) -> int:
        return config.batch_size or CACHED_BATCH_SIZE

    # ---- 1. latents
    def needs_scan(self, config: InferenceConfig, clip: tuple[int, int] = (0, 0)) -> bool:
        return True  # frames are hashed every run: the cache is keyed by their content

    def scan(
        self,
        frames: Iterable[np.ndarray],
        n_frames: int,
        config: InferenceConfig,
        model: ModelLoader,
        needed_frames: set[int] | None = None,
        progress: ProgressCallback | None = None,
        clip: tuple[int, int] = (0, 0),
    ) -> tuple[tuple[int, int], tuple[int, int]]:
        """Hash every frame; encode the groups holding ``needed_frames`` (None = all) that the
        cache lacks. ``model()`` loads the model on first use, so a run that finds everything
        cached never loads it."""
        group = config.vae_batch_size
        needed_groups = None if needed_frames is None else {f // group for f in needed_frames}
        keys: list[str] = []
        sizes = ((0, 0), (0, 0))
        report(progress, "scan", 0, n_frames)  # named before its first group (as in memory)
        for pending, sizes in _groups(frames, group, config):
            size = sizes[1]
            g = len(keys) // group
            new = [
                latent_key(frame_hash(f), self.model, config.processing_res, config.dtype, g)
                for f in pending
            ]
            keys.extend(new)
            needed = needed_groups is None or g in needed_groups
            # a latent this run uses is checked against its digest now, while its frame is at
            # hand: a damaged one is moved aside and encoded again with its group
            present = self.cache.latent_ok if needed else self.cache.has_latent
            missing = not all([present(k) for k in new])
            if missing and needed:
                pipe = model()
                images = torch.cat([pipe.preprocess(f, size) for f in pending])
                latents = pipe.encode(images).cpu()  # [b,4,h,w]
                # stored in the compute dtype (numpy has no bfloat16: that one goes as float32)
                latents = (latents.float() if latents.dtype == torch.bfloat16 else latents).numpy()
                for k, latent in zip(new, latents, strict=True):
                    self.cache.save_latent(k, latent)
                self.stats.latents_computed += len(new)
            elif not missing:
                self.stats.latents_reused += len(new)
            report(progress, "scan", len(keys), n_frames)
        if len(keys) != n_frames:
            raise InputError(f"the plate announced {n_frames} frames but {len(keys)} were decoded")
        self.latent_keys = keys
        self.latent_shape = (-(-sizes[1][0] // 8), -(-sizes[1][1] // 8))
        return sizes

    def block_latents(self, frames: np.ndarray, model: DepthModel) -> torch.Tensor:
        latents = np.stack([self.cache.load_latent(self.latent_keys[int(f)]) for f in frames])
        return torch.from_numpy(latents).to(model.device, model.dtype)  # [F,4,h,w]

    def all_latents(self, model: DepthModel) -> torch.Tensor:
        return self.block_latents(np.arange(len(self.latent_keys)), model)

    # ---- 2. blocks
    def block_key(self, block, config: InferenceConfig) -> str:
        latents, settings = self._block_inputs(block, config)
        return block_key(latents, *(settings[n] for n in BLOCK_SETTINGS))

    def has_block(self, key: str) -> bool:
        return self.cache.has_block(key)

    def reusable_block(self, key: str) -> bool:
        """Whether a block need not be computed: there, and its meta says it is this key's
        (a cheap check; its arrays are checked against their digests when read)."""
        return self.cache.block_ok(key)

    def put_block(self, key: str, maps: np.ndarray, block=None, config=None) -> None:
        maps = maps.astype(np.float16)
        reduced = reduce_maps(maps, REDUCE_BORDER, REDUCE_SUBSAMPLE)
        holds = None if block is None else self.block_holds(block, config)
        self.cache.save_block(key, maps, reduced, holds)

    def block_holds(self, block, config: InferenceConfig) -> dict:
        """What a block's meta records: the inputs of its key (its snippets' latent keys and
        the settings), and, to say what it is, its dilation, its snippet indices and the
        plate (the digest of the clip's latent keys) it was first computed for."""
        latents, settings = self._block_inputs(block, config)
        plate = hashlib.sha256("".join(self.latent_keys).encode()).hexdigest()[:40]
        return {
            "latents": latents,
            "settings": settings,
            "dilation": int(block.dilation),
            "first_snippet": int(block.start),
            "indices": block.indices.tolist(),
            "plate": plate,
        }

    def _block_inputs(self, block, config: InferenceConfig) -> tuple[list[list[str]], dict]:
        settings = dict(
            model=self.model,
            snippet_len=config.snippet_len,
            denoise_steps=config.denoise_steps,
            seed=config.seed,
            dtype=config.dtype,
            batch_size=self.unet_batch_size(config, None, None),
            vae_batch_size=config.vae_batch_size,
        )
        return [[self.latent_keys[f] for f in row] for row in block.indices.tolist()], settings

    def block_min_and_reduced(self, key: str) -> tuple[float, np.ndarray]:
        return self.cache.block_meta(key)["min"], self.cache.load_reduced(key)

    def frame_map(self, key: str, row: int, position: int) -> np.ndarray:
        if self._reader is None:
            self._reader = _BlockReader(self.cache)
        return self._reader.frame(key, row, position)

    def keep_open(self, n_blocks: int) -> None:
        """How many blocks the frame-by-frame merge keeps memory-mapped at once."""
        self._reader = _BlockReader(self.cache, keep=n_blocks)

    # ---- 3. frames
    def frames_buffer(self, name: str, n_frames: int, shape: tuple[int, int]) -> FileFrames:
        if self._scratch is None:
            self._scratch = _scratch_folder(self.cache.folder / "scratch")  # close() removes it
        return FileFrames(self._scratch, name, shape)

    def close(self) -> None:
        self._reader = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


class _BlockReader:
    """Memory-mapped blocks, the most recently used few kept open."""

    def __init__(self, cache: SnippetCache, keep: int = 8):
        self.cache, self.keep = cache, keep
        self.open: OrderedDict[str, np.ndarray] = OrderedDict()

    def frame(self, key: str, row: int, position: int) -> np.ndarray:
        if key not in self.open:
            self.open[key] = self.cache.open_block(key)
            while len(self.open) > self.keep:
                self.open.popitem(last=False)
        self.open.move_to_end(key)
        return np.array(self.open[key][row, position])  # [H,W] float16, a copy
