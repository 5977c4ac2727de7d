"""The export dialog: file pattern, frame range, precision, channels, depth convention."""

from __future__ import annotations

import re
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from rollingdepth_core import protocol
from rollingdepth_core.config import OutputConfig
from rollingdepth_core.errors import ConfigError
from rollingdepth_core.output import expand_pattern
from rollingdepth_core.plate import IMAGE_EXTENSIONS, PlateInfo

from .settings_panel import distance_spin

DEFAULT_PATTERN_NAME = "depth.####.exr"
# A frame number or token at the end of a sequence's name, with its separator.
_SEQUENCE_FRAME = re.compile(r"[._-]?(?:#+|@+|%0?\d*d|\d+)$")
PRECISIONS = {"float (32-bit)": False, "half (16-bit)": True}
UPSAMPLE_TIP = (
    "How the depth reaches the plate's resolution: edge (guided by the plate, sharp at clean "
    "edges) or bilinear (smooth)"
)


class ExportDialog(QDialog):
    """Collects export settings; the export itself runs in the panel's worker."""

    export_requested = Signal(str, object, object, bool)  # pattern, OutputConfig, range, conf
    error = Signal(str, str)  # title, message

    def __init__(
        self,
        info: PlateInfo,
        output: OutputConfig,
        pattern: str = "",
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export depth EXRs")
        self.setMinimumWidth(520)
        first, last = info.frame_numbers[0], info.frame_numbers[-1]
        self.pattern_edit = QLineEdit(pattern or default_export_pattern(info.source), self)
        self.pattern_edit.setToolTip("One file per frame; #### becomes the plate's frame number")
        self.browse_button = QToolButton(self)
        self.browse_button.setText("…")
        self.browse_button.clicked.connect(self._browse)
        self.first_spin = _frame_spin(self, first, last, first)
        self.last_spin = _frame_spin(self, first, last, last)
        self.precision_box = QComboBox(self)
        self.precision_box.addItems(list(PRECISIONS))
        self.precision_box.setCurrentIndex(1 if output.half else 0)
        self.channel_edit = QLineEdit(output.channel, self)
        self.channel_edit.setToolTip("Depth channel name, e.g. Z or depth.Z")
        self.confidence_check = QCheckBox("add a confidence channel (0..1)", self)
        self.confidence_check.setToolTip(
            "How much the depth estimates agree at each pixel once lined up (no model run)"
        )
        self.depth_mode_box = QComboBox(self)
        for mode, spec in protocol.DEPTH_MODES.items():
            self.depth_mode_box.addItem(mode)
            self.depth_mode_box.setItemData(
                self.depth_mode_box.count() - 1, spec["description"], Qt.ItemDataRole.ToolTipRole
            )
        self.depth_mode_box.setCurrentText(output.depth_mode)
        self.near_spin = distance_spin(self, value=output.near)
        self.far_spin = distance_spin(self, value=output.far)
        self.restore_check = QCheckBox("at the plate's resolution", self)
        self.restore_check.setChecked(output.restore_res)
        self.upsample_box = QComboBox(self)
        for method in protocol.UPSAMPLE_METHODS:
            self.upsample_box.addItem(method)
        self.upsample_box.setCurrentText(output.upsample)
        self.upsample_box.setToolTip(UPSAMPLE_TIP)
        self.restore_check.toggled.connect(self.upsample_box.setEnabled)
        self.upsample_box.setEnabled(output.restore_res)
        # Hidden until an export starts: an empty bar reads as a text field.
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setFormat("%v / %m frames")
        self.progress_bar.hide()
        self.status_label = QLabel("", self)
        self.status_label.setWordWrap(True)
        self.export_button = QPushButton("Export", self)
        self.export_button.setDefault(True)
        self.export_button.clicked.connect(self.request_export)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.addButton(self.export_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)

        pattern_row = QHBoxLayout()
        pattern_row.addWidget(self.pattern_edit, 1)
        pattern_row.addWidget(self.browse_button)
        range_row = QHBoxLayout()
        range_row.addWidget(self.first_spin)
        range_row.addWidget(QLabel("to", self))
        range_row.addWidget(self.last_spin)
        range_row.addStretch(1)
        form = QFormLayout()
        form.addRow("Files", pattern_row)
        form.addRow("Frames", range_row)
        form.addRow("Precision", self.precision_box)
        form.addRow("Channel", self.channel_edit)
        form.addRow("", self.confidence_check)
        form.addRow("Depth convention", self.depth_mode_box)
        form.addRow("Near", self.near_spin)
        form.addRow("Far", self.far_spin)
        size_row = QHBoxLayout()
        size_row.addWidget(self.restore_check)
        size_row.addWidget(QLabel("upsampling", self))
        size_row.addWidget(self.upsample_box)
        size_row.addStretch(1)
        form.addRow("Size", size_row)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.progress_bar)
        layout.addWidget(self.status_label)
        layout.addWidget(buttons)
        self.depth_mode_box.currentTextChanged.connect(self._update_near_far)
        self._update_near_far()

    # ---------------------------------------------------------------- values
    @property
    def pattern(self) -> str:
        return self.pattern_edit.text().strip()

    def output_config(self) -> OutputConfig:
        output = OutputConfig(
            depth_mode=self.depth_mode_box.currentText(),
            near=self.near_spin.value(),
            far=self.far_spin.value(),
            half=PRECISIONS[self.precision_box.currentText()],
            channel=self.channel_edit.text().strip(),
            restore_res=self.restore_check.isChecked(),
            upsample=self.upsample_box.currentText(),
        )
        output.check()
        return output

    def frame_range(self) -> tuple[int, int]:
        first, last = self.first_spin.value(), self.last_spin.value()
        if first > last:
            raise ConfigError(f"the first frame {first} is after the last frame {last}")
        return first, last

    def request_export(self) -> None:
        """Validate and ask for the export; problems are reported, nothing is guessed."""
        try:
            expand_pattern(self.pattern, self.first_spin.value())
            output = self.output_config()
            frame_range = self.frame_range()
        except ConfigError as exc:
            self.error.emit("Cannot export", str(exc))
            return
        self.set_busy(True)
        self.progress_bar.setRange(0, 0)  # busy until the first frame is written
        self.progress_bar.show()
        self.status_label.setText("exporting…")
        self.export_requested.emit(
            self.pattern, output, frame_range, self.confidence_check.isChecked()
        )

    # ---------------------------------------------------------------- job feedback
    def set_busy(self, busy: bool) -> None:
        self.export_button.setEnabled(not busy)

    def set_progress(self, done: int, total: int) -> None:
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(done)
        self.status_label.setText(f"writing {done}/{total}")

    def export_done(self, paths: list) -> None:
        self.set_busy(False)
        if paths:
            self.status_label.setText(f"wrote {len(paths)} files to {Path(paths[0]).parent}")

    def export_stopped(self, reason: str) -> None:
        self.set_busy(False)
        self.status_label.setText(reason)

    # ---------------------------------------------------------------- internals
    def _update_near_far(self) -> None:
        enabled = self.depth_mode_box.currentText() == "depth"
        self.near_spin.setEnabled(enabled)
        self.far_spin.setEnabled(enabled)

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export to", self.pattern, "OpenEXR sequence (*.exr)"
        )
        if path:
            self.pattern_edit.setText(with_frame_token(path))


def default_export_pattern(source: str) -> str:
    """Where a plate's depth goes unless the user says otherwise: a folder beside the plate,
    named after it (``/shots/sh010/plate.####.exr`` -> ``/shots/sh010/plate_depth/
    depth.####.exr``), so two plates never share one."""
    target = Path(source)
    if target.is_dir():
        return str(target.parent / f"{target.name}_depth" / DEFAULT_PATTERN_NAME)
    name = target.stem if target.suffix else target.name
    if target.suffix.lower() in IMAGE_EXTENSIONS:
        # a sequence's pattern or one of its files: its name without the frame number
        name = _SEQUENCE_FRAME.sub("", name) or name
    return str(target.parent / f"{name}_depth" / DEFAULT_PATTERN_NAME)


def with_frame_token(path: str) -> str:
    """A picked file name without a frame token gets ``.####`` before its extension."""
    target = Path(path)
    if "#" in target.name or "%" in target.name:
        return path
    stem = target.stem if target.suffix.lower() == ".exr" else target.name
    return str(target.with_name(f"{stem}.####.exr"))


def _frame_spin(parent: QWidget, low: int, high: int, value: int) -> QSpinBox:
    spin = QSpinBox(parent)
    spin.setRange(low, high)
    spin.setValue(value)
    return spin
