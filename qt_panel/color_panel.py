"""Colour management: the plate's input colour space and the view the model looks through.

The choices are an OCIO `ColorRequest`; the plate is reopened through it, so the viewer shows
exactly the display RGB the model is given.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QToolButton,
    QWidget,
)

from rollingdepth_core.colorspace import (
    AUTO,
    ColorRequest,
    PlateColor,
    active_config,
    describe_config,
    load_config,
)
from rollingdepth_core.errors import RollingDepthError

DEFAULT_VIEW = "default"
# Shortcuts the engine takes besides the config's own names.
SPACE_SHORTCUTS = (AUTO, "srgb", "linear")
SPACE_TIP = (
    "How the plate's pixels are encoded. auto decides from the plate's metadata; srgb and "
    "linear are shortcuts; any colour space (or alias) of the OCIO config works. Changing it "
    "changes what the model sees: the depth made so far is dropped and Run estimates it again."
)
VIEW_TIP = "The view of the sRGB display the plate goes through (default: the config's)"


class ColorPanel(QGroupBox):
    """Input colour space and view; emits a `ColorRequest` when either changes."""

    color_changed = Signal(object)  # ColorRequest

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Colour", parent)
        self._config = active_config(None)
        self._request = ColorRequest()
        self.config_box: QMessageBox | None = None
        self.space_box = QComboBox(self)
        self.space_box.setEditable(True)
        self.space_box.setToolTip(SPACE_TIP)
        self.space_box.addItems(list(SPACE_SHORTCUTS) + self._spaces())
        self.view_box = QComboBox(self)
        self.view_box.setToolTip(VIEW_TIP)
        self.view_box.addItem(DEFAULT_VIEW)
        self.config_button = QToolButton(self)
        self.config_button.setText("…")
        self.config_button.setToolTip(f"The OCIO config ({self._config}): spaces, displays, views")
        self.config_button.clicked.connect(self.show_config)
        self.summary_label = QLabel("no plate", self)
        self.summary_label.setWordWrap(True)
        self.summary_label.setToolTip("What the plate reader assumed, and why")
        self.note_label = QLabel("", self)
        self.note_label.setWordWrap(True)
        self.note_label.setStyleSheet("color: #d9822b;")
        self.note_label.hide()

        space_row = QHBoxLayout()
        space_row.setSpacing(6)
        space_row.addWidget(self.space_box, 1)
        space_row.addWidget(self.config_button)
        form = QFormLayout(self)
        # tight rows, as the settings panel's own groups (they fit a 1280x800 screen)
        form.setVerticalSpacing(3)
        form.setContentsMargins(8, 4, 8, 4)
        form.addRow("Input space", space_row)
        form.addRow("View", self.view_box)
        form.addRow(self.summary_label)
        form.addRow(self.note_label)

        self.space_box.activated.connect(self._edited)
        self.space_box.lineEdit().editingFinished.connect(self._edited)
        self.view_box.activated.connect(self._edited)

    @property
    def request(self) -> ColorRequest:
        view = self.view_box.currentText()
        return ColorRequest(
            space=self.space_box.currentText().strip() or AUTO,
            view=None if view == DEFAULT_VIEW else view,
        )

    def set_request(self, space: str, view: str | None = None) -> None:
        """Pick a space and view (tests, scripts) and apply them as a user would."""
        self.space_box.setCurrentText(space)
        if view is not None and self.view_box.findText(view) < 0:
            self.view_box.addItem(view)
        self.view_box.setCurrentText(view or DEFAULT_VIEW)
        self._edited()

    def set_color(self, color: PlateColor | None, note: str = "") -> None:
        """Show what the open plate is read as (``color.summary``) and ``note`` (what the
        change did to the session); the views are those of the display it goes through."""
        self.summary_label.setText("no plate" if color is None else color.summary)
        self.note_label.setText(note)
        self.note_label.setVisible(bool(note))
        if color is not None:
            self._fill_views(color.display)

    def revert(self, request: ColorRequest) -> None:
        """Show ``request`` again (the one the plate is read with) after a refused change."""
        self._request = request
        self.space_box.setCurrentText(request.space)
        self.view_box.setCurrentText(request.view or DEFAULT_VIEW)

    def show_config(self) -> QMessageBox:
        try:
            text = describe_config(self._config)
        except RollingDepthError as exc:
            text = str(exc)
        box = QMessageBox(QMessageBox.Icon.Information, "OCIO config", self._config)
        box.setParent(self.window(), box.windowFlags())
        box.setDetailedText(text)
        self.config_box = box
        box.open()
        return box

    def _spaces(self) -> list[str]:
        try:
            return [space.getName() for space in load_config(self._config).getColorSpaces()]
        except RollingDepthError:
            return []  # the note under the field shows the error once a plate opens

    def _fill_views(self, display: str) -> None:
        try:
            views = list(load_config(self._config).getViews(display))
        except RollingDepthError:
            views = []
        current = self.view_box.currentText()
        self.view_box.blockSignals(True)
        self.view_box.clear()
        self.view_box.addItems([DEFAULT_VIEW, *views])
        if self.view_box.findText(current) < 0:
            self.view_box.addItem(current)
        self.view_box.setCurrentText(current)
        self.view_box.blockSignals(False)

    def _edited(self, *_args) -> None:
        request = self.request
        if request != self._request:
            self._request = request
            self.color_changed.emit(request)
