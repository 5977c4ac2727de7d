"""Build the installable Blender extension zip from blender_addon/ into dist/.

Plain Python 3.11+ (standard library: ``tomllib``, ``zipfile``): no Blender and no bpy. It checks
``blender_manifest.toml`` by the rules Blender's own ``blender --command extension build``
applies (required keys and types, the id, semantic versions, a terse tagline, the permissions
table, the ``[build]`` exclusions) and zips the add-on as that command does: the files at the
archive's root, ``[build] paths_exclude_pattern`` honoured.

The zip is the whole release an artist downloads: it carries the engine's wheel (built here
with ``pip wheel``, or given with ``--engine-wheel``) in ``engine/``, which the add-on's Set Up
Engine installs into an environment of its own; ``--engine-wheel none`` leaves it out.

The add-on restates nothing the engine defines: ``rollingdepth_core/protocol.py`` (standard
library only) is copied in as ``blender_addon/protocol.py`` (git-ignored) before packaging.

    python scripts/build_addon.py                  # -> dist/rollingdepth-<version>.zip
    python scripts/build_addon.py --bundle-only    # just the copy, to run from blender_addon/
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "blender_addon"
PROTOCOL = REPO / "rollingdepth_core" / "protocol.py"
BUNDLED_PROTOCOL = SOURCE / "protocol.py"
MANIFEST = "blender_manifest.toml"
# Where the add-on looks for the engine wheel it installs (blender_addon/engine_setup.py).
ENGINE_FOLDER = "engine"

# Blender's rules (extension build, strict mode), as its packager states them.
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$"
)
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
TERSE_MAX = 64
PERMISSIONS = ("files", "network", "clipboard", "camera", "microphone")
# Blender's exclusions when the manifest has no [build] table.
DEFAULT_EXCLUDE = ["__pycache__/", ".*", "/*.zip", "*.blend[1-9]"]


class BuildError(Exception):
    """The manifest or the source folder cannot make an extension; the message says why."""


# ---------------------------------------------------------------------------- the manifest
def _text(value) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "a non-empty string expected"
    if value != value.strip():
        return "text without leading/trailing white space expected"
    if CONTROL_CHARS.search(value):
        return "text without control characters expected"
    return None


def _terse(value) -> str | None:
    if (error := _text(value)) is not None:
        return error
    if len(value) > TERSE_MAX:
        return f"at most {TERSE_MAX} characters expected, found {len(value)}"
    if not (value[-1].isalnum() or value[-1] in ")]}"):
        return "must not end with punctuation"
    return None


def _version(value) -> str | None:
    return None if SEMVER.match(value) else f"a semantic version expected, found {value!r}"


def _blender_version(value) -> str | None:
    parts = value.split(".")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        return f'three numbers separated by "." expected, found {value!r}'
    return None


def _idname(value) -> str | None:
    if not value.isidentifier():
        return "not a valid Python identifier"
    if "__" in value or value.startswith("_") or value.endswith("_"):
        return 'no leading, trailing or doubled "_" allowed'
    return None


def _strings(value, allow_empty: bool = False) -> str | None:
    if not value and not allow_empty:
        return "the list may not be empty"
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            return f"item {index} must be a non-empty string"
    return None


def _permissions(value) -> str | None:
    if not isinstance(value, dict):
        return "a table of strings expected"
    for key, text in value.items():
        if key not in PERMISSIONS:
            return f"{key!r} is not one of {', '.join(PERMISSIONS)}"
        if (error := _terse(text)) is not None:
            return f"{key}: {error}"
    return None


# key, type, check; required keys first (Blender's PkgManifest order)
FIELDS = (
    ("id", str, _idname, True),
    ("schema_version", str, _version, True),
    ("name", str, _text, True),
    ("tagline", str, _terse, True),
    ("version", str, _version, True),
    ("type", str, lambda v: None if v in ("add-on", "theme") else "add-on or theme", True),
    ("maintainer", str, _text, True),
    ("license", list, _strings, True),
    ("blender_version_min", str, _blender_version, True),
    ("blender_version_max", str, _blender_version, False),
    ("website", str, _text, False),
    ("copyright", list, _strings, False),
    ("permissions", dict, _permissions, False),
    ("tags", list, _strings, False),
    ("platforms", list, _strings, False),
    ("wheels", list, _strings, False),
)


def read_manifest(source: Path) -> dict:
    """The manifest, checked whole: every problem is listed in one `BuildError`."""
    import tomllib

    path = source / MANIFEST
    if not path.is_file():
        raise BuildError(f"{path}: not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BuildError(f"{path}: not valid TOML ({exc})") from exc
    problems = []
    for key, kind, check, required in FIELDS:
        if key not in data:
            if required:
                problems.append(f"missing {key!r}")
            continue
        value = data[key]
        if not isinstance(value, kind):
            problems.append(f"{key!r} must be a {kind.__name__}, not a {type(value).__name__}")
        elif (error := check(value)) is not None:
            problems.append(f"{key!r}: {error}")
    build = data.get("build", {})
    if not isinstance(build, dict):
        problems.append("[build] must be a table")
    else:
        if "generated" in build:
            problems.append("[build] may not hold the reserved 'generated'")
        if "paths" in build and "paths_exclude_pattern" in build:
            problems.append("[build] may not declare both 'paths' and 'paths_exclude_pattern'")
        for key in ("paths", "paths_exclude_pattern"):
            if key in build and (
                not isinstance(build[key], list) or _strings(build[key]) is not None
            ):
                problems.append(f"[build] {key!r} must be a list of non-empty strings")
    if problems:
        raise BuildError(f"{path}: " + "; ".join(problems))
    return data


# ---------------------------------------------------------------------------- the files
def _glob(pattern: str) -> re.Pattern:
    """A gitignore glob: ``*`` and ``?`` stop at ``/``, ``**`` crosses folders, ``[...]`` as
    written (fnmatch's ``*`` would cross folders)."""
    out, i = "", 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end].replace("\\", "\\\\")
            body = "^" + body[1:] if body.startswith("!") else body
            out, i = out + "[" + body + "]", end + 1
            continue
        else:
            out += re.escape(char)
        i += 1
    return re.compile(out + r"\Z")


def _excluded(relative: str, is_dir: bool, patterns: list[str]) -> bool:
    """gitignore-style, as Blender's packager reads ``paths_exclude_pattern``: a trailing
    ``/`` matches folders only, a leading ``/`` (or any ``/`` inside) anchors at the add-on's
    root, a pattern without ``/`` matches a name at any depth."""
    name = relative.rsplit("/", 1)[-1]
    for pattern in patterns:
        if pattern.endswith("/"):
            if not is_dir:
                continue
            pattern = pattern[:-1]
        if "/" in pattern:
            if _glob(pattern.lstrip("/")).match(relative):
                return True
        elif _glob(pattern).match(name):
            return True
    return False


def source_files(source: Path, manifest: dict) -> list[tuple[Path, str]]:
    """(file, name in the archive) for every file the extension holds, sorted."""
    build = manifest.get("build", {})
    if "paths" in build:
        files = []
        for entry in [MANIFEST, *build["paths"]]:
            path = source / entry
            if path.is_dir():
                files += [(p, p.relative_to(source).as_posix()) for p in path.rglob("*")]
            elif path.is_file():
                files.append((path, entry))
            else:
                raise BuildError(f"[build] paths: {entry!r} is not in {source}")
        return sorted((f for f in files if f[0].is_file()), key=lambda f: f[1])
    patterns = build.get("paths_exclude_pattern", DEFAULT_EXCLUDE)
    files = []
    for folder, dirs, names in os.walk(source):
        base = Path(folder).relative_to(source).as_posix()
        prefix = "" if base == "." else base + "/"
        dirs[:] = [d for d in dirs if not _excluded(prefix + d, True, patterns)]
        files += [
            (Path(folder) / n, prefix + n)
            for n in names
            if not _excluded(prefix + n, False, patterns) or prefix + n == MANIFEST
        ]
    if manifest.get("type") == "add-on" and "__init__.py" not in {name for _, name in files}:
        raise BuildError(f"{source}: not a Python package (no __init__.py)")
    return sorted(files, key=lambda f: f[1])


# ---------------------------------------------------------------------------- the engine
# What a wheel is not built from: environments, earlier builds (setuptools would reuse a stale
# build/lib, shipping modules deleted since), outputs.
NOT_SOURCE = (".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", "out", ".*cache")


def build_engine_wheel(into: Path) -> Path:
    """The engine's wheel, built by pip (isolated build, setuptools) from a clean copy of this
    checkout, so that the checkout gets no build/ or egg-info of its own."""
    into.mkdir(parents=True, exist_ok=True)
    source = into / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(into), str(source)],
        capture_output=True,
        text=True,
    )
    wheels = sorted(into.glob("rollingdepth-*.whl"))
    if done.returncode != 0 or not wheels:
        raise BuildError(
            f"building the engine wheel failed (pip exit code {done.returncode}): "
            f"{(done.stderr or done.stdout).strip()[-2000:]}"
        )
    return wheels[-1]


# ---------------------------------------------------------------------------- the zip
def bundle_protocol() -> Path:
    """Copy the engine's protocol module into the add-on (the one way it gets there)."""
    shutil.copyfile(PROTOCOL, BUNDLED_PROTOCOL)
    return BUNDLED_PROTOCOL


def build(output_dir: Path, engine_wheel: Path | None, source: Path = SOURCE) -> Path:
    if source == SOURCE:
        bundle_protocol()
    manifest = read_manifest(source)
    files = source_files(source, manifest)
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / f"{manifest['id']}-{manifest['version']}.zip"
    # Written beside the target and renamed: a failed build leaves no zip that looks whole.
    handle, partial = tempfile.mkstemp(prefix=f".{target.name}.", dir=output_dir)
    os.close(handle)
    try:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            for path, name in files:
                archive.write(path, name)
            if engine_wheel is not None:
                archive.write(engine_wheel, f"{ENGINE_FOLDER}/{engine_wheel.name}")
        os.chmod(partial, 0o644)  # mkstemp made it private: a release is read by others
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default=str(REPO / "dist"))
    parser.add_argument(
        "--engine-wheel",
        default="build",
        metavar="WHEEL|build|none",
        help="the engine wheel to put in the zip: a file, `build` (pip wheel of this "
        "checkout, the default) or `none`",
    )
    parser.add_argument(
        "--bundle-only",
        action="store_true",
        help="only copy rollingdepth_core/protocol.py into blender_addon/ (no zip)",
    )
    args = parser.parse_args(argv)
    if args.bundle_only:
        print(bundle_protocol())
        return 0
    if sys.version_info < (3, 11):
        raise SystemExit("build_addon: needs Python 3.11 or later (tomllib)")
    output_dir = Path(args.output_dir)
    try:
        with tempfile.TemporaryDirectory(prefix="rollingdepth-wheel-") as scratch:
            if args.engine_wheel == "none":
                wheel = None
            elif args.engine_wheel == "build":
                wheel = build_engine_wheel(Path(scratch))
            else:
                wheel = Path(args.engine_wheel)
                if not (wheel.is_file() and wheel.name.startswith("rollingdepth-")):
                    raise BuildError(f"--engine-wheel {wheel}: not a rollingdepth wheel file")
            target = build(output_dir, wheel)
            beside = output_dir / wheel.name if wheel is not None else None
            if beside is not None and not (beside.exists() and beside.samefile(wheel)):
                shutil.copyfile(wheel, beside)  # the release's wheel for pip users, too
    except BuildError as exc:
        raise SystemExit(f"build_addon: {exc}") from None
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
