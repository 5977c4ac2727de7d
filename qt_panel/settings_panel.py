"""The settings panel: preset, snippets, alignment, output convention, model; Run and Cancel."""

from __future__ import annotations

import re

from PySide6.QtCore import QSettings, QSize, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from rollingdepth_core import protocol
from rollingdepth_core.config import (
    ALIGNERS,
    DEFAULT_CHECKPOINT,
    DEVICES,
    PRESETS,
    InferenceConfig,
    OutputConfig,
    preset_config,
)
from rollingdepth_core.costs import estimate_text
from rollingdepth_core.errors import ConfigError
from rollingdepth_core.protocol import duration_text
from rollingdepth_core.snippets import cap_dilation

from .color_panel import ColorPanel

# What persists between sessions: the model a user works with (checkpoint, device) always;
# run settings only when the user saves them as defaults ("Save as defaults"), so one
# window's experiments never leak into the next one.
MODEL_GROUP = "model"
DEFAULTS_GROUP = "defaults"
MODEL_KEYS = ("checkpoint", "device")
DEFAULT_KEYS = (
    "preset",
    "dilations",
    "snippet_len",
    "refine_steps",
    "processing_res",
    "seed",
    "aligner",
    "depth_mode",
    "near",
    "far",
)
# A change is applied once the user pauses, so a spin box held down re-aligns once.
DEBOUNCE_MS = 250


# The worker's jobs as the Cancel line names them.
JOB_NOUNS = {"run": "the run", "align": "the re-alignment", "export": "the export"}


def parse_dilations(text: str) -> tuple[int, ...]:
    """``"1 10 25"`` or ``"1, 10, 25"`` → ``(1, 10, 25)``.

    Raises
    ------
    ConfigError
        Anything but positive integers separated by spaces or commas.
    """
    parts = [p for p in re.split(r"[\s,]+", text.strip()) if p]
    if not parts or not all(p.isdigit() for p in parts):
        raise ConfigError(f"dilations must be whole numbers like 1 10 25; got {text!r}")
    return tuple(int(p) for p in parts)


class SettingsPanel(QWidget):
    """Everything a run depends on, plus the Run/Cancel controls and their progress."""

    inference_changed = Signal()  # model, snippet or alignment settings (debounced)
    output_changed = Signal()  # depth convention, near/far
    run_requested = Signal()
    cancel_requested = Signal()
    save_defaults_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self.inference_changed)

        self._base_preset = protocol.DEFAULT_PRESET  # what "custom" settings started from
        self._frame_count: int | None = None
        self.preset_box = QComboBox(self)
        for name, spec in protocol.PRESETS.items():
            self.preset_box.addItem(name)
            self.preset_box.setItemData(
                self.preset_box.count() - 1, spec["description"], Qt.ItemDataRole.ToolTipRole
            )
        self.preset_box.addItem(protocol.CUSTOM_PRESET)
        self.preset_box.setItemData(
            self.preset_box.count() - 1,
            "Settings edited by hand; exports record the preset as custom",
            Qt.ItemDataRole.ToolTipRole,
        )
        self.preset_box.setToolTip(
            "Starting point; editing a field below turns it into custom settings"
        )
        self.dilations_edit = QLineEdit(self)
        self.dilations_edit.setToolTip(DILATIONS_TIP)
        self.dilation_note = QLabel("", self)
        self.dilation_note.setWordWrap(True)
        self.dilation_note.setStyleSheet("color: #d9822b;")
        self.dilation_note.hide()
        self.snippet_len_spin = _spin(self, 2, 4, "How many frames the model looks at together")
        self.refine_spin = _spin(self, 0, 100, "Diffusion refinement steps (0 = off)")
        self.res_spin = _spin(self, 0, 4096, "Processing size of the longer edge (0 = plate size)")
        self.res_spin.setSingleStep(64)
        self.res_spin.setSpecialValueText("plate size")
        self.seed_spin = _spin(self, 0, 2**31 - 1, "Seed of the shared noise")
        self.aligner_box = QComboBox(self)
        self.aligner_box.addItems(list(ALIGNERS))
        self.aligner_box.setToolTip(
            "How the depth estimates are lined up into one; changing it runs no model"
        )
        self.depth_mode_box = QComboBox(self)
        for mode, spec in protocol.DEPTH_MODES.items():
            self.depth_mode_box.addItem(mode)
            self.depth_mode_box.setItemData(
                self.depth_mode_box.count() - 1, spec["description"], Qt.ItemDataRole.ToolTipRole
            )
        self.depth_mode_box.setToolTip(
            "\n".join(
                f"{mode}: {spec['description']}" for mode, spec in protocol.DEPTH_MODES.items()
            )
        )
        self.near_spin = distance_spin(self, "Nearest depth (depth convention)")
        self.far_spin = distance_spin(self, "Farthest depth (depth convention)")
        self.checkpoint_edit = QLineEdit(self)
        self.checkpoint_edit.setToolTip("Hub id or a local checkpoint folder")
        self.browse_button = QToolButton(self)
        self.browse_button.setText("…")
        self.browse_button.setToolTip("Pick a local checkpoint folder")
        self.browse_button.clicked.connect(self._browse_checkpoint)
        self.device_box = QComboBox(self)
        self.device_box.addItems(list(DEVICES))
        self.color_panel = ColorPanel(self)

        self.hint_label = QLabel(self)
        self.hint_label.setWordWrap(True)
        # what Run will cost here, and the faster choice when the plate is smaller than the
        # processing size
        self.estimate_label = QLabel(self)
        self.estimate_label.setWordWrap(True)
        self.estimate_label.setToolTip(
            "Learned from the earlier runs on this machine (per device, precision and model)"
        )
        self.plate_size_button = QPushButton(self)
        self.plate_size_button.setToolTip(
            "Process at the plate's own size: the same detail, in much less time"
        )
        self.plate_size_button.clicked.connect(lambda: self.res_spin.setValue(0))
        self.plate_size_button.hide()
        self.save_defaults_button = QPushButton("Save as defaults", self)
        self.save_defaults_button.setToolTip(
            "Start new windows with these settings instead of the preset's"
        )
        self.save_defaults_button.clicked.connect(self.save_defaults_requested)
        self.run_button = QPushButton("Run", self)
        self.run_button.setToolTip("Estimate the depth that is missing, then line it up (Ctrl+R)")
        self.run_button.clicked.connect(self.run_requested)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setTextVisible(True)
        # An empty bar reads as a text field: it says "idle" until the first job.
        self.stage_label = QLabel(self)
        self.stage_label.setWordWrap(True)
        self._stopping = False  # Cancel pressed, the job not ended yet
        self.reset_progress()

        self._build_layout()
        self._apply_preset(self._base_preset)
        self.near_spin.setValue(OutputConfig.near)
        self.far_spin.setValue(OutputConfig.far)
        self.checkpoint_edit.setText(DEFAULT_CHECKPOINT)
        self._connect()
        self.set_busy(False)
        self._update_near_far()

    # ---------------------------------------------------------------- layout
    def _build_layout(self) -> None:
        # Laid out to fit a 1280x800 window without scrolling: short fields share a row.
        model = QGroupBox("Model", self)
        form = compact_form(model)
        preset_row = QHBoxLayout()
        preset_row.setSpacing(6)
        preset_row.addWidget(self.preset_box, 1)
        preset_row.addWidget(self.save_defaults_button)
        form.addRow("Preset", preset_row)
        checkpoint_row = QHBoxLayout()
        checkpoint_row.setSpacing(6)
        checkpoint_row.addWidget(self.checkpoint_edit, 1)
        checkpoint_row.addWidget(self.browse_button)
        # A path is long: it gets the whole width of the panel, under its label.
        form.addRow(QLabel("Checkpoint", self))
        form.addRow(checkpoint_row)
        form.addRow("Device", self.device_box)

        snippets = QGroupBox("Frames and alignment", self)
        form = compact_form(snippets)
        form.addRow("Dilations", self.dilations_edit)
        form.addRow("", self.dilation_note)
        form.addRow("Frames together", _pair(self.snippet_len_spin, "Refine", self.refine_spin))
        form.addRow("Resolution", _pair(self.res_spin, "Seed", self.seed_spin))
        form.addRow("Aligner", self.aligner_box)

        output = QGroupBox("Output", self)
        form = compact_form(output)
        form.addRow("Depth convention", self.depth_mode_box)
        form.addRow("Near", _pair(self.near_spin, "Far", self.far_spin))

        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button, 1)
        buttons.addWidget(self.cancel_button)

        # The fields scroll when the window is too low for them (the line under them then
        # names what is out of view); Run, Cancel and the progress stay in view below them.
        fields = QWidget(self)
        fields_layout = QVBoxLayout(fields)
        fields_layout.setContentsMargins(0, 0, 0, 0)
        fields_layout.setSpacing(2)
        self.groups = (model, self.color_panel, snippets, output)
        for group in self.groups:
            fields_layout.addWidget(group)
        fields_layout.addStretch(1)
        self.scroll = QScrollArea(self)
        self.scroll.setWidget(fields)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        bar = self.scroll.verticalScrollBar()
        bar.valueChanged.connect(self._update_out_of_view)
        bar.rangeChanged.connect(self._update_out_of_view)
        self.out_of_view_label = QLabel("", self)
        self.out_of_view_label.setStyleSheet("color: #d9822b;")
        self.out_of_view_label.hide()

        layout = QVBoxLayout(self)
        layout.addWidget(self.scroll, 1)
        layout.addWidget(self.out_of_view_label)
        layout.addWidget(self.hint_label)
        layout.addWidget(self.estimate_label)
        layout.addWidget(self.plate_size_button)
        layout.addLayout(buttons)
        layout.addWidget(self.stage_label)
        layout.addWidget(self.progress_bar)

    def out_of_view(self) -> list[str]:
        """The settings groups not wholly in view (the settings scroll), top to bottom."""
        viewport = self.scroll.viewport().rect()
        top = self.scroll.verticalScrollBar().value()
        visible = viewport.translated(0, top)
        return [g.title() for g in self.groups if not visible.contains(g.geometry())]

    def _update_out_of_view(self, *_args) -> None:
        hidden = self.out_of_view()
        self.out_of_view_label.setText(f"scroll for: {', '.join(hidden)}" if hidden else "")
        self.out_of_view_label.setVisible(bool(hidden))

    def minimumSizeHint(self) -> QSize:
        # wide enough that the fields never scroll sideways, with room for the scroll bar
        hint = super().minimumSizeHint()
        fields = self.scroll.widget().minimumSizeHint().width()
        margins = self.layout().contentsMargins()
        width = fields + self.scroll.verticalScrollBar().sizeHint().width()
        return QSize(max(hint.width(), width + margins.left() + margins.right()), hint.height())

    def _connect(self) -> None:
        self.preset_box.currentTextChanged.connect(self._apply_preset)
        self.dilations_edit.textChanged.connect(self._dilations_edited)
        for spin in (self.snippet_len_spin, self.refine_spin, self.res_spin, self.seed_spin):
            spin.valueChanged.connect(self._debounce.start)
            spin.valueChanged.connect(self._fields_edited)
        self.snippet_len_spin.valueChanged.connect(self._update_dilation_note)
        self.aligner_box.currentTextChanged.connect(self._debounce.start)
        self.aligner_box.currentTextChanged.connect(self._fields_edited)
        self.checkpoint_edit.editingFinished.connect(self._debounce.start)
        self.device_box.currentTextChanged.connect(self._debounce.start)
        self.depth_mode_box.currentTextChanged.connect(self._update_near_far)
        self.depth_mode_box.currentTextChanged.connect(self.output_changed)
        self.near_spin.valueChanged.connect(self.output_changed)
        self.far_spin.valueChanged.connect(self.output_changed)

    # ---------------------------------------------------------------- values
    @property
    def preset(self) -> str:
        """The preset the fields hold, or ``"custom"`` once any of them was changed by hand."""
        try:
            config = self.inference_config()
        except ConfigError:
            return protocol.CUSTOM_PRESET
        return (
            self._base_preset
            if config == PRESETS[self._base_preset].inference
            else (protocol.CUSTOM_PRESET)
        )

    @property
    def base_preset(self) -> str:
        """The preset the fields started from: what a run records, as the command line records
        ``--preset`` with the flags that override it (the settings say the overrides)."""
        return self._base_preset

    @property
    def checkpoint(self) -> str:
        return self.checkpoint_edit.text().strip() or DEFAULT_CHECKPOINT

    @property
    def device(self) -> str:
        return self.device_box.currentText()

    def inference_config(self) -> InferenceConfig:
        """The preset with the panel's fields over it (raises ConfigError when invalid)."""
        return preset_config(
            self._base_preset,
            dilations=parse_dilations(self.dilations_edit.text()),
            snippet_len=self.snippet_len_spin.value(),
            refine_steps=self.refine_spin.value(),
            processing_res=self.res_spin.value(),
            seed=self.seed_spin.value(),
            aligner=self.aligner_box.currentText(),
        )

    def output_config(self) -> OutputConfig:
        output = OutputConfig(
            depth_mode=self.depth_mode_box.currentText(),
            near=self.near_spin.value(),
            far=self.far_spin.value(),
        )
        output.check()
        return output

    def set_values(self, **values: object) -> None:
        """Set fields by name (tests, restoring state): dilations, snippet_len, refine_steps,
        processing_res, seed, aligner, depth_mode, near, far, checkpoint, device, preset."""
        setters = {
            "preset": lambda v: self.preset_box.setCurrentText(str(v)),
            "dilations": lambda v: self.dilations_edit.setText(
                v if isinstance(v, str) else " ".join(str(d) for d in v)
            ),
            "snippet_len": lambda v: self.snippet_len_spin.setValue(int(v)),
            "refine_steps": lambda v: self.refine_spin.setValue(int(v)),
            "processing_res": lambda v: self.res_spin.setValue(int(v)),
            "seed": lambda v: self.seed_spin.setValue(int(v)),
            "aligner": lambda v: self.aligner_box.setCurrentText(str(v)),
            "depth_mode": lambda v: self.depth_mode_box.setCurrentText(str(v)),
            "near": lambda v: self.near_spin.setValue(float(v)),
            "far": lambda v: self.far_spin.setValue(float(v)),
            "checkpoint": lambda v: self._set_checkpoint(str(v)),
            "device": lambda v: self.device_box.setCurrentText(str(v)),
        }
        unknown = set(values) - set(setters)
        if unknown:
            raise KeyError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        # the preset first: it resets the fields the other values then override
        for name in sorted(values, key=lambda n: n != "preset"):
            setters[name](values[name])

    def _set_checkpoint(self, text: str) -> None:
        self.checkpoint_edit.setText(text)
        self._debounce.start()

    # ---------------------------------------------------------------- run state
    def set_busy(self, busy: bool) -> None:
        self.run_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        # its figure is the cost of the next Run: offered when one can be started
        self.plate_size_button.setEnabled(not busy)

    def job_started(self, job: str) -> None:
        self._stopping = False
        if job == "run":
            # what Run would do is no longer the news: it is doing it
            self.set_hint("running\N{HORIZONTAL ELLIPSIS} (Cancel or Esc stops it)")
        self.stage_label.setText(f"{job}: starting")
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("%p%")

    def job_stopping(self, job: str) -> None:
        """Cancel was pressed: the job ends once the step under way is done."""
        self.set_hint(f"stopping {JOB_NOUNS.get(job, job)}\N{HORIZONTAL ELLIPSIS}")
        self.stage_label.setText("stopping once the step under way is done")
        self.cancel_button.setEnabled(False)
        self._stopping = True  # a report already on its way must not say it still runs

    def set_progress(
        self, stage: str, done: int, total: int, remaining: float | None = None
    ) -> None:
        if self._stopping:
            return
        left = f" \N{EM DASH} {duration_text(remaining)} left" if remaining is not None else ""
        self.stage_label.setText(f"{protocol.STAGES.get(stage, stage)}: {done}/{total}{left}")
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(min(done, max(total, 1)))

    def job_ended(self, outcome: str, text: str) -> None:
        """Keep what happened in view: ``outcome`` is done, cancelled or failed."""
        self._stopping = False
        self.stage_label.setText(text)
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1 if outcome == "done" else 0)
        self.progress_bar.setFormat(outcome)

    def reset_progress(self) -> None:
        """Forget what the last job did (a new plate: it was the previous plate's)."""
        self.stage_label.setText("no run yet")
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat("idle")

    def set_frame_count(self, n_frames: int | None) -> None:
        """The open plate's length, for the dilation note (one shot until cuts are known)."""
        self._frame_count = n_frames
        self._shot_lengths = [n_frames] if n_frames else []
        self._update_dilation_note()

    def set_shot_lengths(self, lengths: list[int]) -> None:
        """The frames of each shot of the open plate: each shot shortens dilations to fit
        itself, as the run does."""
        self._shot_lengths = [n for n in lengths if n > 0]
        self._update_dilation_note()

    def set_estimate(self, report: dict | None) -> None:
        """What Run will cost (costs.estimate_run's report); None hides it."""
        self.estimate_label.setText(estimate_text(report) if report else "")
        self.estimate_label.setVisible(bool(report))
        faster = report.get("at_plate_size") if report else None
        if faster:
            self.plate_size_button.setText(
                f"Process at the plate's size ({duration_text(faster['seconds'])})"
            )
        self.plate_size_button.setVisible(bool(faster))

    def set_hint(self, text: str, warning: bool = False) -> None:
        self.hint_label.setText(text)
        self.hint_label.setStyleSheet("color: #d9822b;" if warning else "")

    # ---------------------------------------------------------------- persistence
    def values(self) -> dict[str, object]:
        """Every field by the names `set_values` takes (the preset is the one they started
        from, so that restoring it and then the fields gives the same settings)."""
        return {
            "preset": self._base_preset,
            "dilations": self.dilations_edit.text(),
            "snippet_len": self.snippet_len_spin.value(),
            "refine_steps": self.refine_spin.value(),
            "processing_res": self.res_spin.value(),
            "seed": self.seed_spin.value(),
            "aligner": self.aligner_box.currentText(),
            "depth_mode": self.depth_mode_box.currentText(),
            "near": self.near_spin.value(),
            "far": self.far_spin.value(),
            "checkpoint": self.checkpoint_edit.text(),
            "device": self.device,
        }

    def save_model(self, settings: QSettings) -> None:
        """Remember the checkpoint and device (always kept between sessions)."""
        _write_group(settings, MODEL_GROUP, self.values(), MODEL_KEYS)

    def save_defaults(self, settings: QSettings) -> None:
        """Make the current run settings what new windows start with."""
        _write_group(settings, DEFAULTS_GROUP, self.values(), DEFAULT_KEYS)

    def restore_state(self, settings: QSettings) -> None:
        """The saved defaults (or the default preset) and the remembered model."""
        values = {
            **_read_group(settings, DEFAULTS_GROUP, DEFAULT_KEYS),
            **_read_group(settings, MODEL_GROUP, MODEL_KEYS),
        }
        self.set_values(**values)

    # ---------------------------------------------------------------- internals
    def _apply_preset(self, name: str) -> None:
        if name == protocol.CUSTOM_PRESET:
            self._fields_edited()  # picking "custom" keeps the fields as they are
            return
        self._base_preset = name
        config = PRESETS[name].inference
        fields = (
            self.dilations_edit,
            self.snippet_len_spin,
            self.refine_spin,
            self.res_spin,
            self.seed_spin,
            self.aligner_box,
        )
        for widget in fields:
            widget.blockSignals(True)
        self.dilations_edit.setText(" ".join(str(d) for d in config.dilations))
        self.snippet_len_spin.setValue(config.snippet_len)
        self.refine_spin.setValue(config.refine_steps)
        self.res_spin.setValue(config.processing_res)
        self.seed_spin.setValue(config.seed)
        self.aligner_box.setCurrentText(config.aligner)
        for widget in fields:
            widget.blockSignals(False)
        self._dilations_edited(self.dilations_edit.text())

    def _fields_edited(self) -> None:
        """Show whether the fields still hold the preset or are custom settings now."""
        self.preset_box.blockSignals(True)
        self.preset_box.setCurrentText(self.preset)
        self.preset_box.blockSignals(False)

    def _dilations_edited(self, text: str) -> None:
        self._fields_edited()
        self._update_dilation_note()
        try:
            parse_dilations(text)
        except ConfigError as exc:
            self.dilations_edit.setStyleSheet("border: 1px solid #d9534f;")
            self.dilations_edit.setToolTip(str(exc))
            return
        self.dilations_edit.setStyleSheet("")
        self.dilations_edit.setToolTip(DILATIONS_TIP)
        self._debounce.start()

    def _update_dilation_note(self) -> None:
        """Say next to the field when a shot is too short for a dilation."""
        self.dilation_note.setText(
            dilation_note(
                self._parsed_dilations(),
                getattr(self, "_shot_lengths", []),
                self.snippet_len_spin.value(),
                PRESETS[self._base_preset].inference.cap_dilation,
            )
        )
        self.dilation_note.setVisible(bool(self.dilation_note.text()))

    def _parsed_dilations(self) -> tuple[int, ...]:
        try:
            return parse_dilations(self.dilations_edit.text())
        except ConfigError:
            return ()

    def _update_near_far(self) -> None:
        enabled = self.depth_mode_box.currentText() == "depth"
        self.near_spin.setEnabled(enabled)
        self.far_spin.setEnabled(enabled)

    def _browse_checkpoint(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Checkpoint folder", self.checkpoint)
        if folder:
            self._set_checkpoint(folder)


def dilation_note(
    dilations: tuple[int, ...], shot_lengths: list[int], length: int, shorten: bool
) -> str:
    """What the run does with ``dilations`` on shots of ``shot_lengths`` frames: shortened to
    fit each shot (``shorten``, the presets but Paper), or refused as too long."""
    if not dilations or not shot_lengths:
        return ""
    several = len(shot_lengths) > 1
    where = (
        f"shots of {', '.join(str(n) for n in sorted(set(shot_lengths)))} frames"
        if several
        else f"this {shot_lengths[0]}-frame plate"
    )
    if not shorten:
        too_long = [str(d) for d in dilations if any((length - 1) * d >= n for n in shot_lengths)]
        return f"too long for {where}: {', '.join(too_long)}" if too_long else ""
    changes = []
    for d in dilations:
        fitted = sorted({cap_dilation(n, length, d) for n in shot_lengths} - {d}, reverse=True)
        if fitted:
            changes.append(f"{d} \N{RIGHTWARDS ARROW} {' or '.join(str(f) for f in fitted)}")
    return f"shortened to fit {where}: {', '.join(changes)}" if changes else ""


DILATIONS_TIP = (
    "The dilations to use, e.g. 1 10 25; must include 1. Adding one runs the model only for "
    f"it. {protocol.GLOSSARY['dilation']}."
)
_CHOICES = {
    "preset": tuple(protocol.PRESETS),
    "aligner": ALIGNERS,
    "depth_mode": tuple(protocol.DEPTH_MODES),
    "device": DEVICES,
}


def _write_group(settings: QSettings, group: str, values: dict, keys: tuple[str, ...]) -> None:
    settings.beginGroup(group)
    for key in keys:
        settings.setValue(key, values[key])
    settings.endGroup()


def _read_group(settings: QSettings, group: str, keys: tuple[str, ...]) -> dict[str, object]:
    """Stored values of ``keys``; values from an older version that no longer fit are
    skipped, not guessed at."""
    settings.beginGroup(group)
    try:
        stored = {key: settings.value(key) for key in keys if settings.contains(key)}
    finally:
        settings.endGroup()
    return {
        key: value
        for key, value in stored.items()
        if value not in (None, "") and (key not in _CHOICES or value in _CHOICES[key])
    }


def compact_form(group: QWidget) -> QFormLayout:
    """A form with tight rows: the settings fit a 1280x800 screen's default window."""
    form = QFormLayout(group)
    form.setVerticalSpacing(3)
    form.setContentsMargins(8, 4, 8, 4)
    return form


def _pair(first: QWidget, label: str, second: QWidget) -> QHBoxLayout:
    """Two short fields on one row: ``first``, then ``label`` and ``second``."""
    row = QHBoxLayout()
    row.setSpacing(6)  # a form with its own vertical spacing passes none down
    row.addWidget(first, 1)
    row.addSpacing(4)
    row.addWidget(QLabel(label, first.parentWidget()))
    row.addWidget(second, 1)
    return row


def _spin(parent: QWidget, low: int, high: int, tip: str) -> QSpinBox:
    spin = QSpinBox(parent)
    spin.setRange(low, high)
    spin.setToolTip(tip)
    return spin


def distance_spin(parent: QWidget, tip: str = "", value: float | None = None) -> QDoubleSpinBox:
    """A near/far field; the settings panel and the export dialog accept the same range."""
    spin = QDoubleSpinBox(parent)
    spin.setRange(0.001, 1e6)
    spin.setDecimals(3)
    spin.setToolTip(tip)
    if value is not None:
        spin.setValue(value)
    return spin
