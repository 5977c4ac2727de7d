"""Alignment diagnostics over time: every snippet's scale and shift per dilation, and the
per-frame residual, so a stretch of the plate where snippets disagree stands out.

Drawn with pyqtgraph: three plots share the time axis (the plate's own frame numbers), the
wheel zooms in time, hovering reads the values out, and a time cursor follows the scrubber.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout, QWidget

from rollingdepth_core.session import DepthPrediction, ShotAlignment

PALETTE = ("#4e9af1", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#edc948", "#76b7b2")
RESIDUAL_COLOR = "#a9a9b2"
OUTLIER_COLOR = "#ff5a5f"
CURSOR_COLOR = "#ffd24a"
CUT_COLOR = "#ff8c3c"
# A frame whose residual is this many times the clip's median residual is flagged.
OUTLIER_RATIO = 2.0
# The residual plot shows at most this many times the median, so the band of good frames
# stays readable next to a very bad stretch (the readout and the summary give the peak).
RESIDUAL_VIEW_MAX = 10.0
GOOD_NOTE = (
    "residual = how much the depth estimates that cover a frame disagree once lined up, "
    "in multiples of this clip's median. Good: grey bars in the shaded band (around 1). "
    f"Red bars above the dashed line ({OUTLIER_RATIO:g}x) mark depth to check."
)
PLACEHOLDER = "Alignment diagnostics appear here after a run"
THRESHOLD_TEXT = f"{OUTLIER_RATIO:g}x: check"
RIGHT_AXIS_WIDTH = 64


class PlainAxis(pg.AxisItem):
    """Fixed-point tick labels with as many decimals as the tick spacing needs.

    pyqtgraph's default switches to scientific notation for small values (``3.6e-03``) and can
    print two ticks with the same rounded text; the decimals here follow the spacing.
    """

    def tickStrings(self, values, scale, spacing):
        places = max(0, math.ceil(-math.log10(spacing * scale))) if spacing * scale > 0 else 0
        return [f"{v * scale:.{places}f}" for v in values]


class FrameAxis(pg.AxisItem):
    """Whole frame numbers only, at a regular spacing."""

    def tickValues(self, minVal, maxVal, size):
        levels = []
        for spacing, values in super().tickValues(minVal, maxVal, size):
            if spacing < 1:
                continue
            whole = [v for v in values if float(v).is_integer()]
            if whole:
                levels.append((spacing, whole))
        return levels or [(1.0, list(range(math.ceil(minVal), math.floor(maxVal) + 1)))]

    def tickStrings(self, values, scale, spacing):
        return [str(int(round(v))) for v in values]


class DiagnosticsPlot(QWidget):
    """Three plots over the plate's frames; click (or drag the cursor) to go to a frame."""

    frame_selected = Signal(int)  # position 0..N-1 in the plate

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(260)
        self._numbers = np.zeros(0)
        self._series: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
        self._residuals: np.ndarray | None = None
        self._relative: np.ndarray | None = None  # residual / the clip's median
        self._outliers: np.ndarray | None = None
        self._current = 0
        self.cut_numbers: list[int] = []  # plate frame numbers where a shot starts
        self.cut_lines: list[tuple[pg.PlotItem, pg.InfiniteLine]] = []

        self.graphics = pg.GraphicsLayoutWidget(self)
        self.graphics.setBackground("#1e1e22")
        self.scale_plot = self._add_plot(0, "scale")
        self.shift_plot = self._add_plot(1, "shift")
        self.residual_plot = self._add_plot(2, "residual", bottom=True)
        self.residual_plot.disableAutoRange(axis="y")
        self.plots = (self.scale_plot, self.shift_plot, self.residual_plot)
        for plot in self.plots[:-1]:
            plot.setXLink(self.residual_plot)
        self.cursors = []
        for plot in self.plots:
            line = pg.InfiniteLine(angle=90, movable=True, pen=pg.mkPen(CURSOR_COLOR, width=1.5))
            line.setZValue(10)
            line.sigDragged.connect(self._cursor_dragged)
            plot.addItem(line, ignoreBounds=True)
            self.cursors.append(line)
        self.good_band = pg.LinearRegionItem(
            (0.0, OUTLIER_RATIO),
            orientation="horizontal",
            movable=False,
            brush=pg.mkBrush(89, 161, 79, 40),
            pen=pg.mkPen(None),
        )
        self.good_band.setZValue(-10)
        self.threshold_line = pg.InfiniteLine(
            OUTLIER_RATIO,
            angle=0,
            pen=pg.mkPen(OUTLIER_COLOR, width=1, style=Qt.PenStyle.DashLine),
        )
        # The line's name sits on the right axis, beside the bars, never over them.
        right = self.residual_plot.getAxis("right")
        right.setTicks([[(OUTLIER_RATIO, THRESHOLD_TEXT)]])
        right.setStyle(showValues=True)
        right.setTextPen(pg.mkPen(OUTLIER_COLOR))
        self.residual_plot.addItem(self.good_band, ignoreBounds=True)
        self.residual_plot.addItem(self.threshold_line, ignoreBounds=True)
        self.bars: pg.BarGraphItem | None = None

        self.summary_label = QLabel(PLACEHOLDER, self)
        # Which line is which dilation: beside the summary, not over the plotted lines.
        self.legend_label = QLabel("", self)
        self.legend_label.setTextFormat(Qt.TextFormat.RichText)
        header = QHBoxLayout()
        header.addWidget(self.summary_label, 1)
        header.addWidget(self.legend_label)
        self.note_label = QLabel(GOOD_NOTE, self)
        self.note_label.setWordWrap(True)
        self.note_label.setStyleSheet("color: #9a9aa5;")
        self.hover_label = QLabel("", self)
        self.hover_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        layout.setSpacing(2)
        layout.addLayout(header)
        layout.addWidget(self.graphics, 1)
        layout.addWidget(self.hover_label)
        layout.addWidget(self.note_label)
        layout.setAlignment(Qt.AlignmentFlag.AlignTop)  # the placeholder line sits at the top

        scene = self.graphics.scene()
        scene.sigMouseMoved.connect(self._hover)
        scene.sigMouseClicked.connect(self._clicked)
        self._show_empty()

    def _add_plot(self, row: int, title: str, bottom: bool = False) -> pg.PlotItem:
        axes = {"left": PlainAxis("left"), "bottom": FrameAxis("bottom")}
        plot = self.graphics.addPlot(row=row, col=0, axisItems=axes)
        plot.setLabel("left", title)
        plot.showGrid(x=True, y=True, alpha=0.15)
        plot.getAxis("left").setWidth(64)  # one width, so the three time axes line up
        plot.getAxis("left").enableAutoSIPrefix(False)  # no "(x0.001)" tacked onto the title
        # a right axis on every plot, as wide as the threshold's name, so the three time
        # axes line up
        plot.showAxis("right")
        right = plot.getAxis("right")
        right.setWidth(RIGHT_AXIS_WIDTH)
        right.setStyle(showValues=False)
        if not bottom:
            plot.getAxis("bottom").setStyle(showValues=False)
        else:
            plot.setLabel("bottom", "frame")
        # Zoom and pan in time only; the values always fit what is in view.
        plot.setMouseEnabled(x=True, y=False)
        plot.enableAutoRange(axis="y")
        plot.setAutoVisible(y=True)
        plot.hideButtons()
        return plot

    # ---------------------------------------------------------------- data
    def set_prediction(
        self, prediction: DepthPrediction | None, frame_numbers: tuple[int, ...] = ()
    ) -> None:
        """Show ``prediction``'s alignment over ``frame_numbers``; None clears the plot."""
        for plot in self.plots:
            for item in list(plot.listDataItems()):
                plot.removeItem(item)
        if self.bars is not None:
            self.residual_plot.removeItem(self.bars)
            self.bars = None
        self.legend_label.setText("")
        self._series = []
        self._residuals = self._relative = self._outliers = None
        self.hover_label.setText("")
        if prediction is None:
            self._numbers = np.zeros(0)
            self._show_empty()
            return
        alignment = prediction.alignment
        parts = prediction.shots or [ShotAlignment(None, alignment, prediction.dilations,
                                                   prediction.indices)]  # fmt: skip
        n = sum(len(part.alignment.frame_residuals) for part in parts)
        numbers = np.asarray(frame_numbers if frame_numbers else range(n), dtype=np.float64)
        self._numbers = numbers
        start = 0
        for part in parts:
            # each shot's snippets over its own frames; one colour per dilation entry
            count = len(part.alignment.frame_residuals)
            shot_numbers = numbers[start : start + count]
            seen: dict[int, int] = {}
            for i, (dilation, idx, scales, shifts) in enumerate(
                zip(part.dilations, part.indices, part.alignment.scales, part.alignment.shifts,
                    strict=True)
            ):  # fmt: skip
                seen[dilation] = seen.get(dilation, 0) + 1
                label = f"d={dilation}" + (f" #{seen[dilation]}" if seen[dilation] > 1 else "")
                # a snippet sits at the mean of its frames, placed in the plate's numbering
                centres = np.interp(idx.mean(axis=1), np.arange(count), shot_numbers)
                scales, shifts = np.asarray(scales, float), np.asarray(shifts, float)
                pen = pg.mkPen(PALETTE[i % len(PALETTE)], width=1.5)
                known = [entry for entry in self._series if entry[0] == label]
                if known:  # a later shot: the same line, continued
                    entry = known[0]
                    self._series[self._series.index(entry)] = (
                        label, np.concatenate([entry[1], centres]),
                        np.concatenate([entry[2], scales]), np.concatenate([entry[3], shifts]),
                    )  # fmt: skip
                else:
                    self._series.append((label, centres, scales, shifts))
                self.scale_plot.plot(centres, scales, pen=pen, name=label)
                self.shift_plot.plot(centres, shifts, pen=pen)
            start += count
        self.legend_label.setText(
            "&nbsp;&nbsp;".join(
                f'<span style="color:{PALETTE[i % len(PALETTE)]}">\N{BOX DRAWINGS HEAVY HORIZONTAL}'
                f"\N{BOX DRAWINGS HEAVY HORIZONTAL} {label}</span>"
                for i, (label, *_rest) in enumerate(self._series)
            )
        )

        self._residuals = np.concatenate(
            [np.asarray(part.alignment.frame_residuals, dtype=np.float64) for part in parts]
        )
        median = float(np.median(self._residuals))
        self._relative = self._residuals / median if median > 0 else np.ones(n)
        self._outliers = flag_outliers(self._residuals)
        brushes = [pg.mkBrush(OUTLIER_COLOR if bad else RESIDUAL_COLOR) for bad in self._outliers]
        step = float(np.min(np.diff(numbers))) if n > 1 else 1.0
        self.bars = pg.BarGraphItem(
            x=numbers, height=self._relative, width=0.7 * step, brushes=brushes, pens=[None] * n
        )
        self.residual_plot.addItem(self.bars)
        self.residual_plot.setXRange(numbers[0] - 0.5, numbers[-1] + 0.5, padding=0)
        peak = int(np.argmax(self._relative))
        top = min(max(float(self._relative[peak]) * 1.1, OUTLIER_RATIO * 1.5), RESIDUAL_VIEW_MAX)
        self.residual_plot.setYRange(0.0, top, padding=0)
        for plot in self.plots[:-1]:
            plot.enableAutoRange(axis="y")
        state = "converged" if alignment.converged else "not converged"
        flagged = int(self._outliers.sum())
        verdict = (
            f"{flagged} frame(s) to check, worst {int(numbers[peak])} "
            f"({self._relative[peak]:.1f}x median)"
            if flagged
            else "no frame stands out"
        )
        self.summary_label.setText(
            f"{alignment.method} aligner, {alignment.iterations} iterations, {state}, "
            f"{alignment.seconds:.2f} s; median residual {median:.4f}; {verdict}"
        )
        self.graphics.show()
        self.note_label.show()
        self.set_current(min(self._current, n - 1))

    def set_cuts(self, numbers: list[int]) -> None:
        """Mark the frames where a new shot starts (plate numbers) with a vertical line in
        each plot; the line sits half a frame before the shot's first frame."""
        for plot, line in self.cut_lines:
            plot.removeItem(line)
        self.cut_lines = []
        self.cut_numbers = [int(n) for n in numbers]
        for number in self.cut_numbers:
            for k, plot in enumerate(self.plots):
                line = pg.InfiniteLine(
                    number - 0.5,
                    angle=90,
                    movable=False,
                    pen=pg.mkPen(CUT_COLOR, width=1.5, style=Qt.PenStyle.DashLine),
                    label="cut" if k == 0 else None,
                    labelOpts={"position": 0.92, "color": CUT_COLOR},
                )
                line.setZValue(5)
                plot.addItem(line, ignoreBounds=True)
                self.cut_lines.append((plot, line))

    def set_current(self, index: int) -> None:
        """Move the time cursor to position ``index`` (follows the scrubber)."""
        self._current = max(int(index), 0)
        if len(self._numbers) == 0:
            return
        number = float(self._numbers[min(self._current, len(self._numbers) - 1)])
        for line in self.cursors:
            line.blockSignals(True)
            line.setValue(number)
            line.blockSignals(False)

    @property
    def outlier_frames(self) -> list[int]:
        """Plate frame numbers whose residual is flagged."""
        if self._outliers is None:
            return []
        return [int(self._numbers[i]) for i in np.flatnonzero(self._outliers)]

    # ---------------------------------------------------------------- interaction
    def index_of(self, number: float) -> int | None:
        """Position of the plate frame nearest to frame number ``number``."""
        if len(self._numbers) == 0:
            return None
        return int(np.argmin(np.abs(self._numbers - number)))

    def describe(self, index: int) -> str:
        """The hover readout for position ``index``."""
        number = int(self._numbers[index])
        parts = [f"frame {number}"]
        for label, centres, scales, shifts in self._series:
            j = int(np.argmin(np.abs(centres - number)))
            # + 0.0 turns -0.0 into 0.0, so a zero shift does not read "-0.000"
            parts.append(f"{label}: scale {scales[j]:.3f} shift {round(shifts[j], 3) + 0.0:+.3f}")
        verdict = "check" if self._outliers[index] else "ok"
        parts.append(
            f"residual {self._residuals[index]:.4f} ({self._relative[index]:.1f}x median, "
            f"{verdict})"
        )
        return "   ".join(parts)

    def _scene_to_index(self, scene_pos: QPointF) -> int | None:
        for plot in self.plots:
            if plot.sceneBoundingRect().contains(scene_pos):
                x = plot.vb.mapSceneToView(scene_pos).x()
                return self.index_of(x)
        return None

    def _hover(self, scene_pos: QPointF) -> None:
        if self._residuals is None:
            return
        index = self._scene_to_index(scene_pos)
        self.hover_label.setText("" if index is None else self.describe(index))

    def _clicked(self, event) -> None:
        if self._residuals is None or event.button() != Qt.MouseButton.LeftButton:
            return
        index = self._scene_to_index(event.scenePos())
        if index is not None:
            self.frame_selected.emit(index)

    def _cursor_dragged(self, line: pg.InfiniteLine) -> None:
        index = self.index_of(line.value())
        if index is not None:
            self.set_current(index)
            self.frame_selected.emit(index)

    def _show_empty(self) -> None:
        """No axes over nothing: only the line that says what will appear here."""
        self.summary_label.setText(PLACEHOLDER)
        self.graphics.hide()
        self.note_label.hide()


def flag_outliers(residuals: np.ndarray) -> np.ndarray:
    """Frames where the snippets disagree far more than they typically do in this clip.

    A ratio to the median rather than a z-score: a bad stretch also raises the residuals of
    its neighbours (their snippets reach into it), which would inflate any spread estimate.
    """
    return residuals > OUTLIER_RATIO * float(np.median(residuals))
