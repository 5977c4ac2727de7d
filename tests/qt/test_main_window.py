"""The whole panel with the tiny random checkpoint: open, run, scrub, tune, export, cancel."""

import time

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QTimer, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QMessageBox

from qt_panel.main_window import MainWindow
from qt_panel.viewer import VIEW_MODES
from rollingdepth_core.exr import read_exr
from rollingdepth_core.sample import write_sample_video

from .conftest import N_FRAMES

RUN_TIMEOUT_MS = 120_000


def run_and_wait(qtbot, window):
    with qtbot.waitSignal(
        window.controller.result_changed,
        timeout=RUN_TIMEOUT_MS,
        check_params_cb=lambda prediction: prediction is not None,
    ):
        window.run()
    qtbot.waitUntil(lambda: not window.controller.worker.busy, timeout=RUN_TIMEOUT_MS)
    return window.controller.result


def counters(window):
    return window.controller.session.counters


def not_blank(image_path_or_widget) -> bool:
    image = image_path_or_widget.grab().toImage()
    values = [
        image.pixelColor(x, y).value()
        for x in range(0, image.width(), 9)
        for y in range(0, image.height(), 9)
    ]
    return float(np.std(values)) > 10


def test_open_run_scrub_and_screenshots(qtbot, window, clip, screenshot_dir):
    assert window.open_plate(str(clip))
    assert window.scrubber.slider.maximum() == N_FRAMES - 1
    assert window.viewer._rgb is not None and window.viewer._depth01 is None

    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(10)
    clock = time.monotonic()
    window.run()
    assert time.monotonic() - clock < 0.5 and window.controller.worker.busy  # off the GUI thread
    assert window.settings_panel.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: window.controller.result is not None, timeout=RUN_TIMEOUT_MS)
    qtbot.waitUntil(lambda: not window.controller.worker.busy, timeout=RUN_TIMEOUT_MS)
    timer.stop()
    assert ticks  # the event loop kept running while the model ran

    result = window.controller.result
    assert result.depth.shape == (N_FRAMES, 42, 64)
    assert counters(window).snippets_predicted == (N_FRAMES - 2) + (N_FRAMES - 6)
    assert window.settings_panel.hint_label.text() == "up to date"
    assert window.export_action.isEnabled()
    assert window.viewer._depth01 is not None
    assert window.diagnostics.outlier_frames is not None and window.diagnostics._series

    # scrub with the keyboard: shortcuts act on the window
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=2000)
    for key, expected in (
        (Qt.Key.Key_Right, 1),
        (Qt.Key.Key_Period, 2),
        (Qt.Key.Key_Left, 1),
        (Qt.Key.Key_End, N_FRAMES - 1),
        (Qt.Key.Key_Home, 0),
    ):
        qtbot.keyClick(window.viewer, key)
        assert window.scrubber.index == expected, key
    window.scrubber.frame_field.setValue(5)
    assert window.diagnostics._current == 5
    np.testing.assert_array_equal(window.viewer._rgb, window.controller.frame(5))

    centre = QPointF(window.viewer.width() / 2, window.viewer.height() / 2)
    window.viewer.set_mode("depth")
    assert "depth" in window.viewer.describe(centre)
    for mode in VIEW_MODES:
        window.mode_actions[mode].trigger()
        assert window.viewer.mode == mode
        path = screenshot_dir / f"window_{mode}.png"
        assert window.grab().save(str(path))
        assert not_blank(window.viewer), mode
    window.diagnostics_dock.raise_()
    assert window.grab().save(str(screenshot_dir / "window_diagnostics.png"))
    assert not_blank(window.diagnostics)


def test_tuning_reuses_snippets(qtbot, window, clip):
    window.open_plate(str(clip))
    run_and_wait(qtbot, window)
    predicted = counters(window).snippets_predicted

    # an alignment setting re-aligns at once, without the model
    with qtbot.waitSignal(window.controller.result_changed, timeout=RUN_TIMEOUT_MS):
        window.settings_panel.set_values(aligner="adam")
    qtbot.waitUntil(lambda: not window.controller.worker.busy, timeout=RUN_TIMEOUT_MS)
    assert window.controller.result.alignment.method == "adam"
    assert counters(window).snippets_predicted == predicted
    assert counters(window).alignments == 2

    # a new dilation waits for Run, which predicts only its snippets
    with qtbot.waitSignal(window.settings_panel.inference_changed, timeout=2000):
        window.settings_panel.set_values(dilations="1 2 3", aligner="robust")
    assert window.settings_panel.hint_label.text() == "Run will predict 8 new snippets"
    assert not window.controller.worker.busy
    run_and_wait(qtbot, window)
    assert counters(window).snippets_predicted == predicted + N_FRAMES - 4
    assert counters(window).encode_passes == 1
    assert window.controller.result.dilations == [1, 2, 3]

    # output settings only change what is shown
    alignments = counters(window).alignments
    window.settings_panel.set_values(depth_mode="depth", near=2, far=20)
    assert not window.controller.worker.busy
    values = window.viewer._depth_values
    assert values.min() >= 2 and values.max() <= 20
    assert counters(window).alignments == alignments


def test_export_reads_back(qtbot, window, clip, tmp_path):
    window.open_plate(str(clip))
    run_and_wait(qtbot, window)
    predicted = counters(window).snippets_predicted
    dialog = window.open_export_dialog()
    dialog.pattern_edit.setText(str(tmp_path / "out" / "depth.####.exr"))
    dialog.first_spin.setValue(2)
    dialog.last_spin.setValue(5)
    dialog.precision_box.setCurrentText("half (16-bit)")
    dialog.channel_edit.setText("depth.Z")
    dialog.confidence_check.setChecked(True)
    with qtbot.waitSignal(window.controller.export_finished, timeout=RUN_TIMEOUT_MS) as done:
        dialog.export_button.click()
    paths = done.args[0]
    assert [p.name for p in paths] == [f"depth.{i:04d}.exr" for i in range(2, 6)]
    assert dialog.progress_bar.value() == 4 and "wrote 4 files" in dialog.status_label.text()
    for number, path in zip(range(2, 6), paths, strict=True):
        channels, header = read_exr(path)
        assert set(channels) == {"depth.Z", "confidence"}
        assert header["channel_formats"]["depth.Z"] == "half"
        assert header["rollingdepth/source_frame"] == number
        assert channels["depth.Z"].shape == (42, 64)
        assert np.isfinite(channels["depth.Z"]).all()
        assert channels["confidence"].min() >= 0 and channels["confidence"].max() <= 1
    assert counters(window).snippets_predicted == predicted  # confidence came from the aligner


def test_cancel_a_run(qtbot, window, tmp_path):
    long_clip = write_sample_video(tmp_path / "long.mp4", n_frames=40, height=64, width=96)
    window.open_plate(str(long_clip))
    stages = []

    def press_cancel(job, stage, done, total):
        stages.append(stage)
        if stage == "encode" and window.settings_panel.cancel_button.isEnabled():
            window.settings_panel.cancel_button.click()

    window.controller.progress.connect(press_cancel)
    with qtbot.waitSignal(window.controller.worker.cancelled, timeout=RUN_TIMEOUT_MS):
        window.run()
    window.controller.progress.disconnect(press_cancel)
    assert "snippets" not in stages
    assert window.controller.result is None
    qtbot.waitUntil(lambda: window.settings_panel.run_button.isEnabled(), timeout=5000)
    assert window.settings_panel.stage_label.text() == "idle"
    assert "cancelled" in window.statusBar().currentMessage()

    result = run_and_wait(qtbot, window)  # the model stayed loaded; a new run completes
    assert result.depth.shape[0] == 40


def test_errors_show_a_dialog_with_the_cause(qtbot, window, clip, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    assert not window.open_plate(str(broken))
    box = window.error_box
    assert isinstance(box, QMessageBox) and box.isVisible()
    assert box.windowTitle() == "Cannot open plate" and "broken.mp4" in box.text()
    box.accept()

    window.open_plate(str(clip))
    window.settings_panel.set_values(checkpoint=str(tmp_path / "no-such-checkpoint"))
    with qtbot.waitSignal(window.controller.error, timeout=RUN_TIMEOUT_MS) as blocker:
        window.run()
    assert blocker.args[0] == "Run failed" and "no-such-checkpoint" in blocker.args[1]
    assert window.error_box.isVisible() and "no-such-checkpoint" in window.error_box.text()
    window.error_box.accept()

    window.settings_panel.set_values(dilations="2 4")
    window.run()
    assert window.error_box.windowTitle() == "Settings not valid"
    assert "include 1" in window.error_box.text()


def test_drop_an_image_sequence(qtbot, window, sequence):
    first_file = sequence.parent / "plate.1001.png"
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(first_file))])
    event = QDropEvent(
        QPointF(50, 50),
        Qt.DropAction.CopyAction,
        mime,
        Qt.MouseButton.LeftButton,
        Qt.KeyboardModifier.NoModifier,
    )
    window.dropEvent(event)
    assert window.controller.info.frame_numbers[0] == 1001
    assert window.scrubber.frame_field.value() == 1001
    window.scrubber.frame_field.setValue(1007)
    assert window.scrubber.index == 6
    assert "plate" in window.windowTitle()


def test_settings_and_view_persist(qtbot, tiny_checkpoint):
    first = MainWindow()
    qtbot.addWidget(first)
    first.settings_panel.set_values(
        checkpoint=str(tiny_checkpoint), dilations="1 2", aligner="adam", device="cpu"
    )
    first.mode_actions["side"].trigger()
    first.colormap_box.setCurrentText("spectral")
    first.close()

    second = MainWindow()
    qtbot.addWidget(second)
    assert second.settings_panel.dilations_edit.text() == "1 2"
    assert second.settings_panel.aligner_box.currentText() == "adam"
    assert second.settings_panel.checkpoint == str(tiny_checkpoint)
    assert second.viewer.mode == "side" and second.viewer.colormap == "spectral"
    assert second.mode_actions["side"].isChecked()
    second.close()


def test_the_plate_given_on_the_command_line_opens(qtbot, clip, isolated_settings):
    from qt_panel.app import create_window, parse_args

    window = create_window(parse_args([str(clip), "--device", "cpu"]))
    qtbot.addWidget(window)
    assert window.isVisible()
    assert window.controller.info.source == str(clip)
    assert window.settings_panel.device == "cpu"
    window.close()
    assert (isolated_settings / "RollingDepth" / "Panel.ini").exists()  # not the user's


def test_command_line(qtbot):
    from qt_panel.app import main, parse_args

    args = parse_args(["plate.####.exr", "--device", "cpu", "--checkpoint", "/ck"])
    assert (args.plate, args.device, args.checkpoint) == ("plate.####.exr", "cpu", "/ck")
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
