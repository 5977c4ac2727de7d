"""The frame scrubber: slider, frame number in the plate's numbering, play/pause.

One numbering everywhere: the plate's own frame numbers (a video's first frame is 0, a
sequence's is the number in its first file name); positions 0..N-1 stay internal.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction

from PySide6.QtCore import QPointF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QSlider,
    QSpinBox,
    QStyle,
    QStyleOptionSlider,
    QToolButton,
    QWidget,
)

from rollingdepth_core import protocol

DEFAULT_FPS = Fraction(24)
CUT_COLOR = QColor(255, 140, 60)
SLIDER_TIP = "Scrub through the plate (Left/Right or , and . step one frame)"
CUTS_NOTE = (
    "Each shot is lined up and scaled on its own, in the panel and in its exports alike. "
    f"{protocol.GLOSSARY['shot']}."
)


class TimelineSlider(QSlider):
    """A slider with a mark at every shot cut (where the handle's centre would be)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(Qt.Orientation.Horizontal, parent)
        self.cuts: list[int] = []

    def set_cuts(self, cuts: list[int]) -> None:
        self.cuts = list(cuts)
        self.update()

    def cut_x(self, position: int) -> float:
        """Widget x of the handle's centre at ``position``."""
        option = QStyleOptionSlider()
        self.initStyleOption(option)
        style = self.style()
        groove = style.subControlRect(
            QStyle.ComplexControl.CC_Slider, option, QStyle.SubControl.SC_SliderGroove, self
        )
        handle = style.subControlRect(
            QStyle.ComplexControl.CC_Slider, option, QStyle.SubControl.SC_SliderHandle, self
        )
        span = groove.width() - handle.width()
        offset = QStyle.sliderPositionFromValue(self.minimum(), self.maximum(), position, span)
        return groove.left() + offset + handle.width() / 2

    def paintEvent(self, event) -> None:
        super().paintEvent(event)
        if not self.cuts:
            return
        painter = QPainter(self)
        painter.setPen(QPen(CUT_COLOR, 2))
        for position in self.cuts:
            x = self.cut_x(position)
            painter.drawLine(QPointF(x, 1), QPointF(x, self.height() - 1))


class FrameScrubber(QWidget):
    """Picks a frame by position (0..N-1) while showing the plate's own frame numbers."""

    index_changed = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._numbers: tuple[int, ...] = ()
        self._timecodes: Mapping[int, str] = {}
        self._index = 0
        self._timer = QTimer(self)
        self._timer.timeout.connect(self._advance)

        self.play_button = QToolButton(self)
        self.play_button.setText("Play")
        self.play_button.setToolTip("Play / pause (Space)")
        self.play_button.setCheckable(True)
        self.play_button.toggled.connect(self._set_playing)
        self.slider = TimelineSlider(self)
        self.slider.setToolTip(SLIDER_TIP)
        self.slider.valueChanged.connect(self.set_index)
        self.frame_field = QSpinBox(self)
        self.frame_field.setToolTip("Frame number in the plate's own numbering")
        self.frame_field.setKeyboardTracking(False)
        self.frame_field.valueChanged.connect(self._frame_number_entered)
        self.range_label = QLabel("no plate", self)
        self.range_label.setToolTip("The plate's first and last frame numbers")
        self.timecode_label = QLabel("", self)
        self.timecode_label.setToolTip(
            "The plate frame's SMPTE timecode (its file's, or the video's start timecode plus "
            "the frame); the depth EXRs carry the same"
        )
        self.cuts_label = QLabel("", self)
        self.cuts_label.setStyleSheet(f"color: {CUT_COLOR.name()};")

        layout = QHBoxLayout(self)
        layout.setContentsMargins(6, 2, 6, 2)
        layout.addWidget(self.play_button)
        layout.addWidget(self.slider, 1)
        layout.addWidget(QLabel("frame", self))
        layout.addWidget(self.frame_field)
        layout.addWidget(self.range_label)
        layout.addWidget(self.timecode_label)
        layout.addWidget(self.cuts_label)
        self.set_frames((), None)

    @property
    def index(self) -> int:
        return self._index

    @property
    def frame_number(self) -> int | None:
        return self._numbers[self._index] if self._numbers else None

    def set_frames(
        self,
        numbers: tuple[int, ...],
        fps: Fraction | None,
        timecodes: Mapping[int, str] | None = None,
    ) -> None:
        """A new plate: its frame numbers, rate and timecodes by frame number (if it has
        any); the scrubber goes to the first frame."""
        self.set_playing(False)
        self._numbers = tuple(numbers)
        self._timecodes = timecodes or {}
        self.timecode_label.setVisible(bool(self._timecodes))
        rate = float(fps or DEFAULT_FPS)
        self._timer.setInterval(max(1, round(1000 / rate)))
        has_frames = bool(self._numbers)
        for widget in (self.slider, self.frame_field, self.play_button):
            widget.setEnabled(has_frames)
        self.slider.blockSignals(True)
        self.frame_field.blockSignals(True)
        self.slider.setRange(0, max(len(self._numbers) - 1, 0))
        if has_frames:
            first, last = self._numbers[0], self._numbers[-1]
            self.frame_field.setRange(first, last)
            missing = last - first + 1 - len(self._numbers)
            gaps = f" ({missing} missing)" if missing else ""
            self.range_label.setText(f"of {first}\N{EN DASH}{last}{gaps}")
        else:
            self.frame_field.setRange(0, 0)
            self.range_label.setText("no plate")
        self.slider.blockSignals(False)
        self.frame_field.blockSignals(False)
        self.set_cuts(None)
        self._index = -1
        self.set_index(0)

    def set_cuts(self, cuts: list[int] | None) -> None:
        """Shot cuts (clip positions where a shot starts); None while they are detected."""
        self.slider.set_cuts(cuts or [])
        if cuts is None:
            text, tip = ("finding cuts…" if self._numbers else ""), ""
        elif not cuts:
            text, tip = "one shot", f"No cut found: the plate is one shot. {CUTS_NOTE}"
        else:
            starts = ", ".join(str(self._numbers[p]) for p in cuts)
            text = f"{len(cuts) + 1} shots"
            tip = f"Shots start at frames {starts}. {CUTS_NOTE}"
        self.cuts_label.setText(text)
        self.cuts_label.setToolTip(tip)
        self.slider.setToolTip(f"{SLIDER_TIP}\n{tip}" if cuts else SLIDER_TIP)

    def set_index(self, index: int) -> None:
        if not self._numbers:
            self._index = 0
            return
        index = min(max(int(index), 0), len(self._numbers) - 1)
        if index == self._index:
            return
        self._index = index
        self.slider.blockSignals(True)
        self.frame_field.blockSignals(True)
        self.slider.setValue(index)
        self.frame_field.setValue(self._numbers[index])
        self.timecode_label.setText(self._timecodes.get(self._numbers[index], ""))
        self.slider.blockSignals(False)
        self.frame_field.blockSignals(False)
        self.index_changed.emit(index)

    def set_frame_number(self, number: int) -> None:
        """Go to ``number``, or the nearest frame the plate has (sequences may have gaps)."""
        if self._numbers:
            nearest = min(range(len(self._numbers)), key=lambda i: abs(self._numbers[i] - number))
            self.set_index(nearest)

    def step(self, delta: int) -> None:
        self.set_index(self._index + delta)

    def first(self) -> None:
        self.set_index(0)

    def last(self) -> None:
        self.set_index(len(self._numbers) - 1)

    @property
    def playing(self) -> bool:
        return self._timer.isActive()

    def set_playing(self, playing: bool) -> None:
        self.play_button.setChecked(playing and bool(self._numbers))

    def toggle_playing(self) -> None:
        self.set_playing(not self.playing)

    def _set_playing(self, playing: bool) -> None:
        self.play_button.setText("Pause" if playing else "Play")
        if playing:
            self._timer.start()
        else:
            self._timer.stop()

    def _advance(self) -> None:
        # loops, as a flipbook does
        self.set_index((self._index + 1) % len(self._numbers))

    def _frame_number_entered(self, number: int) -> None:
        self.set_frame_number(number)
        if self._numbers and self._numbers[self._index] != number:
            self.frame_field.blockSignals(True)
            self.frame_field.setValue(self._numbers[self._index])
            self.frame_field.blockSignals(False)
