"""Helpers shared by the Blender tests (imported after conftest set up Blender's folders)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import bpy

REPO = Path(__file__).resolve().parents[2]
ENGINE_PYTHON = Path(
    os.environ.get("ROLLINGDEPTH_ENGINE_PYTHON", REPO / ".venv" / "bin" / "python")
)
ADDON_ID = "rollingdepth"
ADDON_MODULE = f"bl_ext.user_default.{ADDON_ID}"
FAST = ["--res", "64", "--dilations", "1", "3", "--dtype", "fp32", "--device", "cpu"]
PLATE_SIZE = (48, 64)  # height, width
SEQUENCE_FIRST, SEQUENCE_COUNT = 1001, 14
MOVIE_FRAMES = 14


def engine_python(code: str, *args: str, timeout: float = 300) -> str:
    """Run ``code`` with the engine's interpreter (torch, OIIO, PyAV live there, not here)."""
    done = subprocess.run(
        [str(ENGINE_PYTHON), "-c", code, *args], capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"engine python failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def engine_cli(*args: str, timeout: float = 300) -> dict:
    """``rollingdepth run ... --progress json`` straight from the CLI; returns the result."""
    done = subprocess.run(
        [str(ENGINE_PYTHON), "-m", "rollingdepth_core.cli", "run", *args, "--progress", "json"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert events and events[-1]["event"] == "result", done.stdout + done.stderr
    return events[-1]


def max_exr_difference(pairs: list[tuple[str, str]], channel: str = "Y") -> float:
    """Largest absolute difference of ``channel`` over pairs of EXRs (read by the engine)."""
    code = (
        "import json, sys\n"
        "import numpy as np\n"
        "from rollingdepth_core.exr import read_exr\n"
        "worst = 0.0\n"
        "for a, b in json.loads(sys.argv[1]):\n"
        "    ca, _ = read_exr(a)\n"
        "    cb, _ = read_exr(b)\n"
        f"    x, y = ca[{channel!r}], cb[{channel!r}]\n"
        "    assert x.shape == y.shape, (a, x.shape, y.shape)\n"
        "    worst = max(worst, float(np.abs(x - y).max()))\n"
        "print(worst)\n"
    )
    return float(engine_python(code, json.dumps(pairs)).strip())


def add_image_strip(scene, directory: Path, names: list[str], channel: int, frame_start: int):
    strips = scene.sequence_editor.strips
    strip = strips.new_image("plate", str(directory / names[0]), channel, frame_start)
    for name in names[1:]:
        strip.elements.append(name)
    return strip


def select_only(scene, *strips) -> None:
    """Select ``strips`` alone, the last one active, as clicks in the Sequencer would
    (``strips.new_*`` selects every strip it makes, and the operator runs on the selection)."""
    for strip in scene.sequence_editor.strips_all:
        strip.select = strip in strips
    if strips:
        scene.sequence_editor.active_strip = strips[-1]


def run_operator(**settings) -> set:
    """The Strip menu operator through bpy.ops (background mode: the blocking path)."""
    base = dict(resolution=64, dilations="1 3", preset="fast")
    return bpy.ops.sequencer.rollingdepth_estimate(**{**base, **settings})
