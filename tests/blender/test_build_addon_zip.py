"""The zip scripts/build_addon.py makes with the standard library holds the files Blender's own
packager (``blender_ext.py build``, from the bpy wheel) puts in, and Blender's validator takes
it (conftest's ``addon`` fixture installs it)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import bpy

from .support import REPO


def blender_packager() -> Path:
    scripts = Path(bpy.utils.resource_path("LOCAL")) / "scripts"  # bpy/5.0 of the wheel
    return scripts / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"


def test_the_zip_matches_blenders_own_build(tmp_path):
    ours = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_addon.py"), "--output-dir",
         str(tmp_path / "ours"), "--engine-wheel", "none"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert ours.returncode == 0, ours.stderr
    our_zip = Path(ours.stdout.strip().splitlines()[-1])
    theirs = tmp_path / "theirs.zip"
    done = subprocess.run(
        [sys.executable, str(blender_packager()), "build", "--source-dir",
         str(REPO / "blender_addon"), "--output-filepath", str(theirs)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    with zipfile.ZipFile(our_zip) as a, zipfile.ZipFile(theirs) as b:
        assert sorted(a.namelist()) == sorted(b.namelist())
        for name in a.namelist():
            assert a.read(name) == b.read(name), name
    checked = subprocess.run(
        [sys.executable, str(blender_packager()), "validate", str(our_zip)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
