"""A tuning session: one plate and one model, with everything expensive kept between runs.

Front-ends that let a user try settings (the Qt panel) hold one `DepthSession` per plate and
model. The session keeps the RGB latents of the current processing size, the shared noise per
seed, and every snippet prediction, keyed by what the model saw. So:

- changing alignment, merge or output settings runs no model at all (`align` only); each
  solve is kept too, so switching the confidence channel on only merges again;
- adding a dilation predicts only that dilation's snippets;
- a new processing size re-encodes the frames; a new plate or model needs a new session.

A plate that is an edit runs each shot on its own, exactly as a run does (its own snippets,
alignment, normalisation and refinement): the session keeps one store and one set of caches
per shot, and drives the method's stage functions (:func:`.method.solve`,
:func:`.method.merge_shot`, :func:`.method.refine_shot`) for each.

The session is not thread-safe: one thread at a time may call it (a GUI's worker thread).
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .alignment import AlignmentResult, rescale_depth
from .anchors import AnchorFit, Anchors, warn_about_fits
from .cameras import CameraRequest, load_camera
from .config import DEFAULT_MIN_SHOT_FRAMES, InferenceConfig, OutputConfig
from .cuts import Shot, shots_from_cuts
from .errors import ConfigError, NonFiniteDepth, RollingDepthError
from .executors import LocalExecutor
from .method import (
    AnchorRequest,
    DepthFrames,
    anchor,
    merge_shot,
    reduce_mattes,
    refine_shot,
    solve,
)
from .model import DepthModel, processing_size
from .output import run_metadata, write_depth_frames
from .passes import FrameGeometry
from .plan import Plan, make_plan, missing_blocks
from .plate import Plate
from .progress import ProgressCallback, report
from .protocol import DEFAULT_PRESET
from .publish import Publisher, split_pattern
from .request import (
    RunRequest,
    check_anchors,
    cuts_source,
    default_cuts,
    header_record,
    plate_cuts,
    provenance,
)
from .runner import write_sidecars
from .stores import DEFAULT_MEMORY_BYTES, MemoryStore

DEFAULT_CACHE_BYTES = DEFAULT_MEMORY_BYTES
MAX_ALIGNMENTS = 2  # the current and the previous: toggling a setting back is free
MAX_SOLUTIONS = 8  # solves are small (per-snippet numbers); merging again is what costs


@dataclass
class DepthPrediction:
    """What a session run produced, kept so that alignment and output can be redone."""

    depth: np.ndarray  # [N,H,W] float32 relative inverse depth (larger = nearer), about [-1,1]
    aligned: np.ndarray  # [N,H,W] float32 co-aligned, renormalised to [-1,1], before refinement
    alignment: AlignmentResult
    dilations: list[int]  # as run, after capping (duplicates kept)
    indices: list[np.ndarray]  # per dilation entry [n_snippets, L]
    snippets: list[np.ndarray]  # per dilation entry [n_snippets, L, H, W]
    processing_size: tuple[int, int]  # (H, W)
    config: InferenceConfig
    timings: dict[str, float] = field(default_factory=dict)
    # per shot (one for a plate without cuts); the fields above that are not per frame
    # (alignment, dilations, indices, snippets) are the first shot's
    shots: list[ShotAlignment] = field(default_factory=list)
    confidence: np.ndarray | None = None  # [N,H,W] agreement of the snippets, when aligned so


@dataclass
class ShotAlignment:
    """One shot's part of a prediction: its alignment and snippets' frames (clip positions
    within the shot)."""

    shot: Shot
    alignment: AlignmentResult
    dilations: list[int]
    indices: list[np.ndarray]

    def __iter__(self):  # unpacks as (shot, alignment)
        return iter((self.shot, self.alignment))


@dataclass
class SessionCounters:
    """How often the expensive stages ran; tests assert on these to prove a cache hit."""

    encode_passes: int = 0  # VAE encodes of the whole plate
    frames_encoded: int = 0
    predict_calls: int = 0  # `predict_snippets` calls, one per dilation predicted
    snippets_predicted: int = 0  # snippets denoised by the UNet
    refine_passes: int = 0
    alignments: int = 0  # merges actually computed (cache misses)
    solves: int = 0  # co-alignment solves (a confidence toggle re-merges a kept solve)


@dataclass
class _ShotState:
    """One shot's store and kept results."""

    shot: Shot
    store: MemoryStore
    # alignment key -> (result, its depth renormalised to [-1,1] [n,H,W])
    alignments: OrderedDict = field(default_factory=OrderedDict)
    # (block keys, aligner, holdout version) -> the solve: a confidence toggle only re-merges
    solutions: OrderedDict = field(default_factory=OrderedDict)
    refined: tuple | None = None


def shot_ranges(prediction: DepthPrediction) -> list[tuple[float, float]]:
    """Each shot's (min, max) of ``prediction.depth``: the range a run writes it through."""
    ranges = []
    for entry in prediction.shots:
        depth = prediction.depth[entry.shot.start : entry.shot.stop]
        ranges.append((float(depth.min()), float(depth.max())))
    return ranges


def anchor_shots(
    prediction: DepthPrediction,
    anchors: Anchors,
    mode: str,
    frame_numbers: Sequence[int],
    plate_size: tuple[int, int],
    progress: ProgressCallback | None = None,
) -> list[tuple[AnchorFit, tuple[float, float]]]:
    """7b for each shot of ``prediction``, as a run anchors it (:func:`.method.anchor` on the
    shot's frames and range): per shot, the fit and its range of ``1/Z``. Reads only
    ``prediction``, so it may run beside the session's own thread."""
    fits = []
    total = prediction.depth.shape[0]
    for entry, value_range in zip(prediction.shots, shot_ranges(prediction), strict=True):
        shot = entry.shot

        def frames(shot=shot):
            for k in range(shot.start, shot.stop):
                report(progress, "anchors", k, total)  # raises Cancelled when restarted
                yield prediction.depth[k]

        wanted = AnchorRequest(anchors, frame_numbers[shot.start : shot.stop], mode)
        try:
            fits.append(anchor(frames(), wanted, plate_size, value_range))
        except RollingDepthError as exc:
            if len(prediction.shots) == 1:
                raise
            raise type(exc)(f"shot {shot.index} (frames {shot.first_frame}-{shot.last_frame}): "
                            f"{exc}") from exc  # fmt: skip
    return fits


class DepthSession:
    """Depth for one plate with one model, recomputing only what a settings change needs.

    A thin driver of :mod:`.method` over one :class:`.stores.MemoryStore` per shot that lives
    as long as the session, so snippet blocks (and the latents of the current processing
    size) are kept between runs; solves and merges are kept too.

    Parameters
    ----------
    model : DepthModel
        The loaded model; its dtype overrides ``config.dtype`` everywhere.
    plate : Plate
        The opened plate; frames are streamed from it whenever latents are (re)encoded.
    cache_bytes : int
        Snippet predictions beyond this size are dropped, least recently used first, except
        those the current settings use (shared among the shots by length).
    cuts : sequence of int, str or None
        Clip positions where a shot starts; or ``--cuts`` text (``auto``, ``none``, frame
        numbers, an edit file); None: what a run does by default (detected for a video,
        none for an image sequence), detected on frames at ``detect_res``'s processing size.
    """

    def __init__(
        self,
        model: DepthModel,
        plate: Plate,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        cuts: Sequence[int] | str | None = None,
        detect_res: int = 768,
        min_shot_frames: int = DEFAULT_MIN_SHOT_FRAMES,
    ) -> None:
        self.model = model
        self.plate = plate
        self.counters = SessionCounters()
        self.cuts_source = "given"  # how the shots were found, as a run records it
        # the cuts as a run's request gives them (``--cuts`` text; None: the plate's default)
        self.request_cuts: str | None = None
        if cuts is None or isinstance(cuts, str):
            fit = processing_size(plate.info.height, plate.info.width, detect_res)
            text = cuts
            cuts, detected = plate_cuts(plate, fit, text, min_shot_frames=min_shot_frames)
            self.cuts_source = cuts_source(text, detected)
            if text is not None and text.strip().lower() != default_cuts(plate.info):
                self.request_cuts = text
        else:
            self.request_cuts = " ".join(str(plate.info.frame_numbers[c]) for c in cuts) or "none"
        self.cuts = list(cuts)
        numbers = plate.info.frame_numbers
        shots = shots_from_cuts(numbers, self.cuts)
        self._shots = [
            _ShotState(shot, MemoryStore(max(1, cache_bytes * shot.n_frames // len(numbers))))
            for shot in shots
        ]
        self._executor = LocalExecutor()
        # holdout mattes (a .mattes.MatteSource): they change the solve, never the snippets
        self._holdout = None
        self._holdout_version = 0
        self._reduced_mattes: tuple[tuple[int, int], np.ndarray] | None = None

    # ---------------------------------------------------------------- what a config needs
    @property
    def n_frames(self) -> int:
        return len(self.plate)

    @property
    def shots(self) -> list[Shot]:
        return [state.shot for state in self._shots]

    @property
    def store(self) -> MemoryStore:
        """The first shot's store (the only one of a plate without cuts)."""
        return self._shots[0].store

    def settings(self, config: InferenceConfig) -> InferenceConfig:
        """``config`` checked, with the dtype the model actually runs in."""
        config.check()
        return replace(config, dtype=self.model.dtype_name)

    def processing_size(self, config: InferenceConfig) -> tuple[int, int]:
        info = self.plate.info
        return processing_size(info.height, info.width, config.processing_res)

    def plan(self, config: InferenceConfig, state: _ShotState | None = None) -> Plan:
        """The snippets of ``config`` for a shot (default: the first): one block per
        dilation, dilations after capping."""
        state = state or self._shots[0]
        return make_plan(state.shot.n_frames, config, state.store.block_snippets)

    def dilations(self, config: InferenceConfig) -> list[int]:
        """The dilations a run uses (of the first shot), after capping, duplicates kept."""
        return self.plan(config).dilations

    def pending_snippets(self, config: InferenceConfig) -> int:
        """How many snippets `predict` would have to run the UNet for."""
        config.check()
        return sum(
            len(b.indices)
            for state in self._shots
            for b in missing_blocks(self.plan(config, state), state.store, config)
        )

    def needs_model(self, config: InferenceConfig) -> bool:
        """Whether `run` with ``config`` would run the model (snippets or refinement)."""
        if self.pending_snippets(config) > 0:
            return True
        if config.refine_steps == 0:
            return False
        return any(
            state.refined is None or state.refined[0] != self._refine_key(config, state)
            for state in self._shots
        )

    def set_holdout(self, mattes) -> None:
        """Holdout mattes for the alignments from now on (a :class:`.mattes.MatteSource`, or
        None for none): pixels the co-alignment must not trust. Only the solve runs again; the
        kept snippets are reused."""
        self._holdout = mattes
        self._holdout_version += 1
        self._reduced_mattes = None

    # ---------------------------------------------------------------- cached stages
    def encode(self, config: InferenceConfig, progress: ProgressCallback | None = None) -> None:
        """1. RGB latents at the config's processing size, encoded once per size; one pass
        over the plate, each shot's frames into its own store."""
        todo = [s for s in self._shots if s.store.needs_scan(config, (s.shot.start, s.shot.stop))]
        if not todo:
            return
        # read as a run reads (runner.run): resized, then converted to display
        fit = self.processing_size(config)
        stream = (rgb for _, rgb in self.plate.frames(fit))
        for state in self._shots:
            shot = state.shot
            frames = itertools.islice(stream, shot.n_frames)
            if state in todo:
                state.store.scan(frames, shot.n_frames, config, lambda: self.model, None,
                                 progress, clip=(shot.start, shot.stop))  # fmt: skip
                self.counters.frames_encoded += shot.n_frames
            else:
                for _ in frames:
                    pass
        self.counters.encode_passes += 1

    def predict(self, config: InferenceConfig, progress: ProgressCallback | None = None) -> None:
        """3. Snippet predictions of every shot; runs only new ones."""
        config = self.settings(config)
        pending = self.pending_snippets(config)
        if pending:
            self.encode(config, progress)
        size = self.processing_size(config)
        done_before = 0
        for state in self._shots:
            plan = self.plan(config, state)
            todo = missing_blocks(plan, state.store, config)
            if todo:
                stats = state.store.stats
                blocks, snippets = stats.blocks_computed, stats.snippets_computed
                # one count over every shot: what `pending_snippets` announced
                shot_progress = _counted_over_shots(progress, done_before, pending)
                try:
                    self._executor.compute(todo, plan, state.store, config, size,
                                           lambda: self.model, shot_progress)  # fmt: skip
                finally:  # a cancelled run keeps (and counts) the blocks it finished
                    self.counters.predict_calls += stats.blocks_computed - blocks
                    self.counters.snippets_predicted += stats.snippets_computed - snippets
                done_before += sum(len(b.indices) for b in todo)
            keys = self._keys(plan, config, state)
            for dropped in state.store.trim(set(keys)):
                for solved in [k for k in state.solutions if dropped in k[0]]:
                    del state.solutions[solved]  # a recomputed prediction is solved anew

    def align(
        self, config: InferenceConfig, progress: ProgressCallback | None = None
    ) -> DepthPrediction:
        """4-7. Co-align, merge, normalise and (optionally) refine the kept snippets, shot by
        shot; no new snippets run.

        Raises
        ------
        RollingDepthError
            Some snippets of ``config`` have not been predicted yet (call `predict`).
        """
        config = self.settings(config)
        pending = self.pending_snippets(config)
        if pending:
            raise RollingDepthError(
                f"{pending} snippets of these settings are not predicted yet; run `predict` first"
            )
        timings: dict[str, float] = {"align": 0.0}
        depths, aligneds, confidences, alignments = [], [], [], []
        for state in self._shots:
            clock = time.perf_counter()
            alignment, aligned = self._aligned(state, config, progress)
            timings["align"] += time.perf_counter() - clock
            depth = aligned
            if config.refine_steps > 0:
                clock = time.perf_counter()
                depth = self._refine(state, config, alignment, aligned, progress)
                timings["refine"] = timings.get("refine", 0.0) + time.perf_counter() - clock
            depths.append(depth)
            aligneds.append(aligned)
            confidences.append(alignment.confidence)
            shot_plan = self.plan(config, state)
            alignments.append(ShotAlignment(state.shot, alignment, shot_plan.dilations,
                                            shot_plan.indices))  # fmt: skip
        first = self._shots[0]
        plan = self.plan(config, first)
        single = len(self._shots) == 1
        confidence = None
        if all(c is not None for c in confidences):
            confidence = confidences[0] if single else np.concatenate(confidences)
        return DepthPrediction(
            depth=depths[0] if single else np.concatenate(depths),
            aligned=aligneds[0] if single else np.concatenate(aligneds),
            alignment=alignments[0].alignment,
            dilations=plan.dilations,
            indices=plan.indices,
            snippets=self._snippets(plan, config, first),
            processing_size=self.processing_size(config),
            config=config,
            timings=timings,
            shots=alignments,
            confidence=confidence,
        )

    def run(
        self, config: InferenceConfig, progress: ProgressCallback | None = None
    ) -> DepthPrediction:
        """`predict` what is missing, then `align`."""
        clock = time.perf_counter()
        self.predict(config, progress)
        predicted = time.perf_counter() - clock
        result = self.align(config, progress)
        result.timings["snippets"] = predicted
        return result

    # ---------------------------------------------------------------- export
    def export(
        self,
        prediction: DepthPrediction,
        pattern: str,
        output: OutputConfig,
        frame_range: tuple[int, int] | None = None,
        confidence: bool = False,
        checkpoint: str = "",
        preset: str = DEFAULT_PRESET,
        progress: ProgressCallback | None = None,
        anchors: Anchors | None = None,
        anchor_mode: str = "global",
        overwrite: bool = False,
        message: Callable[[str], None] | None = None,
        front_end: str = "panel",
        requested_by: str | None = None,
        camera: CameraRequest | None = None,
    ) -> list[Path]:
        """Publish ``prediction`` as an EXR sequence, as a run publishes (:mod:`.publish`:
        staged, swapped in whole, under the sequence's lock; another run's frames in the folder
        are refused unless ``overwrite``), each shot written with its own range as a run
        writes it, with the same sidecars (alignment, anchors, preview, timeline).

        The export is the :class:`.request.RunRequest` a run of these settings would be (the
        plate, the session's cuts and holdout, ``anchors``' file, ``camera``, who asked:
        ``front_end`` and ``requested_by``), checked as a run checks it; its settings, run id,
        manifest and EXR headers are the run's, through the same functions.

        ``pattern`` names the files, ``FOLDER/NAME.####.exr`` (``#`` per digit, or ``%04d``);
        frames are numbered as in the plate. ``frame_range`` (inclusive, plate numbering)
        limits which frames are written (they are the sequence then, without a timeline); the
        depth convention is computed over each whole shot either way, so a partial export
        matches a full one. ``anchors`` anchors each shot to scene units as a run does
        (:func:`.method.anchor` per shot, ``anchor_mode`` ``global`` or ``smooth``).
        ``camera`` (as ``--camera``/``--focal-length``/``--fov`` build it) adds the passes
        ``output.passes`` names (default Z, P, N) with that camera.

        Raises
        ------
        ConfigError
            A pattern not of the form NAME.####.exr, a range outside the plate, a confidence
            channel the alignment did not compute, or anything a run would refuse.
        OutputError
            The folder holds another run's frames (without ``overwrite``), another writer
            holds it, or a write fails (nothing is published then).
        """
        output.check(confidence=confidence)
        info = self.plate.info
        numbers = info.frame_numbers
        if len(numbers) != prediction.depth.shape[0]:
            raise ConfigError(
                f"the prediction has {prediction.depth.shape[0]} frames, the plate {len(numbers)}"
            )
        selected = list(range(len(numbers)))
        if frame_range is not None:
            first, last = frame_range
            selected = [i for i, n in enumerate(numbers) if first <= n <= last]
            if not selected:
                raise ConfigError(
                    f"frame range {first}-{last} holds none of the plate's frames "
                    f"({numbers[0]}-{numbers[-1]})"
                )
        if confidence and prediction.confidence is None:
            raise ConfigError("the alignment has no confidence; align with `confidence=True`")
        folder, name, padding = split_pattern(pattern)
        chosen = [numbers[i] for i in selected]
        # the request a run of these settings is: one record for every front-end
        config = replace(prediction.config, confidence=confidence)
        mattes = self._holdout
        alpha = mattes is not None and bool(mattes.alpha_only)
        request = RunRequest(
            info.source, str(folder), config, replace(output, name=name), checkpoint,
            preset=preset, anchors=None if anchors is None else anchors.source,
            anchor_fit=anchor_mode, cuts=self.request_cuts,
            holdout=None if mattes is None or alpha else str(mattes.source), holdout_alpha=alpha,
            overwrite=overwrite, camera=camera or CameraRequest(), front_end=front_end,
            requested_by=requested_by,
        )  # fmt: skip
        request.check_settings()
        plate_size = (info.height, info.width)
        if anchors is not None:
            check_anchors(anchors, numbers, plate_size, self.shots, request.anchors)
        geometry = track = None
        if request.camera.given:
            track = load_camera(request.camera, numbers, plate_size, info.pixel_aspect)
            geometry = FrameGeometry(track, request.passes)
        ranges = shot_ranges(prediction)
        fits = []
        if anchors is not None:
            fits = anchor_shots(prediction, anchors, anchor_mode, numbers, plate_size)
            warn_about_fits([fit for fit, _ in fits], plate_size, message)
        record = provenance(request, self.plate, self.cuts, self.cuts_source == "detected",
                            mattes, anchors, track)  # fmt: skip
        publisher = Publisher.for_plate(
            folder, name, self.plate, request.settings(config), overwrite, record, message,
            frame_numbers=chosen, padding=padding,
        )  # fmt: skip
        with publisher:
            publisher.check()
            with publisher.writing():
                self._write(prediction, publisher, request, selected, ranges, fits, progress,
                            header_record(record), geometry)  # fmt: skip
                sidecars = write_sidecars(
                    publisher, request.output, info, [e.shot for e in prediction.shots],
                    [e.alignment for e in prediction.shots],
                    [fit for fit, _ in fits] if anchors is not None else None,
                    lambda: ((iter(prediction.depth[e.shot.start : e.shot.stop]), r)
                             for e, r in zip(prediction.shots, ranges, strict=True)),
                    progress, timeline=len(selected) == len(numbers),
                )  # fmt: skip
            publisher.publish([n for n in sidecars if n])
        return [publisher.frame_path(n) for n in chosen]

    def _write(self, prediction, publisher, request, selected, ranges, fits, progress,
               provenance, geometry=None) -> None:  # fmt: skip
        info = self.plate.info
        numbers = info.frame_numbers
        output = request.output
        wanted = set(selected)
        plates = (rgb for _, rgb in self.plate.frames()) if output.restore_res else None
        for k, entry in enumerate(prediction.shots):
            shot = entry.shot
            depth = prediction.depth[shot.start : shot.stop]
            fit, metric = fits[k] if fits else (None, None)
            header = run_metadata(
                request.checkpoint, request.preset, request.config, output, info.source,
                ranges[k], entry.dilations, fit, metric, info.color,
            )  # fmt: skip
            header.update(info.header_metadata())
            header.update(provenance)
            if len(self._shots) > 1:
                header["shot"] = shot.index
                header["shot_frames"] = f"{shot.first_frame}-{shot.last_frame}"
            conf = prediction.confidence
            guides = None if plates is None else itertools.islice(plates, shot.n_frames)
            write_depth_frames(
                iter(depth),
                ranges[k],
                numbers[shot.start : shot.stop],
                publisher.staging_pattern(),
                output,
                header,
                plate_size=(info.height, info.width),
                confidence=iter(conf[shot.start : shot.stop])
                if request.config.confidence
                else None,
                progress=progress,
                select=[i - shot.start for i in range(shot.start, shot.stop) if i in wanted],
                guides=guides,
                anchor_fit=fit,
                windows=info.exr_windows(),
                on_written=publisher.wrote,
                timecodes=info.timecodes,
                geometry=geometry,
            )

    # ---------------------------------------------------------------- internals
    def _aligned(self, state: _ShotState, config: InferenceConfig, progress):
        """4-6 for one shot, through the method's stages: cached per snippets, aligner
        settings and holdout."""
        plan = self.plan(config, state)
        keys = self._keys(plan, config, state)
        cached = self._cached_alignment(state, keys, config)
        if cached is not None:
            return cached
        solution = self._solution(state, plan, keys, config, progress)
        result = merge_shot(plan, state.store, config, solution, self.processing_size(config),
                            progress=progress)  # fmt: skip
        merged, conf = result.buffer, result.confidence_buffer
        if not (np.isfinite(merged.lo) and np.isfinite(merged.hi)):
            raise NonFiniteDepth()
        # [n,H,W] float32 in [-1,1], in place: a cached alignment holds one video
        aligned = rescale_depth(merged.array, merged.lo, merged.hi, out=merged.array)
        alignment = replace(solution, confidence=None if conf is None else conf.array)
        state.alignments[self._alignment_key(keys, config)] = (alignment, aligned)
        while len(state.alignments) > MAX_ALIGNMENTS:
            state.alignments.popitem(last=False)
        self.counters.alignments += 1
        return alignment, aligned

    def _refine(self, state: _ShotState, config, alignment, aligned, progress) -> np.ndarray:
        """7 for one shot: the model runs again, so its result is cached too."""
        key = self._refine_key(config, state)
        if state.refined is not None and state.refined[0] == key:
            return state.refined[1]
        self.encode(config, progress)
        plan = self.plan(config, state)
        store = state.store
        buffer = store.frames_buffer("aligned", plan.n_frames, self.processing_size(config))
        for frame in aligned:
            buffer.append(frame)
        buffer.close()
        result = DepthFrames(buffer, (buffer.lo, buffer.hi), None, None, alignment, plan,
                             self.processing_size(config), None, store, config)  # fmt: skip
        refine_shot(result, self.model, progress=progress)
        depth = result.buffer.array
        state.refined = (key, depth)
        self.counters.refine_passes += 1
        return depth

    def _keys(self, plan: Plan, config: InferenceConfig, state: _ShotState) -> list[tuple]:
        """The kept blocks ``plan`` uses, and its dilation entries: two dilations capped to
        one value share a block but are two entries to align (1 10 25 -> 1 7 7 is not 1 7)."""
        blocks = [state.store.block_key(b, config) for b in plan.blocks]
        return [*blocks, ("entries", tuple(plan.dilations))]

    def _snippets(self, plan: Plan, config: InferenceConfig, state: _ShotState) -> list:
        """Per dilation entry (duplicates share one array) its ``[n, L, H, W]`` snippets."""
        arrays = {b.dilation: state.store.block(state.store.block_key(b, config))
                  for b in plan.blocks}  # fmt: skip
        return [arrays[d] for d in plan.dilations]

    def _alignment_key(self, keys: list[tuple], config: InferenceConfig) -> tuple:
        return (tuple(keys), config.aligner, config.confidence, self._holdout_version)

    def _solution(self, state, plan, keys, config, progress) -> AlignmentResult:
        """The solver's scales, shifts and weights for these snippets, solved once."""
        key = (tuple(keys), config.aligner, self._holdout_version)
        if key in state.solutions:
            state.solutions.move_to_end(key)
            return state.solutions[key]
        mattes = None
        if self._holdout is not None:
            size = self.processing_size(config)
            if self._reduced_mattes is None or self._reduced_mattes[0] != size:
                self._reduced_mattes = (size, reduce_mattes(self._holdout.frames(), size))
            mattes = self._reduced_mattes[1][state.shot.start : state.shot.stop]  # [n,h,w]
        solution = solve(plan, state.store, config, progress, mattes)
        self.counters.solves += 1
        state.solutions[key] = solution
        while len(state.solutions) > MAX_SOLUTIONS:
            state.solutions.popitem(last=False)
        return solution

    def _cached_alignment(self, state, keys: list[tuple], config: InferenceConfig):
        # An alignment computed with confidence serves a request without it.
        for confidence in (config.confidence, True):
            key = self._alignment_key(keys, replace(config, confidence=confidence))
            if key in state.alignments:
                state.alignments.move_to_end(key)
                return state.alignments[key]
        return None

    def _refine_key(self, config: InferenceConfig, state: _ShotState) -> tuple:
        keys = self._keys(self.plan(config, state), config, state)
        return (
            self._alignment_key(keys, replace(config, confidence=False)),
            config.refine_steps,
            config.refine_snippet_len,
            config.refine_start_dilation,
            config.cap_dilation,
        )


def _counted_over_shots(
    progress: ProgressCallback | None, done_before: int, total: int
) -> ProgressCallback | None:
    """``progress`` whose snippet counts run on from the shots before, out of every shot's
    total (a shot's executor counts its own from 0)."""
    if progress is None:
        return None

    def shot_progress(stage: str, done: int, shot_total: int) -> None:
        if stage == "snippets":
            progress(stage, min(done_before + done, total), total)
        else:
            progress(stage, done, shot_total)

    return shot_progress
