"""What an artist still tripped over in the panel (issue "Front-ends, second pass"), in the
real window (offscreen) with the tiny random checkpoint: a new plate starts clean, the
export goes beside the plate, the settings fit 1280x800, the colour bar gives values beside
the image, errors name the panel's controls, the Matte button and the hint say the truth."""

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPointF, QSize

from qt_panel.export_dialog import default_export_pattern
from qt_panel.main_window import default_size
from qt_panel.messages import in_panel_words

from .conftest import EVENT_TIMEOUT_MS, N_FRAMES, RUN_TIMEOUT_MS
from .test_features import _write_anchors
from .test_holdout import realign, write_mattes
from .test_main_window import run_and_wait


def fit_anchors(qtbot, window, tmp_path, prediction):
    c = window.controller
    path = _write_anchors(tmp_path / "anchors.csv", prediction, c.info.frame_numbers)
    with qtbot.waitSignal(
        c.anchor_fit_changed, timeout=RUN_TIMEOUT_MS, check_params_cb=lambda f, _w: f is not None
    ):
        assert c.load_anchors(path)
    return c.anchor_fit


def export_into(qtbot, window, pattern):
    dialog = window.open_export_dialog()
    dialog.pattern_edit.setText(str(pattern))
    dialog.first_spin.setValue(dialog.last_spin.value())  # one frame is enough
    with qtbot.waitSignal(window.controller.export_finished, timeout=RUN_TIMEOUT_MS):
        dialog.export_button.click()
    dialog.close()


def test_a_new_plate_starts_clean(qtbot, window, sequence, clip, tmp_path):
    """Anchors, their fit text, the matte, the progress lines and the export folder were the
    previous plate's after File > Open."""
    c, panel, anchors = window.controller, window.settings_panel, window.anchors_panel
    window.open_plate(str(sequence))
    prediction = run_and_wait(qtbot, window)
    # the export goes beside the plate, into a folder named after it
    dialog = window.open_export_dialog()
    assert dialog.pattern == str(sequence.parent / "plate_depth" / "depth.####.exr")
    dialog.close()
    elsewhere = tmp_path / "sh010_out" / "depth.####.exr"
    export_into(qtbot, window, elsewhere)
    dialog = window.open_export_dialog()
    assert dialog.pattern == str(elsewhere)  # remembered for this plate
    dialog.close()

    realign(
        qtbot,
        window,
        lambda: c.load_holdout(write_mattes(tmp_path / "mattes", range(1001, 1001 + N_FRAMES))),
    )
    fit_anchors(qtbot, window, tmp_path, prediction)
    assert "fit:" in anchors.summary_label.text() and window.viewer.markers
    assert window.show_matte_action.isChecked() and window.show_matte_action.isEnabled()
    assert panel.stage_label.text().startswith(("done in", "re-aligned in"))

    assert window.open_plate(str(clip))
    assert c.anchors is None and c.anchor_fit is None and c.holdout is None
    assert anchors.file_label.text() == "no anchors" and anchors.summary_label.text() == ""
    assert anchors.table.rowCount() == 0 and window.viewer.markers == []
    assert window.viewer._matte_image is None and window.matte_label.text().strip() == (
        "holdout: none"
    )
    assert not window.show_matte_action.isChecked()
    assert panel.stage_label.text() == "no run yet" and panel.progress_bar.text() == "idle"

    run_and_wait(qtbot, window)
    dialog = window.open_export_dialog()
    assert dialog.pattern == str(clip.parent / "clip_depth" / "depth.####.exr")
    dialog.close()
    assert c.anchors is None  # a run of the new plate fits nothing of the old one


def test_default_export_folder_is_named_after_the_plate(tmp_path):
    assert default_export_pattern("/shots/sh010/plate.####.exr") == (
        "/shots/sh010/plate_depth/depth.####.exr"
    )
    assert default_export_pattern("/shots/sh010/sh010_bg.1001.exr") == (
        "/shots/sh010/sh010_bg_depth/depth.####.exr"
    )
    assert default_export_pattern("/shots/sh010/plate_%04d.png") == (
        "/shots/sh010/plate_depth/depth.####.exr"
    )
    # a movie keeps its whole name (its digits are not a frame number)
    assert default_export_pattern("/shots/take_v002.mov") == "/shots/take_v002_depth/depth.####.exr"
    folder = tmp_path / "frames"
    folder.mkdir()
    assert default_export_pattern(str(folder)) == str(tmp_path / "frames_depth" / "depth.####.exr")


def test_the_settings_fit_1280x800(qtbot, window, clip, screenshot_dir):
    """At 1400x900 the settings scrolled with Far hidden, and the labels were shifted
    sideways ("nput space", "ippets")."""
    panel = window.settings_panel
    window.resize(1280, 800)
    window.open_plate(str(clip))  # the colour summary and the dilation note take lines
    run_and_wait(qtbot, window)
    qtbot.wait(50)
    assert (window.width(), window.height()) == (1280, 800)
    scroll = panel.scroll
    assert scroll.verticalScrollBar().maximum() == 0
    assert scroll.horizontalScrollBar().maximum() == 0  # nothing scrolls sideways
    assert panel.out_of_view() == [] and not panel.out_of_view_label.isVisible()
    viewport = scroll.viewport()
    for field in (panel.far_spin, panel.near_spin, panel.aligner_box, panel.checkpoint_edit):
        corner = field.mapTo(viewport, field.rect().bottomRight())
        assert viewport.rect().contains(corner), field
        assert field.mapTo(viewport, field.rect().topLeft()).x() >= 0, field
    for button in (panel.run_button, panel.save_defaults_button, panel.progress_bar):
        assert button.isVisible() and not button.visibleRegion().isEmpty()
    assert window.grab().save(str(screenshot_dir / "qt_panel_1280x800.png"))

    # on a 1280x800 screen the first window is smaller still (92 %): it fits too
    window.resize(default_size(QSize(1280, 800)))
    qtbot.waitUntil(lambda: panel.height() < 700, timeout=EVENT_TIMEOUT_MS)
    assert scroll.verticalScrollBar().maximum() == 0, window.size()
    assert scroll.horizontalScrollBar().maximum() == 0

    # lower than that, the fields scroll and the line under them says what is out of view
    window.resize(1280, 640)
    qtbot.waitUntil(lambda: scroll.verticalScrollBar().maximum() > 0, timeout=EVENT_TIMEOUT_MS)
    assert "Output" in panel.out_of_view()
    assert panel.out_of_view_label.isVisible()
    assert panel.out_of_view_label.text().startswith("scroll for: ")
    assert "Output" in panel.out_of_view_label.text()
    scroll.verticalScrollBar().setValue(scroll.verticalScrollBar().maximum())
    assert "Output" not in panel.out_of_view_label.text()
    assert scroll.horizontalScrollBar().maximum() == 0


def test_a_colour_space_error_names_the_panel_control(qtbot, window, clip):
    window.open_plate(str(clip))
    colour = window.settings_panel.color_panel
    colour.set_request("linear rec709 srgb")
    box = window.error_box
    assert box is not None and box.isVisible()
    text = box.text()
    assert "--input-colorspace" not in text and "rollingdepth colorspaces" not in text
    assert "Input space" in text and "'linear rec709 srgb'" in text
    # the list is offered: the closest names in the message, every space in the details
    assert "Closest: " in text and "Linear Rec.709 (sRGB)" in text.split("Closest: ")[1]
    assert "`--input-colorspace` 'linear rec709 srgb'" in box.detailedText()
    assert "ACEScg" in box.detailedText()
    assert colour.space_box.currentText() == "auto"  # the field went back
    box.accept()


def test_engine_messages_in_panel_words():
    assert in_panel_words("`--half` stores values up to 65504; lower `--far` or drop `--half`") == (
        "Export > Precision: half stores values up to 65504; lower Far or drop "
        "Export > Precision: half"
    )
    assert (
        in_panel_words("`--device` must be auto; got 'x'")
        == "Settings > Device must be auto; got 'x'"
    )
    assert (
        in_panel_words("`--channel confidence` is taken")
        == "Export > Channel (confidence) is taken"
    )
    assert in_panel_words("no flags here") == "no flags here"


def test_matte_button_hint_and_zoom_say_the_truth(qtbot, window, clip):
    """The Matte button looked pressed with no matte; "Run will load the model" stayed on
    during the run; there was no zoom readout."""
    window.open_plate(str(clip))
    assert not window.show_matte_action.isChecked()
    assert not window.show_matte_action.isEnabled()
    assert window.matte_label.text().strip() == "holdout: none"

    hint = window.settings_panel.hint_label
    assert hint.text() == "Run will load the model and encode the plate"
    during = []
    window.controller.progress.connect(lambda *_: during.append(hint.text()))
    run_and_wait(qtbot, window)
    assert during and all(text.startswith("running") for text in during), set(during)
    assert hint.text() == "up to date"

    window.viewer.set_one_to_one()
    assert window.zoom_label.text() == "100 %"
    window.viewer.zoom_at(QPointF(50, 50), 2.0)
    assert window.zoom_label.text() == "200 %"
    window.fit_action.trigger()
    assert window.zoom_label.text().endswith("% (fit)")


def test_the_colour_bar_reads_scene_units_when_anchored(
    qtbot, window, clip, tmp_path, screenshot_dir
):
    viewer = window.viewer
    window.open_plate(str(clip))
    prediction = run_and_wait(qtbot, window)
    window.mode_actions["side"].trigger()
    window.scrubber.set_index(3)
    assert viewer._legend_title == "inverse"
    ticks = viewer.legend_ticks
    assert len(ticks) >= 3 and all(0 <= p <= 1 for p, _ in ticks)

    fit = fit_anchors(qtbot, window, tmp_path, prediction)
    qtbot.waitUntil(lambda: viewer._legend_title == "Z (m)", timeout=EVENT_TIMEOUT_MS)
    lo, hi = float(prediction.depth.min()), float(prediction.depth.max())
    near, far = viewer.legend_labels
    # the bar's ends are Z of the clip's nearest and farthest values through this frame's fit
    assert float(near.split()[1]) == pytest.approx(float(fit.depth(3, np.array(hi))), rel=1e-3)
    assert float(far.split()[1]) == pytest.approx(float(fit.depth(3, np.array(lo))), rel=1e-3)
    values = [float(text) for _, text in viewer.legend_ticks]
    z_near, z_far = float(fit.depth(3, np.array(hi))), float(fit.depth(3, np.array(lo)))
    assert len(values) >= 3
    assert all(z_near * (1 - 1e-4) <= v <= z_far * (1 + 1e-4) for v in values), values
    # beside the image: nothing of the depth (or its anchor markers) under the bar
    column = viewer.width() - viewer.colour_bar_width()
    assert viewer._canvas_rect().right() <= column + 0.5
    assert all(p.x() < column for p, _ in viewer.marker_points())
    window.anchors_dock.raise_()
    assert window.grab().save(str(screenshot_dir / "qt_panel_side_by_side.png"))
    assert Path(screenshot_dir / "qt_panel_side_by_side.png").stat().st_size > 0


def test_an_error_naming_a_flag_keeps_the_engines_line_in_the_details(qtbot, window):
    box = window.show_error("Cannot export", "`--half` stores values up to 65504", "frame 1001")
    assert box.text() == "Export > Precision: half stores values up to 65504"
    assert box.detailedText() == "`--half` stores values up to 65504\nframe 1001"
    box.accept()
    box = window.show_error("Cannot open plate", "clip.mov: no such file")
    assert box.text() == "clip.mov: no such file" and box.detailedText() == ""
    box.accept()
