"""The plan of a run: which snippets it needs, cut into blocks, and how a block is predicted.

Stage 2 (plan) and the unit of stage 3 (predict) of :mod:`.method`, in a module of their own
so that the executors (:mod:`.executors`), which compute blocks, and the method, which
sequences the stages, both import it and not each other.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .config import InferenceConfig
from .errors import NonFiniteDepth, RollingDepthError
from .model import DepthModel
from .progress import ProgressCallback, report
from .snippets import check_clip_length, resolve_dilations, snippet_indices


class CacheIncomplete(RollingDepthError):
    """``finalize`` found snippet blocks missing from the cache."""


# ------------------------------------------------------------------------------ 2. the plan
@dataclass(frozen=True)
class Block:
    """A run of consecutive snippets of one dilation: the unit of storing and of farm chunks."""

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
    block_snippets: int  # snippets per block (a dilation's count when blocks are whole)

    def chunk(self, k: int, n: int) -> list[Block]:
        """Share ``k`` of ``n`` (1-based): blocks ``k-1, k-1+n, ...``."""
        return [b for b in self.blocks if b.number % n == k - 1]

    def block_of(self, dilation: int, snippet: int) -> tuple[Block, int]:
        """The block holding snippet ``snippet`` of ``dilation``, and its row there."""
        block = self.blocks[self.first_block[dilation] + snippet // self.block_snippets]
        return block, snippet - block.start


def make_plan(n_frames: int, config: InferenceConfig, block_snippets: int | None) -> Plan:
    """The dilations as run (capped for short clips) and their snippets in blocks of
    ``block_snippets`` (None: one block per dilation)."""
    check_clip_length(n_frames, config.snippet_len)
    dilations = resolve_dilations(
        n_frames, config.snippet_len, config.dilations, config.cap_dilation
    )
    indices = [snippet_indices(n_frames, config.snippet_len, d) for d in dilations]
    size = block_snippets or max(len(idx) for idx in indices)
    blocks: list[Block] = []
    first: dict[int, int] = {}
    for d, idx in zip(dilations, indices, strict=True):
        if d in first:
            continue  # a dilation repeated by capping is predicted once
        first[d] = len(blocks)
        for start in range(0, len(idx), size):
            blocks.append(Block(len(blocks), d, start, idx[start : start + size]))
    return Plan(n_frames, dilations, indices, blocks, first, size)


def needed_frames(blocks: Iterable[Block]) -> set[int]:
    return {int(f) for b in blocks for f in np.unique(b.indices)}


# ------------------------------------------------------------------------------ 3. predict
def predict_block(
    model: DepthModel,
    store,
    block: Block,
    config: InferenceConfig,
    size: tuple[int, int],
    progress: ProgressCallback | None = None,
    done: int = 0,
    total: int | None = None,
) -> int:
    """Denoise and decode one block from its frames' latents and store it; returns its count.

    ``progress`` hears ``snippets`` after every UNet batch, counted from ``done`` of ``total``.
    """
    frames = np.unique(block.indices)
    latents = store.block_latents(frames, model)  # [F,4,h,w]
    local = np.searchsorted(frames, block.indices)  # [b, L] rows of `latents`
    noise = model.shared_noise(store.latent_shape, config.seed)  # [1,4,h,w]
    batch = store.unet_batch_size(config, model, store.latent_shape)
    maps = model.predict_snippets(latents, noise, local, size, config, batch, progress, done, total)
    if not np.isfinite(maps).all():
        raise NonFiniteDepth()
    store.put_block(store.block_key(block, config), maps, block, config)  # [b,L,H,W]
    report(progress, "snippets", done + len(block.indices), total or len(block.indices))
    return len(block.indices)


def missing_blocks(plan: Plan, store, config: InferenceConfig) -> list[Block]:
    return [b for b in plan.blocks if not store.has_block(store.block_key(b, config))]


def check_complete(plan: Plan, store, config: InferenceConfig) -> None:
    missing = [b.number for b in missing_blocks(plan, store, config)]
    if missing:
        shown = ", ".join(str(m) for m in missing[:12]) + (" ..." if len(missing) > 12 else "")
        raise CacheIncomplete(
            f"the cache {str(store.folder)!r} lacks {len(missing)} of {len(plan.blocks)} snippet "
            f"blocks (blocks {shown}; block b belongs to chunk b % N + 1 of N): run the missing "
            f"`rollingdepth infer --chunk K/N` jobs with the same plate and settings first"
        )
