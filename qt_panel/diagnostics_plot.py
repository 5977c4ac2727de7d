"""Alignment diagnostics over time: every snippet's scale and shift per dilation, and the
per-frame residual, so a stretch of the plate where snippets disagree stands out."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QMouseEvent, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from rollingdepth_core.session import DepthPrediction

PALETTE = ("#4e9af1", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#edc948", "#76b7b2")
RESIDUAL_COLOR = QColor("#c7c7cc")
OUTLIER_COLOR = QColor("#ff5a5f")
# A frame whose residual is this many times the clip's median residual is flagged.
OUTLIER_RATIO = 2.0
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 12, 26, 22
PANEL_GAP = 14


class DiagnosticsPlot(QWidget):
    """Three panels sharing the time axis; click or drag to go to a frame."""

    frame_selected = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(220)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self._numbers: tuple[int, ...] = ()
        self._series: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
        self._residuals: np.ndarray | None = None
        self._outliers: np.ndarray | None = None
        self._summary = ""
        self._current = 0

    # ---------------------------------------------------------------- data
    def set_prediction(
        self, prediction: DepthPrediction | None, frame_numbers: tuple[int, ...] = ()
    ) -> None:
        """Show ``prediction``'s alignment; None clears the plot."""
        self._numbers = tuple(frame_numbers)
        self._series = []
        self._residuals = self._outliers = None
        self._summary = ""
        if prediction is not None:
            alignment = prediction.alignment
            seen: dict[int, int] = {}
            for dilation, idx, scales, shifts in zip(
                prediction.dilations,
                prediction.indices,
                alignment.scales,
                alignment.shifts,
                strict=True,
            ):
                seen[dilation] = seen.get(dilation, 0) + 1
                label = f"d={dilation}" + (f" #{seen[dilation]}" if seen[dilation] > 1 else "")
                centres = idx.mean(axis=1)  # a snippet sits at the mean of its frames
                self._series.append((label, centres, np.asarray(scales), np.asarray(shifts)))
            self._residuals = np.asarray(alignment.frame_residuals, dtype=np.float64)
            self._outliers = flag_outliers(self._residuals)
            state = "converged" if alignment.converged else "not converged"
            self._summary = (
                f"{alignment.method} aligner, {alignment.iterations} iterations, {state}, "
                f"{alignment.seconds:.2f} s"
            )
        self.update()

    def set_current(self, index: int) -> None:
        self._current = index
        self.update()

    @property
    def outlier_frames(self) -> list[int]:
        """Plate frame numbers whose residual is flagged."""
        if self._outliers is None:
            return []
        return [self._numbers[i] for i in np.flatnonzero(self._outliers)]

    # ---------------------------------------------------------------- painting
    def _n_frames(self) -> int:
        return 0 if self._residuals is None else len(self._residuals)

    def _panels(self) -> list[QRectF]:
        height = self.height() - MARGIN_TOP - MARGIN_BOTTOM - 2 * PANEL_GAP
        width = self.width() - MARGIN_LEFT - MARGIN_RIGHT
        each = max(height / 3, 10)
        return [
            QRectF(MARGIN_LEFT, MARGIN_TOP + i * (each + PANEL_GAP), width, each) for i in range(3)
        ]

    def _x(self, frame: float, rect: QRectF) -> float:
        """Frame i owns the i-th of N equal slots; its point sits in the slot's middle."""
        return rect.left() + (frame + 0.5) / max(self._n_frames(), 1) * rect.width()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QColor(30, 30, 34))
        if self._residuals is None:
            painter.setPen(QColor(200, 200, 210))
            painter.drawText(
                self.rect(),
                Qt.AlignmentFlag.AlignCenter,
                "Alignment diagnostics appear here after a run",
            )
            return
        scale_rect, shift_rect, residual_rect = self._panels()
        self._draw_legend(painter)
        self._draw_series(painter, scale_rect, 2)
        self._draw_series(painter, shift_rect, 3)
        self._draw_residuals(painter, residual_rect)
        self._draw_time_axis(painter, residual_rect)
        for rect, title in (
            (scale_rect, "snippet scale"),
            (shift_rect, "snippet shift"),
            (residual_rect, "frame residual"),
        ):
            self._draw_title(painter, rect, title)
        for rect in (scale_rect, shift_rect, residual_rect):
            x = self._x(self._current, rect)
            painter.setPen(QPen(QColor(255, 255, 255, 180), 1, Qt.PenStyle.DashLine))
            painter.drawLine(QPointF(x, rect.top()), QPointF(x, rect.bottom()))

    def _draw_legend(self, painter: QPainter) -> None:
        x = MARGIN_LEFT
        for i, (label, *_rest) in enumerate(self._series):
            color = QColor(PALETTE[i % len(PALETTE)])
            painter.fillRect(QRectF(x, 8, 12, 10), color)
            painter.setPen(QColor(230, 230, 235))
            painter.drawText(QPointF(x + 16, 18), label)
            x += 24 + painter.fontMetrics().horizontalAdvance(label)
        painter.setPen(QColor(160, 160, 170))
        summary_width = painter.fontMetrics().horizontalAdvance(self._summary)
        painter.drawText(QPointF(self.width() - MARGIN_RIGHT - summary_width, 18), self._summary)

    def _frame_panel(self, painter: QPainter, rect: QRectF, lo: float, hi: float) -> None:
        painter.fillRect(rect, QColor(38, 38, 44))
        painter.setPen(QColor(70, 70, 78))
        painter.drawRect(rect)
        labels = QRectF(0, rect.top(), MARGIN_LEFT - 6, rect.height())
        right = Qt.AlignmentFlag.AlignRight
        painter.setPen(QColor(150, 150, 160))
        painter.drawText(labels, right | Qt.AlignmentFlag.AlignTop, _tick(hi))
        painter.drawText(labels, right | Qt.AlignmentFlag.AlignBottom, _tick(lo))

    def _draw_title(self, painter: QPainter, rect: QRectF, title: str) -> None:
        """The panel's name in its top-left corner, over the data on a dark box."""
        metrics = painter.fontMetrics()
        box = QRectF(
            rect.left() + 1,
            rect.top() + 1,
            metrics.horizontalAdvance(title) + 10,
            metrics.height() + 2,
        )
        painter.fillRect(box, QColor(20, 20, 24, 200))
        painter.setPen(QColor(225, 225, 232))
        painter.drawText(box, Qt.AlignmentFlag.AlignCenter, title)

    def _y(self, value: float, rect: QRectF, lo: float, hi: float) -> float:
        return rect.bottom() - (value - lo) / (hi - lo) * rect.height()

    def _draw_series(self, painter: QPainter, rect: QRectF, column: int) -> None:
        values = np.concatenate([s[column] for s in self._series])
        lo, hi = _padded_range(values)
        self._frame_panel(painter, rect, lo, hi)
        for i, series in enumerate(self._series):
            centres, data = series[1], series[column]
            path = QPainterPath()
            for j, (c, v) in enumerate(zip(centres, data, strict=True)):
                point = QPointF(self._x(float(c), rect), self._y(float(v), rect, lo, hi))
                if j == 0:
                    path.moveTo(point)
                else:
                    path.lineTo(point)
            painter.setPen(QPen(QColor(PALETTE[i % len(PALETTE)]), 1.5))
            painter.drawPath(path)

    def _draw_residuals(self, painter: QPainter, rect: QRectF) -> None:
        values = self._residuals
        lo, hi = 0.0, float(values.max()) * 1.1 or 1.0
        self._frame_panel(painter, rect, lo, hi)
        n = len(values)
        bar = max(rect.width() / max(n, 1) * 0.7, 1.0)
        for i, v in enumerate(values):
            top = self._y(float(v), rect, lo, hi)
            color = OUTLIER_COLOR if self._outliers[i] else RESIDUAL_COLOR
            x = self._x(i, rect) - bar / 2
            painter.fillRect(QRectF(x, top, bar, rect.bottom() - top), color)

    def _draw_time_axis(self, painter: QPainter, rect: QRectF) -> None:
        n = self._n_frames()
        if n == 0 or not self._numbers:
            return
        painter.setPen(QColor(170, 170, 180))
        ticks = sorted({0, n - 1, *np.linspace(0, n - 1, 6).round().astype(int).tolist()})
        metrics = painter.fontMetrics()
        for i in ticks:
            label = str(self._numbers[i])
            x = self._x(i, rect) - metrics.horizontalAdvance(label) / 2
            x = min(max(x, rect.left()), rect.right() - metrics.horizontalAdvance(label))
            painter.drawText(QPointF(x, rect.bottom() + 15), label)

    # ---------------------------------------------------------------- interaction
    def frame_at(self, x: float) -> int | None:
        n = self._n_frames()
        if n == 0:
            return None
        rect = self._panels()[0]
        fraction = (x - rect.left()) / max(rect.width(), 1.0)
        return min(max(int(fraction * n), 0), n - 1)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self._select(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if event.buttons() & Qt.MouseButton.LeftButton:
            self._select(event)

    def _select(self, event: QMouseEvent) -> None:
        frame = self.frame_at(event.position().x())
        if frame is not None:
            self.frame_selected.emit(frame)


def flag_outliers(residuals: np.ndarray) -> np.ndarray:
    """Frames where the snippets disagree far more than they typically do in this clip.

    A ratio to the median rather than a z-score: a bad stretch also raises the residuals of
    its neighbours (their snippets reach into it), which would inflate any spread estimate.
    """
    return residuals > OUTLIER_RATIO * float(np.median(residuals))


def _tick(value: float) -> str:
    """A short axis label: at most about 7 characters whatever the magnitude."""
    if value == 0 or 1e-2 <= abs(value) < 1e4:
        return f"{value:.3g}"
    return f"{value:.1e}"


def _padded_range(values: np.ndarray) -> tuple[float, float]:
    lo, hi = float(values.min()), float(values.max())
    pad = max((hi - lo) * 0.08, 1e-6 * max(abs(lo), abs(hi), 1.0))
    return lo - pad, hi + pad
