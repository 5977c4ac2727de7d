"""A saved .blend: `//` output folders, running again on the same strip, and depth strips
themselves refused as input."""

from __future__ import annotations

import warnings

import bpy
import pytest

from .conftest import fresh_scene, point_at_engine
from .support import ADDON_MODULE, add_image_strip, run_operator, select_only

NAMES = [f"plate.{n:04d}.png" for n in range(1001, 1007)]


@pytest.fixture(scope="module")
def saved(tmp_path_factory, media, addon):
    """The scene saved as shot.blend, with a six-frame image strip active."""
    point_at_engine(media["checkpoint"])
    scene = fresh_scene()
    source = add_image_strip(scene, media["sequence_dir"], NAMES, 1, 1)
    scene.sequence_editor.active_strip = source
    folder = tmp_path_factory.mktemp("shot")
    bpy.ops.wm.save_as_mainfile(filepath=str(folder / "shot.blend"))
    yield {"scene": bpy.context.scene, "folder": folder}
    bpy.ops.wm.read_homefile(use_empty=True)
    point_at_engine(media["checkpoint"])


def _depth_strips(scene):
    return [s for s in scene.sequence_editor.strips_all if s.get("rollingdepth_source")]


def test_rerun_replaces_the_previous_depth_strip(saved):
    scene, folder = saved["scene"], saved["folder"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # no output folder given: //depth/<blend name>/<strip>/ next to the saved .blend
        assert run_operator() == {"FINISHED"}
        first = _depth_strips(scene)
        assert [s.directory for s in first] == ["//depth/shot/plate/"]
        first_files = sorted(p.name for p in (folder / "depth" / "shot" / "plate").glob("*.exr"))
        assert first_files == [f"depth.{n}.exr" for n in range(1001, 1007)]
        channel = first[0].channel

        # again, into another blend-relative folder: the old strip goes; its EXRs stay on
        # disk (the add-on never deletes depth files: another .blend may show them)
        assert run_operator(output_dir="//depth_v2/") == {"FINISHED"}
    assert not [w for w in caught if "blend relative" in str(w.message)]
    second = _depth_strips(scene)
    assert len(second) == 1 and second[0].name == "plate depth"
    assert second[0].directory == "//depth_v2/" and second[0].channel == channel
    assert len(list((folder / "depth" / "shot" / "plate").glob("depth.*.exr"))) == len(NAMES)
    assert len(list((folder / "depth_v2").glob("depth.*.exr"))) == len(NAMES)

    # with Replace Previous Depth off, both stay
    assert run_operator(output_dir="//depth_v3/", replace=False) == {"FINISHED"}
    assert len(_depth_strips(scene)) == 2
    assert len(list((folder / "depth_v2").glob("depth.*.exr"))) == len(NAMES)


def test_a_depth_strip_is_refused_as_input(saved):
    scene = saved["scene"]
    depth = _depth_strips(scene)[0]
    select_only(scene, depth)
    with pytest.raises(RuntimeError, match="is the RollingDepth depth of 'plate': select 'plate'"):
        run_operator()
    panels = __import__(f"{ADDON_MODULE}.sequencer", fromlist=["strip_problem"])
    assert "depth of 'plate'" in panels.strip_problem(depth)
