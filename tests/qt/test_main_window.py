"""The whole panel with the tiny random checkpoint: open, run, scrub, tune, export, cancel."""

import json

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPointF, QSize, Qt, QTimer, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QMessageBox

from qt_panel.main_window import MainWindow
from qt_panel.viewer import VIEW_MODES
from rollingdepth_core.exr import read_exr
from rollingdepth_core.sample import write_sample_video
from tests.artist_words import tells

from .conftest import EVENT_TIMEOUT_MS, N_FRAMES, RUN_TIMEOUT_MS


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
    window.run()
    # off the GUI thread: run() came back with the worker busy and no result yet
    assert window.controller.worker.busy and window.controller.result is None
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
    qtbot.waitUntil(window.isActiveWindow, timeout=EVENT_TIMEOUT_MS)
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
    with qtbot.waitSignal(window.settings_panel.inference_changed, timeout=EVENT_TIMEOUT_MS):
        window.settings_panel.set_values(dilations="1 2 3", aligner="robust")
    assert window.settings_panel.hint_label.text() == "Run will estimate depth: 8 model passes"
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
    stages, said = [], []

    def press_cancel(job, stage, done, total):
        stages.append(stage)
        if stage == "encode" and window.settings_panel.cancel_button.isEnabled():
            window.settings_panel.cancel_button.click()
            # heard at once: the step under way may take a minute at a large size
            said.append(window.settings_panel.hint_label.text())
            said.append(window.settings_panel.stage_label.text())
            said.append(window.settings_panel.cancel_button.isEnabled())

    window.controller.progress.connect(press_cancel)
    with qtbot.waitSignal(window.controller.worker.cancelled, timeout=RUN_TIMEOUT_MS):
        window.run()
    window.controller.progress.disconnect(press_cancel)
    assert "snippets" not in stages
    assert said == ["stopping the run\N{HORIZONTAL ELLIPSIS}",
                    "stopping once the step under way is done", False]  # fmt: skip
    assert window.controller.result is None
    qtbot.waitUntil(lambda: window.settings_panel.run_button.isEnabled(), timeout=EVENT_TIMEOUT_MS)
    assert window.settings_panel.stage_label.text().startswith("run cancelled after")
    assert window.settings_panel.progress_bar.text() == "cancelled"
    assert "cancelled" in window.statusBar().currentMessage()

    status = []
    window.controller.job_started.connect(
        lambda _j: status.append(window.statusBar().currentMessage())
    )
    result = run_and_wait(qtbot, window)  # the model stayed loaded; a new run completes
    assert result.depth.shape[0] == 40
    assert status == [""]  # the last run's "cancelled" went when this one started
    # how long each stage took, named as the progress line names them
    done = window.statusBar().currentMessage()
    assert done.startswith("run done: ") and "estimating depth" in done, done
    assert not tells(done), done


def test_errors_show_a_dialog_with_the_cause(qtbot, window, clip, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    assert not window.open_plate(str(broken))
    box = window.error_box
    assert isinstance(box, QMessageBox) and box.isVisible()
    assert box.windowTitle() == "Cannot open plate"
    # what an artist reads first; the engine's own line only in the details, in words too
    assert box.text() == "broken.mp4 is not a readable video (or an unsupported codec)."
    assert "not a video" in box.detailedText() and "Errno" not in box.detailedText()
    assert "broken.mp4" in box.detailedText()
    box.accept()
    assert not window.open_plate(str(tmp_path / "missing.mov"))
    assert "no such file" in window.error_box.text() and window.error_box.detailedText() == ""
    window.error_box.accept()

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


def test_what_persists_and_what_does_not(qtbot, tiny_checkpoint, clip):
    first = MainWindow()
    qtbot.addWidget(first)
    first.settings_panel.set_values(
        checkpoint=str(tiny_checkpoint), dilations="1 2", aligner="adam", device="cpu"
    )
    first.open_plate(str(clip))
    first.mode_actions["side"].trigger()
    first.colormap_box.setCurrentText("spectral")
    first.resize(1111, 777)
    first.close()

    second = MainWindow()
    qtbot.addWidget(second)
    # kept: the model, the view, the window, the last folder
    assert second.settings_panel.checkpoint == str(tiny_checkpoint)
    assert second.settings_panel.device == "cpu"
    assert second.viewer.mode == "side" and second.viewer.colormap == "spectral"
    assert second.mode_actions["side"].isChecked()
    assert (second.width(), second.height()) == (1111, 777)
    assert second.settings.value("window/last_folder") == str(clip.parent)
    # not kept: one window's experiments (a second instance used to pick up stale dilations)
    assert second.settings_panel.dilations_edit.text() == "1 25"
    assert second.settings_panel.aligner_box.currentText() == "robust"
    assert second.settings_panel.preset == "fast"

    # unless the user saves them as defaults
    second.settings_panel.set_values(dilations="1 4", aligner="adam")
    second.settings_panel.save_defaults_button.click()
    second.close()
    third = MainWindow()
    qtbot.addWidget(third)
    assert third.settings_panel.dilations_edit.text() == "1 4"
    assert third.settings_panel.aligner_box.currentText() == "adam"
    third.close()


def test_opens_at_a_size_that_shows_the_settings(qtbot, tiny_checkpoint):
    from PySide6.QtWidgets import QApplication, QScrollArea

    from qt_panel.main_window import default_size

    window = MainWindow()
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    available = QApplication.primaryScreen().availableGeometry().size()
    assert (available.width(), available.height()) == (1920, 1080)
    assert window.size() == default_size(available)
    assert window.width() >= 1280 and window.height() >= 900
    # every setting is in view: the settings do not scroll
    scroll = window.settings_panel.findChild(QScrollArea)
    assert scroll.verticalScrollBar().maximum() == 0
    panel = window.settings_panel
    assert panel.run_button.isVisible() and panel.progress_bar.isVisible()
    # the checkpoint (a hub id or a local folder) is shown whole
    for checkpoint in (panel.checkpoint, str(tiny_checkpoint)):
        panel.set_values(checkpoint=checkpoint)
        edit = panel.checkpoint_edit
        assert edit.fontMetrics().horizontalAdvance(checkpoint) < edit.width() - 8, checkpoint
    # a small screen gets most of itself, not more
    small = default_size(QSize(1280, 720))
    assert small.width() <= 1280 and small.height() <= 720 and small.height() > 600
    window.close()


def test_after_a_run_the_panel_says_what_happened(qtbot, window, clip, tmp_path, screenshot_dir):
    window.open_plate(str(clip))
    hint = window.settings_panel.hint_label
    assert hint.text() == "Run will load the model and read the plate"
    assert window.viewer.mode == "rgb"
    run_and_wait(qtbot, window)
    # the plate's first depth is put in view, not left behind the Depth button
    assert window.viewer.mode == "depth" and window.mode_actions["depth"].isChecked()
    window.mode_actions["rgb"].trigger()  # the artist's own choice after it is kept
    panel = window.settings_panel
    n_snippets = (N_FRAMES - 2) + (N_FRAMES - 6)
    text = panel.stage_label.text()
    assert text.startswith("done in ") and text.endswith(
        f" s \N{EM DASH} {N_FRAMES} frames, {n_snippets} model passes"
    )
    assert panel.progress_bar.text() == "done" and panel.progress_bar.value() == 1
    assert "idle" not in text and panel.stage_label.isVisible()

    # a re-alignment says so too
    with qtbot.waitSignal(window.controller.result_changed, timeout=RUN_TIMEOUT_MS):
        panel.set_values(aligner="adam")
    qtbot.waitUntil(lambda: not window.controller.worker.busy, timeout=RUN_TIMEOUT_MS)
    assert panel.stage_label.text().startswith("re-aligned in ")
    assert window.viewer.mode == "rgb"

    # a second plate: the model is loaded already, and the hint says so
    other = write_sample_video(tmp_path / "other.mp4", n_frames=8, height=64, width=96)
    window.open_plate(str(other))
    qtbot.waitUntil(lambda: "read the plate" in hint.text(), timeout=EVENT_TIMEOUT_MS)
    assert hint.text() == "Run will read the plate (the model is loaded)"
    assert "load the model" not in hint.text()


def test_screenshot_after_a_run_at_the_default_size(qtbot, tiny_checkpoint, clip, screenshot_dir):
    """The README's picture: a fresh window (its default size), a plate, one run."""
    from .conftest import PANEL_SETTINGS

    window = MainWindow()
    qtbot.addWidget(window)
    window.settings_panel.set_values(checkpoint=str(tiny_checkpoint), **PANEL_SETTINGS)
    window.show()
    qtbot.waitExposed(window)
    window.open_plate(str(clip))
    window.colormap_box.setCurrentText("turbo")
    window.mode_actions["side"].trigger()
    run_and_wait(qtbot, window)
    window.scrubber.set_index(6)
    window.diagnostics._hover(window.diagnostics.residual_plot.vb.mapViewToScene(QPointF(6, 0.5)))
    assert window.diagnostics.hover_label.text().startswith("frame 6")
    assert window.grab().save(str(screenshot_dir / "qt_panel_after_run.png"))
    assert not_blank(window.viewer) and not_blank(window.diagnostics)
    window.controller.shutdown()


def test_edited_settings_are_recorded_as_the_cli_records_them(qtbot, window, clip, tmp_path):
    """Fields edited away from a preset show "custom"; the export records what the command
    line records for the same flags: the preset they started from, and the overrides in the
    settings."""
    window.open_plate(str(clip))
    panel = window.settings_panel
    panel.set_values(preset="fast", dilations="1 3", processing_res=64)
    assert panel.preset_box.currentText() == "custom"
    run_and_wait(qtbot, window)
    assert window.controller.result_request.preset == "fast"
    dialog = window.open_export_dialog()
    dialog.pattern_edit.setText(str(tmp_path / "out" / "depth.####.exr"))
    dialog.first_spin.setValue(0)
    dialog.last_spin.setValue(0)
    with qtbot.waitSignal(window.controller.export_finished, timeout=RUN_TIMEOUT_MS) as done:
        dialog.export_button.click()
    _, header = read_exr(done.args[0][0])
    assert header["rollingdepth/preset"] == "fast"
    settings = json.loads((tmp_path / "out" / "depth_run.json").read_text())["settings"]
    assert (settings["preset"], settings["dilations"], settings["processing_res"]) == (
        "fast",
        [1, 3],
        64,
    )


def test_a_capped_dilation_is_said_in_the_settings(qtbot, window, clip):
    window.settings_panel.set_values(dilations="1 5")
    window.open_plate(str(clip))  # 12 frames: 5 is capped to 3
    note = window.settings_panel.dilation_note
    assert note.isVisible() and "5 \N{RIGHTWARDS ARROW} 3" in note.text()


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
