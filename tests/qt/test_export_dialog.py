from fractions import Fraction

import pytest

from qt_panel.export_dialog import ExportDialog, with_frame_token
from rollingdepth_core.colorspace import resolve_color
from rollingdepth_core.config import OutputConfig
from rollingdepth_core.plate import PlateInfo

INFO = PlateInfo(
    "/shots/sh010/plate.####.exr",
    "sequence",
    tuple(range(1001, 1013)),
    96,
    64,
    Fraction(24),
    (),
    resolve_color("linear", ()),
    "openexr",
)


@pytest.fixture
def dialog(qtbot):
    widget = ExportDialog(INFO, OutputConfig(depth_mode="depth", near=2, far=40))
    qtbot.addWidget(widget)
    return widget


def test_defaults_come_from_the_plate_and_the_output_settings(dialog):
    assert dialog.pattern == "/shots/sh010/plate_depth/depth.####.exr"
    assert dialog.frame_range() == (1001, 1012)
    output = dialog.output_config()
    assert (output.depth_mode, output.near, output.far, output.half) == ("depth", 2, 40, False)


def test_export_request_carries_every_choice(qtbot, dialog, tmp_path):
    dialog.pattern_edit.setText(str(tmp_path / "z_####.exr"))
    dialog.first_spin.setValue(1003)
    dialog.last_spin.setValue(1005)
    dialog.precision_box.setCurrentText("half (16-bit)")
    dialog.channel_edit.setText("depth.Z")
    dialog.confidence_check.setChecked(True)
    dialog.depth_mode_box.setCurrentText("normalized")
    with qtbot.waitSignal(dialog.export_requested) as blocker:
        dialog.export_button.click()
    pattern, output, frame_range, confidence = blocker.args
    assert pattern == str(tmp_path / "z_####.exr") and frame_range == (1003, 1005)
    assert output == OutputConfig(
        depth_mode="normalized", near=2, far=40, half=True, channel="depth.Z"
    )
    assert confidence is True
    assert not dialog.export_button.isEnabled()
    dialog.set_progress(2, 3)
    assert dialog.status_label.text() == "writing 2/3"
    dialog.export_done([tmp_path / "z_1003.exr"])
    assert dialog.export_button.isEnabled() and "wrote 1 files" in dialog.status_label.text()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pattern_edit.setText("/tmp/depth.exr"), "frame token"),
        (lambda d: d.channel_edit.setText("my depth"), "channel"),
        (lambda d: (d.first_spin.setValue(1010), d.last_spin.setValue(1002)), "after"),
    ],
)
def test_bad_choices_report_an_error_and_export_nothing(qtbot, dialog, edit, message):
    edit(dialog)
    requested = []
    dialog.export_requested.connect(lambda *a: requested.append(a))
    with qtbot.waitSignal(dialog.error) as blocker:
        dialog.export_button.click()
    assert message in blocker.args[1]
    assert requested == [] and dialog.export_button.isEnabled()


def test_with_frame_token():
    assert with_frame_token("/out/depth.exr") == "/out/depth.####.exr"
    assert with_frame_token("/out/depth") == "/out/depth.####.exr"
    assert with_frame_token("/out/depth.%04d.exr") == "/out/depth.%04d.exr"


def test_no_markup_shows_and_no_empty_bar_before_an_export(qtbot, dialog, tmp_path):
    from PySide6.QtWidgets import QAbstractButton, QLabel, QProgressBar, QWidget

    dialog.show()
    qtbot.waitExposed(dialog)
    texts = [w.text() for w in dialog.findChildren(QLabel) + dialog.findChildren(QAbstractButton)]
    texts += [w.toolTip() for w in dialog.findChildren(QWidget)]
    assert any("confidence channel" in t for t in texts)
    assert not [t for t in texts if "`" in t]
    # an idle, empty progress bar looks like a text field: it shows only while exporting
    bar = dialog.findChild(QProgressBar)
    assert not bar.isVisible()
    dialog.pattern_edit.setText(str(tmp_path / "z_####.exr"))
    with qtbot.waitSignal(dialog.export_requested):
        dialog.export_button.click()
    assert bar.isVisible()
    dialog.set_progress(2, 3)
    assert bar.text() == "2 / 3 frames"
