"""Anchors: points of known depth that put the depth in scene units.

Load a CSV or JSON anchors file (``rollingdepth_core.anchors``); after a run the fit
``1/Z = a d + b`` is computed in the background and every anchor of the current frame is
listed with its predicted depth and residual, coloured as its marker on the frame is.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from rollingdepth_core import protocol
from rollingdepth_core.anchors import AnchorFit, Anchors

from .viewer import GOOD_RESIDUAL, MARKER_COLORS

ANCHOR_MODES = {
    "global": "one scale and shift for the whole clip",
    "smooth": "a scale and shift per frame that follow slow drift",
}
COLUMNS = ("track", "x", "y", "depth", "predicted", "residual", "used")
ANCHOR_FILTER = "Anchors (*.csv *.json);;All files (*)"
EXPORT_NOTE = (
    "Exports in the depth and inverse conventions use this fit: depth in the anchors' scene "
    "units; normalized exports stay 0..1."
)


def anchor_kind(record: dict) -> str:
    """The marker colour's key for one anchor record (a file point, or a fitted one)."""
    if "used" not in record:
        return "point"
    if not record["used"]:
        return "rejected"
    residual = record.get("residual")
    return "good" if residual is not None and abs(residual) <= GOOD_RESIDUAL else "fair"


def anchor_text(record: dict, units: str) -> str:
    """One line for an anchor's hover readout."""
    name = record.get("track") or f"row {record['row']}"
    text = f"anchor {name}: {record['depth']:.4g} {units}"
    if "used" in record:
        predicted, residual = record.get("predicted"), record.get("residual")
        if predicted is not None and residual is not None:
            text += f", predicted {predicted:.4g} ({100 * residual:+.1f} %)"
        text += "" if record["used"] else ", rejected by the fit"
    return text


class AnchorsPanel(QWidget):
    """The anchors file, the fit's summary and the current frame's anchors."""

    load_requested = Signal(str)  # path
    clear_requested = Signal()
    mode_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.units = "scene units"
        self.load_button = QPushButton("Load anchors…", self)
        self.load_button.setToolTip(
            f"{protocol.GLOSSARY['anchors']}. A CSV (frame,x,y,depth[,weight,track]) or JSON "
            "file of them, e.g. from a survey or a camera solve"
        )
        self.load_button.clicked.connect(self._browse)
        self.clear_button = QPushButton("Clear", self)
        self.clear_button.clicked.connect(self.clear_requested)
        self.mode_box = QComboBox(self)
        for mode, tip in ANCHOR_MODES.items():
            self.mode_box.addItem(mode)
            self.mode_box.setItemData(self.mode_box.count() - 1, tip)
        self.mode_box.setToolTip("\n".join(f"{m}: {t}" for m, t in ANCHOR_MODES.items()))
        self.mode_box.currentTextChanged.connect(self.mode_changed)
        self.file_label = QLabel("no anchors", self)
        self.summary_label = QLabel("", self)
        self.summary_label.setWordWrap(True)
        self.summary_label.setToolTip(EXPORT_NOTE)
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)

        row = QHBoxLayout()
        row.addWidget(self.load_button)
        row.addWidget(self.clear_button)
        row.addWidget(QLabel("fit", self))
        row.addWidget(self.mode_box)
        row.addWidget(self.file_label, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        layout.addLayout(row)
        layout.addWidget(self.summary_label)
        layout.addWidget(self.table, 1)
        self.set_anchors(None)

    def set_anchors(self, anchors: Anchors | None) -> None:
        self.clear_button.setEnabled(anchors is not None)
        if anchors is None:
            self.file_label.setText("no anchors")
            self.summary_label.setText("")
            self.set_records([])
            return
        self.units = anchors.units
        frames = len(set(anchors.frame.tolist()))
        self.file_label.setText(
            f"{Path(anchors.source).name}: {len(anchors)} anchors on {frames} frames "
            f"({anchors.units})"
        )
        self.summary_label.setText("run to fit the anchors")

    def set_fitting(self) -> None:
        """A fit is being computed (in the background) for the current depth."""
        self.summary_label.setText("fitting the anchors…")
        self.summary_label.setStyleSheet("")

    def set_fit(self, fit: AnchorFit | None, why: str = "") -> None:
        """The fit's summary, or why there is none (the fit's one-line error)."""
        if fit is not None:
            skipped = fit.n_outside + fit.n_unprocessed
            self.summary_label.setText(
                f"{fit.mode} fit: {fit.n_used} used, {fit.n_rejected} rejected"
                + (f", {skipped} skipped" if skipped else "")
                + f"; residual median {100 * fit.residual_median:.2f} %, "
                f"90th percentile {100 * fit.residual_p90:.2f} %. {EXPORT_NOTE}"
            )
            self.summary_label.setStyleSheet("")
        elif why:
            self.summary_label.setText(f"no fit: {why}")
            self.summary_label.setStyleSheet("color: #d9822b;")
        else:
            self.summary_label.setStyleSheet("")

    def set_records(self, records: list[dict]) -> None:
        """The current frame's anchors (file points or fitted records)."""
        self.table.setRowCount(len(records))
        for i, record in enumerate(records):
            kind = anchor_kind(record)
            predicted, residual = record.get("predicted"), record.get("residual")
            cells = (
                record.get("track") or f"row {record['row']}",
                f"{record['x']:.1f}",
                f"{record['y']:.1f}",
                f"{record['depth']:.4g}",
                "" if predicted is None else f"{predicted:.4g}",
                "" if residual is None else f"{100 * residual:+.2f} %",
                "" if "used" not in record else ("yes" if record["used"] else "rejected"),
            )
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(anchor_text(record, self.units))
                if j in (0, 5, 6):  # the name and the verdict in the marker's colour
                    item.setForeground(MARKER_COLORS[kind])
                self.table.setItem(i, j, item)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load anchors", "", ANCHOR_FILTER)
        if path:
            self.load_requested.emit(path)
