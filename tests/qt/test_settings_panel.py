import pytest
from PySide6.QtCore import QSettings

from qt_panel.settings_panel import SettingsPanel, parse_dilations
from rollingdepth_core.config import PRESETS
from rollingdepth_core.errors import ConfigError

from .conftest import EVENT_TIMEOUT_MS


@pytest.fixture
def panel(qtbot):
    widget = SettingsPanel()
    qtbot.addWidget(widget)
    return widget


def test_parse_dilations():
    assert parse_dilations("1 10 25") == (1, 10, 25)
    assert parse_dilations(" 1, 3 ,9") == (1, 3, 9)
    for bad in ("", "1 x", "1 -3", "1.5"):
        with pytest.raises(ConfigError, match="whole numbers"):
            parse_dilations(bad)


def test_preset_fills_the_fields_and_fields_override_it(panel):
    panel.set_values(preset="full")
    full = PRESETS["full"].inference
    assert panel.inference_config() == full
    panel.set_values(dilations="1 5", snippet_len=2, refine_steps=0, processing_res=64)
    config = panel.inference_config()
    assert config.dilations == (1, 5) and config.snippet_len == 2
    assert config.refine_steps == 0 and config.processing_res == 64
    assert config.dtype == full.dtype  # from the preset


def test_invalid_dilations_are_marked_and_refused(panel):
    panel.set_values(dilations="1 x")
    assert "whole numbers" in panel.dilations_edit.toolTip()
    with pytest.raises(ConfigError):
        panel.inference_config()
    panel.set_values(dilations="3 9")  # parses, but 1 is required
    with pytest.raises(ConfigError, match="include 1"):
        panel.inference_config()


def test_changes_are_debounced_into_one_signal(qtbot, panel):
    count = []
    panel.inference_changed.connect(lambda: count.append(1))
    with qtbot.waitSignal(panel.inference_changed, timeout=EVENT_TIMEOUT_MS):
        panel.set_values(aligner="adam")
        panel.set_values(snippet_len=2)
        panel.set_values(dilations="1 4")
    qtbot.wait(400)
    assert count == [1]


def test_output_settings_signal_at_once_and_enable_near_far(qtbot, panel):
    assert not panel.near_spin.isEnabled()
    emitted = []
    panel.output_changed.connect(lambda: emitted.append(1))
    panel.set_values(depth_mode="depth")
    assert emitted  # at once: during the call itself, no timer between
    assert panel.near_spin.isEnabled()
    panel.set_values(near=5, far=2)
    with pytest.raises(ConfigError, match="near"):
        panel.output_config()


def test_saved_defaults_round_trip_through_qsettings(qtbot, panel, isolated_settings):
    panel.set_values(
        preset="paper",
        dilations="1 4 8",
        refine_steps=3,
        processing_res=512,
        seed=9,
        aligner="adam",
        depth_mode="depth",
        near=0.5,
        far=80,
        checkpoint="/ckpt",
        device="cpu",
    )
    panel.save_defaults(QSettings())
    panel.save_model(QSettings())
    other = SettingsPanel()
    qtbot.addWidget(other)
    other.restore_state(QSettings())
    assert other.inference_config() == panel.inference_config()
    assert other.output_config() == panel.output_config()
    assert (other.checkpoint, other.device, other.preset) == ("/ckpt", "cpu", "custom")
    assert (isolated_settings / "RollingDepthTest" / "PanelTest.ini").exists()


def test_only_the_model_persists_unless_saved(qtbot, panel):
    """A window's experiments do not leak into the next one; its checkpoint does."""
    panel.set_values(dilations="1 2", aligner="adam", checkpoint="/ckpt", device="cpu")
    panel.save_model(QSettings())
    other = SettingsPanel()
    qtbot.addWidget(other)
    other.restore_state(QSettings())
    assert other.inference_config() == PRESETS["fast"].inference
    assert other.preset == "fast"
    assert (other.checkpoint, other.device) == ("/ckpt", "cpu")


def test_stale_stored_values_are_skipped(qtbot, panel):
    settings = QSettings()
    settings.setValue("defaults/aligner", "gone-aligner")
    settings.setValue("defaults/seed", 5)
    settings.setValue("settings/dilations", "1 3")  # what an older version kept: ignored
    panel.restore_state(settings)
    assert panel.aligner_box.currentText() == "robust"
    assert panel.seed_spin.value() == 5
    assert panel.dilations_edit.text() == "1 25"


def test_edited_fields_say_custom(panel):
    assert panel.preset == "fast" and panel.preset_box.currentText() == "fast"
    panel.set_values(dilations="1 10 25")
    assert panel.preset == "custom" and panel.preset_box.currentText() == "custom"
    assert panel.inference_config().dtype == PRESETS["fast"].inference.dtype  # still its base
    panel.set_values(dilations="1 25")
    assert panel.preset_box.currentText() == "fast"  # back to the preset's own values
    panel.set_values(aligner="adam")
    assert panel.preset == "custom"
    panel.preset_box.setCurrentText("full")  # a preset picked again resets every field
    assert panel.preset == "full" and panel.inference_config() == PRESETS["full"].inference
    panel.preset_box.setCurrentText("custom")  # picking custom keeps the fields
    assert panel.inference_config() == PRESETS["full"].inference


def test_a_capped_dilation_is_said_next_to_the_field(qtbot, panel):
    panel.show()
    panel.set_values(dilations="1 5")
    assert not panel.dilation_note.isVisible()
    panel.set_frame_count(12)  # 12 frames of 3: dilations above 3 are capped
    assert panel.dilation_note.isVisible()
    assert panel.dilation_note.text() == "capped for this 12-frame plate: 5 \N{RIGHTWARDS ARROW} 3"
    # next to the field: in the same column, right under it
    field, note = panel.dilations_edit.geometry(), panel.dilation_note.geometry()
    assert note.left() == field.left() and 0 <= note.top() - field.bottom() < 20
    panel.set_values(snippet_len=2)  # 12 / 2 - 1 = 5: nothing capped
    assert not panel.dilation_note.isVisible()
    panel.set_frame_count(None)
    panel.set_values(snippet_len=3)
    assert not panel.dilation_note.isVisible()


def test_progress_and_busy_state(panel):
    panel.set_busy(True)
    panel.job_started("run")
    assert panel.cancel_button.isEnabled() and not panel.run_button.isEnabled()
    panel.set_progress("snippets", 3, 10)
    assert panel.stage_label.text() == "predicting snippets: 3/10"
    assert panel.progress_bar.value() == 3 and panel.progress_bar.maximum() == 10
    panel.set_progress("load", 0, 1)
    assert panel.stage_label.text().startswith("loading the model")
    panel.set_busy(False)
    panel.job_ended("done", "done in 1.0 s")
    assert panel.run_button.isEnabled() and not panel.cancel_button.isEnabled()
    assert panel.progress_bar.text() == "done" and panel.progress_bar.value() == 1
    assert panel.stage_label.text() == "done in 1.0 s"


def test_no_markup_in_what_the_panel_shows(panel):
    from PySide6.QtWidgets import QAbstractButton, QLabel, QWidget

    texts = [w.text() for w in panel.findChildren(QLabel) + panel.findChildren(QAbstractButton)]
    texts += [w.toolTip() for w in panel.findChildren(QWidget)]
    assert not [t for t in texts if "`" in t]
