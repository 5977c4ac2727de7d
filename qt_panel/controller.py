"""The panel's state and jobs: plate, model, tuning session and current result (no widgets).

Threads: jobs run in the `Worker`'s thread. The session and the model are created there and
handed over under a lock; the GUI thread only asks the session questions while no job runs.
A plate change bumps a generation number, so a job for the previous plate cannot install its
result.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PySide6.QtCore import QObject, Signal

from rollingdepth_core import protocol
from rollingdepth_core.anchors import AnchorFit, Anchors, join_fits, load_anchors
from rollingdepth_core.cameras import CameraRequest, load_camera
from rollingdepth_core.checkpoint import find_checkpoint
from rollingdepth_core.colorspace import ALIASES, AUTO, ColorRequest, active_config, load_config
from rollingdepth_core.config import InferenceConfig, OutputConfig
from rollingdepth_core.costs import (
    CostBook,
    RunShape,
    cost_key,
    estimate_run,
    model_parameters,
    run_shape,
)
from rollingdepth_core.cuts import detect_cuts
from rollingdepth_core.device import describe_device, resolve_device
from rollingdepth_core.errors import Cancelled, RollingDepthError
from rollingdepth_core.mattes import MatteSource
from rollingdepth_core.model import DepthModel
from rollingdepth_core.output import convert_depth
from rollingdepth_core.plate import (
    IMAGE_EXTENSIONS,
    Plate,
    PlateInfo,
    open_plate,
)
from rollingdepth_core.progress import report
from rollingdepth_core.protocol import DEFAULT_PRESET
from rollingdepth_core.publish import ForeignFrames
from rollingdepth_core.session import DepthPrediction, DepthSession, anchor_shots
from rollingdepth_core.upsample import upsample_depth

from .geometry_view import (
    GEOMETRY_NEEDS_CAMERA,
    GEOMETRY_NEEDS_UNITS,
    GeometryView,
    geometry_view,
)
from .messages import closest_names, in_panel_words
from .worker import Worker

# Frames kept for scrubbing; a 4K float frame is ~100 MB, so the budget is in bytes.
FRAME_CACHE_BYTES = 512 * 1024**2
JOB_TITLES = {
    "run": "Run failed",
    "align": "Re-alignment failed",
    "export": "Export failed",
}
# Plate-resolution previews kept (frame, method): scrubbing back and forth is free.
UPSAMPLE_CACHE = 8
# Holdout mattes kept for the overlay while scrubbing (each is one [H,W] float32 frame).
MATTE_CACHE = 8
# Samples of the colour bar's values (the viewer places its ticks by them).
LEGEND_SAMPLES = 257
# The panel's runs keep their models and write no frames: their costs are their own.
COST_DRIVER = "panel"
# What a finished job says it did, in the progress area.
JOB_VERBS = {"run": "done", "align": "re-aligned", "export": "exported"}


@dataclass(frozen=True)
class RunRequest:
    """What a run depends on: the inference settings and the model to run them with."""

    config: InferenceConfig
    checkpoint: str
    device: str = "auto"
    # the preset the settings started from (they override it, as flags override `--preset`):
    # recorded in the EXR headers and the manifest as a run records it
    preset: str = DEFAULT_PRESET

    @property
    def model_key(self) -> tuple[str, str, str]:
        return (self.checkpoint, self.device, self.config.dtype)


class PanelController(QObject):
    plate_changed = Signal(object)  # PlateInfo, or None when closed
    result_changed = Signal(object)  # DepthPrediction, or None
    error = Signal(str, str, str)  # title, message, detail ("" when the message says it all)
    message = Signal(str)  # one line for the status bar
    hint_changed = Signal(str, bool)  # what Run would do; True = the shown depth is stale
    progress = Signal(str, str, int, int)  # job, stage, done, total
    job_started = Signal(str)
    stopping = Signal(str)  # job name: Cancel was pressed, the job ends at its next step
    busy_changed = Signal(bool)
    export_finished = Signal(list)  # written paths
    # the folder holds another run's frames: (what it holds, and the export to repeat with
    # overwrite=True once the user agrees: pattern, output, frame_range, confidence, camera)
    replace_asked = Signal(str, tuple)
    job_ended = Signal(str, str, str)  # job, outcome (done|cancelled|failed), what happened
    color_changed = Signal(object, str)  # PlateColor (or None), what happened to the session
    cuts_changed = Signal(object)  # clip positions where a shot starts; None while detecting
    anchors_changed = Signal(object)  # Anchors, or None
    anchor_fit_changed = Signal(object, str)  # AnchorFit (or None), why there is none ("")
    upsampled = Signal(int, str)  # frame position, method: a plate-resolution depth is ready
    holdout_changed = Signal(object)  # MatteSource, or None
    # what Run would cost (costs.estimate_run's report), or None without a plate or settings
    estimate_changed = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.worker = Worker(self)
        self._job_clock = time.monotonic()
        self.worker.started.connect(self._job_begins)
        self.worker.started.connect(self.job_started)
        self.worker.progress.connect(self.progress)
        self.worker.busy_changed.connect(self.busy_changed)
        self.worker.finished.connect(self._job_finished)
        self.worker.failed.connect(self._job_failed)
        self.worker.cancelled.connect(self._job_cancelled)
        self.plate: Plate | None = None  # the GUI thread's own instance, for viewing
        self.result: DepthPrediction | None = None
        self._depth_range = (0.0, 1.0)  # the result's clip-wide extremes, for every frame shown
        self.result_request: RunRequest | None = None
        # Holdout mattes the next alignment uses, and those the shown result was aligned with
        self.holdout: MatteSource | None = None
        self.result_holdout: MatteSource | None = None
        # (session, mattes) last handed to a session: only the worker thread reads or sets it
        self._applied: tuple[DepthSession, MatteSource | None] | None = None
        self._mattes: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._camera_key: tuple | None = None  # the camera request and plate loaded below
        self._camera = None  # the shot's camera for the P and N views (a CameraTrack)
        self._generation = 0
        self._model: DepthModel | None = None
        self._model_key: tuple | None = None
        self._session: DepthSession | None = None
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self._latest: RunRequest | None = None  # the settings as the user last left them
        # (Settings, mattes) whose job failed or was cancelled: not re-aligned automatically again.
        self._halted: tuple[RunRequest, MatteSource | None] | None = None
        self.color_request = ColorRequest()
        self.cuts: list[int] | None = None  # None until detected on the open plate
        self.anchors: Anchors | None = None
        self.anchor_fit: AnchorFit | None = None
        self.anchor_metric: tuple[float, float] | None = None  # the fit's range of 1/Z
        self.anchor_mode = "global"
        self.upsample_method: str | None = None  # None: the depth at model resolution
        self._upsampled: OrderedDict[tuple[int, str], np.ndarray] = OrderedDict()
        # Side jobs, each in its own thread so none of them cancels a run (restart, not queue
        # within each): shot cuts of the plate, the anchor fit, plate-resolution previews.
        self.cuts_worker = Worker(self)
        self.cuts_worker.finished.connect(self._cuts_found)
        self.cuts_worker.failed.connect(lambda _n, msg: self.message.emit(f"cuts: {msg}"))
        self.anchor_worker = Worker(self)
        self.anchor_worker.finished.connect(self._anchor_fitted)
        self.anchor_worker.failed.connect(self._anchor_failed)
        self.upsample_worker = Worker(self)
        self.upsample_worker.finished.connect(self._upsample_done)
        self.upsample_worker.failed.connect(lambda _n, msg: self.message.emit(f"upsample: {msg}"))
        self.estimate: dict | None = None  # the next run's, as last shown
        self._checkpoint_folders: dict[str, str | None] = {}
        # the running job's time left, and what its run is to record in the cost book
        self._clock: protocol.RemainingClock | None = None
        self._costing: tuple[str, RunShape] | None = None
        self._load_seconds: list[float] = []
        self._left: tuple[float, float] | None = None  # (seconds left, when), worker-made

    # ---------------------------------------------------------------- plate
    @property
    def info(self) -> PlateInfo | None:
        return None if self.plate is None else self.plate.info

    @property
    def session(self) -> DepthSession | None:
        return self._session

    def open_plate(self, path: str | Path) -> bool:
        """Open ``path`` for viewing; the model stays loaded, cached predictions go."""
        try:
            plate = open_plate(path, input_colorspace=self.color_request)
        except RollingDepthError as exc:
            self.error.emit("Cannot open plate", unreadable_text(path, exc), str(exc))
            return False
        self._install_plate(plate)
        # a matte and anchors belong to their plate: gone before the new plate's first frame
        # is drawn
        self.holdout = None
        self._mattes.clear()
        self.anchors = None
        info = plate.info
        self.plate_changed.emit(info)
        self.holdout_changed.emit(None)
        self.anchors_changed.emit(None)
        self._set_fit(None, "")
        self.color_changed.emit(info.color, "")
        self.result_changed.emit(None)
        gaps = f", {len(info.missing_frames)} missing" if info.missing_frames else ""
        self.message.emit(
            f"opened {info.source}: {len(plate)} frames {info.frame_numbers[0]}-"
            f"{info.frame_numbers[-1]}{gaps}, {info.width}x{info.height}; {info.color.summary}"
        )
        self._detect_cuts(info.source)
        self._update_hint()
        return True

    def set_color(self, request: ColorRequest) -> bool:
        """Read the plate through ``request`` from now on. The model sees the plate through
        it too, so the kept snippets (and the result) no longer apply and are dropped."""
        if request == self.color_request:
            return True
        if self.plate is None:
            self.color_request = request
            return True
        try:
            plate = open_plate(self.plate.info.source, input_colorspace=request)
        except RollingDepthError as exc:
            self.error.emit("Colour space not usable", *color_choices(request, str(exc)))
            return False
        self.color_request = request
        had_work = self._session is not None or self.result is not None
        self._install_plate(plate)
        self.result_changed.emit(None)
        note = (
            "the model input changed: kept snippets and the depth were dropped; Run predicts again"
            if had_work
            else "the model will see the plate through this transform"
        )
        self.color_changed.emit(plate.info.color, note)
        self.message.emit(f"{plate.info.color.summary}; {note}")
        self._update_hint()
        return True

    def _install_plate(self, plate: Plate) -> None:
        """Make ``plate`` the panel's plate; everything computed from the previous one goes."""
        self.worker.cancel()
        self.cuts_worker.cancel()
        self.anchor_worker.cancel()
        self.upsample_worker.cancel()
        with self._lock:
            self._generation += 1
            self._session = None
        if self.plate is not None:
            self.plate.close()
        self.plate = plate
        self._frames.clear()
        self._upsampled.clear()
        self.result, self.result_request, self.result_holdout = None, None, None
        # quietly: the new plate's first frame is drawn by whoever installed it
        self.anchor_fit = None

    # ---------------------------------------------------------------- cuts
    def _detect_cuts(self, source: str) -> None:
        """Find shot cuts off the GUI thread, reading the plate as the model will."""
        self.cuts = None
        self.cuts_changed.emit(None)
        generation, color = self._generation, self.color_request

        def job(progress):
            plate = open_plate(source, input_colorspace=color)
            try:
                total = len(plate)

                def frames():
                    for k, (_, rgb) in enumerate(plate.frames()):
                        report(progress, "cuts", k, total)  # raises Cancelled when restarted
                        yield rgb

                return generation, detect_cuts(frames())
            finally:
                plate.close()

        self.cuts_worker.submit("cuts", job)

    def _cuts_found(self, _name: str, payload: tuple) -> None:
        generation, cuts = payload
        if generation == self._generation:
            self.cuts = list(cuts)
            self.cuts_changed.emit(self.cuts)
            self._update_hint()  # the shots change what a run costs

    # ---------------------------------------------------------------- anchors
    def load_anchors(self, path: str | Path) -> bool:
        """Read an anchors file (CSV or JSON); with a result, fit it at once."""
        try:
            anchors = load_anchors(path)
        except RollingDepthError as exc:
            self.error.emit("Cannot load anchors", str(exc), "")
            return False
        self.anchors = anchors
        self.anchors_changed.emit(anchors)
        self.message.emit(f"loaded {len(anchors)} anchors ({anchors.units}) from {Path(path).name}")
        self._fit_anchors()
        return True

    def clear_anchors(self) -> None:
        self.anchor_worker.cancel()
        self.anchors = None
        self.anchors_changed.emit(None)
        self._set_fit(None, "")

    def set_anchor_mode(self, mode: str) -> None:
        if mode != self.anchor_mode:
            self.anchor_mode = mode
            self._fit_anchors()

    def frame_anchors(self, index: int) -> list[dict]:
        """The anchors on frame position ``index``: the fit's records (predicted depth,
        residual, used) after a fit, else the file's points."""
        if self.anchors is None or self.plate is None:
            return []
        number = self.plate.info.frame_numbers[index]
        if self.anchor_fit is not None:
            return self.anchor_fit.frame_records(number)
        a = self.anchors
        return [
            {
                "row": int(i),
                "frame": number,
                "x": float(a.x[i]),
                "y": float(a.y[i]),
                "depth": float(a.depth[i]),
                **({"track": a.track[i]} if a.track[i] else {}),
            }
            for i in np.flatnonzero(a.frame == number)
        ]

    def geometry(
        self, index: int, output: OutputConfig, values: np.ndarray | None,
        camera: CameraRequest | None,
    ) -> tuple[GeometryView | None, str]:  # fmt: skip
        """Frame ``index``'s P and N colours through ``camera`` (None and the reason when
        there are none): from the anchors' scene depth after a fit, else from ``values`` (the
        shown depth in ``output``'s convention) when that is depth in scene units."""
        if camera is None:
            return None, GEOMETRY_NEEDS_CAMERA
        if self.result is None or self.plate is None or values is None:
            return None, ""
        depth = self.scene_depth(index)
        if depth is None and output.depth_mode != "depth":
            return None, GEOMETRY_NEEDS_UNITS
        depth = values if depth is None else depth
        info = self.plate.info
        key = (camera, info.source)
        try:
            if self._camera_key != key:
                self._camera_key, self._camera = None, None
                self._camera = load_camera(camera, info.frame_numbers, (info.height, info.width),
                                           info.pixel_aspect)  # fmt: skip
                self._camera_key = key
        except RollingDepthError as exc:
            return None, in_panel_words(str(exc))
        number = info.frame_numbers[index]
        return geometry_view(depth, self._camera.at(number), self._camera.space), ""

    def scene_depth(self, index: int) -> np.ndarray | None:
        """Depth ``Z`` in the anchors' units of frame position ``index`` (after a fit)."""
        if self.anchor_fit is None or self.result is None:
            return None
        return self.anchor_fit.depth(index, self.result.depth[index])

    def _fit_anchors(self) -> None:
        """Fit the anchors to the current result off the GUI thread (restarts a running fit)."""
        self._set_fit(None, "")
        if self.anchors is None or self.result is None or self.plate is None:
            return
        generation, prediction = self._generation, self.result
        anchors, mode, info = self.anchors, self.anchor_mode, self.plate.info

        def job(progress):
            # each shot fitted on its own, as a run (and the export) fits it
            fits = anchor_shots(prediction, anchors, mode, info.frame_numbers,
                                (info.height, info.width), progress)  # fmt: skip
            metric = (min(m[0] for _, m in fits), max(m[1] for _, m in fits))
            return generation, prediction, join_fits([fit for fit, _ in fits]), metric

        self.anchor_worker.submit("anchors", job)

    def _anchor_fitted(self, _name: str, payload: tuple) -> None:
        generation, prediction, fit, metric = payload
        if generation == self._generation and prediction is self.result:
            self._set_fit(fit, "", metric)
            self.message.emit(
                f"anchors: {fit.n_used} used, {fit.n_rejected} rejected, median residual "
                f"{100 * fit.residual_median:.2f} %"
            )

    def _anchor_failed(self, _name: str, message: str) -> None:
        self._set_fit(None, message)

    def _set_fit(
        self, fit: AnchorFit | None, why: str, metric: tuple[float, float] | None = None
    ) -> None:
        self.anchor_fit, self.anchor_metric = fit, metric
        self.anchor_fit_changed.emit(fit, why)

    # ---------------------------------------------------------------- holdout mattes
    def load_holdout(self, path: str | Path) -> bool:
        """Use the mattes of ``path`` (a sequence's file or pattern, or a movie) as the open
        plate's holdout; with a result, re-align at once (no model run)."""
        if self.plate is None:
            self.error.emit("No plate", "Open a plate before its holdout matte.", "")
            return False
        info = self.plate.info
        try:
            mattes = MatteSource(str(path), info.frame_numbers, (info.height, info.width))
        except RollingDepthError as exc:
            detail = (
                f"matte: {path}\nplate: {info.source}, frames {info.frame_numbers[0]}-"
                f"{info.frame_numbers[-1]}, {info.width}x{info.height}\n{exc}"
            )
            self.error.emit("Cannot use the holdout matte", str(exc), detail)
            return False
        self._set_holdout(mattes)
        self.message.emit(f"holdout matte: {Path(mattes.source).name}")
        self._realign()
        return True

    def clear_holdout(self) -> None:
        if self.holdout is None:
            return
        self._set_holdout(None)
        self.message.emit("holdout matte cleared")
        self._realign()

    def _set_holdout(self, mattes: MatteSource | None) -> None:
        self.holdout = mattes
        self._mattes.clear()
        self.holdout_changed.emit(mattes)

    def _realign(self) -> None:
        """The mattes changed: the settings' own re-align path decides (no model run)."""
        if self._latest is not None:
            self.settings_changed(self._latest)
        else:
            self._update_hint()

    def matte(self, index: int) -> np.ndarray | None:
        """The holdout matte ``[H,W]`` of frame position ``index`` for the overlay, or None."""
        if self.holdout is None or self.plate is None:
            return None
        if index in self._mattes:
            self._mattes.move_to_end(index)
            return self._mattes[index]
        info = self.plate.info
        try:
            # one frame's source: the matte sequence's file, or the movie up to that frame
            one = MatteSource(
                self.holdout.source, [info.frame_numbers[index]], (info.height, info.width)
            )
            matte = next(one.frames())
        except RollingDepthError as exc:
            self.message.emit(f"holdout matte: {exc}")
            return None
        self._mattes[index] = matte
        while len(self._mattes) > MATTE_CACHE:
            self._mattes.popitem(last=False)
        return matte

    def _give_holdout(self, session: DepthSession, mattes: MatteSource | None) -> None:
        """Worker thread: hand ``mattes`` to ``session`` unless it has them (a new hand-over
        drops the session's solves)."""
        if (
            self._applied is None
            or self._applied[0] is not session
            or (self._applied[1] is not mattes)
        ):
            session.set_holdout(mattes)
            self._applied = (session, mattes)

    # ---------------------------------------------------------------- plate-resolution preview
    def set_upsample(self, method: str | None) -> None:
        """Show the depth at the plate's resolution (``edge`` or ``bilinear``), or None."""
        self.upsample_method = method

    def upsampled_depth(self, index: int) -> np.ndarray | None:
        """The plate-resolution depth of frame ``index`` if computed; else None, and the
        computation starts in the background (only for this frame: scrubbing restarts it)."""
        method = self.upsample_method
        if method is None or self.result is None or self.plate is None:
            return None
        key = (index, method)
        if key in self._upsampled:
            self._upsampled.move_to_end(key)
            return self._upsampled[key]
        rgb = self.frame(index)
        if rgb is None:
            return None
        generation, prediction = self._generation, self.result

        def job(progress):
            report(progress, "upsample", 0, 1)
            hi = upsample_depth(prediction.depth[index], rgb, method=method)
            return generation, prediction, key, hi

        self.upsample_worker.submit("upsample", job)
        return None

    def _upsample_done(self, _name: str, payload: tuple) -> None:
        generation, prediction, key, hi = payload
        if generation != self._generation or prediction is not self.result:
            return
        self._upsampled[key] = hi
        while len(self._upsampled) > UPSAMPLE_CACHE:
            self._upsampled.popitem(last=False)
        self.upsampled.emit(*key)

    def frame(self, index: int) -> np.ndarray | None:
        """RGB ``[H,W,3]`` of frame ``index``, kept in a small cache for scrubbing."""
        if self.plate is None:
            return None
        if index in self._frames:
            self._frames.move_to_end(index)
            return self._frames[index]
        try:
            rgb = self.plate.read(index)
        except RollingDepthError as exc:
            self.error.emit("Cannot read frame", str(exc), "")
            return None
        self._frames[index] = rgb
        while len(self._frames) > 1 and (
            sum(f.nbytes for f in self._frames.values()) > FRAME_CACHE_BYTES
        ):
            self._frames.popitem(last=False)
        return rgb

    def depth(
        self, index: int, output: OutputConfig, frame: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(colour values in [0,1] with 1 = nearest, values in ``output``'s convention) of
        frame ``index``, or of ``frame`` (e.g. its plate-resolution version) in its place."""
        if self.result is None or not 0 <= index < self.result.depth.shape[0]:
            return None
        lo, hi = self._depth_range
        frame = self.result.depth[index] if frame is None else frame
        unit = (frame - lo) / max(hi - lo, 1e-12)
        return unit, convert_depth(frame, output.depth_mode, output.near, output.far, lo, hi)

    def depth_legend(self, output: OutputConfig, index: int = 0) -> tuple[np.ndarray, str]:
        """The colour bar of frame position ``index``: values sampled evenly from the far
        end of the colour map to the near end, and what they are. With an anchor fit, ``Z``
        in the anchors' units (that frame's fit: a smooth fit changes along the clip); else
        the result in ``output``'s convention."""
        lo, hi = self._depth_range
        d = np.linspace(lo, hi, LEGEND_SAMPLES)
        fit = self.anchor_fit
        if fit is not None and self.result is not None and 0 <= index < len(fit.a):
            inverse_z = fit.apply(index, d).astype(np.float64)
            # where the fit gives no positive 1/Z there is no depth to print
            z = np.where(inverse_z > 0, 1.0 / np.where(inverse_z > 0, inverse_z, 1.0), np.nan)
            return z, f"Z ({fit.units})"
        return convert_depth(d, output.depth_mode, output.near, output.far, lo, hi), (
            output.depth_mode
        )

    # ---------------------------------------------------------------- runs
    def run(self, request: RunRequest) -> None:
        """Predict what is missing and align, in the background (restarts a running job)."""
        if self.plate is None:
            self.error.emit("Nothing to run", "Open a plate first (File > Open).", "")
            return
        self._latest, self._halted = request, None
        generation, source, color = self._generation, self.plate.info.source, self.color_request
        mattes = self.holdout
        estimate = self.run_estimate(request)
        self._clock = (
            protocol.RemainingClock(estimate["stages"], rough=not estimate["measured"])
            if estimate
            else None
        )
        self._costing = self._cost_record(request, estimate)
        self._load_seconds = []
        self._left = None
        clock = self._clock

        def job(progress):
            def timed(stage: str, done: int, total: int) -> None:
                # timed here, as the work happens: the GUI thread may see a burst of reports
                if clock is not None:
                    self._left = (clock.update(stage, done, total), time.monotonic())
                progress(stage, done, total)

            session = self._session_for(request, generation, source, color, timed)
            self._give_holdout(session, mattes)
            return _outcome(generation, request, mattes, session.run(request.config, timed))

        self.worker.submit("run", job)

    def settings_changed(self, request: RunRequest) -> None:
        """Re-align at once when the change needs no model; otherwise say what Run will do."""
        self._latest = request
        if self.worker.busy and self.worker.current_job != "align":
            return  # looked at again when the running job ends
        wanted = (request, self.holdout)
        if (
            wanted in ((self.result_request, self.result_holdout), self._halted)
            or self._needs_model(request) is not False
        ):
            self._update_hint()
            return
        session, generation, mattes = self._session, self._generation, self.holdout

        def job(progress):
            self._give_holdout(session, mattes)
            return _outcome(generation, request, mattes, session.align(request.config, progress))

        self.hint_changed.emit("re-aligning (no model run)", False)
        self.worker.submit("align", job)

    def cancel(self) -> None:
        if self.worker.busy:
            # the job stops at its next progress report, which a large processing size can
            # put a minute away: say at once that the click was heard
            self.stopping.emit(self.worker.current_job)
        self.worker.cancel()

    def export(
        self,
        pattern: str,
        output: OutputConfig,
        frame_range: tuple[int, int] | None,
        confidence: bool,
        camera: CameraRequest | None = None,
        overwrite: bool = False,
    ) -> None:
        """Publish the current result as an EXR sequence in the background, as a run does
        (staged, swapped in whole); with a ``camera``, the frames carry ``output.passes``. A
        folder holding another run's frames is not touched: `replace_asked` says what it holds,
        and the export runs again with ``overwrite`` once the user agrees."""
        if self.result is None or self._session is None:
            self.error.emit("Nothing to export", "Run the model first.", "")
            return
        session, prediction, request = self._session, self.result, self.result_request

        def job(progress):
            result = prediction
            if confidence and result.confidence is None:
                # the confidence map comes from the aligner: no model run
                result = session.align(replace(result.config, confidence=True), progress)
            try:
                return session.export(
                    result,
                    pattern,
                    output,
                    frame_range,
                    confidence=confidence,
                    checkpoint=request.checkpoint,
                    preset=request.preset,
                    progress=progress,
                    # `depth` and `inverse` exports are anchored to scene units, each shot
                    # fitted as a run fits it
                    anchors=anchors if output.depth_mode != "normalized" else None,
                    anchor_mode=mode,
                    overwrite=overwrite,
                    message=lambda text: self.message.emit(in_panel_words(text)),
                    camera=camera,
                    front_end="panel",
                )
            except ForeignFrames as exc:
                return ("ask", holds_text(exc), (pattern, output, frame_range, confidence, camera))

        anchors, mode = self.anchors, self.anchor_mode
        self.worker.submit("export", job)

    def shutdown(self) -> None:
        for worker in (self.cuts_worker, self.anchor_worker, self.upsample_worker, self.worker):
            worker.shutdown()
        if self.plate is not None:
            self.plate.close()

    # ---------------------------------------------------------------- internals
    def _session_for(self, request, generation, source, color, progress) -> DepthSession:
        """Worker thread: the session for this plate and model, loading what is missing."""
        with self._lock:
            pipeline, model_key, session = self._model, self._model_key, self._session
        if pipeline is None or model_key != request.model_key:
            report(progress, "load", 0, 1)
            loading = time.monotonic()
            pipeline = DepthModel.from_pretrained(
                request.checkpoint,
                device=request.device,
                dtype=request.config.dtype,
                dtype_explicit=False,
            )
            self._load_seconds.append(time.monotonic() - loading)
            report(progress, "load", 1, 1)
            session = None
        if session is None:
            # the plate's shots as `--cuts auto` finds them: each shot runs on its own
            session = DepthSession(
                pipeline,
                open_plate(source, input_colorspace=color),
                cuts="auto",
                detect_res=request.config.processing_res,
                min_shot_frames=request.config.min_shot_frames,
            )
        with self._lock:
            if generation != self._generation:
                raise Cancelled("another plate was opened")
            self._model, self._model_key = pipeline, request.model_key
            self._session = session
        return session

    # ---------------------------------------------------------------- cost estimate
    def shot_lengths(self) -> list[int]:
        """Frames of each shot of the open plate (one shot until cuts are known)."""
        if self.plate is None:
            return []
        n = len(self.plate.info.frame_numbers)
        bounds = [0, *(self.cuts or []), n]
        return [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]

    def _device_and_dtype(self, request: RunRequest) -> tuple[str, str]:
        device = resolve_device(request.device)
        # a preset's half precision runs in full on the CPU (device.resolve_dtype)
        dtype = "fp32" if device.type == "cpu" else request.config.dtype
        return describe_device(device), dtype

    def _checkpoint_folder(self, checkpoint: str) -> str | None:
        if checkpoint not in self._checkpoint_folders:
            try:
                folder = find_checkpoint(checkpoint)
            except RollingDepthError:
                folder = None
            self._checkpoint_folders[checkpoint] = None if folder is None else str(folder)
        return self._checkpoint_folders[checkpoint]

    def run_estimate(self, request: RunRequest | None) -> dict | None:
        """What Run with ``request`` would cost on this machine (costs.estimate_run), or
        None without a plate or with settings the plate cannot take."""
        if self.plate is None or request is None:
            return None
        info = self.plate.info
        try:
            device, dtype = self._device_and_dtype(request)
            pending = None
            if (
                self._session_idle()
                and self._session is not None
                and (self._model_key == request.model_key)
            ):
                pending = self._session.pending_snippets(request.config)
            return estimate_run(
                self.shot_lengths(), (info.height, info.width), request.config, device, dtype,
                self._checkpoint_folder(request.checkpoint), driver=COST_DRIVER,
                load=not self.model_loaded(request), write=False, pending=pending,
            )  # fmt: skip
        except RollingDepthError:
            return None

    def _cost_record(self, request: RunRequest, estimate: dict | None):
        """(key, work) the run about to start records its times under."""
        if estimate is None:
            return None
        device, dtype = self._device_and_dtype(request)
        parameters = model_parameters(self._checkpoint_folder(request.checkpoint))
        h, w = estimate["processing_size"]
        pending = None
        if (
            self._session_idle()
            and self._session is not None
            and (self._model_key == request.model_key)
        ):
            pending = self._session.pending_snippets(request.config)
        config = request.config
        shape = run_shape(self.shot_lengths(), (h, w), (h, w), config.dilations,
                          config.snippet_len, config.cap_dilation, config.refine_steps,
                          load=not self.model_loaded(request), write=False,
                          parameters=parameters, start=False)  # fmt: skip
        info = self.plate.info
        shape = replace(shape, plate=(info.height, info.width))
        if pending is not None:
            shape = replace(shape, snippets=pending)
        return cost_key(device, dtype, parameters, COST_DRIVER), shape

    def remaining(self, stage: str, done: int, total: int) -> float | None:
        """Seconds the running job has left, when it is a run with an estimate."""
        if self._left is None or self.worker.current_job != "run":
            return None
        left, at = self._left
        return max(left - (time.monotonic() - at), 0.0)

    def model_loaded(self, request: RunRequest) -> bool:
        """Whether the model ``request`` runs is the one in memory."""
        return self._model is not None and self._model_key == request.model_key

    def _needs_model(self, request: RunRequest) -> bool | None:
        """True/False, or None when it cannot be known (no plate, bad settings)."""
        if self.plate is None:
            return None
        if self._session is None or self._model_key != request.model_key:
            return True
        try:
            return self._session.needs_model(request.config)
        except RollingDepthError:
            return None

    def _update_hint(self) -> None:
        # while a job runs, its own line stays (a shot detection landing mid-run must not say
        # "Run will..."); `_after_job` says what Run would do next
        if self._session_idle():
            self._say_hint()
            # what Run would cost follows every change Run's hint follows
            self.estimate = self.run_estimate(self._latest)
        self.estimate_changed.emit(self.estimate)

    def _session_idle(self) -> bool:
        """Whether the GUI thread may ask the session (no job is using it)."""
        return not self.worker.busy

    def _say_hint(self) -> None:
        request = self._latest
        stale = self.result is not None and (request, self.holdout) != (
            self.result_request,
            self.result_holdout,
        )
        if self.plate is None:
            self.hint_changed.emit("open a plate to start", False)
        elif request is None:
            self.hint_changed.emit("press Run to predict depth", False)
        elif not self.model_loaded(request):
            self.hint_changed.emit("Run will load the model and read the plate", stale)
        elif self._session is None:
            self.hint_changed.emit("Run will read the plate (the model is loaded)", stale)
        else:
            try:
                pending = self._session.pending_snippets(request.config)
                needs_model = self._session.needs_model(request.config)
            except RollingDepthError as exc:
                self.hint_changed.emit(f"settings not valid for this plate: {exc}", True)
                return
            if pending:
                self.hint_changed.emit(f"Run will estimate depth: {pending} model passes", stale)
            elif needs_model:
                self.hint_changed.emit("Run will refine (runs the model)", stale)
            elif stale:
                self.hint_changed.emit("press Run to re-align (no model run)", True)
            else:
                self.hint_changed.emit("up to date", False)

    def _job_finished(self, name: str, payload: object) -> None:
        if name in ("run", "align"):
            generation, request, mattes, prediction, depth_range = payload
            if generation == self._generation:
                if self._session is not None and self.cuts != self._session.cuts:
                    self.cuts = list(self._session.cuts)  # what the run used
                    self.cuts_changed.emit(self.cuts)
                self.result, self.result_request = prediction, request
                self.result_holdout = mattes
                self._depth_range = depth_range
                self._upsampled.clear()
                self.result_changed.emit(prediction)
                self._fit_anchors()
                if name == "run" and self._costing is not None:
                    self._record_costs(prediction)
                # the stages by their names in the progress line, not the engine's keys
                timings = ", ".join(
                    f"{protocol.STAGES.get(k, k)} {v:.1f} s" for k, v in prediction.timings.items()
                )
                self.message.emit(f"{name} done: {timings}")
                n_snippets = sum(len(idx) for idx in prediction.indices)
                self.job_ended.emit(
                    name,
                    "done",
                    f"{JOB_VERBS[name]} in {self._elapsed():.1f} s \N{EM DASH} "
                    f"{prediction.depth.shape[0]} frames, {n_snippets} model passes",
                )
        elif name == "export" and isinstance(payload, tuple) and payload[0] == "ask":
            self.job_ended.emit(name, "stopped", "export waits: the folder holds another run")
            self.replace_asked.emit(payload[1], payload[2])
        elif name == "export":
            folder = Path(payload[0]).parent if payload else ""
            self.message.emit(f"exported {len(payload)} EXRs to {folder}")
            self.job_ended.emit(
                name, "done", f"exported {len(payload)} EXRs in {self._elapsed():.1f} s"
            )
            self.export_finished.emit(payload)
        self._after_job()

    def _record_costs(self, prediction: DepthPrediction) -> None:
        key, shape = self._costing
        seconds = {k: v for k, v in prediction.timings.items() if k in protocol.STAGE_WORK}
        seconds["encode"] = 0.0  # the session's prediction time includes its encoding
        if self._load_seconds:
            seconds["load"] = self._load_seconds[0]
        else:
            shape = replace(shape, load=False)
        CostBook.load().record(key, shape, seconds)
        self._costing = None

    def _job_failed(self, name: str, message: str) -> None:
        if name != "export" and not self.worker.busy:
            self._halted = (self._latest, self.holdout)
        self.job_ended.emit(name, "failed", f"{name} failed after {self._elapsed():.1f} s")
        engine_line = (self.worker.last_failure or ("", ""))[1]
        self.error.emit(JOB_TITLES.get(name, "Error"), message, engine_line)
        self._after_job()

    def _job_cancelled(self, name: str) -> None:
        if not self.worker.busy:  # not a restart: the user stopped it
            if name != "export":
                self._halted = (self._latest, self.holdout)
            self.message.emit(f"{name} cancelled")
            self.job_ended.emit(
                name, "cancelled", f"{name} cancelled after {self._elapsed():.1f} s"
            )
        self._after_job()

    def _job_begins(self, name: str) -> None:
        self._job_clock = time.monotonic()

    def _elapsed(self) -> float:
        return time.monotonic() - self._job_clock

    def _after_job(self) -> None:
        if self.worker.busy:
            return
        latest = self._latest
        current = (self.result_request, self.result_holdout)
        if latest is not None and self.result is not None and (latest, self.holdout) != current:
            self.settings_changed(latest)
        else:
            self._update_hint()


def _outcome(
    generation: int, request: RunRequest, mattes: MatteSource | None, prediction: DepthPrediction
) -> tuple:
    """A run's payload for the GUI thread, with the clip's depth extremes found here, in the
    worker (one pass over the whole clip is too long for the GUI thread)."""
    lo, hi = torch.aminmax(torch.from_numpy(prediction.depth))
    return generation, request, mattes, prediction, (float(lo), float(hi))


def color_choices(request: ColorRequest, engine_message: str) -> tuple[str, str]:
    """(message, details) for a colour choice the OCIO config refused: the message names
    the config's spaces closest to the one typed; the details list them all."""
    try:
        config_name = active_config(request.config)
        spaces = [space.getName() for space in load_config(config_name).getColorSpaces()]
    except RollingDepthError:
        return engine_message, ""
    message = engine_message
    if request.space.lower() not in {space.lower() for space in spaces} | {AUTO, *ALIASES}:
        closest = closest_names(request.space, spaces)
        if closest:
            message = f"{message.rstrip('.')}. Closest: {', '.join(closest)}."
    detail = f"{engine_message}\n\nColour spaces of {config_name}:\n" + "\n".join(spaces)
    return message, detail


def holds_text(exc: ForeignFrames) -> str:
    """What the export folder holds, for the question whether to replace it."""
    plate = f" of {Path(exc.plate).name}" if exc.plate else ""
    return f"{exc.folder} holds frames {exc.frames} from another export{plate}"


def unreadable_text(path: str | Path, exc: RollingDepthError) -> str:
    """What to tell an artist about a plate that would not open; the engine's message (with
    the file's full path) goes into the dialog's details."""
    target = Path(path)
    if target.is_file() and target.suffix.lower() not in IMAGE_EXTENSIONS:
        # FFmpeg's words stay in the details
        return f"{target.name} is not a readable video (or an unsupported codec)."
    # too short, a missing file, a pattern matching nothing, a folder without one
    # sequence: the engine's one line already says which
    return in_panel_words(str(exc))
