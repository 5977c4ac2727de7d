import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt

from qt_panel.diagnostics_plot import MARGIN_LEFT, DiagnosticsPlot, flag_outliers

NUMBERS = tuple(range(1001, 1041))


@pytest.fixture
def plot(qtbot, synthetic_prediction):
    widget = DiagnosticsPlot()
    qtbot.addWidget(widget)
    widget.resize(640, 300)
    widget.set_prediction(synthetic_prediction, NUMBERS)
    widget.show()
    qtbot.waitExposed(widget)
    return widget


def test_a_bad_stretch_stands_out(plot, synthetic_prediction):
    residuals = synthetic_prediction.alignment.frame_residuals
    assert 20 <= int(np.argmax(residuals)) <= 23
    calm = np.r_[residuals[:8], residuals[36:]]
    assert residuals[20:24].mean() > 3 * np.median(calm)
    flagged = plot.outlier_frames
    assert 1021 in flagged or 1024 in flagged
    assert set(flagged) <= set(range(1011, 1031))  # and nothing far from it


def test_flag_outliers():
    assert not flag_outliers(np.full(10, 0.3)).any()
    assert not flag_outliers(np.zeros(10)).any()
    values = np.r_[np.linspace(0.2, 0.4, 10), 0.7, 0.5]
    assert flag_outliers(values).tolist() == [False] * 10 + [True, False]


def test_one_series_per_dilation_entry_with_every_snippet(plot, synthetic_prediction):
    labels = [s[0] for s in plot._series]
    assert labels == ["d=1", "d=5"]
    for series, scales in zip(plot._series, synthetic_prediction.alignment.scales, strict=True):
        assert len(series[2]) == len(scales)


def test_clicking_selects_a_frame(qtbot, plot):
    width = plot.width() - MARGIN_LEFT - 12
    x = int(MARGIN_LEFT + width * (10.5 / 40))
    with qtbot.waitSignal(plot.frame_selected) as blocker:
        qtbot.mouseClick(plot, Qt.MouseButton.LeftButton, pos=QPoint(x, 100))
    assert blocker.args == [10]
    assert plot.frame_at(0) == 0 and plot.frame_at(10_000) == 39


def test_draws_and_clears(plot, screenshot_dir):
    image = plot.grab().toImage()
    bottom = plot._panels()[2]
    # the residual bars: light pixels in the bottom panel, over the corrupted stretch
    x = int(plot._x(22, bottom))
    bar = [
        image.pixelColor(x, int(y)).value() for y in range(int(bottom.top()), int(bottom.bottom()))
    ]
    assert max(bar) > 180
    assert np.std([image.pixelColor(x, 40).value() for x in range(0, image.width(), 3)]) > 10
    plot.grab().save(str(screenshot_dir / "diagnostics_widget.png"))
    plot.set_prediction(None)
    assert plot.outlier_frames == [] and plot.frame_at(100) is None
