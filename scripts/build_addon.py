"""Build the installable Blender extension zip from blender_addon/ into dist/.

Uses Blender's own extension packager (``blender_ext.py build``), which runs with plain
Python: from the bpy wheel (``.venv-blender``), a Blender install, or ``--blender-ext PATH``.

The add-on restates nothing the engine defines: ``rollingdepth_core/protocol.py`` (standard
library only) is copied in as ``blender_addon/protocol.py`` (git-ignored) before packaging.

    python scripts/build_addon.py                  # -> dist/rollingdepth-<version>.zip
    python scripts/build_addon.py --bundle-only    # just the copy, to run from blender_addon/
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "blender_addon"
PROTOCOL = REPO / "rollingdepth_core" / "protocol.py"
BUNDLED_PROTOCOL = SOURCE / "protocol.py"
PACKAGER = Path("scripts/addons_core/bl_pkg/cli/blender_ext.py")


def find_packager(explicit: str | None) -> Path:
    """Blender's ``blender_ext.py``: explicit path, $BLENDER_EXT, the bpy wheel, a Blender."""
    candidates: list[Path] = []
    for given in (explicit, os.environ.get("BLENDER_EXT")):
        if given:
            candidates.append(Path(given))
    spec = importlib.util.find_spec("bpy")
    roots = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    roots += [
        Path(p)
        for p in glob.glob(
            str(REPO / ".venv-blender" / "lib" / "python3*" / "site-packages" / "bpy")
        )
    ]
    blender = shutil.which("blender")
    if blender:
        roots.append(Path(blender).resolve().parent)
    for root in roots:
        candidates += sorted(root.glob(f"*/{PACKAGER}"), reverse=True)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise SystemExit(
        "build_addon: cannot find Blender's extension packager (blender_ext.py). Run "
        "scripts/setup_blender_env.sh, or pass --blender-ext /path/to/blender/<version>/"
        f"{PACKAGER}"
    )


def manifest_version() -> str:
    text = (SOURCE / "blender_manifest.toml").read_text(encoding="utf-8")
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if not match:
        raise SystemExit("build_addon: blender_manifest.toml has no version")
    return match.group(1)


def bundle_protocol() -> Path:
    """Copy the engine's protocol module into the add-on (the one way it gets there)."""
    shutil.copyfile(PROTOCOL, BUNDLED_PROTOCOL)
    return BUNDLED_PROTOCOL


def build(output_dir: Path, packager: Path) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    bundle_protocol()
    for cache in SOURCE.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    target = output_dir / f"rollingdepth-{manifest_version()}.zip"
    target.unlink(missing_ok=True)
    command = [
        sys.executable,
        str(packager),
        "build",
        "--source-dir",
        str(SOURCE),
        "--output-filepath",
        str(target),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not target.is_file():
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"build_addon: the packager failed (exit code {done.returncode})")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default=str(REPO / "dist"))
    parser.add_argument("--blender-ext", default=None, help="path to Blender's blender_ext.py")
    parser.add_argument(
        "--bundle-only",
        action="store_true",
        help="only copy rollingdepth_core/protocol.py into blender_addon/ (no zip)",
    )
    args = parser.parse_args(argv)
    if args.bundle_only:
        print(bundle_protocol())
        return 0
    target = build(Path(args.output_dir), find_packager(args.blender_ext))
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
