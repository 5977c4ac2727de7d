"""The end of an export in the panel: the progress line says it ended, and closing the
window while it writes asks first."""

from __future__ import annotations

import threading

from PySide6.QtCore import Qt

from rollingdepth_core.config import OutputConfig

from .conftest import N_FRAMES
from .test_main_window import RUN_TIMEOUT_MS, run_and_wait


def hold_export_at_first_frame(window):
    """Blocks the worker thread at the export's first written frame until ``gate`` is set;
    ``reached`` says it is there (a tiny export would otherwise end before any click)."""
    gate, reached = threading.Event(), threading.Event()

    def hold(job, stage, done, total):
        if job == "export" and stage == "write" and done >= 1 and not gate.is_set():
            reached.set()
            gate.wait(30)

    window.controller.worker._runner.progress.connect(hold, Qt.ConnectionType.DirectConnection)
    return gate, reached


def button(box, text):
    return next(b for b in box.buttons() if b.text() == text)


def test_the_progress_line_says_the_export_ended(qtbot, window, clip, tmp_path):
    window.open_plate(str(clip))
    run_and_wait(qtbot, window)
    c, panel = window.controller, window.settings_panel
    with qtbot.waitSignal(c.export_finished, timeout=RUN_TIMEOUT_MS):
        c.export(str(tmp_path / "out" / "depth.####.exr"), OutputConfig(), None, False)
    qtbot.waitUntil(lambda: not c.worker.busy, timeout=RUN_TIMEOUT_MS)
    assert panel.stage_label.text().startswith(f"exported {N_FRAMES} EXRs in ")
    assert panel.progress_bar.text() == "done"
    assert "starting" not in panel.stage_label.text()


def test_closing_during_an_export_asks_and_keeps_or_stops_it(qtbot, window, clip, tmp_path):
    window.open_plate(str(clip))
    run_and_wait(qtbot, window)
    c = window.controller
    gate, reached = hold_export_at_first_frame(window)

    # Keep exporting: the window stays and the export finishes
    c.export(str(tmp_path / "kept" / "depth.####.exr"), OutputConfig(), None, False)
    assert reached.wait(60)
    window.close()
    assert window.isVisible() and window.close_box.isVisible()
    assert "Stop it and close" in window.close_box.text()
    with qtbot.waitSignal(c.export_finished, timeout=RUN_TIMEOUT_MS):
        button(window.close_box, "Keep exporting").click()
        gate.set()
    assert window.isVisible()
    assert len(list((tmp_path / "kept").glob("depth.*.exr"))) == N_FRAMES

    # Stop export and close: the window closes and the folder gets nothing
    gate.clear()
    reached.clear()
    c.export(str(tmp_path / "stopped" / "depth.####.exr"), OutputConfig(), None, False)
    assert reached.wait(60)
    window.close()
    assert window.isVisible()
    threading.Timer(0.5, gate.set).start()  # the close waits for the worker to stop
    button(window.close_box, "Stop export and close").click()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=RUN_TIMEOUT_MS)
    assert not list((tmp_path / "stopped").glob("depth.*.exr"))
