"""The main window: builds the widgets and wires their signals to the controller."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import QSettings, QSize, Qt
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from rollingdepth_core import protocol
from rollingdepth_core.errors import ConfigError
from rollingdepth_core.plate import IMAGE_EXTENSIONS, PlateInfo
from rollingdepth_core.preview import COLORMAPS

from .anchors_panel import AnchorsPanel, anchor_kind, anchor_text
from .camera_panel import CameraPanel
from .controller import PanelController, RunRequest
from .diagnostics_plot import DiagnosticsPlot
from .export_dialog import ExportDialog
from .messages import in_panel_words
from .scrubber import FrameScrubber
from .settings_panel import SettingsPanel
from .viewer import GEOMETRY_CAPTIONS, VIEW_MODE_LABELS, VIEW_MODES, DepthViewer

log = logging.getLogger(__name__)
VIDEO_FILTER = (
    "Plates (*.mp4 *.mov *.mkv *.avi *.mxf *.webm "
    + " ".join(f"*{ext}" for ext in IMAGE_EXTENSIONS)
    + ");;All files (*)"
)
MATTE_FILTER = (
    "Mattes ("
    + " ".join(f"*{ext}" for ext in IMAGE_EXTENSIONS)
    + " *.mp4 *.mov *.mkv *.avi *.mxf *.webm);;All files (*)"
)
# The size a first window opens at, on a screen with room for it: the settings show without
# scrolling and the viewer keeps most of the width. A smaller screen gets most of its area.
PREFERRED_SIZE = QSize(1600, 1000)
SCREEN_SHARE = 0.92
DIAGNOSTICS_SHARE = 0.36  # of the window's height, at first
# The depth's resolution in the viewer: the model's, or upsampled to the plate's for the
# current frame (computed in the background; the wipe at 1:1 shows the edges).
DEPTH_RESOLUTIONS = {
    "model res": None,
    "plate res, edge": "edge",
    "plate res, bilinear": "bilinear",
}


def default_size(available: QSize) -> QSize:
    """The first window's size on a screen whose free area is ``available``."""
    return QSize(
        min(PREFERRED_SIZE.width(), int(available.width() * SCREEN_SHARE)),
        min(PREFERRED_SIZE.height(), int(available.height() * SCREEN_SHARE)),
    )


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("RollingDepth panel")
        self.setAcceptDrops(True)
        self.settings = settings if settings is not None else QSettings()
        self.controller = PanelController(self)
        self.viewer = DepthViewer(self)
        self.scrubber = FrameScrubber(self)
        self.settings_panel = SettingsPanel(self)
        self.diagnostics = DiagnosticsPlot(self)
        self.anchors_panel = AnchorsPanel(self)
        self.camera_panel = CameraPanel(self)
        self.resolution_box = QComboBox(self)
        self.resolution_box.addItems(list(DEPTH_RESOLUTIONS))
        self.resolution_box.setToolTip(
            "Depth at the model's resolution, or upsampled to the plate's for the frame shown "
            "(edge: guided by the plate, as exports at the plate's size are; bilinear: smooth). "
            "Wipe at 1:1 to compare with the plate."
        )
        self.cursor_label = QLabel("", self)
        self.colormap_box = QComboBox(self)
        self.colormap_box.addItems(list(COLORMAPS))
        self.colormap_box.setToolTip("Colour map of the depth view")
        self.zoom_label = QLabel("", self)
        self.zoom_label.setToolTip("Zoom: screen pixels per plate pixel (fit: the whole image)")
        self.zoom_label.setMinimumWidth(
            self.zoom_label.fontMetrics().horizontalAdvance(" 6400 % (fit) ")
        )
        self.matte_label = QLabel(" holdout: none ", self)
        self.matte_label.setToolTip(
            "The holdout matte the depth is lined up with (File > Holdout matte…). "
            f"{protocol.GLOSSARY['holdout']}"
        )
        self.export_dialog: ExportDialog | None = None
        # The export pattern last used for the open plate; a new plate starts from its own
        # folder (another plate's folder would mix two plates' frames).
        self.export_pattern: str | None = None
        # Whether the user wants the holdout overlay, kept while no matte is loaded (the
        # Matte button is off and disabled then, so it never looks pressed over nothing).
        self._matte_wanted = True
        self._depth_shown = False  # the open plate's first depth was put in view
        self.error_box: QMessageBox | None = None
        # Closing while an export writes asks first (kept in `close_box` for tests); once the
        # user said stop, the close goes through.
        self.close_box: QMessageBox | None = None
        self._close_confirmed = False

        self._build_layout()
        self._build_actions()
        self._wire()
        self.restore_state()

    # ---------------------------------------------------------------- layout
    def _build_layout(self) -> None:
        central = QWidget(self)
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.viewer, 1)
        layout.addWidget(self.scrubber)
        self.setCentralWidget(central)

        # The settings take the whole right column; the diagnostics sit under the viewer.
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        self.settings_dock = QDockWidget("Settings", self)
        self.settings_dock.setObjectName("settings_dock")
        self.settings_dock.setWidget(self.settings_panel)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.settings_dock)
        self.camera_dock = QDockWidget("Camera", self)
        self.camera_dock.setObjectName("camera_dock")
        self.camera_dock.setWidget(self.camera_panel)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.camera_dock)
        # a tab beside Settings: stacked under it, the settings no longer fit a 1280x800 screen
        self.tabifyDockWidget(self.settings_dock, self.camera_dock)
        self.diagnostics_dock = QDockWidget("Alignment diagnostics", self)
        self.diagnostics_dock.setObjectName("diagnostics_dock")
        self.diagnostics_dock.setWidget(self.diagnostics)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.diagnostics_dock)
        self.anchors_dock = QDockWidget("Anchors", self)
        self.anchors_dock.setObjectName("anchors_dock")
        self.anchors_dock.setWidget(self.anchors_panel)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.anchors_dock)
        self.tabifyDockWidget(self.diagnostics_dock, self.anchors_dock)
        self.diagnostics_dock.raise_()
        self.settings_dock.raise_()
        self.statusBar().addPermanentWidget(self.cursor_label)

    def _build_actions(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self.open_action = file_menu.addAction("&Open plate…", QKeySequence.StandardKey.Open)
        self.export_action = file_menu.addAction("&Export EXRs…", QKeySequence("Ctrl+E"))
        self.export_action.setEnabled(False)
        file_menu.addSeparator()
        self.holdout_action = file_menu.addAction("&Holdout matte…")
        self.holdout_action.setToolTip(
            "A matte per frame (an image of a sequence, or a movie). "
            f"{protocol.GLOSSARY['holdout']}. Lines the depth up again without running the model."
        )
        self.clear_holdout_action = file_menu.addAction("C&lear matte")
        self.clear_holdout_action.setEnabled(False)
        file_menu.addSeparator()
        self.quit_action = file_menu.addAction("&Quit", QKeySequence.StandardKey.Quit)

        run_menu = self.menuBar().addMenu("&Run")
        self.run_action = run_menu.addAction("&Run", QKeySequence("Ctrl+R"))
        self.cancel_action = run_menu.addAction("&Cancel", QKeySequence("Esc"))

        view_menu = self.menuBar().addMenu("&View")
        toolbar = QToolBar("View", self)
        toolbar.setObjectName("view_toolbar")
        self.addToolBar(toolbar)
        self.mode_group = QActionGroup(self)
        self.mode_actions: dict[str, QAction] = {}
        for number, mode in enumerate(VIEW_MODES, start=1):
            action = QAction(VIEW_MODE_LABELS[mode], self)
            action.setCheckable(True)
            action.setShortcut(QKeySequence(str(number)))
            action.setData(mode)
            self.mode_group.addAction(action)
            toolbar.addAction(action)
            view_menu.addAction(action)
            self.mode_actions[mode] = action
        self.mode_actions[self.viewer.mode].setChecked(True)
        toolbar.addSeparator()
        toolbar.addWidget(QLabel(" colour map ", self))
        toolbar.addWidget(self.colormap_box)
        self.fit_action = toolbar.addAction("Fit")
        self.fit_action.setShortcut(QKeySequence("F"))
        self.fit_action.setToolTip("Fit the image to the view (F, or double-click)")
        self.one_to_one_action = toolbar.addAction("1:1")
        self.one_to_one_action.setShortcut(QKeySequence("Z"))
        self.one_to_one_action.setToolTip("One plate pixel per screen pixel (Z)")
        toolbar.addWidget(self.zoom_label)
        toolbar.addSeparator()
        toolbar.addWidget(QLabel(" depth ", self))
        toolbar.addWidget(self.resolution_box)
        toolbar.addSeparator()
        self.show_matte_action = toolbar.addAction("Matte")
        self.show_matte_action.setCheckable(True)
        self.show_matte_action.setChecked(False)
        self.show_matte_action.setEnabled(False)
        self.show_matte_action.setShortcut(QKeySequence("M"))
        self.show_matte_action.setToolTip("Show the holdout matte over the image, magenta (M)")
        toolbar.addWidget(self.matte_label)
        view_menu.addAction(self.show_matte_action)
        view_menu.addSeparator()
        view_menu.addAction(self.settings_dock.toggleViewAction())
        view_menu.addAction(self.diagnostics_dock.toggleViewAction())
        view_menu.addAction(self.anchors_dock.toggleViewAction())

        self.frame_keys = {
            "Left": lambda: self.scrubber.step(-1),
            "Right": lambda: self.scrubber.step(1),
            ",": lambda: self.scrubber.step(-1),
            ".": lambda: self.scrubber.step(1),
            "Home": self.scrubber.first,
            "End": self.scrubber.last,
            "Space": self.scrubber.toggle_playing,
        }
        for key, slot in self.frame_keys.items():
            QShortcut(QKeySequence(key), self, activated=slot)

    # ---------------------------------------------------------------- wiring
    def _wire(self) -> None:
        c = self.controller
        self.open_action.triggered.connect(self.choose_plate)
        self.export_action.triggered.connect(self.open_export_dialog)
        self.holdout_action.triggered.connect(self.choose_holdout)
        self.clear_holdout_action.triggered.connect(c.clear_holdout)
        self.show_matte_action.triggered.connect(self._matte_toggled)
        c.holdout_changed.connect(self.holdout_changed)
        self.quit_action.triggered.connect(self.close)
        self.run_action.triggered.connect(self.run)
        self.cancel_action.triggered.connect(c.cancel)
        self.mode_group.triggered.connect(lambda action: self.viewer.set_mode(action.data()))
        self.viewer.mode_changed.connect(lambda mode: self.mode_actions[mode].setChecked(True))
        self.viewer.mode_changed.connect(lambda _: self.show_frame(self.scrubber.index))
        self.camera_panel.changed.connect(lambda: self.show_frame(self.scrubber.index))
        self.colormap_box.currentTextChanged.connect(self.viewer.set_colormap)
        self.fit_action.triggered.connect(self.viewer.reset_view)
        self.one_to_one_action.triggered.connect(self.viewer.set_one_to_one)
        self.resolution_box.currentTextChanged.connect(self.set_depth_resolution)
        self.viewer.hovered.connect(self.cursor_label.setText)
        self.viewer.zoom_changed.connect(lambda *_: self.zoom_label.setText(self.viewer.zoom_text))

        self.scrubber.index_changed.connect(self.show_frame)
        self.diagnostics.frame_selected.connect(self.scrubber.set_index)

        self.settings_panel.run_requested.connect(self.run)
        self.settings_panel.cancel_requested.connect(c.cancel)
        self.settings_panel.inference_changed.connect(self.settings_changed)
        self.settings_panel.output_changed.connect(lambda: self.show_frame(self.scrubber.index))

        self.settings_panel.color_panel.color_changed.connect(self.color_requested)
        self.anchors_panel.load_requested.connect(c.load_anchors)
        self.anchors_panel.clear_requested.connect(c.clear_anchors)
        self.anchors_panel.mode_changed.connect(c.set_anchor_mode)

        c.plate_changed.connect(self.plate_changed)
        c.color_changed.connect(self.settings_panel.color_panel.set_color)
        c.cuts_changed.connect(self.cuts_changed)
        c.anchors_changed.connect(self.anchors_panel.set_anchors)
        c.anchors_changed.connect(lambda _a: self.show_frame(self.scrubber.index))
        c.anchor_fit_changed.connect(self.anchors_panel.set_fit)
        c.anchor_worker.started.connect(self.anchors_panel.set_fitting)
        c.anchor_fit_changed.connect(lambda *_: self.show_frame(self.scrubber.index))
        c.upsampled.connect(self._upsampled)
        c.result_changed.connect(self.result_changed)
        c.error.connect(self.show_error)
        c.message.connect(self.statusBar().showMessage)
        c.hint_changed.connect(self.settings_panel.set_hint)
        c.estimate_changed.connect(self.settings_panel.set_estimate)
        c.job_started.connect(self.settings_panel.job_started)
        # the last job's outcome ("run cancelled") is not this one's
        c.job_started.connect(lambda _job: self.statusBar().clearMessage())
        c.stopping.connect(self.settings_panel.job_stopping)
        c.job_ended.connect(self.job_ended)
        self.settings_panel.save_defaults_requested.connect(self.save_defaults)
        c.progress.connect(self.job_progress)
        c.busy_changed.connect(self.busy_changed)
        c.export_finished.connect(self._export_finished)
        c.replace_asked.connect(self.ask_replace)
        c.worker.failed.connect(self._export_stopped)
        c.worker.cancelled.connect(self._export_stopped)

    # ---------------------------------------------------------------- slots
    def choose_plate(self) -> None:
        folder = self.settings.value("window/last_folder", "")
        path, _ = QFileDialog.getOpenFileName(self, "Open plate", folder, VIDEO_FILTER)
        if path:
            self.open_plate(path)

    def open_plate(self, path: str) -> bool:
        self.settings.setValue("window/last_folder", str(Path(path).parent))
        return self.controller.open_plate(path)

    def choose_holdout(self) -> None:
        folder = self.settings.value("window/last_folder", "")
        path, _ = QFileDialog.getOpenFileName(
            self, "Holdout matte (one image of the sequence, or a movie)", folder, MATTE_FILTER
        )
        if path:
            self.controller.load_holdout(path)

    def _matte_toggled(self, on: bool) -> None:
        self._matte_wanted = on
        self.show_frame(self.scrubber.index)

    def holdout_changed(self, mattes) -> None:
        self.clear_holdout_action.setEnabled(mattes is not None)
        self.show_matte_action.setEnabled(mattes is not None)
        self.show_matte_action.setChecked(mattes is not None and self._matte_wanted)
        if mattes is None:
            self.matte_label.setText(" holdout: none ")
        else:
            kind = "sequence" if mattes.files is not None else "movie"
            self.matte_label.setText(f" holdout: {Path(mattes.source).name} ({kind}) ")
        self.show_frame(self.scrubber.index)

    def plate_changed(self, info: PlateInfo | None) -> None:
        self.setWindowTitle(
            f"RollingDepth panel: {Path(info.source).name}" if info else "RollingDepth panel"
        )
        self.scrubber.set_frames(
            info.frame_numbers if info else (),
            info.fps if info else None,
            info.timecodes.by_frame if info and info.timecodes else None,
        )
        self.settings_panel.set_frame_count(len(info.frame_numbers) if info else None)
        # what was run, aligned or exported was the previous plate's
        self.settings_panel.reset_progress()
        self.export_pattern = None
        self._depth_shown = False
        self.viewer.reset_view()
        self.show_frame(self.scrubber.index)
        self.settings_changed()

    def color_requested(self, request) -> None:
        if not self.controller.set_color(request):
            self.settings_panel.color_panel.revert(self.controller.color_request)
            return
        self.show_frame(self.scrubber.index)

    def cuts_changed(self, cuts: list[int] | None) -> None:
        self.scrubber.set_cuts(cuts)
        info = self.controller.info
        numbers = info.frame_numbers if info else ()
        self.diagnostics.set_cuts([numbers[p] for p in cuts or ()])
        if numbers and cuts is not None:
            bounds = [0, *cuts, len(numbers)]
            self.settings_panel.set_shot_lengths(
                [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
            )

    def set_depth_resolution(self, label: str) -> None:
        self.controller.set_upsample(DEPTH_RESOLUTIONS[label])
        self.show_frame(self.scrubber.index)

    def _upsampled(self, index: int, method: str) -> None:
        if index == self.scrubber.index and method == self.controller.upsample_method:
            self.show_frame(index)

    def result_changed(self, prediction) -> None:
        info = self.controller.info
        if prediction is not None and not self._depth_shown:
            # a plate's first depth is what its run was for: shown, not left behind the RGB
            # button; a view chosen after it is kept through later runs
            self._depth_shown = True
            if self.viewer.mode == "rgb":
                self.viewer.set_mode("depth")
        self.diagnostics.set_prediction(prediction, info.frame_numbers if info else ())
        self.diagnostics.set_current(self.scrubber.index)
        self.export_action.setEnabled(prediction is not None and not self.controller.worker.busy)
        self.show_frame(self.scrubber.index)

    def show_frame(self, index: int) -> None:
        rgb = self.controller.frame(index)
        if rgb is None and self.controller.plate is not None:
            self.scrubber.set_playing(False)  # one error dialog, not one per frame
        self.viewer.set_rgb(rgb)
        shown = self.show_matte_action.isChecked()
        self.viewer.set_matte(self.controller.matte(index) if shown else None)
        try:
            output = self.settings_panel.output_config()
        except ConfigError as exc:
            self.statusBar().showMessage(str(exc))
            return
        c = self.controller
        plate_res = c.upsampled_depth(index)  # None until computed (in the background)
        depth = c.depth(index, output, plate_res)
        note = ""
        if c.upsample_method is not None and depth is not None:
            note = (
                f"{c.upsample_method} {plate_res.shape[1]}x{plate_res.shape[0]}"
                if plate_res is not None
                else f"model res ({c.upsample_method} upsampling…)"
            )
        if depth is None:
            self.viewer.set_depth(None)
        else:
            legend, title = c.depth_legend(output, index)
            self.viewer.set_depth(
                depth[0], depth[1], output.depth_mode, legend, note, legend_title=title
            )
        if self.viewer.mode in GEOMETRY_CAPTIONS:  # P and N cost a pass over the frame
            values = None if depth is None else depth[1]
            camera = self.camera_panel.camera_request()
            self.viewer.set_geometry(*c.geometry(index, output, values, camera))
        units = c.anchors.units if c.anchors is not None else ""
        self.viewer.set_scene_depth(c.scene_depth(index), units)
        records = c.frame_anchors(index)
        self.viewer.set_markers(
            [
                {"x": r["x"], "y": r["y"], "kind": anchor_kind(r), "text": anchor_text(r, units)}
                for r in records
            ]
        )
        self.anchors_panel.set_records(records)
        self.diagnostics.set_current(index)

    def request(self) -> RunRequest:
        panel = self.settings_panel
        return RunRequest(
            panel.inference_config(), panel.checkpoint, panel.device, panel.base_preset
        )

    def run(self) -> None:
        try:
            request = self.request()
        except ConfigError as exc:
            self.show_error("Settings not valid", str(exc))
            return
        self.settings_panel.save_model(self.settings)
        self.controller.run(request)

    def settings_changed(self) -> None:
        try:
            request = self.request()
        except ConfigError as exc:
            self.settings_panel.set_hint(str(exc), warning=True)
            return
        self.controller.settings_changed(request)

    def busy_changed(self, busy: bool) -> None:
        self.settings_panel.set_busy(busy)
        self.export_action.setEnabled(not busy and self.controller.result is not None)

    def job_ended(self, job: str, outcome: str, text: str) -> None:
        # an export's end too: its progress must not stay on "export: starting"
        self.settings_panel.job_ended(outcome, text)

    def save_defaults(self) -> None:
        self.settings_panel.save_defaults(self.settings)
        self.settings.sync()
        self.statusBar().showMessage("new windows start with these settings", 5000)

    def job_progress(self, job: str, stage: str, done: int, total: int) -> None:
        remaining = self.controller.remaining(stage, done, total) if job == "run" else None
        self.settings_panel.set_progress(stage, done, total, remaining)
        if job == "export" and self.export_dialog is not None and stage == "write":
            self.export_dialog.set_progress(done, total)

    def open_export_dialog(self) -> ExportDialog | None:
        info = self.controller.info
        if info is None or self.controller.result is None:
            self.show_error("Nothing to export", "Open a plate and run it first.")
            return None
        try:
            output = self.settings_panel.output_config()
        except ConfigError as exc:
            self.show_error("Output settings not valid", str(exc))
            return None
        dialog = ExportDialog(info, output, self.export_pattern or "", self)
        dialog.export_requested.connect(self._export_requested)
        dialog.error.connect(lambda title, message: self.show_error(title, message))
        self.export_dialog = dialog
        dialog.open()
        return dialog

    def _export_requested(self, pattern, output, frame_range, confidence) -> None:
        self.export_pattern = pattern
        camera = self.camera_panel.camera_request()
        if camera is not None:  # the passes as `--camera FILE --passes` give them
            output = replace(output, passes=self.camera_panel.passes())
        self.controller.export(pattern, output, frame_range, confidence, camera)

    def ask_replace(self, holds: str, export: tuple) -> QMessageBox:
        """The export folder holds another run's frames: ask before replacing them (the new
        sequence then takes the folder's whole; nothing is mixed). Non-blocking; the box is
        kept in `replace_box` for tests."""
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Replace the frames in this folder?",
            f"{holds}.\n\nReplace that sequence with this export? It is swapped in whole once "
            "every frame is written.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
            self,
        )
        box.button(QMessageBox.StandardButton.Yes).setText("Replace")
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)

        def answered(button) -> None:
            if box.standardButton(button) == QMessageBox.StandardButton.Yes:
                self.controller.export(*export, overwrite=True)
            elif self.export_dialog is not None:
                self.export_dialog.export_stopped("not exported: the folder was left as it was")

        box.buttonClicked.connect(answered)
        self.replace_box = box
        box.open()
        return box

    def _export_finished(self, paths: list) -> None:
        if self.export_dialog is not None:
            self.export_dialog.export_done(paths)

    def _export_stopped(self, job: str, *_message) -> None:
        if job == "export" and self.export_dialog is not None:
            self.export_dialog.export_stopped("export stopped")

    def show_error(self, title: str, message: str, detail: str = "") -> QMessageBox:
        """A non-blocking error dialog with the cause (kept in `error_box` for tests);
        ``detail`` (the engine's own message) sits behind "Show Details…"."""
        log.error("%s: %s%s", title, message, f" ({detail})" if detail else "")
        worded = in_panel_words(message)
        if worded != message:
            # the engine's own line, with its command-line names, stays under the details
            if message not in detail:
                detail = "\n".join(part for part in (message, detail) if part)
            message = worded
        box = QMessageBox(
            QMessageBox.Icon.Critical, title, message, QMessageBox.StandardButton.Ok, self
        )
        if detail and detail != message:
            box.setDetailedText(detail)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.error_box = box
        box.open()
        return box

    # ---------------------------------------------------------------- drag and drop
    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        urls = [u for u in event.mimeData().urls() if u.isLocalFile()]
        if urls:
            event.acceptProposedAction()
            self.open_plate(urls[0].toLocalFile())

    # ---------------------------------------------------------------- persistence
    def save_state(self) -> None:
        """What persists: geometry, layout, view, last folder, checkpoint and device. Run
        settings only through "Save as defaults"; the export pattern only for the open plate."""
        self.settings_panel.save_model(self.settings)
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue("view/mode", self.viewer.mode)
        self.settings.setValue("view/colormap", self.viewer.colormap)
        self.settings.sync()

    def restore_state(self) -> None:
        self.settings_panel.restore_state(self.settings)
        geometry = self.settings.value("window/geometry")
        if geometry is None or not self.restoreGeometry(geometry):
            screen = self.screen() or QApplication.primaryScreen()
            self.resize(default_size(screen.availableGeometry().size()))
        state = self.settings.value("window/state")
        if state is None or not self.restoreState(state):
            # the diagnostics get room for three readable plots under the viewer
            self.resizeDocks(
                [self.diagnostics_dock],
                [int(self.height() * DIAGNOSTICS_SHARE)],
                Qt.Orientation.Vertical,
            )
        mode = self.settings.value("view/mode", "rgb")
        if mode in VIEW_MODES:
            self.viewer.set_mode(mode)
        colormap = self.settings.value("view/colormap", "turbo")
        if colormap in COLORMAPS:
            self.colormap_box.setCurrentText(colormap)
        self.viewer.set_colormap(self.colormap_box.currentText())

    def ask_before_closing(self) -> QMessageBox:
        """An export is writing: stop it and close, or keep it (non-blocking)."""
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "An export is running",
            "The export is still writing its EXRs. Stop it and close the panel?\n\n"
            "Stopping keeps the folder as it was before the export: nothing half-written is "
            "left in it.",
            QMessageBox.StandardButton.NoButton,
            self,
        )
        stop = box.addButton("Stop export and close", QMessageBox.ButtonRole.DestructiveRole)
        keep = box.addButton("Keep exporting", QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(keep)

        def answered(button) -> None:
            if button is stop:
                self._close_confirmed = True
                self.controller.cancel()
                self.close()

        box.buttonClicked.connect(answered)
        self.close_box = box
        box.open()
        return box

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.controller.worker.current_job == "export" and not self._close_confirmed:
            event.ignore()
            if self.close_box is None or not self.close_box.isVisible():
                self.ask_before_closing()
            return
        self.save_state()
        self.controller.shutdown()
        super().closeEvent(event)
