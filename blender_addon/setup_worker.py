"""Builds an engine environment; run in the background by the add-on's Set Up Engine.

A script for a plain Python 3.10-3.12 (standard library only, no package imports: it runs
outside Blender, from the add-on's folder). Each step is a child process (venv, pip, the
engine's check); progress goes to stdout as JSON lines for the add-on to poll:

    {"event": "progress", "step": "torch", "fraction": 0.3, "message": "Downloading torch"}
    {"event": "done", "python": "/.../bin/python", "check": {...}}
    {"event": "error", "kind": "PipFailed", "message": "..."}

The environment counts as an engine only once ``rollingdepth-engine.json`` is written, last,
after the engine's own check passed; anything without it is a failed or interrupted set-up
that the add-on removes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

MARKER = "rollingdepth-engine.json"
# Each step's share of the bar: torch is most of the download on every platform.
STEPS = {"venv": (0.0, 0.05), "torch": (0.05, 0.55), "engine": (0.55, 0.95), "check": (0.95, 1.0)}
_PIP_LINE = re.compile(r"^(Collecting|Downloading|Using cached|Installing collected packages)\b")
_LONG_PATHS = "Windows Long Path support"

_child: subprocess.Popen | None = None


def say(event: str, **fields) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def progress(step: str, within: float, message: str) -> None:
    start, end = STEPS[step]
    say("progress", step=step, fraction=round(start + (end - start) * within, 4), message=message)


class StepFailed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def environment_python(env: Path) -> Path:
    if os.name == "nt":
        return env / "Scripts" / "python.exe"
    return env / "bin" / "python"


def run_step(step: str, argv: list[str], what: str, cwd: Path) -> list[str]:
    """Run one child, passing its progress on; its last output lines for an error.

    ``cwd`` is a folder of the set-up's own: ``python -m`` puts the working folder first on
    the module path, and Blender's (a source checkout, a project folder) must not supply
    the `rollingdepth_core` the check imports."""
    global _child
    lines: list[str] = []
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
    env.update(PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8", PIP_PROGRESS_BAR="off")
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    _child = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=env,
        cwd=cwd,
    )
    seen = 0
    assert _child.stdout is not None
    for raw in _child.stdout:
        line = raw.rstrip()
        if not line:
            continue
        lines = (lines + [line])[-40:]
        if _PIP_LINE.match(line):
            seen += 1
            # pip names each package once or twice; the bar creeps towards the step's end
            progress(step, 1.0 - 1.0 / (1.0 + seen / 8.0), line.split(" (")[0][:120])
    code = _child.wait()
    _child = None
    if code != 0:
        text = "\n".join(lines)
        if _LONG_PATHS in text:
            raise StepFailed(
                "LongPaths",
                f"{what} failed: a file path inside the engine folder is longer than Windows "
                "allows. Turn on Windows' long paths (the LongPathsEnabled setting, or run "
                "Python's installer and choose 'Disable path length limit'), then press Set Up "
                "Engine again.",
            )
        last = next((ln for ln in reversed(lines) if ln.strip()), "no output")
        kind = (
            "NetworkError"
            if re.search(r"(?i)connection|resolve|timed? ?out|proxy", text)
            else "StepFailed"
        )
        raise StepFailed(kind, f"{what} failed (exit code {code}): {last.strip()}")
    return lines


def build(args: argparse.Namespace) -> dict:
    env = Path(args.env)
    if env.exists():
        raise StepFailed("Exists", f"{env} already exists; the add-on picks a new folder")
    progress("venv", 0.0, "Creating the engine's environment")
    env.parent.mkdir(parents=True, exist_ok=True)
    run_step(
        "venv", [sys.executable, "-m", "venv", str(env)], "Creating the environment", env.parent
    )
    python = environment_python(env)
    if not python.is_file():
        raise StepFailed("NoVenv", f"Creating the environment made no {python.name}")
    pip = [str(python), "-m", "pip", "install", "--no-input"]
    if args.constraint:
        pip += ["--constraint", args.constraint]

    where = args.torch_index or "the package registry (PyPI)"
    progress("torch", 0.0, f"Installing PyTorch ({args.torch_variant}) from {where}")
    torch = [*pip, args.torch_requirement]
    if args.torch_index:
        torch += ["--index-url", args.torch_index]
    run_step("torch", torch, f"Installing PyTorch from {where}", env)

    progress("engine", 0.0, "Installing the RollingDepth engine")
    run_step("engine", [*pip, args.engine], "Installing the RollingDepth engine", env)

    progress("check", 0.0, "Checking the engine")
    lines = run_step(
        "check",
        [str(python), "-m", "rollingdepth_core.cli", "check", "--json"],
        "Checking the engine",
        env,
    )
    report = {}
    for line in reversed(lines):
        if line.startswith("{"):
            report = json.loads(line)
            break
    if not report.get("torch"):
        raise StepFailed("CheckFailed", "The engine's check printed no report")
    marker = {
        "python": str(python),
        "engine": args.engine,
        "torch_variant": args.torch_variant,
        "torch_index": args.torch_index,
        "base_python": sys.executable,
        "check": report,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    partial = env / (MARKER + ".partial")
    partial.write_text(json.dumps(marker, indent=1), encoding="utf-8")
    os.replace(partial, env / MARKER)  # last: from here on the folder is an engine
    return marker


def _stop(signum, frame):
    """Cancelled: take the current step's child down too, then end."""
    if _child is not None and _child.poll() is None:
        _child.terminate()
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build a RollingDepth engine environment")
    parser.add_argument("--env", required=True, help="the new environment's folder")
    parser.add_argument("--engine", required=True, help="a wheel, a source folder or a name")
    parser.add_argument("--torch-requirement", default="torch>=2.4")
    parser.add_argument("--torch-index", default="", help="a PyTorch index URL, or empty")
    parser.add_argument("--torch-variant", default="cpu", choices=("cpu", "cuda", "mps"))
    parser.add_argument("--constraint", default="", help="a pip constraints file, or empty")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    if hasattr(signal, "SIGBREAK"):  # Windows: CTRL_BREAK_EVENT to the process group
        signal.signal(signal.SIGBREAK, _stop)
    try:
        marker = build(args)
    except StepFailed as exc:
        say("error", kind=exc.kind, message=str(exc))
        return 1
    except OSError as exc:
        say(
            "error",
            kind="OSError",
            message=f"{exc.strerror or exc}: {exc.filename or ''}".strip(": "),
        )
        return 1
    say("done", python=marker["python"], check=marker["check"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
