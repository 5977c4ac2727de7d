from fractions import Fraction

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel

from qt_panel.scrubber import FrameScrubber

from .conftest import EVENT_TIMEOUT_MS


def make(qtbot, numbers=tuple(range(1001, 1013)), fps=Fraction(24)):
    scrubber = FrameScrubber()
    qtbot.addWidget(scrubber)
    scrubber.set_frames(numbers, fps)
    return scrubber


def test_shows_the_plates_own_numbers(qtbot):
    scrubber = make(qtbot)
    assert scrubber.frame_field.value() == 1001
    assert scrubber.frame_field.minimum() == 1001 and scrubber.frame_field.maximum() == 1012
    with qtbot.waitSignal(scrubber.index_changed) as blocker:
        scrubber.step(1)
    assert blocker.args == [1]
    assert scrubber.frame_number == 1002
    assert scrubber.range_label.text() == "of 1001\N{EN DASH}1012"
    assert scrubber.range_label.isVisibleTo(scrubber)


def test_a_video_shows_one_numbering(qtbot):
    """A video's first frame is 0; nothing next to it says 1 (no second, 1-based count)."""
    scrubber = make(qtbot, numbers=tuple(range(40)))
    scrubber.show()
    assert scrubber.frame_field.value() == 0
    texts = [label.text() for label in scrubber.findChildren(QLabel)]
    assert "of 0\N{EN DASH}39" in texts
    assert not any("/" in text for text in texts), texts
    scrubber.last()
    assert scrubber.frame_field.value() == 39


def test_gaps_are_said(qtbot):
    scrubber = make(qtbot, numbers=(1001, 1002, 1005, 1006))
    assert scrubber.range_label.text() == "of 1001\N{EN DASH}1006 (2 missing)"


def test_typing_a_frame_number_goes_there(qtbot):
    scrubber = make(qtbot)
    scrubber.frame_field.setValue(1008)
    assert scrubber.index == 7 and scrubber.slider.value() == 7


def test_gaps_go_to_the_nearest_frame(qtbot):
    scrubber = make(qtbot, numbers=(1, 2, 3, 10, 11))
    scrubber.frame_field.setValue(8)
    assert scrubber.frame_number == 10
    assert scrubber.frame_field.value() == 10


def test_slider_and_bounds(qtbot):
    scrubber = make(qtbot)
    scrubber.slider.setValue(5)
    assert scrubber.frame_number == 1006
    scrubber.step(-100)
    assert scrubber.index == 0
    scrubber.last()
    assert scrubber.index == 11


def test_play_advances_and_loops(qtbot):
    scrubber = make(qtbot, numbers=(1, 2, 3), fps=Fraction(100))
    qtbot.mouseClick(scrubber.play_button, Qt.MouseButton.LeftButton)
    assert scrubber.playing and scrubber.play_button.text() == "Pause"
    seen = set()
    scrubber.index_changed.connect(seen.add)
    qtbot.waitUntil(lambda: seen == {0, 1, 2}, timeout=EVENT_TIMEOUT_MS)
    scrubber.toggle_playing()
    assert not scrubber.playing


def test_no_plate(qtbot):
    scrubber = make(qtbot, numbers=())
    assert not scrubber.slider.isEnabled()
    assert scrubber.frame_number is None
    scrubber.step(1)
    assert scrubber.range_label.text() == "no plate"
