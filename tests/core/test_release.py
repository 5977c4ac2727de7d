"""The release as a user gets it: the sdist and the wheel build, and the wheel alone, installed
by pip into a fresh virtual environment, is a complete engine (`selftest`, and a `run` whose
`--cuts auto` needs the shot-cut detector that comes with it as a declared dependency).

Cost: one fresh environment, every dependency installed by pip from its cache (torch is the
pinned CPU wheel): about 2 minutes on 2 shared cores, most of it unpacking torch; it is handed
to a worker first (tests/conftest.py) and runs beside the other modules.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from rollingdepth_core.random_checkpoint import make_random_checkpoint

from .test_cuts import write_edit

REPO = Path(__file__).resolve().parents[2]
CONSTRAINTS = REPO / "scripts" / "constraints.txt"
SHOT = 16  # frames per shot of the 2-shot edit
NOT_SOURCE = (".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", "out", ".*cache")


def clean_env() -> dict[str, str]:
    """The environment a user's shell has: no PYTHONPATH pointing at this checkout, pip
    pinned by the constraints (torch==2.13.0: letting pip choose downloads a CUDA build)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_CONSTRAINT"] = str(CONSTRAINTS)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def call(argv, cwd, timeout=900) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{argv}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_the_wheel_alone_installs_a_complete_engine(tmp_path):
    # 1. The sdist, then the wheel built from the unpacked sdist (what `python -m build` does):
    # a file the sdist forgot fails here, not on a user's machine.
    # from a clean copy: the sdist step writes an egg-info into the tree it builds
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    dist = tmp_path / "dist"
    call([sys.executable, "-m", "build", "--outdir", dist, source], cwd=tmp_path)
    (sdist,) = dist.glob("rollingdepth-*.tar.gz")
    (wheel,) = dist.glob("rollingdepth-*-py3-none-any.whl")
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    assert any(n.endswith("/rollingdepth_core/cuts.py") for n in names)
    assert any(n.endswith("/pyproject.toml") for n in names)
    with zipfile.ZipFile(wheel) as archive:
        meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(meta).decode()
        entry_points = archive.read(meta.replace("METADATA", "entry_points.txt")).decode()
    requires = [
        line.split(": ", 1)[1]
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist: ")
    ]
    assert any(r.startswith("scenedetect-headless") for r in requires), requires
    assert not any(r.split(";")[0].strip().startswith("opencv-python>") for r in requires)
    for extra in ("panel", "farm", "3d"):
        assert f"Provides-Extra: {extra}" in metadata
    assert "rollingdepth = rollingdepth_core.cli:main" in entry_points

    # 2. A fresh environment and `pip install <wheel>`, nothing else.
    venv = tmp_path / "venv"
    call([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    scripts = venv / ("Scripts" if os.name == "nt" else "bin")
    python = scripts / ("python.exe" if os.name == "nt" else "python")
    call([python, "-m", "pip", "install", "-q", wheel], cwd=tmp_path)
    call([python, "-m", "pip", "check"], cwd=tmp_path)
    where = call(
        [python, "-c", "import rollingdepth_core; print(rollingdepth_core.__file__)"], cwd=tmp_path
    )
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout  # not this checkout

    # 3. The installation's own proof, through the installed `rollingdepth` command.
    rollingdepth = scripts / ("rollingdepth.exe" if os.name == "nt" else "rollingdepth")
    done = call([rollingdepth, "selftest"], cwd=tmp_path)
    assert "selftest PASSED" in done.stdout + done.stderr

    # 4. A tiny run of a 2-shot edit with the cuts detected: scenedetect came with the wheel.
    edit = write_edit(tmp_path / "edit.mp4", (SHOT, SHOT), 72, 128)
    checkpoint = make_random_checkpoint(tmp_path / "tiny", size="tiny")
    out = tmp_path / "depth"
    call(
        [rollingdepth, "run", edit, "-o", out, "--cuts", "auto", "--checkpoint", checkpoint,
         "--res", "48", "--dilations", "1", "3", "--device", "cpu"],
        cwd=tmp_path,
    )  # fmt: skip
    manifest = json.loads((out / "depth_run.json").read_text())
    assert manifest["used"]["cuts"] == {"source": "detected", "starts": [SHOT]}
    assert len(list(out.glob("depth.*.exr"))) == 2 * SHOT
