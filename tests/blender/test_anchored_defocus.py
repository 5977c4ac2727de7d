"""Anchor to Camera Solve end to end: a real Cycles plate, Blender's own track and solve, the
real engine; then what the artist sees: the depth strip in the Sequencer and the Defocus
render (issue 23)."""

from __future__ import annotations

import importlib
import os
import tempfile
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy")

from .support import ADDON_MODULE, add_image_strip, run_operator, select_only  # noqa: E402
from .test_camera_solve import FIRST, FRAMES, solved  # noqa: E402, F401
from .test_ui import _draw  # noqa: E402

ANCHOR_TEMPS = "rollingdepth-anchors-"


def _temp_anchor_files() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith(ANCHOR_TEMPS)}


def _plate_strip(solved):
    scene = solved["scene"]
    if scene.sequence_editor is None:
        scene.sequence_editor_create()
    for strip in list(scene.sequence_editor.strips):
        scene.sequence_editor.strips.remove(strip)
    folder = Path(os.path.dirname(bpy.path.abspath(solved["clip"].filepath)))
    names = [f"plate.{FIRST + f:04d}.png" for f in range(FRAMES)]
    strip = add_image_strip(scene, folder, names, 1, 1)
    select_only(scene, strip)
    return scene, strip


def _model_consistent(anchors, plate_pattern: str, checkpoint: str, work: Path):
    """The solve's anchors (frames, positions, weights) with depths that agree with the
    model's own depth order: the tiny *random* model's depth is noise, which a real solve's
    depths contradict (the engine then refuses the fit, as it should). The depths are
    ``1 / (a d + b)`` of the model's relative inverse depth ``d`` at each anchor, spanning
    6.35 .. 8.77 scene units, the range of the run reported in issue 23."""
    from .support import FAST, engine_cli, engine_python

    engine_cli(plate_pattern, "-o", str(work), "--checkpoint", checkpoint, "--channel", "Y",
               "--restore-res", "--depth-mode", "inverse", *FAST)  # fmt: skip
    code = (
        "import json, sys\n"
        "from rollingdepth_core.exr import read_exr\n"
        "rows, folder = json.loads(sys.argv[1]), sys.argv[2]\n"
        "images, out = {}, []\n"
        "for frame, x, y in rows:\n"
        "    if frame not in images:\n"
        "        images[frame] = read_exr(f'{folder}/depth.{frame:04d}.exr')[0]['Y']\n"
        "    d = images[frame]\n"
        "    out.append(float(d[min(int(y), d.shape[0] - 1), min(int(x), d.shape[1] - 1)]))\n"
        "print(json.dumps(out))\n"
    )
    import json

    points = [(row[0], row[1], row[2]) for row in anchors.rows]
    d = json.loads(engine_python(code, json.dumps(points), str(work)))
    lo, hi = min(d), max(d)
    a = (1 / 6.35 - 1 / 8.77) / (hi - lo)
    b = 1 / 8.77 - a * lo
    rows = [(*row[:3], 1.0 / (a * v + b), *row[4:]) for row, v in zip(anchors.rows, d, strict=True)]
    from dataclasses import replace

    return replace(anchors, rows=rows)


@pytest.fixture(scope="module")
def anchored(solved, addon, media, tmp_path_factory):  # noqa: F811
    """The operator's own settings for Anchor to Camera Solve + Defocus, run as the operator
    runs them (a DepthBatch: the real engine, the depth strip, the Defocus scene)."""
    import types
    from dataclasses import replace

    from .conftest import point_at_engine

    point_at_engine(media["checkpoint"])
    scene, strip = _plate_strip(solved)
    assert bpy.context.scene == scene
    temps = _temp_anchor_files()
    output = tmp_path_factory.mktemp("anchored_out")
    operators = importlib.import_module(f"{ADDON_MODULE}.operators")
    jobs = importlib.import_module(f"{ADDON_MODULE}.jobs")
    cls = operators.SEQUENCER_OT_rollingdepth_estimate
    dialog = dict(
        checkpoint="", preset="fast", dilations="1 3", refine_steps=-1, resolution=64,
        depth_mode="normalized", near=1.0, far=100.0, half=False, restore_res=True,
        upsample_edges=True, strip_colorspace=False, holdout_strip="", anchor_solve=True,
        output_dir=str(output), defocus=True, replace=True,
    )  # fmt: skip
    stand_in = types.SimpleNamespace(**dialog, report=lambda *a: None)
    for method in ("_holdout", "_solve_anchors"):
        setattr(stand_in, method, types.MethodType(getattr(cls, method), stand_in))
    settings = cls._settings(stand_in, bpy.context, strip)
    folder = os.path.dirname(bpy.path.abspath(solved["clip"].filepath))
    anchors = _model_consistent(
        settings.anchors,
        os.path.join(folder, "plate.####.png"),
        media["checkpoint"],
        tmp_path_factory.mktemp("model_depth"),
    )
    batch = jobs.DepthBatch(scene, [strip], [replace(settings, anchors=anchors)]).start()
    batch.run_blocking(timeout=600)
    assert batch.state == jobs.FINISHED, batch.error
    return {
        "result": {"FINISHED"},
        "scene": scene,
        "source": strip,
        "depth": scene.sequence_editor.strips[f"{strip.name} depth"],
        "output": output,
        "temps": temps,
        "defocus": bpy.data.scenes[f"{strip.name} Defocus"],
    }


def _render(scene, path: Path, frame: int, mute=()) -> list[float]:
    """Render ``frame`` of ``scene`` to a PNG; its red channel."""
    for item in mute:
        item.mute = True
    try:
        scene.frame_set(frame)
        scene.render.image_settings.file_format = "PNG"
        scene.render.filepath = str(path)
        bpy.ops.render.render(write_still=True, scene=scene.name)
    finally:
        for item in mute:
            item.mute = False
    image = bpy.data.images.load(str(path))
    red = list(image.pixels)[0::4]
    bpy.data.images.remove(image)
    return red


def test_anchored_defocus_blurs_the_plate(anchored, tmp_path):
    """The compositor must not map scene-unit depth through the dialog's Near/Far (1, 100):
    that left about 0.2 px of blur, a render identical to the sharp one."""
    defocus_scene = anchored["defocus"]
    compositing = importlib.import_module(f"{ADDON_MODULE}.compositing")
    focus, defocus = compositing.defocus_controls(defocus_scene)
    frame = defocus_scene.frame_start + 3
    sharp = _render(defocus_scene, tmp_path / "sharp.png", frame, mute=[defocus])
    blurred = _render(defocus_scene, tmp_path / "defocus.png", frame)
    assert sum(sharp) / len(sharp) > 0.05, "no plate arrived in the compositor"
    changed = [abs(a - b) for a, b in zip(sharp, blurred, strict=True)]
    share = sum(c > 2 / 255 for c in changed) / len(changed)
    mean = sum(changed) / len(changed)
    print(f"anchored Defocus: {share:.1%} of pixels changed, mean |change| {mean:.4f}")
    # the old mapping gave at most ~0.3 px of blur here (nearness 0.105..0.149 of 0..1):
    # identical renders. Now the farthest depth from focus gets 2 % of the width (6 px)
    assert share > 0.03 and mean > 0.002, f"{share:.1%} changed, mean {mean:.4f}: looks sharp"
    # a smaller F-stop blurs more, as on a lens (the radius is K / N |1/Z - 1/S|)
    fields = compositing.defocus_fields(defocus_scene)
    f_stop = fields[1][0]
    f_stop.default_value = compositing.DEFAULT_F_STOP / 2
    try:
        wider = _render(defocus_scene, tmp_path / "wide.png", frame)
    finally:
        f_stop.default_value = compositing.DEFAULT_F_STOP
    wide_mean = sum(abs(a - b) for a, b in zip(sharp, wider, strict=True)) / len(sharp)
    assert wide_mean > 1.3 * mean


def test_anchored_focus_is_a_distance_in_scene_units(anchored):
    """Focus starts on the depth under the frame centre (the camera's depth of field is off),
    in the run's units; the sidebar shows Focus in those units and an F-stop."""
    compositing = importlib.import_module(f"{ADDON_MODULE}.compositing")
    panels = importlib.import_module(f"{ADDON_MODULE}.panels")
    depth_strip = anchored["depth"]
    lo, hi = _value_range(anchored)
    focus, _ = compositing.defocus_controls(anchored["defocus"])
    assert lo <= focus.default_value <= hi and hi > 1.5  # distances, not a 0..1 nearness
    anchored["scene"].sequence_editor.active_strip = depth_strip
    layout = _draw(panels.SEQUENCER_PT_rollingdepth, bpy.context)
    labels = [kw.get("text") for name, _, kw in layout.log if name == "prop"]
    assert labels == ["Focus in scene units (solve not scaled)", "F-stop"]
    # a smaller F-stop blurs more, as on a lens: the radius is K / N |1/Z - 1/S|
    fields = compositing.defocus_fields(anchored["defocus"])
    assert fields[1][0].default_value == pytest.approx(compositing.DEFAULT_F_STOP)


def _value_range(anchored) -> tuple[float, float]:
    """(min, max) depth the engine wrote, from the first EXR's header (via the engine)."""
    from .support import engine_python

    first = sorted(anchored["output"].glob("depth.*.exr"))[0]
    code = (
        "import sys\n"
        "from rollingdepth_core.exr import read_exr\n"
        "_, meta = read_exr(sys.argv[1])\n"
        "print(meta['rollingdepth/value_min'], meta['rollingdepth/value_max'],"
        " meta['rollingdepth/anchors.units'])\n"
    )
    lo, hi, *units = engine_python(code, str(first)).split()
    assert " ".join(units) == "scene units (solve not scaled)"
    return float(lo), float(hi)


def test_anchored_depth_strip_shows_depth_in_the_sequencer(anchored, tmp_path):
    """Depth in scene units (6..9 here) rendered flat white: a compositor modifier maps the
    run's range to nearest white .. farthest black, the files keep the distances."""
    scene, source = anchored["scene"], anchored["source"]
    red = _render(scene, tmp_path / "strip.png", 5, mute=[source])
    white = sum(v >= 254 / 255 for v in red) / len(red)
    assert max(red) - min(red) > 0.3, "the anchored depth strip renders flat"
    assert white < 0.3, f"{white:.0%} of the anchored depth strip is clipped white"


def test_anchored_run_leaves_no_temporary_anchors_file(anchored):
    assert anchored["result"] == {"FINISHED"}
    assert _temp_anchor_files() <= anchored["temps"]
    names = sorted(p.name for p in anchored["output"].iterdir())
    assert not [n for n in names if n.startswith(".")], names  # no work folder left
    assert "depth_anchors.json" in names  # the fit's report, kept with the EXRs


def test_a_failed_anchored_run_leaves_no_anchors_file(anchored, prefs, tmp_path):
    _plate_strip_again = _plate_strip  # same plate, broken weights
    scene, strip = _plate_strip_again({"scene": anchored["scene"], "clip": _clip(anchored)})
    before = _temp_anchor_files()
    prefs.checkpoint = str(tmp_path / "no-weights")
    with pytest.raises(RuntimeError, match="RollingDepth weights"):
        run_operator(output_dir=str(tmp_path / "out"), anchor_solve=True)
    assert _temp_anchor_files() <= before
    assert not (tmp_path / "out").exists()


def _clip(anchored):
    return next(c for c in bpy.data.movieclips if c.tracking.reconstruction.is_valid)


def test_the_dialog_says_what_anchoring_writes(anchored):
    operators = importlib.import_module(f"{ADDON_MODULE}.operators")
    select_only(anchored["scene"], anchored["source"])
    dialog = dict(depth_mode="normalized", output_dir="/x", restore_res=True, holdout_strip="")
    layout = _draw(operators.SEQUENCER_OT_rollingdepth_estimate, bpy.context,
                   anchor_solve=True, **dialog)  # fmt: skip
    text = " ".join(layout.texts("label"))
    assert "Shows as depth in the Sequencer" not in text
    assert "Anchor to Camera Solve writes Depth in scene units" in text
