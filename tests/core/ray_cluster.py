"""A real multi-node Ray cluster on this machine: a head and worker nodes as separate
`ray start` processes, each with its own CPU count, torn down by PID.

Every node is its own `ray start --block` process group (a raylet, its workers and agents; the
head also runs the GCS). :meth:`RayCluster.kill_node` kills one node's processes by PID, as a
crashed or pre-empted farm machine would vanish; :meth:`RayCluster.close` kills the rest. Never
`ray stop`: that stops every Ray instance on the machine, other users' included.

Ray turns ``--node-ip-address=127.0.0.1`` into the machine's own address (its nodes must be
reachable from one another); the GCS listens on every interface, so clients connect through
``127.0.0.1:PORT`` (:attr:`RayCluster.address`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START_SECONDS = 90  # a node on a busy 2-core machine takes 5-20 s to come up
OBJECT_STORE_BYTES = 80 * 1024 * 1024  # the smallest Ray allows is 75 MiB


class RayClusterError(RuntimeError):
    """The cluster could not be started here (the tests skip, saying why)."""


def _ray_cli() -> str:
    path = Path(sys.executable).with_name("ray")
    if not path.exists():
        raise RayClusterError(f"no `ray` command next to {sys.executable}")
    return str(path)


def _tree(pid: int) -> list[int]:
    """``pid`` and every process below it (children first lists are fine for SIGKILL)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return [pid, *(c.pid for c in proc.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


class RayNode:
    def __init__(self, name: str, proc: subprocess.Popen, log: Path, cpus: int):
        self.name, self.proc, self.log, self.cpus = name, proc, log, cpus
        self.node_id: str | None = None

    def pids(self) -> list[int]:
        return _tree(self.proc.pid)

    def raylet_pid(self) -> int | None:
        import psutil

        for pid in self.pids():
            try:
                if psutil.Process(pid).name() == "raylet":
                    return pid
            except psutil.NoSuchProcess:
                pass
        return None

    def kill(self) -> list[int]:
        """SIGKILL the node's raylet first, then every other process of it, by PID."""
        pids = self.pids()
        raylet = self.raylet_pid()
        order = ([raylet] if raylet else []) + [p for p in pids if p != raylet]
        for pid in order:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        return order


class RayCluster:
    """``RayCluster(worker_cpus=(1, 1))``: a head with ``head_cpus`` and one worker node per
    entry of ``worker_cpus``; :meth:`start` waits until every node has joined."""

    def __init__(
        self,
        worker_cpus: tuple[int, ...] = (1, 1),
        head_cpus: int = 0,
        object_store_bytes: int = OBJECT_STORE_BYTES,
        env: dict | None = None,
    ):
        self.worker_cpus, self.head_cpus = worker_cpus, head_cpus
        self.object_store_bytes = object_store_bytes
        # short: Ray's unix socket paths must fit in 107 bytes
        self.root = Path(tempfile.mkdtemp(prefix="rdray-", dir="/tmp"))
        # Ray turns token authentication on when ~/.ray/auth_token exists (another user of the
        # machine may have made one) and an in-process ray.init() sets RAY_AUTH_MODE=token in
        # this process's environment: a cluster on 127.0.0.1 for tests runs without, explicitly
        self.env = {
            **os.environ,
            **(env or {}),
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "disabled",
            "HOME": str(self.root),
            "OMP_WAIT_POLICY": "PASSIVE",  # as the drivers of tests/core/test_farm_ray.py
        }
        self.head: RayNode | None = None
        self.workers: list[RayNode] = []
        self.address = ""

    # ---------------------------------------------------------------- start
    def _start_node(self, name: str, cpus: int, extra: list[str]) -> RayNode:
        log = self.root / f"{name}.log"
        args = [
            _ray_cli(), "start", "--block", "--disable-usage-stats",
            "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", "--num-gpus=0",
            f"--object-store-memory={self.object_store_bytes}",
            "--dashboard-agent-listen-port=0", "--min-worker-port=0", "--max-worker-port=0",
            *extra,
        ]  # fmt: skip
        with log.open("wb") as out:
            proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        return RayNode(name, proc, log, cpus)

    def start(self) -> RayCluster:
        try:
            self.head = self._start_node(
                "head",
                self.head_cpus,
                [
                    "--head", "--port=0", f"--temp-dir={self.root / 't'}",
                    "--include-dashboard=false",
                ],
            )  # fmt: skip
            self.address = self._head_address()
            for i, cpus in enumerate(self.worker_cpus):
                self.workers.append(
                    self._start_node(f"worker{i + 1}", cpus, [f"--address={self.address}"])
                )
                self._wait_nodes(2 + i)
        except BaseException:
            self.close()
            raise
        return self

    def _head_address(self) -> str:
        marker = self.root / "t" / "ray_current_cluster"
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.head.proc.poll() is not None:
                raise RayClusterError(f"`ray start --head` exited: {self._tail(self.head)}")
            if marker.exists() and marker.read_text().strip():
                port = marker.read_text().strip().rsplit(":", 1)[1]
                return f"127.0.0.1:{port}"
            time.sleep(0.5)
        raise RayClusterError(f"the Ray head did not start in {START_SECONDS} s")

    def _wait_nodes(self, count: int) -> None:
        """Wait until ``count`` nodes are alive, asking the GCS from a short-lived process
        (a driver here would hold the cluster)."""
        script = (
            "import ray,sys;ray.init(address=sys.argv[1],log_to_driver=False);"
            "print(sum(n['Alive'] for n in ray.nodes()))"
        )
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            for node in [self.head, *self.workers]:
                if node.proc.poll() is not None:
                    raise RayClusterError(f"`ray start` ({node.name}) exited: {self._tail(node)}")
            alive = self.alive_nodes(script)
            if alive >= count:
                return
            time.sleep(1)
        raise RayClusterError(f"only some of {count} Ray nodes joined in {START_SECONDS} s")

    def alive_nodes(self, script: str | None = None) -> int:
        script = script or (
            "import ray,sys;ray.init(address=sys.argv[1],log_to_driver=False);"
            "print(sum(n['Alive'] for n in ray.nodes()))"
        )
        out = subprocess.run(
            [sys.executable, "-c", script, self.address],
            capture_output=True, text=True, env=self.env, timeout=120,
        )  # fmt: skip
        try:
            return int(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return 0

    @staticmethod
    def _tail(node: RayNode) -> str:
        lines = node.log.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:])

    # ---------------------------------------------------------------- stop
    def kill_node(self, node: RayNode) -> list[int]:
        return node.kill()

    def head_alive(self) -> bool:
        return self.head is not None and self.head.proc.poll() is None

    def revive(self) -> RayCluster:
        """Start a fresh node in place of each worker node that was killed, and wait until
        all are alive (a head that was killed cannot be revived: start another cluster)."""
        assert self.head_alive(), "the head is gone: start another cluster"
        dead = [i for i, node in enumerate(self.workers) if node.proc.poll() is not None]
        for i in dead:
            node = self.workers[i]
            self.workers[i] = self._start_node(
                f"{node.name}-revived", node.cpus, [f"--address={self.address}"]
            )
        if dead:  # asking the GCS costs a Python process that imports ray
            self._wait_nodes(1 + len(self.workers))
        return self

    def close(self) -> None:
        for node in [*self.workers, self.head]:
            if node is not None:
                node.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RayCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
