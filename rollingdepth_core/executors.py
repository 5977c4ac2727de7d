"""Where snippet blocks are computed: here (``LocalExecutor``) or on a Ray cluster.

An executor gets the blocks a run needs and leaves them in the store; :mod:`.method` does the
rest. Ray is imported only by ``RayExecutor``, so the engine runs without it. Every Ray node
must see the disk store's folder (shared storage) and load the same checkpoint.

The Ray executor's policies, each chosen so that a farm's node loss never changes a bit:

* **Sizing.** Workers are sized to the nodes that are alive when the run starts
  (``ray.nodes()``): one per GPU, or on CPUs one per ``c`` CPUs of a node, where ``c`` is the
  driver's torch thread count ``T`` or, when no node has that many, the largest node's CPU
  count (nodes smaller than ``c`` get none, and the run says so). A cluster with no node that
  can hold a worker is refused at once, in one line; workers that do not start within
  ``ROLLINGDEPTH_RAY_START_TIMEOUT`` seconds (default 600: their resources are held by other
  jobs) end the run in one line. Never a silent wait.
* **Thread count.** Every worker runs ``torch.set_num_threads(T)``, the driver's count, whatever
  CPUs it reserved: some CPU kernels (full reductions such as a tensor's mean) sum in another
  order with another thread count, so a worker with fewer threads could write other bits. Each
  result carries the worker's count and the driver checks it.
* **Node loss.** Actors are created with ``max_restarts=0``: a worker that dies (its node
  killed, pre-empted, out of memory) is dropped and the block it held goes back to the front of
  the queue for the workers left; replacements are started where the nodes left have room.
  A block is resubmitted at most ``MAX_BLOCK_ATTEMPTS - 1`` times; blocks are content-keyed and
  written whole (:mod:`.cache`), so a block computed twice is harmless. When no worker is left
  and no node can hold one, the run ends in one line; the cache keeps every finished block.
* **Head loss.** Workers keep running without the head, but the driver's Ray would end the
  process some time later. The driver checks the head's GCS port twice a second; when the head's
  host refuses the connection (the GCS is gone), or has not answered for
  ``HEAD_GRACE_SECONDS``, the run ends in one line saying how many blocks are in the cache, and
  the same command resumes from there.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from collections.abc import Callable

from .errors import ConfigError, RollingDepthError
from .plan import Block, Plan, predict_block
from .progress import ProgressCallback, report


def _todo(blocks: list[Block], store, config) -> list[Block]:
    """The blocks the store lacks (or holds damaged: moved aside, so computed again); the ones
    it has are counted as reused."""
    todo = []
    for block in blocks:
        if store.reusable_block(store.block_key(block, config)):
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

        # the driver's thread count, whatever CPUs Ray reserved: results depend on it
        torch.set_num_threads(threads)
        if device == "cuda" and not torch.cuda.is_available():
            raise RollingDepthError("a Ray worker was given a GPU that torch cannot see")
        self.model = DepthModel.from_pretrained(
            checkpoint, device=device, dtype=dtype, dtype_explicit=True
        )
        self.store = DiskStore.from_state(store_state)

    def ready(self) -> int:
        import torch

        return torch.get_num_threads()

    def compute(self, block: Block, config, size: tuple[int, int]) -> tuple[int, int]:
        """The block's snippet count and the torch threads it was computed with."""
        import torch

        return predict_block(self.model, self.store, block, config, size), torch.get_num_threads()


class ClusterLost(RollingDepthError):
    """The Ray cluster went away (its head, or every node that could hold a worker)."""


START_TIMEOUT_SECONDS = 600.0
HEAD_GRACE_SECONDS = 10.0  # a head that does not answer at all (a refusal ends at once)
HEAD_CHECK_SECONDS = 0.5
MAX_BLOCK_ATTEMPTS = 4
POLL_SECONDS = 1.0
WAIT_MESSAGE_SECONDS = 30.0


def _probe(address: str, timeout: float = 2.0) -> str:
    """``"up"`` when something listens at ``host:port``, ``"refused"`` when the host says that
    nothing does (the process is gone), ``"silent"`` when it does not answer at all."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return "up"
    except ConnectionRefusedError:
        return "refused"
    except (OSError, ValueError):
        return "silent"


def _connect(address: str | None):
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "`--executor ray` needs Ray: pip install 'rollingdepth[farm]' (or pip install ray)"
        ) from None
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        # Ray retries an address that does not answer for minutes before it says so
        plain = address and address != "auto" and ":" in address and "://" not in address
        if plain and _probe(address) != "up":
            raise ClusterLost(f"no Ray cluster answers at {address} (`--ray-address`)")
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    return ray


def worker_layout(nodes: list[dict], threads: int) -> tuple[str, int, dict, str]:
    """How many workers the alive ``nodes`` (``ray.nodes()``) hold, with which actor options:
    (device, count, options, description). ConfigError when none fits."""
    alive = [n for n in nodes if n.get("Alive")]
    gpus = [int(n.get("Resources", {}).get("GPU", 0)) for n in alive]
    if sum(gpus):
        count = sum(gpus)
        described = f"{count} workers, one per GPU on {sum(1 for g in gpus if g)} nodes"
        return "cuda", count, {"num_gpus": 1, "num_cpus": 0}, described
    cpus = [int(n.get("Resources", {}).get("CPU", 0)) for n in alive]
    if not any(cpus):
        raise ConfigError(
            f"the Ray cluster has {len(alive)} node(s) and none with a CPU or GPU for a worker: "
            "start worker nodes with `ray start --address=HEAD --num-cpus=N`"
        )
    per_worker = min(threads, max(cpus))
    usable = [c for c in cpus if c >= per_worker]
    count = sum(c // per_worker for c in usable)
    described = (
        f"{count} workers on {len(usable)} nodes, {per_worker} CPU(s) reserved and {threads} "
        f"torch threads each (the driver's count, so the bits match a local run)"
    )
    if len(usable) < sum(1 for c in cpus if c):
        described += f"; nodes with fewer than {per_worker} CPUs get none"
    return "cpu", count, {"num_cpus": per_worker}, described


class RayExecutor:
    """Sends the blocks a disk store lacks to a Ray cluster (``address``, else ``RAY_ADDRESS``,
    else a local instance); see the module docstring for its sizing, retry and loss policies.
    ``message`` hears what it decides (one line each)."""

    def __init__(
        self,
        checkpoint: str,
        driver_device: str,
        address: str | None = None,
        message: Callable[[str], None] | None = None,
    ):
        self.checkpoint = checkpoint
        self.driver_device = driver_device
        self.address = address
        self.message = message or (lambda text: None)

    def check(self) -> None:
        """Connect and size the workers now: a cluster nobody answers at, or one with no node
        for a worker, is refused before the model loads and the plate is encoded (`compute`
        asks again, as nodes come and go)."""
        import torch

        self._layout(_connect(self.address), torch.get_num_threads())

    def _layout(self, ray, threads: int) -> tuple[str, int, dict, str]:
        device, count, options, described = worker_layout(ray.nodes(), threads)
        if device != self.driver_device.split(":")[0]:
            raise ConfigError(
                f"the Ray workers run on {device} but this run resolved `--device "
                f"{self.driver_device}`; pass `--device {device}` so that the latents and "
                f"snippets agree"
            )
        return device, count, options, described

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
        threads = torch.get_num_threads()
        device, count, options, described = self._layout(ray, threads)
        self.message(f"ray: {described}")
        run = _RayRun(ray, self, store, config, size, device, options, threads, todo, progress)
        try:
            run.loop(min(count, len(todo)), total)
        finally:
            run.stop()


class _RayRun:
    """One run's actors and queue: hands blocks to ready workers, resubmits the blocks of
    workers that die, watches the head."""

    def __init__(
        self, ray, executor, store, config, size, device, options, threads, todo, progress
    ):
        self.ray, self.executor, self.store = ray, executor, store
        self.config, self.size, self.device, self.threads = config, size, device, threads
        self.actor = ray.remote(max_restarts=0, max_task_retries=0, **options)(BlockWorker)
        self.state = store.to_state()
        self.options = options
        self.todo = todo
        self.queue = deque(todo)
        self.attempts: dict[int, int] = {}
        self.progress = progress
        self.starting: dict = {}  # ready() ref -> actor
        self.idle: list = []
        self.busy: dict = {}  # compute() ref -> (actor, block)
        self.gcs = ray.get_runtime_context().gcs_address
        self.head_lost = False

    def _start(self, n: int) -> None:
        for _ in range(n):
            worker = self.actor.remote(
                self.executor.checkpoint, self.device, self.config.dtype, self.threads, self.state
            )
            self.starting[worker.ready.remote()] = worker

    def _workers(self) -> int:
        return len(self.starting) + len(self.idle) + len(self.busy)

    def loop(self, n_workers: int, total: int) -> None:
        ray = self.ray
        self._start(n_workers)
        limit = float(os.environ.get("ROLLINGDEPTH_RAY_START_TIMEOUT", START_TIMEOUT_SECONDS))
        now = time.monotonic()
        stalled_since = now  # since when no worker could take a block (only starting ones)
        last_word = head_checked = now
        head_lost_since = None
        done = 0
        while self.queue or self.busy:
            while self.queue and self.idle:
                worker, block = self.idle.pop(), self.queue.popleft()
                ref = worker.compute.remote(block, self.config, self.size)
                self.busy[ref] = (worker, block)
            refs = [*self.starting, *self.busy]
            if not refs:
                raise self._lost("every Ray worker is lost and no node can start another")
            ready, _ = ray.wait(refs, num_returns=1, timeout=POLL_SECONDS)
            now = time.monotonic()
            # the head, checked even while blocks arrive: the workers go on without it
            if now - head_checked >= HEAD_CHECK_SECONDS:
                head_checked = now
                state = _probe(self.gcs)
                if state == "up":
                    head_lost_since = None
                elif head_lost_since is None:
                    head_lost_since = now
                if state == "refused" or (
                    head_lost_since is not None and now - head_lost_since >= HEAD_GRACE_SECONDS
                ):
                    self.head_lost = True
                    raise self._lost(f"lost the Ray head at {self.gcs}")
            if self.idle or self.busy:
                stalled_since = last_word = now
            elif now - stalled_since >= limit:
                raise self._lost(
                    f"no Ray worker started in {limit:.0f} s (the resources they ask for, "
                    f"{self.options}, are held by other jobs, or the checkpoint does not load "
                    f"on the nodes; ROLLINGDEPTH_RAY_START_TIMEOUT sets the wait)"
                )
            elif now - last_word >= WAIT_MESSAGE_SECONDS:
                last_word = now
                self.executor.message(
                    f"ray: waiting for {len(self.starting)} workers to start "
                    f"({now - stalled_since:.0f} s of {limit:.0f})"
                )
            if not ready:
                continue
            ref = ready[0]
            if ref in self.starting:
                worker = self.starting.pop(ref)
                try:
                    ray.get(ref)
                except self._lost_errors() as exc:
                    self._on_lost(worker, None, exc)
                    continue
                except ray.exceptions.RayTaskError as exc:
                    raise _task_error(exc, "a Ray worker could not start") from None
                self.idle.append(worker)
                continue
            worker, block = self.busy.pop(ref)
            try:
                snippets, threads = ray.get(ref)
            except self._lost_errors() as exc:
                self._on_lost(worker, block, exc)
                continue
            except ray.exceptions.RayTaskError as exc:
                raise _task_error(exc, f"block {block.number} failed on a Ray worker") from None
            if threads != self.threads:
                raise RollingDepthError(
                    f"a Ray worker computed block {block.number} with {threads} torch threads, "
                    f"the driver runs {self.threads}: its bits could differ"
                )
            done += snippets
            _count(self.store, block)
            report(self.progress, "snippets", done, total)
            self.idle.append(worker)

    def _lost_errors(self) -> tuple:
        e = self.ray.exceptions
        return (
            e.RayActorError,
            e.WorkerCrashedError,
            e.NodeDiedError,
            e.ObjectLostError,
            e.LocalRayletDiedError,
            e.OutOfMemoryError,
        )

    def _on_lost(self, worker, block: Block | None, exc: Exception) -> None:
        """A worker died: its block goes back to the front of the queue; replacements start
        where the nodes left have room."""
        self.ray.kill(worker, no_restart=True)
        what = "a starting Ray worker"
        if block is not None:
            tries = self.attempts[block.number] = self.attempts.get(block.number, 1) + 1
            if tries > MAX_BLOCK_ATTEMPTS:
                raise self._lost(
                    f"block {block.number} lost its Ray worker {MAX_BLOCK_ATTEMPTS} times "
                    f"({type(exc).__name__})"
                )
            self.queue.appendleft(block)
            what = f"the Ray worker of block {block.number} (attempt {tries} next)"
        try:
            _, capacity, _, _ = worker_layout(self.ray.nodes(), self.threads)
        except RollingDepthError:
            capacity = 0
        want = min(capacity, len(self.queue) + len(self.busy)) - self._workers()
        if want > 0:
            self._start(want)
        self.executor.message(
            f"ray: lost {what}: {type(exc).__name__}; {self._workers()} workers left"
        )
        if not self._workers():
            raise self._lost("every Ray worker is lost and no node can start another")

    def _lost(self, why: str) -> ClusterLost:
        cached = sum(self.store.has_block(self.store.block_key(b, self.config)) for b in self.todo)
        return ClusterLost(
            f"{why}: {cached} of {len(self.todo)} snippet blocks this run computes are in the cache "
            f"{self.store.folder}; run the same command again to resume from them"
        )

    def stop(self) -> None:
        if self.head_lost:
            return  # killing an actor goes through the head
        for worker in [*self.starting.values(), *self.idle, *(w for w, _ in self.busy.values())]:
            # a worker of a lost cluster cannot be reached: nothing left to stop
            with contextlib.suppress(Exception):
                self.ray.kill(worker, no_restart=True)


def _task_error(exc, what: str) -> RollingDepthError:
    """The engine's own error from a worker as it was raised; anything else in one line."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, RollingDepthError):
        return cause
    return RollingDepthError(f"{what}: {type(cause or exc).__name__}: {cause or exc}")
