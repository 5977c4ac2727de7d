"""Installation, the engine check, and every failure reaching the user as a report with a fix."""

from __future__ import annotations

import sys

import bpy
import pytest

from .support import add_image_strip, run_operator


@pytest.fixture()
def image_strip(scene, media):
    names = [f"plate.{n:04d}.png" for n in range(1001, 1009)]
    strip = add_image_strip(scene, media["sequence_dir"], names, 1, 1)
    scene.sequence_editor.active_strip = strip
    return strip


def test_installed_extension_adds_the_strip_menu_entry(addon):
    assert bpy.ops.sequencer.rollingdepth_estimate.get_rna_type().name == (
        "Estimate Depth (RollingDepth)"
    )
    assert hasattr(bpy.types, "SEQUENCER_PT_rollingdepth")
    draw_functions = bpy.types.SEQUENCER_MT_strip._dyn_ui_initialize()
    assert any(getattr(f, "__module__", "").startswith(addon.__name__) for f in draw_functions)
    # the extension never imports torch into Blender
    assert "torch" not in sys.modules


def test_check_engine_reports_python_torch_and_device(prefs, capfd):
    assert bpy.ops.rollingdepth.check_engine() == {"FINISHED"}
    out = capfd.readouterr().out
    assert "Python 3." in out and "torch" in out and "device cpu" in out.lower()
    assert "Ready" in out and f"weights in {prefs.checkpoint}" in out
    assert "Selftest passed in" in out  # the engine's selftest ran after the check (issue 33)


@pytest.mark.parametrize("checkpoint", ["folder", "nobody/no-such-model"])
def test_check_engine_is_not_ready_without_the_weights(prefs, tmp_path, checkpoint):
    """A missing folder, or a hub id that is not cached while downloads are off
    (HF_HUB_OFFLINE, set by conftest): a run would fail, so the check says so, naming the
    preference to set rather than the engine's `--checkpoint` flag."""
    prefs.checkpoint = str(tmp_path / "no-weights") if checkpoint == "folder" else checkpoint
    with pytest.raises(RuntimeError, match="Not ready.*Checkpoint") as caught:
        bpy.ops.rollingdepth.check_engine()
    assert "--checkpoint" not in str(caught.value)


def test_check_engine_with_a_bad_path(prefs):
    prefs.engine_path = "/nowhere/bin/python"
    with pytest.raises(RuntimeError, match="does not exist.*Preferences"):
        bpy.ops.rollingdepth.check_engine()


def test_no_engine_configured(prefs, image_strip, tmp_path):
    prefs.engine_path = ""
    with pytest.raises(RuntimeError, match="No RollingDepth engine is configured"):
        run_operator(output_dir=str(tmp_path))


def test_engine_path_that_does_not_exist(prefs, image_strip, tmp_path):
    prefs.engine_path = str(tmp_path / "missing" / "python")
    with pytest.raises(RuntimeError, match="does not exist: point .*Preferences"):
        run_operator(output_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_engine_crash_without_a_result_line(prefs, image_strip, tmp_path):
    """Blender's own Python has no rollingdepth_core: the run dies with a traceback."""
    prefs.engine_path = sys.executable
    with pytest.raises(RuntimeError, match="without a result.*No module named"):
        run_operator(output_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_missing_weights_name_the_preference_and_leave_no_folder(
    prefs, image_strip, tmp_path, capfd
):
    prefs.checkpoint = "nobody/no-such-model"
    with pytest.raises(RuntimeError, match="RollingDepth weights:") as caught:
        run_operator(output_dir=str(tmp_path / "new" / "out"))
    message = str(caught.value)
    # the engine speaks of CLI flags; Blender users get the preference to set
    assert "--checkpoint" not in message
    assert "set Checkpoint in Edit ▸ Preferences ▸ Add-ons ▸ RollingDepth" in message
    # the folders the run created are gone again
    assert list(tmp_path.iterdir()) == []
    err = capfd.readouterr().err
    assert "RollingDepth engine log:\n\n" not in err and not err.rstrip().endswith("engine log:")


def test_engine_hints_name_blender_settings_not_cli_flags(addon):
    import importlib

    engine = importlib.import_module(f"{addon.__name__}.engine")
    text = engine.error_text(
        {"kind": "ConfigError", "message": "too large", "hint": "pass `--res 1024` or less"}
    )
    assert text == (
        "RollingDepth (ConfigError): too large. Set Resolution in the Estimate Depth dialog to "
        "1024 or less."
    )
    weights = engine.error_text({"kind": "WeightsError", "message": "folder /x lacks unet/"})
    assert weights.endswith(
        "Set Checkpoint in Edit ▸ Preferences ▸ Add-ons ▸ RollingDepth to a "
        "folder with the weights (diffusers layout), then press Check Engine there."
    )


def test_poll_message_names_the_scene_it_looked_at(addon):
    empty = bpy.data.scenes.get("plate Defocus") or bpy.data.scenes.new("plate Defocus")
    with (
        bpy.context.temp_override(scene=empty),
        pytest.raises(RuntimeError, match="Scene 'plate Defocus' has no strips"),
    ):
        bpy.ops.sequencer.rollingdepth_estimate()


def test_unreadable_strip(prefs, scene, media, tmp_path):
    strip = add_image_strip(
        scene, media["sequence_dir"], ["plate.1001.png", "gone.1002.png", "gone.1003.png"], 1, 1
    )
    scene.sequence_editor.active_strip = strip
    with pytest.raises(RuntimeError, match="cannot be read: 2 file"):
        run_operator(output_dir=str(tmp_path))


def test_unsupported_strip(prefs, scene, tmp_path):
    other = bpy.data.scenes.get("other") or bpy.data.scenes.new("other")
    scene.sequence_editor.active_strip = scene.sequence_editor.strips.new_scene("shot", other, 1, 1)
    with pytest.raises(RuntimeError, match="select an image-sequence or movie strip"):
        run_operator(output_dir=str(tmp_path))


def test_unsaved_blend_uses_a_temporary_folder(addon):
    import importlib

    folders = importlib.import_module(f"{addon.__name__}.folders")
    assert bpy.data.filepath == ""
    folder, note = folders.resolve_output_dir("//depth/shot 010/", "shot 010")
    assert note and "temporary folder" in note and folder in note
    assert folder.startswith(__import__("tempfile").gettempdir())
    folder, note = folders.resolve_output_dir("/abs/depth", "shot")
    assert (folder, note) == ("/abs/depth", None)


# ---------------------------------------------------------------------------- issue 23
def test_check_engine_is_not_ready_with_an_empty_checkpoint(prefs, image_strip, tmp_path):
    """An empty Checkpoint said "Ready", and the run then failed on the weights."""
    prefs.checkpoint = "  "
    with pytest.raises(RuntimeError, match="Not ready: the Checkpoint preference is empty"):
        bpy.ops.rollingdepth.check_engine()
    with pytest.raises(RuntimeError, match="RollingDepth weights: the Checkpoint preference is"):
        run_operator(output_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_holdout_matte_selected_alone_is_refused(prefs, image_strip, tmp_path):
    """The matte must not run as a plate with itself as the holdout."""
    image_strip.name = "roto"
    with pytest.raises(RuntimeError, match="'roto' is the Holdout Matte: select the plate"):
        run_operator(output_dir=str(tmp_path / "out"), holdout_strip="roto")
    assert not (tmp_path / "out").exists()


def test_an_unreadable_frame_is_reported_in_blender_words(prefs, scene, media, tmp_path):
    """A truncated PNG in a strip the engine reads through temporary links (files without
    one numbering): the report names the user's file (not the link), once, and no CLI
    command."""
    import shutil

    folder = tmp_path / "plate"
    folder.mkdir()
    names = [f"take_{letter}.png" for letter in "abcdefgh"]
    for number, name in enumerate(names, start=1001):
        shutil.copy(media["sequence_dir"] / f"plate.{number:04d}.png", folder / name)
    whole = (folder / "take_e.png").read_bytes()
    (folder / "take_e.png").write_bytes(whole[: len(whole) // 2])
    strip = add_image_strip(scene, folder, names[::2], 1, 1)
    scene.sequence_editor.active_strip = strip
    with pytest.raises(RuntimeError) as caught:
        run_operator(output_dir=str(tmp_path / "out"))
    message = str(caught.value)
    assert str(folder / "take_e.png") in message
    assert "rollingdepth-inputs-" not in message and "`rollingdepth" not in message
    assert "re-render or replace that file" in message
    assert message.count("end of file") <= 1, message


def test_engine_error_texts_drop_cli_commands_and_repeats(addon):
    import importlib

    engine = importlib.import_module(f"{addon.__name__}.engine")
    text = engine.error_text(
        {
            "kind": "WeightsError",
            "message": "model weights 'x' are not available: no such model. Pass "
            "`--checkpoint /path/to/w` (or set HF_HOME). `rollingdepth selftest` checks the "
            "installation without weights",
        }
    )
    assert "rollingdepth selftest" not in text and "installation without weights" not in text
    assert "set Checkpoint in Edit ▸ Preferences" in text
    libpng = engine.error_text(
        {
            "kind": "InputError",
            "message": "/p/plate.1003.png: cannot read pixels: Read error: hit end of file in "
            "png reader PNG read error: IDAT: Read error: hit end of file in png reader PNG "
            "library error",
        }
    )
    assert libpng.count("hit end of file in png reader") == 1, libpng
    assert libpng.startswith("RollingDepth cannot read the plate file /p/plate.1003.png (")
