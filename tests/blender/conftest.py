"""Real Blender (bpy 5.0.1, background mode) driving the real engine in its own Python.

Run with the bpy environment:  .venv-blender/bin/python -m pytest tests/blender -q
The engine interpreter is /work/main/.venv/bin/python (or $ROLLINGDEPTH_ENGINE_PYTHON).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

if importlib.util.find_spec("bpy") is None:
    # Not the bpy environment (e.g. the engine's `pytest tests`): collect nothing here, and
    # leave that session's HOME alone.
    collect_ignore_glob = ["test_*.py"]
else:
    # Blender writes user config, extensions and thumbnails under these: keep them in a temp
    # folder. They must be set before bpy is imported.
    _BLENDER_HOME = Path(tempfile.mkdtemp(prefix="rollingdepth-blender-home-"))
    os.environ["HOME"] = str(_BLENDER_HOME)
    os.environ["XDG_CACHE_HOME"] = str(_BLENDER_HOME / "cache")
    os.environ["BLENDER_USER_RESOURCES"] = str(_BLENDER_HOME / "blender")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import bpy

    from .support import (
        ADDON_ID,
        ADDON_MODULE,
        ENGINE_PYTHON,
        MOVIE_FRAMES,
        PLATE_SIZE,
        REPO,
        SEQUENCE_COUNT,
        SEQUENCE_FIRST,
        engine_python,
    )


@pytest.fixture(scope="session")
def engine_ready() -> Path:
    if not ENGINE_PYTHON.exists():
        pytest.skip(f"no engine interpreter at {ENGINE_PYTHON}")
    return ENGINE_PYTHON


@pytest.fixture(scope="session")
def media(tmp_path_factory, engine_ready) -> dict:
    """A tiny random checkpoint, a PNG sequence plate.1001-1014 and a 14-frame h264 movie."""
    root = tmp_path_factory.mktemp("media")
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import numpy as np\n"
        "import OpenImageIO as oiio\n"
        "from rollingdepth_core.random_checkpoint import make_random_checkpoint\n"
        "from rollingdepth_core.sample import sample_frame, write_sample_video\n"
        "root = Path(sys.argv[1])\n"
        f"h, w = {PLATE_SIZE}\n"
        "make_random_checkpoint(root / 'tiny', 'tiny')\n"
        "(root / 'seq').mkdir()\n"
        f"for i in range({SEQUENCE_COUNT}):\n"
        f"    rgb = sample_frame(i, {SEQUENCE_COUNT}, h, w)\n"
        "    pixels = (rgb * 255 + 0.5).astype(np.uint8)\n"
        f"    path = str(root / 'seq' / f'plate.{{{SEQUENCE_FIRST} + i:04d}}.png')\n"
        "    out = oiio.ImageOutput.create(path)\n"
        "    assert out.open(path, oiio.ImageSpec(w, h, 3, 'uint8')), oiio.geterror()\n"
        "    out.write_image(pixels)\n"
        "    out.close()\n"
        f"write_sample_video(root / 'clip.mp4', {MOVIE_FRAMES}, h, w, 24)\n"
    )
    engine_python(code, str(root))
    return {
        "root": root,
        "checkpoint": str(root / "tiny"),
        "sequence_dir": root / "seq",
        "movie": root / "clip.mp4",
    }


@pytest.fixture(scope="session")
def addon(tmp_path_factory):
    """The extension built with scripts/build_addon.py, installed from the zip and enabled."""
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_addon.py"), "--output-dir", str(dist)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    zip_path = Path(built.stdout.strip().splitlines()[-1])
    assert zip_path.is_file()
    result = bpy.ops.extensions.package_install_files(
        filepath=str(zip_path), repo="user_default", enable_on_install=True
    )
    assert result == {"FINISHED"}
    assert ADDON_MODULE in bpy.context.preferences.addons
    installed = Path(os.environ["BLENDER_USER_RESOURCES"]) / "extensions" / "user_default"
    assert (installed / ADDON_ID / "blender_manifest.toml").is_file()
    import importlib

    return importlib.import_module(ADDON_MODULE)


def point_at_engine(checkpoint: str):
    """Preferences for the real engine, the tiny checkpoint and the CPU."""
    preferences = bpy.context.preferences.addons[ADDON_MODULE].preferences
    preferences.engine_path = str(ENGINE_PYTHON)
    preferences.checkpoint = checkpoint
    preferences.device, preferences.dtype = "cpu", "fp32"
    return preferences


@pytest.fixture()
def prefs(addon, media):
    """Preferences pointing at the real engine; tests may break them, the next test restores."""
    return point_at_engine(media["checkpoint"])


def fresh_scene():
    """The context scene with an empty sequencer and a 64x48 output at 24 fps."""
    scene = bpy.context.scene
    scene.sequence_editor_clear()
    scene.sequence_editor_create()
    scene.render.resolution_x, scene.render.resolution_y = PLATE_SIZE[1], PLATE_SIZE[0]
    scene.render.resolution_percentage = 100
    scene.render.fps, scene.render.fps_base = 24, 1.0
    scene.frame_start, scene.frame_end = 1, 60
    scene.view_settings.view_transform = "AgX"  # a new scene's view, whatever a test set
    return scene


@pytest.fixture()
def scene():
    return fresh_scene()
