"""The settings panel: preset, snippets, alignment, output convention, model; Run and Cancel."""

from __future__ import annotations

import re

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
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

from rollingdepth_core.config import (
    ALIGNERS,
    DEFAULT_CHECKPOINT,
    DEPTH_MODES,
    DEVICES,
    PRESETS,
    InferenceConfig,
    OutputConfig,
    preset_config,
)
from rollingdepth_core.errors import ConfigError
from rollingdepth_core.progress import STAGES

STAGE_TEXT = {**STAGES, "load": "loading model"}
SETTINGS_GROUP = "settings"
# A change is applied once the user pauses, so a spin box held down re-aligns once.
DEBOUNCE_MS = 250


def parse_dilations(text: str) -> tuple[int, ...]:
    """``"1 10 25"`` or ``"1, 10, 25"`` → ``(1, 10, 25)``.

    Raises
    ------
    ConfigError
        Anything but positive integers separated by spaces or commas.
    """
    parts = [p for p in re.split(r"[\s,]+", text.strip()) if p]
    if not parts or not all(p.isdigit() for p in parts):
        raise ConfigError(f"dilations must be whole numbers like `1 10 25`; got {text!r}")
    return tuple(int(p) for p in parts)


class SettingsPanel(QWidget):
    """Everything a run depends on, plus the Run/Cancel controls and their progress."""

    inference_changed = Signal()  # model, snippet or alignment settings (debounced)
    output_changed = Signal()  # depth convention, near/far
    run_requested = Signal()
    cancel_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self.inference_changed)

        self.preset_box = QComboBox(self)
        self.preset_box.addItems(list(PRESETS))
        self.preset_box.setToolTip("Starting point; the fields below override it")
        self.dilations_edit = QLineEdit(self)
        self.dilations_edit.setToolTip(
            "Dilations of the rolling snippets, e.g. `1 10 25`; must include 1. "
            "Adding one runs only its new snippets."
        )
        self.snippet_len_spin = _spin(self, 2, 4, "Frames per snippet")
        self.refine_spin = _spin(self, 0, 100, "Diffusion refinement steps (0 = off)")
        self.res_spin = _spin(self, 0, 4096, "Processing size of the longer edge (0 = plate size)")
        self.res_spin.setSingleStep(64)
        self.res_spin.setSpecialValueText("plate size")
        self.seed_spin = _spin(self, 0, 2**31 - 1, "Seed of the shared noise")
        self.aligner_box = QComboBox(self)
        self.aligner_box.addItems(list(ALIGNERS))
        self.aligner_box.setToolTip("How snippets are co-aligned; changing it runs no model")
        self.depth_mode_box = QComboBox(self)
        self.depth_mode_box.addItems(list(DEPTH_MODES))
        self.depth_mode_box.setToolTip(
            "inverse: relative inverse depth; normalized: 0..1, 1 = nearest; "
            "depth: mapped to [near, far] scene units"
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

        self.hint_label = QLabel(self)
        self.hint_label.setWordWrap(True)
        self.run_button = QPushButton("Run", self)
        self.run_button.setToolTip("Predict the missing snippets, then align (Ctrl+R)")
        self.run_button.clicked.connect(self.run_requested)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.progress_bar = QProgressBar(self)
        self.progress_bar.setTextVisible(True)
        self.stage_label = QLabel("idle", self)

        self._build_layout()
        self._apply_preset(self.preset_box.currentText())
        self.near_spin.setValue(OutputConfig.near)
        self.far_spin.setValue(OutputConfig.far)
        self.checkpoint_edit.setText(DEFAULT_CHECKPOINT)
        self._connect()
        self.set_busy(False)
        self._update_near_far()

    # ---------------------------------------------------------------- layout
    def _build_layout(self) -> None:
        model = QGroupBox("Model", self)
        form = QFormLayout(model)
        form.addRow("Preset", self.preset_box)
        checkpoint_row = QHBoxLayout()
        checkpoint_row.addWidget(self.checkpoint_edit, 1)
        checkpoint_row.addWidget(self.browse_button)
        form.addRow("Checkpoint", checkpoint_row)
        form.addRow("Device", self.device_box)

        snippets = QGroupBox("Snippets", self)
        form = QFormLayout(snippets)
        form.addRow("Dilations", self.dilations_edit)
        form.addRow("Snippet length", self.snippet_len_spin)
        form.addRow("Refine steps", self.refine_spin)
        form.addRow("Resolution", self.res_spin)
        form.addRow("Seed", self.seed_spin)

        alignment = QGroupBox("Alignment", self)
        form = QFormLayout(alignment)
        form.addRow("Aligner", self.aligner_box)

        output = QGroupBox("Output", self)
        form = QFormLayout(output)
        form.addRow("Depth convention", self.depth_mode_box)
        form.addRow("Near", self.near_spin)
        form.addRow("Far", self.far_spin)

        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button, 1)
        buttons.addWidget(self.cancel_button)

        # The fields scroll; Run, Cancel and the progress stay in view below them.
        fields = QWidget(self)
        fields_layout = QVBoxLayout(fields)
        fields_layout.setContentsMargins(0, 0, 0, 0)
        for group in (model, snippets, alignment, output):
            fields_layout.addWidget(group)
        fields_layout.addStretch(1)
        scroll = QScrollArea(self)
        scroll.setWidget(fields)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)

        layout = QVBoxLayout(self)
        layout.addWidget(scroll, 1)
        layout.addWidget(self.hint_label)
        layout.addLayout(buttons)
        layout.addWidget(self.stage_label)
        layout.addWidget(self.progress_bar)

    def _connect(self) -> None:
        self.preset_box.currentTextChanged.connect(self._apply_preset)
        self.dilations_edit.textChanged.connect(self._dilations_edited)
        for spin in (self.snippet_len_spin, self.refine_spin, self.res_spin, self.seed_spin):
            spin.valueChanged.connect(self._debounce.start)
        self.aligner_box.currentTextChanged.connect(self._debounce.start)
        self.checkpoint_edit.editingFinished.connect(self._debounce.start)
        self.device_box.currentTextChanged.connect(self._debounce.start)
        self.depth_mode_box.currentTextChanged.connect(self._update_near_far)
        self.depth_mode_box.currentTextChanged.connect(self.output_changed)
        self.near_spin.valueChanged.connect(self.output_changed)
        self.far_spin.valueChanged.connect(self.output_changed)

    # ---------------------------------------------------------------- values
    @property
    def preset(self) -> str:
        return self.preset_box.currentText()

    @property
    def checkpoint(self) -> str:
        return self.checkpoint_edit.text().strip() or DEFAULT_CHECKPOINT

    @property
    def device(self) -> str:
        return self.device_box.currentText()

    def inference_config(self) -> InferenceConfig:
        """The preset with the panel's fields over it (raises ConfigError when invalid)."""
        return preset_config(
            self.preset,
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
        if not busy:
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(0)

    def set_progress(self, stage: str, done: int, total: int) -> None:
        self.stage_label.setText(f"{STAGE_TEXT.get(stage, stage)}: {done}/{total}")
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(min(done, max(total, 1)))

    def set_stage_text(self, text: str) -> None:
        self.stage_label.setText(text)

    def set_hint(self, text: str, warning: bool = False) -> None:
        self.hint_label.setText(text)
        self.hint_label.setStyleSheet("color: #d9822b;" if warning else "")

    # ---------------------------------------------------------------- persistence
    def save_state(self, settings: QSettings) -> None:
        settings.beginGroup(SETTINGS_GROUP)
        settings.setValue("preset", self.preset)
        settings.setValue("dilations", self.dilations_edit.text())
        settings.setValue("snippet_len", self.snippet_len_spin.value())
        settings.setValue("refine_steps", self.refine_spin.value())
        settings.setValue("processing_res", self.res_spin.value())
        settings.setValue("seed", self.seed_spin.value())
        settings.setValue("aligner", self.aligner_box.currentText())
        settings.setValue("depth_mode", self.depth_mode_box.currentText())
        settings.setValue("near", self.near_spin.value())
        settings.setValue("far", self.far_spin.value())
        settings.setValue("checkpoint", self.checkpoint_edit.text())
        settings.setValue("device", self.device)
        settings.endGroup()

    def restore_state(self, settings: QSettings) -> None:
        settings.beginGroup(SETTINGS_GROUP)
        try:
            stored = {key: settings.value(key) for key in settings.childKeys()}
        finally:
            settings.endGroup()
        choices = {
            "preset": list(PRESETS),
            "aligner": list(ALIGNERS),
            "depth_mode": list(DEPTH_MODES),
            "device": list(DEVICES),
        }
        # values from an older version that no longer fit are skipped, not guessed at
        values = {
            key: value
            for key, value in stored.items()
            if value not in (None, "") and (key not in choices or value in choices[key])
        }
        self.set_values(**{k: v for k, v in values.items() if k in _STATE_KEYS})

    # ---------------------------------------------------------------- internals
    def _apply_preset(self, name: str) -> None:
        config = PRESETS[name].inference
        for widget in (self.dilations_edit, self.snippet_len_spin, self.refine_spin, self.res_spin):
            widget.blockSignals(True)
        self.dilations_edit.setText(" ".join(str(d) for d in config.dilations))
        self.snippet_len_spin.setValue(config.snippet_len)
        self.refine_spin.setValue(config.refine_steps)
        self.res_spin.setValue(config.processing_res)
        for widget in (self.dilations_edit, self.snippet_len_spin, self.refine_spin, self.res_spin):
            widget.blockSignals(False)
        self._dilations_edited(self.dilations_edit.text())

    def _dilations_edited(self, text: str) -> None:
        try:
            parse_dilations(text)
        except ConfigError as exc:
            self.dilations_edit.setStyleSheet("border: 1px solid #d9534f;")
            self.dilations_edit.setToolTip(str(exc))
            return
        self.dilations_edit.setStyleSheet("")
        self.dilations_edit.setToolTip("Dilations of the rolling snippets, e.g. `1 10 25`")
        self._debounce.start()

    def _update_near_far(self) -> None:
        enabled = self.depth_mode_box.currentText() == "depth"
        self.near_spin.setEnabled(enabled)
        self.far_spin.setEnabled(enabled)

    def _browse_checkpoint(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Checkpoint folder", self.checkpoint)
        if folder:
            self._set_checkpoint(folder)


_STATE_KEYS = (
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
    "checkpoint",
    "device",
)


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
