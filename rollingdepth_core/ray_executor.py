"""Snippet blocks on a Ray cluster: one actor per GPU (or per CPU worker) loads the model once.

Ray is imported here only, so the engine runs without it. Every node must see the cache folder
and the checkpoint at the same paths (a shared file system, as on any render farm). The driver
scans the plate and encodes the latents (VAE encoder only); the actors predict the snippet
blocks and write them into the cache; the driver then finalizes as a local run does.
"""

from __future__ import annotations

import os

import numpy as np

from .cache import SnippetCache
from .errors import ConfigError, RollingDepthError
from .long_plate import Block, CachedContext, Scan, compute_block
from .progress import ProgressCallback, report


class BlockWorker:
    """Holds one pipeline; computes the blocks it is sent into the shared cache."""

    def __init__(self, checkpoint: str, device: str, dtype: str, threads: int):
        import torch

        from .pipeline import RollingDepthPipeline

        # the same thread count as the driver: CPU kernels may sum in another order otherwise
        torch.set_num_threads(threads)
        if device == "cuda" and not torch.cuda.is_available():
            raise RollingDepthError("a Ray worker was given a GPU that torch cannot see")
        self.pipe = RollingDepthPipeline.from_pretrained(
            checkpoint, device=device, dtype=dtype, dtype_explicit=True
        )

    def compute(self, block: Block, context: CachedContext, latent_keys: dict[int, str]) -> int:
        return compute_block(self.pipe, block, context, latent_keys)


def _connect(address: str | None):
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "`--executor ray` needs Ray: pip install 'rollingdepth[farm]' (or pip install ray)"
        ) from None
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    return ray


def compute_blocks_on_ray(
    blocks: list[Block],
    context: CachedContext,
    scan: Scan,
    cache: SnippetCache,
    driver_device: str,
    address: str | None = None,
    progress: ProgressCallback | None = None,
) -> None:
    """Compute the blocks the cache lacks on the cluster; counts go into ``cache.stats``."""
    import torch

    ray = _connect(address)
    todo = []
    for block in blocks:
        if cache.has_block(context.keys[block.number]):
            cache.stats.blocks_reused += 1
            cache.stats.snippets_reused += len(block.indices)
        else:
            todo.append(block)
    total = sum(len(b.indices) for b in todo)
    report(progress, "snippets", 0, total)
    if not todo:
        return
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    threads = torch.get_num_threads()
    if gpus:
        n_workers, options = gpus, {"num_gpus": 1, "num_cpus": 1}
        device = "cuda"
    else:
        cpus = max(1, int(resources.get("CPU", 1)))
        n_workers = max(1, cpus // threads)
        options = {"num_cpus": min(threads, cpus)}
        device = "cpu"
    if device != driver_device.split(":")[0]:
        raise ConfigError(
            f"the Ray workers run on {device} but this run resolved `--device {driver_device}`; "
            f"pass `--device {device}` so that the latents and snippets agree"
        )
    actor = ray.remote(**options)(BlockWorker)
    workers = [
        actor.remote(context.checkpoint, device, context.config.dtype, threads)
        for _ in range(min(n_workers, len(todo)))
    ]
    from ray.util import ActorPool

    pool = ActorPool(workers)
    jobs = ((b, {int(f): scan.latent_keys[int(f)] for f in np.unique(b.indices)}) for b in todo)
    done = 0
    try:
        for block, snippets in zip(
            todo,
            pool.map(lambda w, job: w.compute.remote(job[0], context, job[1]), jobs),
            strict=True,
        ):
            done += snippets
            cache.stats.blocks_computed += 1
            cache.stats.snippets_computed += snippets
            cache.stats.computed_blocks.append(block.number)
            report(progress, "snippets", done, total)
    finally:
        for w in workers:
            ray.kill(w)
