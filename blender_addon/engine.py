"""Talking to the RollingDepth engine: a separate Python process and its JSON-lines protocol.

Standard library only: this module must not import bpy (so it can be tested on its own) and
must never import torch (Blender does not ship it). The engine is started as
``ENGINE_PYTHON -m rollingdepth_core.cli run ... --progress json`` (or the ``rollingdepth``
executable), read on two threads so that Blender's UI thread never blocks on a pipe, and
stopped with terminate-then-kill.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import protocol

PREFERENCES_HINT = "Edit ▸ Preferences ▸ Add-ons ▸ RollingDepth"
# The Sequencer shows values outside 0..1 clipped: inverse depth (about -1..1) shows as a
# mostly black frame. Normalized depth (0..1, 1 = nearest) looks like depth on first sight;
# the dialog offers the other conventions for compositors that need their values.
DEFAULT_DEPTH_MODE = "normalized"
TERMINATE_GRACE_S = 5.0
FRONT_END = "blender"  # the engine's name for this front-end (one of protocol.FRONT_ENDS)
CHECK_TIMEOUT_S = 120.0


class EngineError(Exception):
    """A problem the user can fix; the message says how."""

    def __init__(self, message: str, kind: str = "EngineError") -> None:
        super().__init__(message)
        self.kind = kind


# ---------------------------------------------------------------------------- locating
def engine_command(path: str) -> list[str]:
    """The argv prefix that runs the engine's CLI from the configured path.

    ``path`` is the engine's Python interpreter (``.venv/bin/python``), a virtual environment
    folder, or the ``rollingdepth`` executable.
    """
    if not path or not path.strip():
        raise EngineError(
            f"No RollingDepth engine is configured: set the engine's Python in {PREFERENCES_HINT} "
            "(for example /path/to/rollingdepth/.venv/bin/python).",
            "NoEngine",
        )
    resolved = Path(os.path.expanduser(path.strip()))
    if not resolved.exists():
        raise EngineError(
            f"The engine path {str(resolved)!r} does not exist: point {PREFERENCES_HINT} at the "
            "engine's Python interpreter (for example /path/to/rollingdepth/.venv/bin/python).",
            "EngineNotFound",
        )
    if resolved.is_dir():
        resolved = _python_in_environment(resolved)
    if not os.access(resolved, os.X_OK):
        raise EngineError(
            f"The engine path {str(resolved)!r} is not executable: choose the Python "
            f"interpreter of the engine's environment in {PREFERENCES_HINT}.",
            "EngineNotFound",
        )
    if resolved.name.lower().startswith("rollingdepth"):
        return [str(resolved)]
    return [str(resolved), "-m", protocol.ENGINE_MODULE]


# Where an environment keeps its interpreter; a folder may also be the engine's repository,
# whose environment is its `.venv` (what scripts/setup_env.sh makes).
PYTHON_IN_FOLDER = ("bin/python3", "bin/python", "Scripts/python.exe", "python.exe")
ENVIRONMENT_FOLDERS = ("", ".venv", "venv")


def _python_in_environment(folder: Path) -> Path:
    for environment in ENVIRONMENT_FOLDERS:
        for candidate in PYTHON_IN_FOLDER:
            if (folder / environment / candidate).is_file():
                return folder / environment / candidate
    example = folder / ".venv" / "bin" / "python"
    raise EngineError(
        f"{str(folder)!r} is a folder without a Python interpreter: choose the engine's "
        f"Python itself (for example {example}, if the engine was installed there) in "
        f"{PREFERENCES_HINT}.",
        "EngineNotFound",
    )


def engine_environment() -> dict[str, str]:
    """The engine's environment: Blender's, minus what would point it at Blender's Python."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONSTARTUP")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def hidden_window(os_name: str = os.name) -> dict:
    """Popen arguments so that no console window flashes up on Windows."""
    if os_name == "nt":
        return {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0x08000000)}
    return {}


def check_engine(path: str, checkpoint: str = "", timeout: float = CHECK_TIMEOUT_S) -> dict:
    """Run the engine's check (JSON, with the checkpoint) and return its report (python, torch, device, and
    ``checkpoint_folder`` or ``checkpoint_error`` / ``checkpoint_download``)."""
    argv = [*engine_command(path), "check", "--json"]
    if checkpoint:
        argv += ["--checkpoint", checkpoint]
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
            env=engine_environment(),
            **hidden_window(),
        )
    except subprocess.TimeoutExpired as exc:
        print(f"RollingDepth: the engine check did not answer: {' '.join(argv)}", file=sys.stderr)
        raise EngineError(
            f"The engine did not answer Check Engine within {timeout:.0f} s; the system "
            "console shows the command it ran.",
            "EngineTimeout",
        ) from exc
    except OSError as exc:
        raise EngineError(
            f"Could not start the engine ({exc.strerror}): check the path in {PREFERENCES_HINT}.",
            "EngineNotFound",
        ) from exc
    for line in reversed(done.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    raise EngineError(
        f"The engine check failed (exit code {done.returncode}): "
        f"{last_meaningful_line(done.stderr) or 'no output'}. "
        f"Is {argv[0]!r} the Python of the environment where rollingdepth is installed?",
        "EngineCrash",
    )


# Where each engine flag lives in Blender, for the engine's messages (protocol.artist_text
# fills in the neutral names of the rest).
SETTING_OF_FLAG = {
    "--checkpoint": f"Checkpoint in {PREFERENCES_HINT}",
    "--device": f"Device in {PREFERENCES_HINT}",
    "--dtype": f"Precision in {PREFERENCES_HINT}",
    "--res": "Resolution in the Estimate Depth dialog",
    "--dilations": "Dilations in the Estimate Depth dialog",
    "--refine-steps": "Refinement Steps in the Estimate Depth dialog",
    "--near": "Near in the Estimate Depth dialog",
    "--far": "Far in the Estimate Depth dialog",
    "--depth-mode": "Convention in the Estimate Depth dialog",
    "--half": "Half Float in the Estimate Depth dialog",
    "--restore-res": "Write at Plate Size in the Estimate Depth dialog",
    "--upsample": "Upsample Edges in the Estimate Depth dialog",
    "--frames": "the strip's trims",
    "--input-colorspace": "the strip's color space (Strip ▸ Source)",
    "--holdout": "Holdout Matte in the Estimate Depth dialog",
    "--anchors": "Anchors File in the Estimate Depth dialog",
    "--camera": "Camera in the Estimate Depth dialog",
    "--passes": "Write Position and Normal in the Estimate Depth dialog",
    "--points": "Points for Build Shot in 3D in the Estimate Depth dialog",
    "--cache": "the strip's Kept Predictions (remove them in the RollingDepth sidebar)",
    "-o": "Output Folder in the Estimate Depth dialog",
    "--output": "Output Folder in the Estimate Depth dialog",
}
# What to do in Blender for an error kind (protocol.ERROR_KINDS), after the engine's reason.
BLENDER_HINTS = {
    "WeightsError": (
        f"Set {SETTING_OF_FLAG['--checkpoint']} to a folder with the weights (diffusers "
        "layout), then press Check Engine there"
    ),
    "DeviceError": f"Choose another {SETTING_OF_FLAG['--device']}",
    "OutputError": f"Choose another {SETTING_OF_FLAG['-o']}",
    "NonFiniteDepth": f"Set {SETTING_OF_FLAG['--dtype']} to Full (32-bit)",
}
# Errors the add-on words itself (not the engine's): they carry no kind lead.
OWN_KINDS = ("EngineCrash", "EngineError", "EngineNotFound", "EngineTimeout", "NoEngine")


def in_blender_terms(text: str) -> str:
    """An engine message with its flags as Blender's settings and no command-line sentences."""
    return protocol.artist_text(text, SETTING_OF_FLAG)


# The engine's "<file>: cannot read pixels: <OpenImageIO's words>" for a plate frame.
_UNREADABLE = re.compile(r"^(?P<path>.+?): cannot read (?:pixels|image): (?P<why>.+)$")


def without_repeats(text: str, min_words: int = 4) -> str:
    """``text`` with every later copy of a phrase of ``min_words`` or more words dropped:
    OpenImageIO (libpng, ...) repeats its cause in one error text."""
    words = text.split(" ")

    def key(part):
        return tuple(w.strip(":;,.").lower() for w in part)

    changed = True
    while changed:
        changed = False
        for n in range(len(words) // 2, min_words - 1, -1):
            first_at: dict[tuple, int] = {}
            for i in range(len(words) - n + 1):
                k = key(words[i : i + n])
                if k in first_at and i >= first_at[k] + n:
                    del words[i : i + n]
                    changed = True
                    break
                first_at.setdefault(k, i)
            if changed:
                break
    return " ".join(words)


def error_text(error: dict) -> str:
    """The one line a Blender user sees for the engine's ``error`` event: what went wrong
    (by the error's kind), the engine's reason in Blender's words, and the fix in Blender."""
    kind = error.get("kind") or "RollingDepthError"
    message = error.get("message") or "the engine failed without a message"
    message = in_blender_terms(without_repeats(message))
    unreadable = _UNREADABLE.match(message) if kind == "InputError" else None
    if unreadable:
        return (
            f"RollingDepth cannot read the plate file {unreadable['path']} "
            f"({unreadable['why'].rstrip('. ')}): re-render or replace that file, then run "
            "again."
        )
    hint = BLENDER_HINTS.get(kind) or in_blender_terms(error.get("hint") or "")
    if hint and any(where in message for where in SETTING_OF_FLAG.values() if where in hint):
        hint = ""  # the message already names the setting to change
    if kind not in OWN_KINDS:
        lead = protocol.ERROR_KINDS.get(kind, protocol.ERROR_KINDS["RollingDepthError"])
        message = f"{lead}: {message}"
    message = message.rstrip(". ")
    return f"{message}. {hint[:1].upper()}{hint[1:]}." if hint else f"{message}."


def last_meaningful_line(text: str) -> str:
    """The last non-empty line of a traceback or log: usually the one that says what broke."""
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()
    return ""


# ---------------------------------------------------------------------------- run settings
@dataclass(frozen=True)
class RunOptions:
    """Settings of one ``rollingdepth run``; ``None`` means the engine's (preset's) default."""

    checkpoint: str = ""
    preset: str = protocol.DEFAULT_PRESET
    dilations: tuple[int, ...] | None = None
    refine_steps: int | None = None
    resolution: int | None = None
    depth_mode: str = DEFAULT_DEPTH_MODE
    near: float = 1.0
    far: float = 100.0
    half: bool = False
    restore_res: bool = True
    upsample: str | None = None  # "edge" | "bilinear", with restore_res only
    input_colorspace: str | None = None  # an OCIO colour space of ``ocio_config``
    ocio_config: str | None = None
    holdout: str | None = None  # an image-sequence pattern or a movie
    anchors: str | None = None  # a CSV of points of known depth (camera_solve.py writes one)
    # the strip's kept predictions (folders.cache_folder): a rerun that changes only what acts
    # after the model re-aligns from them; the engine's keys decide what is still valid
    cache: str | None = None
    device: str = "auto"
    dtype: str | None = None
    name: str = protocol.DEFAULT_SEQUENCE_NAME
    channel: str = protocol.BLENDER_CHANNEL
    # the shot's camera (a USD stage, shot_camera.py): P and N, and the points, in the
    # scene's space; passes as the engine lists them ("Z,P,N")
    camera: str | None = None
    passes: str | None = None
    points: str | None = None  # a USD file name in the output folder
    requested_by: str = ""  # the .blend's path, recorded with the run
    overwrite: bool = False  # the folder's depth may be replaced (folders.choose_folder)

    def arguments(self) -> list[str]:
        args = ["--preset", self.preset, "--device", self.device]
        args += ["--name", self.name, "--channel", self.channel]
        args += ["--front-end", FRONT_END]
        if self.requested_by:
            args += ["--requested-by", self.requested_by]
        if self.overwrite:
            args.append("--overwrite")
        if self.checkpoint:
            args += ["--checkpoint", self.checkpoint]
        if self.dtype:
            args += ["--dtype", self.dtype]
        if self.dilations:
            args += ["--dilations", *(str(d) for d in self.dilations)]
        if self.refine_steps is not None:
            args += ["--refine-steps", str(self.refine_steps)]
        if self.resolution is not None:
            args += ["--res", str(self.resolution)]
        args += ["--depth-mode", self.depth_mode]
        if self.depth_mode == "depth":
            args += ["--near", repr(float(self.near)), "--far", repr(float(self.far))]
        if self.half:
            args.append("--half")
        if self.restore_res:
            args.append("--restore-res")
            if self.upsample:
                args += ["--upsample", self.upsample]
        if self.input_colorspace:
            args += ["--input-colorspace", self.input_colorspace]
            if self.ocio_config:
                args += ["--ocio-config", self.ocio_config]
        if self.holdout:
            args += ["--holdout", self.holdout]
        if self.anchors:
            args += ["--anchors", self.anchors]
        if self.cache:
            args += ["--cache", self.cache]
        if self.camera:
            args += ["--camera", self.camera]
        if self.passes:
            args += ["--passes", self.passes]
        if self.points:
            args += ["--points", self.points]
        return args


def parse_dilations(text: str) -> tuple[int, ...]:
    """The dialog's dilations text, as the engine parses it; the error says what to type."""
    try:
        return protocol.parse_dilations(text)
    except ValueError as exc:
        raise EngineError(f"Dilations: {exc}.", "ConfigError") from exc


def run_argv(
    engine_path: str, plate: str, output_dir: str, frames: str | None, options: RunOptions
) -> list[str]:
    argv = [*engine_command(engine_path), "run", plate, "-o", output_dir]
    if frames:
        argv += ["--frames", frames]
    return [*argv, *options.arguments(), "--progress", "json"]


# ---------------------------------------------------------------------------- a running engine
@dataclass
class RunState:
    """What the UI shows; updated by `EngineProcess.poll`."""

    stage: str = "starting"
    message: str = "starting the engine"
    done: int = 0
    total: int = 0
    fraction: float = 0.0
    messages: list[str] = field(default_factory=list)
    result: dict | None = None
    error: dict | None = None


_LIVE: set[EngineProcess] = set()  # started and not yet ended: stopped when Blender quits


class EngineProcess:
    """One engine run: start it, `poll` it from a timer (never blocks), `cancel` it.

    Two reader threads move stdout lines into a queue and keep stderr's tail, so a chatty
    engine never stalls on a full pipe and the UI thread never waits on a read.
    """

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.state = RunState()
        self.returncode: int | None = None
        self.cancelled = False
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=200)
        self._chatter: collections.deque[str] = collections.deque(maxlen=50)  # non-JSON stdout
        self._process: subprocess.Popen | None = None
        self._threads: list[threading.Thread] = []
        self._stdout_closed = False

    # ---- lifecycle
    def start(self) -> EngineProcess:
        try:
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",
                bufsize=1,
                env=engine_environment(),
                **hidden_window(),
            )
        except OSError as exc:
            raise EngineError(
                f"Could not start the engine {self.argv[0]!r} ({exc.strerror}): check the "
                f"engine path in {PREFERENCES_HINT}.",
                "EngineNotFound",
            ) from exc
        _LIVE.add(self)
        self._threads = [
            threading.Thread(target=self._pump_stdout, daemon=True, name="rollingdepth-stdout"),
            threading.Thread(target=self._pump_stderr, daemon=True, name="rollingdepth-stderr"),
        ]
        for thread in self._threads:
            thread.start()
        return self

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def finished(self) -> bool:
        """True once the process has exited and every line it wrote has been handled."""
        return self.returncode is not None and self._stdout_closed

    def _pump_stdout(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _pump_stderr(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        for line in self._process.stderr:
            self._stderr.append(line.rstrip("\n"))

    # ---- polling
    def poll(self) -> list[dict]:
        """Handle everything the engine wrote since the last call; never blocks."""
        events = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._stdout_closed = True
                break
            event = self._parse(line)
            if event is not None:
                self._apply(event)
                events.append(event)
        if self._process is not None and self.returncode is None:
            self.returncode = self._process.poll()
        if self.finished:
            for thread in self._threads:
                thread.join(timeout=1.0)
            _LIVE.discard(self)
            if self.state.result is None and self.state.error is None:
                event = self._missing_result_error()
                self._apply(event)
                events.append(event)
        return events

    def _parse(self, line: str) -> dict | None:
        text = line.strip()
        if not text:
            return None
        if text.startswith("{"):
            try:
                event = json.loads(text)
            except json.JSONDecodeError:
                event = None
            if isinstance(event, dict) and "event" in event:
                return event
        # anything else on stdout is library chatter; kept in case stderr says nothing
        self._chatter.append(text)
        return None

    def _apply(self, event: dict) -> None:
        kind = event.get("event")
        state = self.state
        if kind == protocol.EVENT_PROGRESS:
            state.stage = str(event.get("stage", state.stage))
            state.done = int(event.get("done", 0) or 0)
            state.total = int(event.get("total", 0) or 0)
            state.message = str(event.get("message", state.stage))
            state.fraction = max(
                state.fraction, protocol.overall_fraction(state.stage, state.done, state.total)
            )
        elif kind == protocol.EVENT_MESSAGE:
            state.messages.append(str(event.get("message", "")))
        elif kind == protocol.EVENT_RESULT:
            state.result = event
            state.stage, state.message, state.fraction = "done", "finished", 1.0
        elif kind == protocol.EVENT_ERROR:
            state.error = event
            state.stage, state.message = "error", str(event.get("message", "engine error"))

    def _missing_result_error(self) -> dict:
        if self.cancelled:
            return {"event": "error", "kind": protocol.KIND_CANCELLED, "message": "cancelled"}
        tail = last_meaningful_line("\n".join(self._stderr)) or last_meaningful_line(
            "\n".join(self._chatter)
        )
        return {
            "event": "error",
            "kind": "EngineCrash",
            "message": (
                f"The engine stopped (exit code {self.returncode}) without a result"
                + (f": {tail}" if tail else "")
                + f". Press Check Engine in {PREFERENCES_HINT}, and see the system console "
                "for the engine's log."
            ),
        }

    @property
    def log_tail(self) -> str:
        """The engine's last stderr lines, else its non-protocol stdout; empty when silent."""
        return "\n".join(self._stderr).strip() or "\n".join(self._chatter).strip()

    # ---- blocking use (scripts, background mode)
    def wait(self, timeout: float | None = None, on_events=None, interval: float = 0.05) -> bool:
        """Poll until the run ends; returns False if ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            events = self.poll()
            if on_events and events:
                on_events(events)
            if self.finished:
                break
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(interval)
        return True

    # ---- stopping
    def cancel(self, grace: float = TERMINATE_GRACE_S) -> None:
        """Ask the engine to stop (SIGTERM: it cleans up), kill it after ``grace`` seconds."""
        self.cancelled = True
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            try:
                process.terminate()
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=grace)
            except OSError:
                pass
        self.returncode = process.returncode
        for thread in self._threads:
            thread.join(timeout=2.0)
        self.poll()
        _LIVE.discard(self)


def stop_all(grace: float = 2.0) -> None:
    """End every engine this Blender started (add-on disabled, Blender quitting)."""
    for run in list(_LIVE):
        run.cancel(grace=grace)
    ESTIMATES.stop()


atexit.register(stop_all)


# ---------------------------------------------------------------------------- cost estimates
def estimate_argv(
    engine_path: str, frames: int, options: RunOptions, plate: str = "", size=None
) -> list[str]:
    """The engine's estimate of a run of ``frames`` frames with ``options``: of a plate of
    ``size`` (width, height) when Blender knows it, else of the file ``plate`` (its size is
    read, nothing else)."""
    argv = [*engine_command(engine_path), "estimate", "--shots", str(frames)]
    argv += ["--plate-size", f"{size[0]}x{size[1]}"] if size else ["--plate", plate]
    argv += ["--preset", options.preset, "--device", options.device]
    if options.checkpoint:
        argv += ["--checkpoint", options.checkpoint]
    if options.dtype:
        argv += ["--dtype", options.dtype]
    if options.dilations:
        argv += ["--dilations", *(str(d) for d in options.dilations)]
    if options.refine_steps is not None:
        argv += ["--refine-steps", str(options.refine_steps)]
    if options.resolution is not None:
        argv += ["--res", str(options.resolution)]
    if options.restore_res:
        argv.append("--restore-res")
    return [*argv, "--json"]


def kept_key(media: str, argv: list[str] | tuple[str, ...]) -> str:
    """What a strip's kept predictions hold, as the estimate of the run that made them says
    it (plate file, frames, size, preset, dilations, resolution, model, device, precision):
    a later estimate with the same key is a rerun that only re-aligns. Conservative: any
    other change (a dilation subset included) counts as a full run."""
    not_model = ("--restore-res", "--kept", "--json")  # what the model computes is the same
    return json.dumps([media, *(a for a in argv if a not in not_model)])


class Estimates:
    """Estimates asked of the engine in the background, kept by their command line: the
    dialog asks on every redraw and never waits (the engine starts in a few seconds)."""

    def __init__(self) -> None:
        self._done: dict[tuple, dict | None] = {}
        self._running: dict[tuple, subprocess.Popen] = {}

    def get(self, argv: list[str]) -> tuple[bool, dict | None]:
        """(ready, report): starts the estimate the first time; report None if it failed."""
        key = tuple(argv)
        if key in self._done:
            return True, self._done[key]
        process = self._running.get(key)
        if process is None:
            try:
                process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                    encoding="utf-8",
                    errors="replace",
                    env=engine_environment(),
                    **hidden_window(),
                )
            except OSError:
                self._done[key] = None
                return True, None
            self._running[key] = process
        if process.poll() is None:
            return False, None
        out = process.stdout.read() if process.stdout else ""
        del self._running[key]
        report = None
        for line in reversed(out.splitlines()):
            if line.strip().startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):  # a broken line: no estimate
                    report = json.loads(line)
                break
        self._done[key] = report
        return True, report

    def wait(self, argv: list[str], timeout: float = CHECK_TIMEOUT_S) -> dict | None:
        """The estimate, waiting for it (scripts and background mode)."""
        deadline = time.monotonic() + timeout
        ready, report = self.get(argv)
        while not ready and time.monotonic() < deadline:
            time.sleep(0.05)
            ready, report = self.get(argv)
        return report

    def stop(self) -> None:
        for process in self._running.values():
            if process.poll() is None:
                process.kill()
        self._running.clear()


ESTIMATES = Estimates()


def estimate_text(report: dict) -> str:
    """The engine's estimate in the dialog's words (the core's `costs.estimate_text`, which
    the add-on cannot import)."""
    h, w = report["processing_size"]
    ph, pw = report["plate_size"]
    rough = "" if report.get("measured") else " (rough: no earlier run on this computer)"
    text = f"{report['frames']} frames at {w}x{h}: {protocol.duration_text(report['seconds'])}"
    text += f"{rough}."
    if report.get("larger_than_plate"):
        text += f" That is larger than the plate ({pw}x{ph}): more time, no more detail."
    return text
