import pytest
from PySide6.QtCore import QSettings

from qt_panel.settings_panel import SettingsPanel, parse_dilations
from rollingdepth_core.config import PRESETS
from rollingdepth_core.errors import ConfigError


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
    with qtbot.waitSignal(panel.inference_changed, timeout=2000):
        panel.set_values(aligner="adam")
        panel.set_values(snippet_len=2)
        panel.set_values(dilations="1 4")
    qtbot.wait(400)
    assert count == [1]


def test_output_settings_signal_at_once_and_enable_near_far(qtbot, panel):
    assert not panel.near_spin.isEnabled()
    with qtbot.waitSignal(panel.output_changed, timeout=500):
        panel.set_values(depth_mode="depth")
    assert panel.near_spin.isEnabled()
    panel.set_values(near=5, far=2)
    with pytest.raises(ConfigError, match="near"):
        panel.output_config()


def test_state_round_trips_through_qsettings(qtbot, panel, isolated_settings):
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
    panel.save_state(QSettings())
    other = SettingsPanel()
    qtbot.addWidget(other)
    other.restore_state(QSettings())
    assert other.inference_config() == panel.inference_config()
    assert other.output_config() == panel.output_config()
    assert (other.checkpoint, other.device, other.preset) == ("/ckpt", "cpu", "paper")
    assert (isolated_settings / "RollingDepthTest" / "PanelTest.ini").exists()


def test_stale_stored_values_are_skipped(qtbot, panel):
    settings = QSettings()
    settings.setValue("settings/aligner", "gone-aligner")
    settings.setValue("settings/seed", 5)
    panel.restore_state(settings)
    assert panel.aligner_box.currentText() == "robust"
    assert panel.seed_spin.value() == 5


def test_progress_and_busy_state(panel):
    panel.set_busy(True)
    assert panel.cancel_button.isEnabled() and not panel.run_button.isEnabled()
    panel.set_progress("snippets", 3, 10)
    assert panel.stage_label.text() == "predicting snippets: 3/10"
    assert panel.progress_bar.value() == 3 and panel.progress_bar.maximum() == 10
    panel.set_progress("load", 0, 1)
    assert panel.stage_label.text().startswith("loading model")
    panel.set_busy(False)
    assert panel.run_button.isEnabled() and not panel.cancel_button.isEnabled()
