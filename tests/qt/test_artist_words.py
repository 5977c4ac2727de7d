"""Every text the panel shows is in an artist's words: no flags, class names, commands or
engine jargon (tests/artist_words.py has the tells), and the method words that stay are
explained where they first appear (protocol.GLOSSARY)."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QAbstractButton, QComboBox, QGroupBox, QLabel, QWidget

from qt_panel.main_window import MainWindow
from qt_panel.messages import error_text, in_panel_words
from rollingdepth_core import protocol
from rollingdepth_core.checkpoint import _missing_weights_message
from tests.artist_words import (
    TELLS,
    collect_front_end,
    engine_error_templates,
    layout_tells,
    protocol_texts,
    report,
    tells,
)

# What an engine error may still say once worded for an artist: its reason may use the
# method's words, never a flag, a class name, a command or an environment variable.
HARD_TELLS = ("a command-line flag", "a class name", "a command", "an environment variable")


def hard_tells(text: str) -> list[str]:
    return [t for t in tells(text) if t.split(":")[0] in HARD_TELLS]


@pytest.fixture
def bare_window(qtbot):
    """A window with no plate (the artist's first sight of it)."""
    window = MainWindow()
    qtbot.addWidget(window)
    yield window
    window.controller.shutdown()


def window_texts(window: MainWindow) -> list[tuple[str, str, bool]]:
    """(where, text, is a tooltip) of every widget and action of a real window."""
    found = [("window title", window.windowTitle(), False)]
    for widget in window.findChildren(QWidget):
        name = type(widget).__name__
        found.append((f"{name} tooltip", widget.toolTip(), True))
        if isinstance(widget, (QLabel, QAbstractButton)):
            found.append((f"{name} text", widget.text(), False))
        if isinstance(widget, QGroupBox):
            found.append((f"{name} title", widget.title(), False))
        if isinstance(widget, QComboBox):
            for i in range(widget.count()):
                found.append((f"{name} item", widget.itemText(i), False))
                tip = widget.itemData(i, Qt.ItemDataRole.ToolTipRole)
                found.append((f"{name} item tooltip", str(tip or ""), True))
    for action in window.findChildren(QAction):
        found.append(("action", action.text(), False))
        found.append(("action tooltip", action.toolTip(), True))
    return [(w, t, tip) for w, t, tip in found if t]


def test_the_panels_own_words_have_no_tells():
    found = {str(t): tells(t.text) for t in collect_front_end("qt_panel")}
    found.update({str(t): tells(t.text) for t in protocol_texts(protocol)})
    found = {where: why for where, why in found.items() if why}
    assert not found, "texts an artist reads, with words that are not theirs:\n" + report(found)


def test_every_widget_and_action_of_a_real_window(bare_window):
    window = bare_window
    window.settings_panel.set_frame_count(24)  # the dilation note shows for a short plate
    found = {}
    for where, text, tooltip in window_texts(window):
        why = tells(text) + (layout_tells(text) if tooltip else [])
        if why:
            found[f"{where}: {text!r}"] = why
    assert not found, report(found)


@pytest.mark.parametrize("kind", sorted(protocol.ERROR_KINDS))
def test_engine_errors_are_worded_by_their_kind(kind):
    text = error_text(kind, "something went wrong")
    assert text.startswith(protocol.ERROR_KINDS[kind])
    assert not tells(text), text


def test_every_engine_error_reads_without_flags_commands_or_class_names():
    templates = engine_error_templates()
    assert len(templates) > 200  # the walk found the engine's errors
    templates.append(("WeightsError", _missing_weights_message("org/model", "not cached"), "-"))
    found = {}
    for cls, message, where in templates:
        kind = cls if cls in protocol.ERROR_KINDS else "ConfigError"
        why = hard_tells(error_text(kind, message))
        if why:
            found[f"{where}: {error_text(kind, message)!r}"] = why
    assert not found, report(found)


def test_missing_weights_name_the_panels_setting_not_a_download_tool():
    text = error_text("WeightsError", _missing_weights_message("org/model", "not cached"))
    assert "Settings > Checkpoint" in text
    for tool in ("hf download", "HF_HOME", "--checkpoint", "selftest"):
        assert tool not in text


def test_a_flag_becomes_the_panels_control():
    assert (
        in_panel_words("pass `--res 1024` or less") == "set Settings > Resolution to 1024 or less"
    )
    assert "Settings > Device" in in_panel_words("`--device` must be auto; got 'x'")


def test_the_tells_catch_what_the_issue_found():
    """The tells themselves: each word the issue quoted is caught."""
    quoted = [
        "--checkpoint", "hf download x", "set HF_HOME", "--upsample edge", "predicting snippets",
        "capped for this plate", "run id 0fafc868", "CPUs with AVX512-BF16 or AMX",
        "RollingDepth (ConfigError): x", "affine-invariant", "`check`",
    ]  # fmt: skip
    for text in quoted:
        assert tells(text), text
    assert set(TELLS) >= set(HARD_TELLS)


def test_each_method_word_is_explained_where_it_first_appears(bare_window):
    window = bare_window
    g = protocol.GLOSSARY
    assert g["dilation"] in window.settings_panel.dilations_edit.toolTip()
    assert g["holdout"] in window.holdout_action.toolTip()
    assert g["anchors"] in window.anchors_panel.load_button.toolTip()
    window.scrubber.set_frames(list(range(1001, 1025)), None)
    window.scrubber.set_cuts([])
    assert g["shot"] in window.scrubber.cuts_label.toolTip()
    window.scrubber.set_cuts([10])
    assert g["shot"] in window.scrubber.cuts_label.toolTip()


def test_a_one_frame_plate_says_why_not_that_it_is_unreadable(bare_window, tmp_path):
    import numpy as np
    import OpenImageIO as oiio

    path = tmp_path / "still.1001.png"
    image = oiio.ImageOutput.create(str(path))
    image.open(str(path), oiio.ImageSpec(64, 48, 3, "uint8"))
    image.write_image(np.zeros((48, 64, 3), np.uint8))
    image.close()
    assert not bare_window.open_plate(str(path))
    box = bare_window.error_box
    assert "at least 2 frames" in box.text() and "not a readable" not in box.text()
    assert not box.detailedText() or box.detailedText() != box.text()
