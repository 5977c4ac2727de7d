"""Where snippet blocks are computed: here (``LocalExecutor``) or on a Ray cluster.

An executor gets the blocks a run needs and leaves them in the store; :mod:`.method` does the
rest. Ray is imported only by ``RayExecutor``, so the engine runs without it. Every Ray node
must see the disk store's folder (shared storage) and load the same checkpoint; workers compute
blocks with the same settings and thread count as the driver, so a Ray run writes the same
bits as a local one.
"""

from __future__ import annotations

import os

from .errors import ConfigError, RollingDepthError
from .plan import Block, Plan, predict_block
from .progress import ProgressCallback, report


def _todo(blocks: list[Block], store, config) -> list[Block]:
    """The blocks the store lacks; the ones it has are counted as reused."""
    todo = []
    for block in blocks:
        if store.has_block(store.block_key(block, config)):
            store.stats.blocks_reused += 1
            store.stats.snippets_reused += len(block.indices)
        else:
            todo.append(block)
    return todo


def _count(store, block: Block) -> None:
    store.stats.blocks_computed += 1
    store.stats.snippets_computed += len(block.indices)
    store.stats.computed_blocks.append(block.number)


class LocalExecutor:
    """Computes blocks in this process with the run's model."""

    def compute(
        self,
        blocks: list[Block],
        plan: Plan,
        store,
        config,
        size: tuple[int, int],
        model,
        progress: ProgressCallback | None = None,
    ) -> None:
        todo = _todo(blocks, store, config)
        total = sum(len(b.indices) for b in todo)
        done = 0
        for block in todo:
            done += predict_block(model(), store, block, config, size, progress, done, total)
            _count(store, block)


class BlockWorker:
    """Holds one model and a view of the shared disk store; computes the blocks it is sent."""

    def __init__(self, checkpoint: str, device: str, dtype: str, threads: int, store_state: dict):
        import torch

        from .model import DepthModel
        from .stores import DiskStore

        # the same thread count as the driver: CPU kernels may sum in another order otherwise
        torch.set_num_threads(threads)
        if device == "cuda" and not torch.cuda.is_available():
            raise RollingDepthError("a Ray worker was given a GPU that torch cannot see")
        self.model = DepthModel.from_pretrained(
            checkpoint, device=device, dtype=dtype, dtype_explicit=True
        )
        self.store = DiskStore.from_state(store_state)

    def compute(self, block: Block, config, size: tuple[int, int]) -> int:
        return predict_block(self.model, self.store, block, config, size)


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


class RayExecutor:
    """Sends the blocks a disk store lacks to a Ray cluster (``address``, else ``RAY_ADDRESS``,
    else a local instance): one worker per GPU, or per ``threads`` CPUs."""

    def __init__(self, checkpoint: str, driver_device: str, address: str | None = None):
        self.checkpoint = checkpoint
        self.driver_device = driver_device
        self.address = address

    def compute(
        self,
        blocks: list[Block],
        plan: Plan,
        store,
        config,
        size: tuple[int, int],
        model,
        progress: ProgressCallback | None = None,
    ) -> None:
        import torch

        if not hasattr(store, "to_state"):
            raise ConfigError("`--executor ray` needs `--cache DIR` on storage every node sees")
        ray = _connect(self.address)
        todo = _todo(blocks, store, config)
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
        if device != self.driver_device.split(":")[0]:
            raise ConfigError(
                f"the Ray workers run on {device} but this run resolved `--device "
                f"{self.driver_device}`; pass `--device {device}` so that the latents and "
                f"snippets agree"
            )
        actor = ray.remote(**options)(BlockWorker)
        state = store.to_state()
        workers = [
            actor.remote(self.checkpoint, device, config.dtype, threads, state)
            for _ in range(min(n_workers, len(todo)))
        ]
        from ray.util import ActorPool

        pool = ActorPool(workers)
        done = 0
        try:
            for block, snippets in zip(
                todo,
                pool.map(lambda w, b: w.compute.remote(b, config, size), todo),
                strict=True,
            ):
                done += snippets
                _count(store, block)
                report(progress, "snippets", done, total)
        finally:
            for w in workers:
                ray.kill(w)
