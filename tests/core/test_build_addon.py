"""scripts/build_addon.py: the extension zip made with the standard library, the manifest
checked by Blender's rules (tests/blender/test_build_addon_zip.py compares the zip with
Blender's own packager's and installs it)."""

from __future__ import annotations

import importlib.util
import shutil
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def build_addon():
    spec = importlib.util.spec_from_file_location(
        "build_addon", REPO / "scripts" / "build_addon.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def source(tmp_path):
    """A copy of the add-on to break."""
    folder = tmp_path / "addon"
    shutil.copytree(REPO / "blender_addon", folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def _manifest(source: Path, old: str, new: str) -> None:
    path = source / "blender_manifest.toml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_the_zip_holds_the_add_on_and_the_engine_wheel(build_addon, source, tmp_path):
    (source / "__pycache__").mkdir()
    (source / "__pycache__" / "engine.cpython-311.pyc").write_bytes(b"")
    (source / "old.zip").write_bytes(b"")
    wheel = tmp_path / "rollingdepth-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"wheel")
    target = build_addon.build(tmp_path / "dist", wheel, source=source)
    assert target.name == "rollingdepth-0.1.0.zip"
    with zipfile.ZipFile(target) as archive:
        names = archive.namelist()
        assert archive.read("engine/rollingdepth-0.1.0-py3-none-any.whl") == b"wheel"
    assert "blender_manifest.toml" in names and "__init__.py" in names
    assert "setup_worker.py" in names and "engine_setup.py" in names
    assert not any("__pycache__" in n or n.endswith((".pyc", ".zip")) for n in names)
    assert names[:-1] == sorted(names[:-1])  # the add-on's files in order, then the wheel
    assert [p.name for p in (tmp_path / "dist").iterdir()] == [target.name]  # no partial left


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('id = "rollingdepth"', 'id = "rolling-depth"', "'id': not a valid Python identifier"),
        ('version = "0.1.0"', 'version = "0.1"', "'version': a semantic version expected"),
        (
            'tagline = "',
            'tagline = "A very long tagline that goes on and on past the limit: ',
            "at most 64",
        ),
        ('blender_version_min = "4.2.0"', 'blender_version_min = "4.2"', "three numbers"),
        ('type = "add-on"', 'type = "plugin"', "'type': add-on or theme"),
        (
            'files = "Read plates and write depth EXR sequences"',
            'disk = "x"',
            "'disk' is not one of",
        ),
        ('maintainer = "RollingDepth for VFX contributors"\n', "", "missing 'maintainer'"),
    ],
)
def test_a_bad_manifest_is_refused_naming_the_problem(
    build_addon, source, tmp_path, old, new, message
):
    _manifest(source, old, new)
    with pytest.raises(
        build_addon.BuildError, match="blender_manifest.toml: .*" + message.replace("(", r"\(")
    ):
        build_addon.build(tmp_path / "dist", None, source=source)
    assert not (tmp_path / "dist").exists() or not list((tmp_path / "dist").iterdir())


def test_a_folder_without_init_is_not_an_add_on(build_addon, source, tmp_path):
    (source / "__init__.py").unlink()
    with pytest.raises(build_addon.BuildError, match="not a Python package"):
        build_addon.build(tmp_path / "dist", None, source=source)


def test_exclude_patterns_read_as_blender_reads_them(build_addon):
    patterns = ["__pycache__/", "/.git/", "*.pyc", "/*.zip"]
    assert build_addon._excluded("__pycache__", True, patterns)
    assert build_addon._excluded("sub/__pycache__", True, patterns)
    assert not build_addon._excluded("__pycache__", False, patterns)  # a file of that name
    assert build_addon._excluded(".git", True, patterns)
    assert not build_addon._excluded("sub/.git", True, patterns)  # anchored at the root
    assert build_addon._excluded("sub/x.pyc", False, patterns)
    assert build_addon._excluded("old.zip", False, patterns)
    assert not build_addon._excluded("engine/old.zip", False, patterns)
    assert build_addon._excluded("a.blend1", False, ["*.blend[1-9]"])
    assert not build_addon._excluded("a.blend", False, ["*.blend[1-9]"])
    assert build_addon._excluded("x/y/z.txt", False, ["x/**/*.txt"])


def test_mps_fallback_is_on_for_macos_only():
    from rollingdepth_core import enable_mps_fallback

    mac, linux, chosen = {}, {}, {"PYTORCH_ENABLE_MPS_FALLBACK": "0"}
    enable_mps_fallback("darwin", mac)
    enable_mps_fallback("linux", linux)
    enable_mps_fallback("darwin", chosen)
    assert mac == {"PYTORCH_ENABLE_MPS_FALLBACK": "1"} and linux == {}
    assert chosen == {"PYTORCH_ENABLE_MPS_FALLBACK": "0"}
