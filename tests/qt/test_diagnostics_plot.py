import numpy as np
import pytest
from PySide6.QtCore import QPointF

from qt_panel.diagnostics_plot import (
    OUTLIER_RATIO,
    RESIDUAL_VIEW_MAX,
    DiagnosticsPlot,
    flag_outliers,
)

NUMBERS = tuple(range(1001, 1041))


@pytest.fixture
def plot(qtbot, synthetic_prediction):
    widget = DiagnosticsPlot()
    qtbot.addWidget(widget)
    widget.resize(900, 380)
    widget.set_prediction(synthetic_prediction, NUMBERS)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def tick_labels(axis) -> list[str]:
    lo, hi = axis.range
    length = axis.width() if axis.orientation in ("left", "right") else axis.height()
    size = axis.height() if axis.orientation in ("left", "right") else axis.width()
    assert length > 0
    labels = []
    for spacing, values in axis.tickValues(lo, hi, size):
        labels.append((spacing, values, axis.tickStrings(values, axis.scale, spacing)))
    return labels


def scene_point(plot, graph, x_value, y_fraction=0.5):
    """A scene position over ``graph`` at data x ``x_value``."""
    rect = graph.vb.sceneBoundingRect()
    x = graph.vb.mapViewToScene(QPointF(x_value, 0)).x()
    return QPointF(x, rect.top() + rect.height() * y_fraction)


def test_a_bad_stretch_stands_out(plot, synthetic_prediction):
    residuals = synthetic_prediction.alignment.frame_residuals
    assert 20 <= int(np.argmax(residuals)) <= 23
    calm = np.r_[residuals[:8], residuals[36:]]
    assert residuals[20:24].mean() > 3 * np.median(calm)
    flagged = plot.outlier_frames
    assert 1021 in flagged or 1024 in flagged
    assert set(flagged) <= set(range(1011, 1031))  # and nothing far from it
    assert "frame(s) to check" in plot.summary_label.text()


def test_flag_outliers():
    assert not flag_outliers(np.full(10, 0.3)).any()
    assert not flag_outliers(np.zeros(10)).any()
    values = np.r_[np.linspace(0.2, 0.4, 10), 0.7, 0.5]
    assert flag_outliers(values).tolist() == [False] * 10 + [True, False]


def test_axes_read_plainly(plot, synthetic_prediction):
    # residuals are ~1e-2 here and 3.6e-03 on real plates: no scientific notation anywhere
    for graph in plot.plots:
        for spacing, _, labels in tick_labels(graph.getAxis("left")):
            assert labels, spacing
            assert not any("e" in text for text in labels), labels
            assert len(set(labels)) == len(labels), labels  # no two ticks read the same
    # the time axis: the plate's own frame numbers, whole, regularly spaced
    levels = tick_labels(plot.residual_plot.getAxis("bottom"))
    assert levels
    for spacing, values, labels in levels:
        assert spacing >= 1
        assert all(float(v).is_integer() for v in values)
        assert all(1000 <= int(text) <= 1041 for text in labels)
    # each level leaves out the ticks of the levels above it: together they are regular
    major_spacing, major_values, major_labels = levels[0]
    assert len(set(np.diff(major_values))) == 1
    every = sorted(v for _, values, _ in levels for v in values)
    assert len(set(np.diff(every))) == 1
    assert "1010" in major_labels or "1020" in major_labels


def test_what_good_looks_like_is_drawn(plot):
    lo, hi = plot.good_band.getRegion()
    assert (lo, hi) == (0.0, OUTLIER_RATIO)
    assert plot.threshold_line.value() == OUTLIER_RATIO
    assert "median" in plot.note_label.text() and plot.note_label.isVisible()
    # the residuals are shown relative to the clip's median: typical frames sit near 1
    assert np.median(plot._relative) == pytest.approx(1.0)
    # a stretch 80x worse than the median does not squash the band out of sight
    assert plot._relative.max() > 20
    low, high = plot.residual_plot.viewRange()[1]
    assert low == 0 and OUTLIER_RATIO < high <= RESIDUAL_VIEW_MAX
    assert "worst 102" in plot.summary_label.text()


def test_hover_reads_values_out(plot, synthetic_prediction):
    plot._hover(scene_point(plot, plot.residual_plot, 1022))
    text = plot.hover_label.text()
    assert text.startswith("frame 1022")
    assert "d=1: scale" in text and "d=5: scale" in text
    residual = synthetic_prediction.alignment.frame_residuals[21]
    assert f"residual {residual:.4f}" in text and "check" in text
    plot._hover(QPointF(-50, -50))
    assert plot.hover_label.text() == ""


def test_zoom_in_time_and_cursor_follow_the_scrubber(qtbot, plot):
    full = plot.residual_plot.viewRange()[0]
    assert full[0] == pytest.approx(1000.5) and full[1] == pytest.approx(1040.5)
    plot.residual_plot.vb.scaleBy(x=0.25, center=QPointF(1020, 0))
    zoomed = plot.residual_plot.viewRange()[0]
    assert zoomed[1] - zoomed[0] == pytest.approx((full[1] - full[0]) * 0.25)
    # the three plots share the time axis
    assert plot.scale_plot.viewRange()[0] == pytest.approx(zoomed)

    plot.set_current(15)
    assert [line.value() for line in plot.cursors] == [1016] * 3
    with qtbot.waitSignal(plot.frame_selected) as blocker:
        plot.cursors[2].setValue(1030.2)
        plot.cursors[2].sigDragged.emit(plot.cursors[2])
    assert blocker.args == [29]
    assert plot.cursors[0].value() == 1030


def test_clicking_selects_a_frame(qtbot, plot):
    point = scene_point(plot, plot.shift_plot, 1011)
    view_point = plot.graphics.mapFromScene(point)
    from PySide6.QtCore import Qt

    with qtbot.waitSignal(plot.frame_selected) as blocker:
        qtbot.mouseClick(plot.graphics.viewport(), Qt.MouseButton.LeftButton, pos=view_point)
    assert blocker.args == [10]


def test_draws_and_clears(plot, screenshot_dir):
    image = plot.grab().toImage()
    assert np.std([image.pixelColor(x, 120).value() for x in range(0, image.width(), 3)]) > 10
    plot.grab().save(str(screenshot_dir / "qt_panel_diagnostics.png"))
    plot.set_prediction(None)
    assert plot.outlier_frames == [] and plot.index_of(1001) is None
    assert plot.bars is None and not plot.scale_plot.listDataItems()


def test_legend_and_threshold_name_stay_off_the_data(plot, screenshot_dir):
    """The dilations' legend sat over the scale lines and "2x median: check" over the
    residual bars."""
    from qt_panel.diagnostics_plot import THRESHOLD_TEXT

    # no legend item inside any plot: the legend is a line beside the summary
    assert all(p.legend is None for p in plot.plots)
    assert plot.legend_label.isVisible()
    assert "d=1" in plot.legend_label.text() and "d=5" in plot.legend_label.text()
    # the threshold's name is a tick label of the right axis, outside the data area
    assert getattr(plot.threshold_line, "label", None) is None
    right = plot.residual_plot.getAxis("right")
    assert right.isVisible() and right._tickLevels == [[(OUTLIER_RATIO, THRESHOLD_TEXT)]]
    # (layout geometry: an axis's bounding rect also spans its grid lines)
    data, axis = plot.residual_plot.vb.geometry(), right.geometry()
    assert axis.left() >= data.right() - 1
    text_width = plot.fontMetrics().horizontalAdvance(THRESHOLD_TEXT)
    assert right.width() >= text_width + 4  # the name shows whole
    # the three time axes still line up
    lefts = {round(p.vb.sceneBoundingRect().left()) for p in plot.plots}
    rights = {round(p.vb.sceneBoundingRect().right()) for p in plot.plots}
    assert len(lefts) == 1 and len(rights) == 1
    plot.grab().save(str(screenshot_dir / "qt_panel_diagnostics.png"))


def test_dilations_capped_to_one_value_are_plotted_after_a_kept_alignment(
    qtbot, tiny_checkpoint, tmp_path
):
    """On a 24-frame plate 10 and 25 both cap to 7: "1 10 25" after a run of "1 10" needs no
    model, and its alignment has three entries (1, 7, 7), not the kept two of (1, 7)."""
    from rollingdepth_core.config import preset_config
    from rollingdepth_core.model import DepthModel
    from rollingdepth_core.plate import open_plate
    from rollingdepth_core.sample import write_sample_video
    from rollingdepth_core.session import DepthSession

    clip = write_sample_video(tmp_path / "c.mp4", n_frames=24, height=48, width=64)
    model = DepthModel.from_pretrained(str(tiny_checkpoint), device="cpu", dtype="fp32")
    session = DepthSession(model, open_plate(clip), cuts="none")
    session.run(preset_config("fast", dilations=(1, 10), processing_res=64))
    config = preset_config("fast", dilations=(1, 10, 25), processing_res=64)
    assert not session.needs_model(config)
    prediction = session.align(config)
    shot = prediction.shots[0]
    assert list(shot.dilations) == [1, 7, 7]
    assert len(shot.alignment.scales) == len(shot.indices) == 3
    widget = DiagnosticsPlot()
    qtbot.addWidget(widget)
    widget.set_prediction(prediction, tuple(range(1001, 1025)))
    assert [entry[0] for entry in widget._series] == ["d=1", "d=7", "d=7 #2"]
