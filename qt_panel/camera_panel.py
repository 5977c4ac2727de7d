"""The shot's camera: a camera file (USD or .chan) and which passes an export carries."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QToolButton,
    QWidget,
)

from rollingdepth_core.cameras import CameraRequest

CAMERA_FILTER = "Cameras (*.usd *.usda *.usdc *.usdz *.chan);;All files (*)"
FILE_TIP = (
    "The shot's camera, frame by frame: a USD stage with a camera, or a Nuke/Houdini .chan "
    "file. With it, the view shows position (P) and normals (N), and exports carry them."
)


class CameraPanel(QWidget):
    """Builds the same camera request a command-line run builds from its camera file."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.file_edit = QLineEdit(self)
        self.file_edit.setPlaceholderText("no camera: depth only")
        self.file_edit.setToolTip(FILE_TIP)
        self.file_edit.editingFinished.connect(self.changed)
        self.browse_button = QToolButton(self)
        self.browse_button.setText("…")
        self.browse_button.clicked.connect(self._browse)
        self.position_check = QCheckBox("position (P)", self)
        self.normals_check = QCheckBox("normals (N)", self)
        for check in (self.position_check, self.normals_check):
            check.setChecked(True)
            check.setToolTip("Exported next to the depth, as Nuke and Blender read them")
            check.toggled.connect(self.changed)
        row = QHBoxLayout()
        row.addWidget(self.file_edit, 1)
        row.addWidget(self.browse_button)
        passes = QHBoxLayout()
        passes.addWidget(self.position_check)
        passes.addWidget(self.normals_check)
        passes.addStretch(1)
        form = QFormLayout(self)
        form.addRow("Camera file", row)
        form.addRow("Export", passes)

    def set_file(self, path: str) -> None:
        self.file_edit.setText(path)
        self.changed.emit()

    def camera_request(self) -> CameraRequest | None:
        """The camera as ``--camera FILE`` gives it, or None without a file."""
        path = self.file_edit.text().strip()
        return CameraRequest(file=path) if path else None

    def passes(self) -> tuple[str, ...]:
        """What an export's frames carry with this camera (``--passes``)."""
        chosen = (("P", self.position_check), ("N", self.normals_check))
        return ("Z", *(name for name, check in chosen if check.isChecked()))

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Camera file", "", CAMERA_FILTER)
        if path:
            self.set_file(path)
