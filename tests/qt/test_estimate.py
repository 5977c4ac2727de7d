"""The panel says what Run will cost before it runs, offers the plate's size when the
processing size is larger, and counts down while it runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .conftest import HEIGHT, N_FRAMES, WIDTH
from .test_main_window import run_and_wait


def test_the_estimate_before_during_and_after_a_run(qtbot, window, clip, tmp_path, monkeypatch):
    monkeypatch.setenv("ROLLINGDEPTH_CONFIG_DIR", str(tmp_path / "config"))  # no earlier run
    panel = window.settings_panel
    assert window.open_plate(str(clip))
    qtbot.waitUntil(lambda: window.controller.cuts is not None, timeout=60_000)
    qtbot.waitUntil(lambda: panel.estimate_label.text() != "", timeout=10_000)
    text = panel.estimate_label.text()
    # PANEL_SETTINGS: 64 px on the longer edge of a 96x64 plate
    assert text.startswith(f"{N_FRAMES} frames at 64x42: about ") and "rough" in text
    assert not panel.plate_size_button.isVisible()

    panel.set_values(processing_res=768)  # the preset's size on a small plate
    qtbot.waitUntil(lambda: "larger than the plate" in panel.estimate_label.text(), timeout=5000)
    assert f"larger than the plate ({WIDTH}x{HEIGHT})" in panel.estimate_label.text()
    assert panel.plate_size_button.isVisible()
    panel.plate_size_button.click()  # the faster choice in one click
    assert panel.res_spin.value() == 0
    qtbot.waitUntil(lambda: "at 96x64" in panel.estimate_label.text(), timeout=5000)
    assert not panel.plate_size_button.isVisible()

    lines, offered = [], []
    window.controller.progress.connect(lambda *_: lines.append(panel.stage_label.text()))
    window.controller.progress.connect(
        lambda *_: offered.append(panel.plate_size_button.isEnabled())
    )
    run_and_wait(qtbot, window)
    assert any(line.endswith(" left") and "about" in line for line in lines), lines
    # the faster choice is the next run's: not offered while one runs, offered again after
    assert offered and not any(offered)
    assert panel.plate_size_button.isEnabled()
    # the run taught the estimate: measured on this machine, not rough any more
    window.settings_changed()
    qtbot.waitUntil(lambda: "rough" not in panel.estimate_label.text(), timeout=5000)
    book = Path(os.environ["ROLLINGDEPTH_CONFIG_DIR"]) / "costs.json"
    keys = json.loads(book.read_text())["observations"]
    assert any(key.endswith("|panel") for key in keys)
