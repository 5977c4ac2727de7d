"""Colour space and view, anchors, plate-resolution depth and shot cuts in the real window
(offscreen), with the tiny random checkpoint; each test saves a screenshot."""

import numpy as np
import OpenImageIO as oiio
import pytest

from qt_panel.anchors_panel import EXPORT_NOTE
from qt_panel.scrubber import CUTS_NOTE
from rollingdepth_core.anchors import sample_frame as sample_anchor
from rollingdepth_core.colorspace import ColorRequest
from rollingdepth_core.exr import read_exr
from rollingdepth_core.plate import open_plate
from rollingdepth_core.sample import sample_frame
from rollingdepth_core.upsample import upsample_depth

from .conftest import EVENT_TIMEOUT_MS, HEIGHT, N_FRAMES, RUN_TIMEOUT_MS, WIDTH
from .test_main_window import not_blank, run_and_wait

SHOT_FRAMES = 16  # per shot of the two-shot plate


@pytest.fixture(scope="module")
def two_shots(tmp_path_factory):
    """A PNG sequence 1001-1032: the sample shot, then a cut to a different one (inverted,
    turned round) at 1017."""
    folder = tmp_path_factory.mktemp("two_shots")
    n = 2 * SHOT_FRAMES
    for i in range(n):
        rgb = sample_frame(i, n, HEIGHT, WIDTH)
        if i >= SHOT_FRAMES:
            rgb = 1.0 - rgb[::-1, ::-1]
        out = oiio.ImageOutput.create("png")
        assert out.open(
            str(folder / f"plate.{1001 + i}.png"), oiio.ImageSpec(WIDTH, HEIGHT, 3, "uint8")
        )
        assert out.write_image(np.ascontiguousarray((rgb * 255 + 0.5).astype(np.uint8)))
        out.close()
    return folder / "plate.####.png"


def test_colour_space_and_view(qtbot, window, clip, screenshot_dir):
    panel = window.settings_panel.color_panel
    assert window.open_plate(str(clip))
    info = window.controller.info
    assert panel.summary_label.text() == info.color.summary  # auto: decided by metadata
    srgb = window.viewer._rgb.copy()
    run_and_wait(qtbot, window)
    assert window.controller.session is not None

    # a new input space: the plate is read through it, the kept work is dropped and said so
    with qtbot.waitSignal(window.controller.result_changed):
        panel.set_request("linear")
    color = window.controller.info.color
    assert color.input_space == "Linear Rec.709 (sRGB)" and not color.passthrough
    assert panel.summary_label.text() == color.summary
    assert panel.note_label.isVisible() and "dropped" in panel.note_label.text()
    assert window.controller.session is None and window.controller.result is None
    assert window.viewer._depth01 is None
    linear = open_plate(clip, input_colorspace=ColorRequest("linear")).read(0)
    np.testing.assert_array_equal(window.viewer._rgb, linear)  # what the model will see
    assert window.viewer._rgb.mean() > srgb.mean() + 0.05
    assert window.settings_panel.hint_label.text().startswith("Run will encode the plate")

    # a view of the sRGB display; the views offered are that display's
    views = [panel.view_box.itemText(i) for i in range(panel.view_box.count())]
    assert "Un-tone-mapped" in views
    panel.set_request("linear", "Un-tone-mapped")
    assert window.controller.info.color.view == "Un-tone-mapped"
    assert "'Un-tone-mapped'" in panel.summary_label.text()

    # a space the config does not know: refused, nothing changes
    panel.set_request("no such space")
    qtbot.waitUntil(lambda: window.error_box is not None, timeout=EVENT_TIMEOUT_MS)
    assert "no such space" in window.error_box.text()
    window.error_box.close()
    assert panel.space_box.currentText() == "linear"
    assert window.controller.color_request == ColorRequest("linear", view="Un-tone-mapped")

    # the model runs on the plate as shown
    run_and_wait(qtbot, window)
    assert window.controller.session.plate.info.color == window.controller.info.color
    window.mode_actions["side"].trigger()
    path = screenshot_dir / "qt_panel_colour.png"
    assert window.grab().save(str(path))
    assert not_blank(window.viewer)


def _write_anchors(path, prediction, numbers):
    """Anchors that follow 1/Z = 2 d + 3 on the prediction, four per frame, and one on
    frame 0 that is three times too far (an outlier the fit must reject)."""
    xs, ys = np.array([10.5, 80.5, 40.5, 70.5]), np.array([10.5, 20.5, 50.5, 55.5])
    lines = ["# units: m", "frame,x,y,depth,track"]
    for k, number in enumerate(numbers):
        d = sample_anchor(prediction.depth[k], xs, ys, (HEIGHT, WIDTH))
        for j, (x, y, z) in enumerate(zip(xs, ys, 1.0 / (2.0 * d + 3.0), strict=True)):
            lines.append(f"{number},{x},{y},{z:.9g},t{j}")
    d0 = sample_anchor(prediction.depth[0], [30.5], [30.5], (HEIGHT, WIDTH))[0]
    lines.append(f"{numbers[0]},30.5,30.5,{3.0 / (2.0 * d0 + 3.0):.9g},bad")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_anchors_markers_and_residuals(qtbot, window, clip, tmp_path, screenshot_dir):
    c = window.controller
    window.open_plate(str(clip))
    prediction = run_and_wait(qtbot, window)
    anchors_file = _write_anchors(tmp_path / "anchors.csv", prediction, c.info.frame_numbers)

    with qtbot.waitSignal(
        c.anchor_fit_changed, timeout=RUN_TIMEOUT_MS, check_params_cb=lambda f, _w: f is not None
    ):
        assert c.load_anchors(anchors_file)
    fit = c.anchor_fit
    assert fit.n_used == 4 * N_FRAMES and fit.n_rejected == 1
    np.testing.assert_allclose(fit.a, 2.0, rtol=1e-3)
    assert fit.residual_median < 1e-3

    # frame 0: five markers on the plate, the outlier red, the others good
    window.scrubber.set_index(0)
    kinds = sorted(m["kind"] for m in window.viewer.markers)
    assert kinds == ["good"] * 4 + ["rejected"]
    table = window.anchors_panel.table
    assert table.rowCount() == 5
    rows = {table.item(i, 0).text(): i for i in range(5)}
    assert table.item(rows["bad"], 6).text() == "rejected"
    assert table.item(rows["bad"], 5).text() == "-66.67 %"  # predicted a third of it
    assert abs(float(table.item(rows["t0"], 5).text().split()[0])) < 0.1
    assert EXPORT_NOTE in window.anchors_panel.summary_label.text()

    # hovering a marker reads it out; the readout gives Z in the anchors' units
    window.viewer.set_mode("rgb")
    point, marker = next(
        (p, m) for p, m in window.viewer.marker_points() if m["kind"] == "rejected"
    )
    text = window.viewer.describe(point)
    assert "anchor bad:" in text and "rejected by the fit" in text
    assert " m" in text and "Z " in text
    window.scrubber.set_index(1)
    assert len(window.viewer.markers) == 4

    # the other fit mode refits in the background; clearing removes the markers
    with qtbot.waitSignal(
        c.anchor_fit_changed, timeout=RUN_TIMEOUT_MS, check_params_cb=lambda f, _w: f is not None
    ):
        window.anchors_panel.mode_box.setCurrentText("smooth")
        assert window.anchors_panel.summary_label.text() == "fitting the anchors…"
    assert c.anchor_fit.mode == "smooth"
    window.scrubber.set_index(0)
    window.anchors_dock.raise_()
    window.mode_actions["side"].trigger()
    window.viewer.set_one_to_one()
    window.viewer.zoom = 4.0
    path = screenshot_dir / "qt_panel_anchors.png"
    assert window.grab().save(str(path))
    window.anchors_panel.clear_button.click()
    assert window.viewer.markers == [] and c.anchor_fit is None


def test_anchors_that_do_not_fit_say_why(qtbot, window, clip, tmp_path):
    c = window.controller
    window.open_plate(str(clip))
    (tmp_path / "one.csv").write_text("frame,x,y,depth\n0,10,10,5\n")
    assert c.load_anchors(tmp_path / "one.csv")
    assert [m["kind"] for m in window.viewer.markers] == ["point"]  # before any run
    with qtbot.waitSignal(
        c.anchor_fit_changed, timeout=RUN_TIMEOUT_MS, check_params_cb=lambda f, w: bool(w)
    ):
        run_and_wait(qtbot, window)
    assert window.anchors_panel.summary_label.text().startswith("no fit: ")
    assert not c.load_anchors(tmp_path / "missing.csv")
    assert "missing.csv" in window.error_box.text()


def test_plate_resolution_depth_in_the_wipe(qtbot, window, clip, tmp_path, screenshot_dir):
    c = window.controller
    window.open_plate(str(clip))
    prediction = run_and_wait(qtbot, window)
    window.scrubber.set_index(3)
    assert window.viewer._depth01.shape == prediction.depth.shape[1:]
    window.mode_actions["wipe"].trigger()
    window.one_to_one_action.trigger()
    assert window.viewer.zoom == 1.0

    with qtbot.waitSignal(c.upsampled, timeout=RUN_TIMEOUT_MS):
        window.resolution_box.setCurrentText("plate res, edge")
        assert "upsampling" in window.viewer._depth_caption()  # model res until it is ready
    assert window.viewer._depth01.shape == (HEIGHT, WIDTH)
    assert f"edge {WIDTH}x{HEIGHT}" in window.viewer._depth_caption()
    lo, hi = float(prediction.depth.min()), float(prediction.depth.max())
    expected = upsample_depth(prediction.depth[3], c.frame(3), method="edge")
    np.testing.assert_allclose(window.viewer._depth01, (expected - lo) / (hi - lo), atol=1e-6)
    edge = window.viewer._depth01.copy()
    window.viewer.zoom = 6.0
    assert window.grab().save(str(screenshot_dir / "qt_panel_upsample.png"))

    with qtbot.waitSignal(c.upsampled, timeout=RUN_TIMEOUT_MS):
        window.resolution_box.setCurrentText("plate res, bilinear")
    bilinear = window.viewer._depth01
    assert bilinear.shape == edge.shape and np.abs(bilinear - edge).max() > 1e-3
    # back to edge: kept, no recomputation
    window.resolution_box.setCurrentText("plate res, edge")
    np.testing.assert_array_equal(window.viewer._depth01, edge)
    assert not c.upsample_worker.busy
    window.resolution_box.setCurrentText("model res")
    assert window.viewer._depth01.shape == prediction.depth.shape[1:]

    # the export dialog offers the upsampling, used with the plate's resolution
    dialog = window.open_export_dialog()
    assert not dialog.upsample_box.isEnabled()
    dialog.restore_check.setChecked(True)
    assert dialog.upsample_box.isEnabled()
    dialog.upsample_box.setCurrentText("bilinear")
    assert dialog.output_config().upsample == "bilinear"
    dialog.pattern_edit.setText(str(tmp_path / "out" / "depth.####.exr"))
    dialog.first_spin.setValue(3)
    dialog.last_spin.setValue(3)
    with qtbot.waitSignal(c.export_finished, timeout=RUN_TIMEOUT_MS) as done:
        dialog.export_button.click()
    channels, header = read_exr(done.args[0][0])
    assert channels["Z"].shape == (HEIGHT, WIDTH)
    assert header["rollingdepth/upsample"] == "bilinear"
    bilinear_z = upsample_depth(prediction.depth[3], c.frame(3), method="bilinear")
    np.testing.assert_allclose(channels["Z"], bilinear_z, atol=1e-5)


def test_cuts_on_the_timeline_and_the_diagnostics(qtbot, window, two_shots, screenshot_dir):
    c = window.controller
    with qtbot.waitSignal(
        c.cuts_changed, timeout=RUN_TIMEOUT_MS, check_params_cb=lambda cuts: cuts is not None
    ):
        assert window.open_plate(str(two_shots))
        assert window.scrubber.cuts_label.text() == "finding cuts…"  # off the GUI thread
    assert c.cuts == [SHOT_FRAMES]
    assert window.scrubber.slider.cuts == [SHOT_FRAMES]
    assert window.scrubber.cuts_label.text() == "2 shots"
    tip = window.scrubber.cuts_label.toolTip()
    assert "1017" in tip and CUTS_NOTE in tip and CUTS_NOTE in window.scrubber.slider.toolTip()
    x = window.scrubber.slider.cut_x(SHOT_FRAMES)
    assert window.scrubber.slider.cut_x(0) < x < window.scrubber.slider.cut_x(2 * SHOT_FRAMES - 1)

    run_and_wait(qtbot, window)
    assert window.diagnostics.cut_numbers == [1001 + SHOT_FRAMES]
    assert len(window.diagnostics.cut_lines) == 3  # one in each plot
    assert all(line.value() == 1016.5 for _plot, line in window.diagnostics.cut_lines)
    window.scrubber.set_index(SHOT_FRAMES + 7)  # the second shot; the cut mark in view
    window.mode_actions["side"].trigger()
    assert window.grab().save(str(screenshot_dir / "qt_panel_cuts.png"))


def test_a_new_plate_restarts_cut_detection(qtbot, window, two_shots, clip):
    c = window.controller
    window.open_plate(str(two_shots))
    with qtbot.waitSignal(
        c.cuts_changed, timeout=RUN_TIMEOUT_MS, check_params_cb=lambda cuts: cuts is not None
    ):
        window.open_plate(str(clip))
    qtbot.waitUntil(lambda: not c.cuts_worker.busy, timeout=RUN_TIMEOUT_MS)
    assert c.cuts == [] and window.scrubber.slider.cuts == []
    assert window.scrubber.cuts_label.text() == "one shot"
    assert window.diagnostics.cut_lines == []
