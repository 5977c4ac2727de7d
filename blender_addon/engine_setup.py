"""Set Up Engine: an engine environment of the add-on's own, made without a terminal.

Standard library only, no bpy (tested on its own). The add-on's preferences call it; the work
runs in a background process (``setup_worker.py``, run by a Python 3.10-3.12) that this module
starts, polls and cancels:

- **Python**: the one the artist gives, else Blender's own Python when it is 3.10-3.12 (Blender
  4.2-5.0 ship 3.11, with venv and ensurepip), else one found on the machine (the ``py``
  launcher on Windows, python.org's and Homebrew's on macOS, ``python3.1x`` on the PATH).
- **PyTorch** (`plan_torch`): Linux with an NVIDIA GPU and Apple silicon take the package
  registry's own build (CUDA, resp. MPS); Windows with an NVIDIA GPU takes PyTorch's CUDA index
  (the registry's Windows build is CPU-only); everything else PyTorch's CPU index on Linux (the
  registry's Linux build carries ~3 GB of CUDA libraries) and the registry's build elsewhere.
- **The engine**: the wheel in the add-on's ``engine/`` folder (the release zip carries it),
  or the file or folder the artist picks (Engine Package).
- **Where**: ``<extension user folder>/engine/env-N``. The folder is an engine only once its
  ``rollingdepth-engine.json`` exists, written last; a failed, cancelled or killed set-up
  leaves none, and is removed (now, or by the next set-up).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import platform
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .engine import engine_environment, hidden_window

ADDON_DIR = Path(__file__).resolve().parent
WORKER = ADDON_DIR / "setup_worker.py"
MARKER = "rollingdepth-engine.json"
SUPPORTED_PYTHONS = ((3, 10), (3, 11), (3, 12))
PROBE_TIMEOUT_S = 30.0
PYTORCH_INDEX = "https://download.pytorch.org/whl"
TORCH_REQUIREMENT = "torch>=2.4"
# CUDA builds on PyTorch's index and the oldest NVIDIA driver each needs (Windows' numbers,
# which are the higher ones), newest first.
CUDA_BUILDS = (("cu128", (572, 0)), ("cu126", (561, 0)), ("cu118", (522, 0)))
TORCH_SOURCES = ("auto", "registry", "pytorch-cpu", "pytorch-cuda")

RUNNING, FINISHED, FAILED, CANCELLED = "running", "finished", "failed", "cancelled"


class SetupError(Exception):
    """A set-up cannot start or failed; the message says what to do."""


# ---------------------------------------------------------------------------- paths
def environment_python(env: Path, os_name: str = os.name) -> Path:
    """The interpreter of a virtual environment: ``Scripts\\python.exe`` on Windows."""
    if os_name == "nt":
        return env / "Scripts" / "python.exe"
    return env / "bin" / "python"


def engines_root(user_dir: Path) -> Path:
    return Path(user_dir) / "engine"


def installed_engine(user_dir: Path) -> Path | None:
    """The newest complete engine's Python under ``user_dir``, or None."""
    found = []
    for env in engines_root(user_dir).glob("env-*"):
        marker = env / MARKER
        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        python = Path(data.get("python", ""))
        if python.is_file():
            found.append((marker.stat().st_mtime, python))
    return max(found)[1] if found else None


def new_environment_dir(user_dir: Path) -> Path:
    """A folder name never used before (a short one: Windows limits paths to 260 characters
    unless long paths are on, and torch's files sit deep)."""
    root = engines_root(user_dir)
    root.mkdir(parents=True, exist_ok=True)
    numbers = [int(m[1]) for p in root.iterdir() if (m := re.fullmatch(r"env-(\d+)", p.name))]
    return root / f"env-{max(numbers, default=0) + 1}"


def remove_incomplete(user_dir: Path, keep: Path | None = None) -> list[Path]:
    """Remove every environment without a marker (failed or interrupted set-ups) and every
    complete one but ``keep``; returns what could not be removed (files in use on Windows)."""
    left = []
    for env in engines_root(user_dir).glob("env-*"):
        if keep is not None and env == keep:
            continue
        if (env / MARKER).is_file() and keep is None:
            continue
        shutil.rmtree(env, ignore_errors=True)
        if env.exists():
            left.append(env)
    return left


# ---------------------------------------------------------------------------- Python
@dataclass(frozen=True)
class PythonFound:
    path: str
    version: tuple[int, int, int]


def python_candidates(
    given: str = "",
    blender_python: str = sys.executable,
    system: str = platform.system(),
    environ: dict[str, str] | None = None,
    which=shutil.which,
) -> list[str]:
    """Interpreters to try, best first (not yet probed)."""
    environ = os.environ if environ is None else environ
    if given.strip():
        return [os.path.expanduser(given.strip())]
    names = [f"python3.{minor}" for _, minor in reversed(SUPPORTED_PYTHONS)]
    found = [blender_python] if blender_python else []
    if system == "Windows":
        local = environ.get("LOCALAPPDATA", "")
        for _, minor in reversed(SUPPORTED_PYTHONS):
            if local:
                found.append(
                    os.path.join(local, "Programs", "Python", f"Python3{minor}", "python.exe")
                )
            for base in (environ.get("ProgramFiles", ""), environ.get("ProgramFiles(x86)", "")):
                if base:
                    found.append(os.path.join(base, f"Python3{minor}", "python.exe"))
        found += [p for p in (which("py"), which("python")) if p]  # the launcher: probed below
    elif system == "Darwin":
        for _, minor in reversed(SUPPORTED_PYTHONS):
            found.append(f"/Library/Frameworks/Python.framework/Versions/3.{minor}/bin/python3")
            found.append(f"/opt/homebrew/bin/python3.{minor}")
            found.append(f"/usr/local/bin/python3.{minor}")
        found += [p for n in names if (p := which(n))]
    else:
        found += [p for n in [*names, "python3"] if (p := which(n))]
    unique = []
    for path in found:
        if path and path not in unique:
            unique.append(path)
    return unique


# The version and the interpreter itself (a launcher or a shim resolves to the real one).
_PROBE = (
    "import sys, json, venv, ensurepip; "
    "print(json.dumps([list(sys.version_info[:3]), sys.executable]))"
)
LAUNCHER_VERSIONS = tuple(f"-3.{minor}" for _, minor in reversed(SUPPORTED_PYTHONS))


def probe_python(path: str, timeout: float = PROBE_TIMEOUT_S) -> tuple[tuple[int, ...] | None, str]:
    """(version, "") for a Python that can make environments, else (version or None, why)."""
    version, problem, _ = resolve_python(path, timeout)
    return version, problem


def resolve_python(path: str, timeout: float = PROBE_TIMEOUT_S):
    """(version, problem, interpreter). Windows' ``py`` launcher is asked for 3.12, 3.11 and
    3.10 in turn, and the interpreter it starts is the one used."""
    if os.path.basename(path).lower() in ("py", "py.exe"):
        problems = []
        for flag in LAUNCHER_VERSIONS:
            version, problem, executable = _probe([path, flag, "-c", _PROBE], path, timeout)
            if not problem:
                return version, problem, executable
            problems.append(problem)
        return None, f"has no Python 3.10-3.12 ({problems[0]})", path
    return _probe([path, "-c", _PROBE], path, timeout)


def _probe(argv: list[str], path: str, timeout: float):
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=clean_environment(),
            **hidden_window(),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"does not run ({getattr(exc, 'strerror', None) or exc})", path
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        if "ensurepip" in done.stderr or "venv" in done.stderr:
            return (
                None,
                "lacks venv/ensurepip (on Debian and Ubuntu: the python3-venv package)",
                path,
            )
        return None, "is not a working Python", path
    version, executable = (report[0], report[1]) if isinstance(report[0], list) else (report, path)
    version = tuple(version)
    if tuple(version[:2]) not in SUPPORTED_PYTHONS:
        return version, f"is Python {'.'.join(map(str, version))}, not 3.10-3.12", executable
    return version, "", executable or path


def find_python(given: str = "", blender_python: str = sys.executable) -> PythonFound:
    """The first usable Python; `SetupError` naming what was tried and what to install."""
    tried = []
    for path in python_candidates(given, blender_python):
        if not given and not os.path.isfile(path):
            continue
        version, problem, executable = resolve_python(path)
        if not problem:
            return PythonFound(executable, tuple(version))  # type: ignore[arg-type]
        tried.append(f"{path} {problem}")
    where = "; ".join(tried) if tried else "none was found"
    if given.strip():
        raise SetupError(
            f"The Python for Set Up cannot make the engine: {where}. Choose a Python 3.10, 3.11 "
            "or 3.12 in Python for Set Up, or clear it to let the add-on search."
        )
    raise SetupError(
        f"No Python 3.10-3.12 to make the engine with ({where}). Install Python 3.12 (python.org "
        "on Windows and macOS; on Linux your distribution's python3.12 with python3.12-venv), "
        "or choose one in Python for Set Up, then press Set Up Engine again."
    )


# ---------------------------------------------------------------------------- PyTorch
@dataclass(frozen=True)
class TorchPlan:
    """Which PyTorch build the set-up installs, and from where."""

    variant: str  # "cuda" | "mps" | "cpu"
    index_url: str  # "" = the package registry (PyPI)
    note: str  # one line for the artist: what and from where
    requirement: str = TORCH_REQUIREMENT


def nvidia_driver(system: str = platform.system(), which=shutil.which) -> tuple[int, ...] | None:
    """The NVIDIA driver's version from ``nvidia-smi``, None without an NVIDIA GPU."""
    smi = which("nvidia-smi")
    if smi is None and system == "Windows":
        fallback = os.path.join(
            os.environ.get("SYSTEMROOT", r"C:\Windows"), "System32", "nvidia-smi.exe"
        )
        smi = fallback if os.path.isfile(fallback) else None
    if smi is None:
        return None
    try:
        done = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            **hidden_window(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_driver_version(done.stdout) if done.returncode == 0 else None


def parse_driver_version(text: str) -> tuple[int, ...] | None:
    match = re.search(r"(\d+)\.(\d+)", text)
    return (int(match[1]), int(match[2])) if match else None


def plan_torch(
    system: str, machine: str, driver: tuple[int, ...] | None, source: str = "auto"
) -> TorchPlan:
    """The PyTorch build for this machine (``source``: the Torch Source preference)."""
    machine = machine.lower()
    if source not in TORCH_SOURCES:
        raise SetupError(f"Torch Source must be one of {', '.join(TORCH_SOURCES)}; got {source!r}")
    if system == "Darwin" and machine not in ("arm64", "aarch64"):
        raise SetupError(
            "PyTorch publishes no builds newer than 2.2 for Intel Macs, and RollingDepth needs "
            "2.4 or later: use a Mac with Apple silicon, or Windows or Linux."
        )
    if source == "registry":
        if system == "Darwin":
            return TorchPlan("mps", "", "PyTorch with Apple MPS from the package registry")
        if system == "Linux":
            variant, build = ("cuda", "CUDA") if driver else ("cpu", "CUDA, run on the CPU here")
            return TorchPlan(variant, "", f"PyTorch ({build}) from the package registry")
        return TorchPlan("cpu", "", "PyTorch (CPU) from the package registry")
    if source == "pytorch-cpu":
        return TorchPlan("cpu", f"{PYTORCH_INDEX}/cpu", f"PyTorch (CPU) from {PYTORCH_INDEX}/cpu")
    if source == "pytorch-cuda" or (source == "auto" and driver and system in ("Windows", "Linux")):
        if source == "auto" and system == "Linux":
            return TorchPlan(
                "cuda", "", "PyTorch with CUDA from the package registry (NVIDIA GPU found)"
            )
        build = cuda_build(driver)
        if build is None:
            oldest = ".".join(map(str, CUDA_BUILDS[-1][1]))
            raise SetupError(
                f"The NVIDIA driver ({'.'.join(map(str, driver or ())) or 'none'}) is older than "
                f"PyTorch's CUDA builds need ({oldest} or later): update it from nvidia.com, or "
                "set Torch Source to CPU, then press Set Up Engine again."
            )
        index = f"{PYTORCH_INDEX}/{build}"
        return TorchPlan("cuda", index, f"PyTorch with CUDA ({build}) from {index}")
    if system == "Darwin":
        return TorchPlan("mps", "", "PyTorch with Apple MPS from the package registry")
    if system == "Linux":
        return TorchPlan("cpu", f"{PYTORCH_INDEX}/cpu", f"PyTorch (CPU) from {PYTORCH_INDEX}/cpu")
    return TorchPlan("cpu", "", "PyTorch (CPU) from the package registry")


def cuda_build(driver: tuple[int, ...] | None) -> str | None:
    if driver is None:
        return CUDA_BUILDS[0][0]  # asked for by name on a machine that hides its driver
    for build, needs in CUDA_BUILDS:
        if tuple(driver[:2]) >= needs:
            return build
    return None


def index_hint(plan: TorchPlan) -> str:
    """What to do when the plan's index cannot be reached."""
    if not plan.index_url:
        return "Check the internet connection (the package registry, pypi.org), then press Set Up Engine again."
    host = plan.index_url.split("/")[2]
    return (
        f"This PyTorch build comes from {host}, not the package registry: allow that site "
        "(firewall, proxy), or set Torch Source to 'Package registry' (on Linux a larger "
        "download; on Windows without the GPU), then press Set Up Engine again."
    )


# ---------------------------------------------------------------------------- the engine
def engine_package(given: str = "", addon_dir: Path = ADDON_DIR) -> str:
    """What pip installs as the engine: the artist's choice, else the wheel the release zip
    carries, else the source checkout the add-on runs from."""
    if given.strip():
        path = Path(os.path.expanduser(given.strip()))
        if (
            path.is_file()
            and path.suffix == ".whl"
            and path.name.lower().startswith("rollingdepth-")
        ):
            return str(path)
        if path.is_dir() and (path / "pyproject.toml").is_file():
            return str(path)
        raise SetupError(
            f"Engine Package {str(path)!r} is neither a rollingdepth wheel (.whl) nor the "
            "engine's source folder: choose the rollingdepth-*.whl of the release."
        )
    wheels = sorted((addon_dir / "engine").glob("rollingdepth-*.whl"), key=_wheel_version)
    if wheels:
        return str(wheels[-1])
    checkout = addon_dir.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "rollingdepth_core").is_dir():
        return str(checkout)
    raise SetupError(
        "This copy of the add-on carries no engine: install the release's rollingdepth zip, or "
        "choose the release's rollingdepth-*.whl in Engine Package, then press Set Up Engine again."
    )


def _wheel_version(path: Path) -> tuple[int, ...]:
    parts = path.name.split("-")[1].split(".")
    return tuple(int(p) if p.isdigit() else 0 for p in parts)


# ---------------------------------------------------------------------------- processes
def clean_environment() -> dict[str, str]:
    """The engine's environment without PYTHONPATH: what is set up runs its own installed
    engine, never a source folder Blender's environment points at."""
    env = engine_environment()
    env.pop("PYTHONPATH", None)
    return env


def group_flags(os_name: str = os.name) -> dict:
    """Popen arguments that give the worker a process group of its own, so that cancelling
    reaches the pip and venv processes under it."""
    if os_name == "nt":
        flags = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x00000200)
        flags |= getattr(subprocess, "CREATE_NO_WINDOW", 0x08000000)
        return {"creationflags": flags}
    return {"start_new_session": True}


def kill_tree_argv(pid: int) -> list[str]:
    """Windows: the command that ends a process and every process under it."""
    return ["taskkill", "/F", "/T", "/PID", str(pid)]


def stop_process_tree(
    process: subprocess.Popen, grace: float = 5.0, os_name: str = os.name
) -> None:
    """Terminate the worker and its children (pip, venv): the group on POSIX, the tree on
    Windows; killed outright after ``grace`` seconds."""
    if process.poll() is not None:
        return
    if os_name == "nt":
        try:  # CTRL_BREAK reaches a new process group's console processes; taskkill the rest
            process.send_signal(getattr(signal, "CTRL_BREAK_EVENT", signal.SIGTERM))
            process.wait(timeout=min(grace, 2.0))
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        if process.poll() is None:
            subprocess.run(
                kill_tree_argv(process.pid), capture_output=True, **hidden_window(os_name)
            )
        process.wait(timeout=grace)
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace)
    except ProcessLookupError:
        pass
    # the worker is gone; a child that ignored SIGTERM is not left running
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


# ---------------------------------------------------------------------------- a set-up
@dataclass
class SetupRequest:
    user_dir: Path
    python: PythonFound
    engine: str
    torch: TorchPlan
    constraint: str = ""  # a pip constraints file ($PIP_CONSTRAINT works as well)


@dataclass
class SetupState:
    state: str = RUNNING
    fraction: float = 0.0
    message: str = "starting"
    python: str = ""  # the new engine's Python, once finished
    error: str = ""
    check: dict = field(default_factory=dict)


class EngineSetup:
    """One set-up in a background process: `start`, `step` from a timer (never blocks),
    `cancel`. The outcome is in `state`; the artist's one line in `summary`."""

    def __init__(self, request: SetupRequest) -> None:
        self.request = request
        self.env_dir = new_environment_dir(request.user_dir)
        self.state = SetupState()
        self.started = 0.0
        self._process: subprocess.Popen | None = None
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._tail: collections.deque[str] = collections.deque(maxlen=40)
        self._cancelled = False
        # step() runs on Blender's timer; cancel() may come from another thread (a script)
        self._lock = threading.RLock()

    def argv(self) -> list[str]:
        request = self.request
        return [
            request.python.path,
            "-I",  # isolated: neither the user's site-packages nor PYTHON* variables
            str(WORKER),
            "--env",
            str(self.env_dir),
            "--engine",
            request.engine,
            "--torch-requirement",
            request.torch.requirement,
            "--torch-index",
            request.torch.index_url,
            "--torch-variant",
            request.torch.variant,
            "--constraint",
            request.constraint,
        ]

    def start(self) -> EngineSetup:
        remove_incomplete(self.request.user_dir)
        self.started = time.monotonic()
        try:
            self._process = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
                env=clean_environment(),
                cwd=self.env_dir.parent,  # not Blender's working folder (setup_worker.run_step)
                **group_flags(),
            )
        except OSError as exc:
            raise SetupError(
                f"Could not start the set-up with {self.request.python.path} ({exc.strerror})."
            ) from exc
        threading.Thread(target=self._pump, daemon=True, name="rollingdepth-setup").start()
        self.state.message = self.request.torch.note
        return self

    def _pump(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    @property
    def done(self) -> bool:
        return self.state.state != RUNNING

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started if self.started else 0.0

    def step(self) -> str:
        """Handle what the worker wrote; the state (running, finished, failed, cancelled)."""
        with self._lock:
            return self._step()

    def _step(self) -> str:
        if self.done:
            return self.state.state
        ended = False
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                ended = True
                break
            self._handle(line.strip())
        if ended and self.state.state == RUNNING:
            assert self._process is not None
            code = self._process.wait()
            if self._cancelled:
                self._end(CANCELLED, "Set Up Engine was cancelled; nothing was kept.")
            else:
                tail = next((t for t in reversed(self._tail) if t), "")
                self._end(
                    FAILED,
                    f"Set Up Engine stopped (exit code {code}) before it finished"
                    + (f": {tail}" if tail else "")
                    + ". Nothing was kept; press Set Up Engine to try again.",
                )
        return self.state.state

    def _handle(self, line: str) -> None:
        if not line:
            return
        try:
            event = json.loads(line) if line.startswith("{") else None
        except ValueError:
            event = None
        if not isinstance(event, dict):
            self._tail.append(line)
            return
        kind = event.get("event")
        if kind == "progress":
            self.state.fraction = max(self.state.fraction, float(event.get("fraction", 0.0)))
            self.state.message = str(event.get("message", ""))
        elif kind == "done":
            python = str(event.get("python", ""))
            if not (Path(python).is_file() and (self.env_dir / MARKER).is_file()):
                self._end(
                    FAILED, "Set Up Engine reported success but left no engine; press it again."
                )
                return
            self.state.python, self.state.check = python, dict(event.get("check") or {})
            self.state.fraction = 1.0
            remove_incomplete(self.request.user_dir, keep=self.env_dir)
            self._end(FINISHED, "")
        elif kind == "error":
            message = str(event.get("message", "the set-up failed"))
            hint = (
                index_hint(self.request.torch)
                if event.get("kind") == "NetworkError"
                else ("Nothing was kept; press Set Up Engine to try again.")
            )
            self._end(FAILED, f"Set Up Engine failed: {message.rstrip('.')}. {hint}")

    def _end(self, state: str, error: str) -> None:
        self.state.state = state
        self.state.error = error
        if self._process is not None and self._process.poll() is None:
            stop_process_tree(self._process)
        if state != FINISHED:
            shutil.rmtree(self.env_dir, ignore_errors=True)

    def cancel(self) -> None:
        """Stop the worker and everything under it; the half-made folder goes."""
        with self._lock:
            if self.done:
                return
            self._cancelled = True
            if self._process is not None:
                stop_process_tree(self._process)
            self._end(CANCELLED, "Set Up Engine was cancelled; nothing was kept.")

    def run_blocking(self, timeout: float | None = None, interval: float = 0.2) -> str:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.step() == RUNNING:
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                self.state.error = (
                    f"Set Up Engine took longer than {timeout:.0f} s and was stopped."
                )
                break
            time.sleep(interval)
        return self.state.state

    @property
    def status_text(self) -> str:
        return f"{self.state.message} ({int(self.state.fraction * 100)}%)"

    @property
    def summary(self) -> str:
        if self.state.state == FINISHED:
            check = self.state.check
            gpu = "CUDA" if check.get("cuda") else ("MPS" if check.get("mps") else "no GPU")
            return (
                f"Engine set up in {self.elapsed:.0f} s: RollingDepth {check.get('rollingdepth', '?')}, "
                f"Python {check.get('python', '?')}, torch {check.get('torch', '?')} ({gpu}). "
                "Press Check Engine to test it."
            )
        return self.state.error
