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
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .alignment import AlignmentResult, rescale_depth
from .anchors import AnchorFit, Anchors
from .config import DEFAULT_MIN_SHOT_FRAMES, InferenceConfig, OutputConfig
from .cuts import Shot, shots_from_cuts
from .errors import ConfigError, NonFiniteDepth, RollingDepthError
from .executors import LocalExecutor
from .method import DepthFrames, merge_shot, reduce_mattes, refine_shot, solve
from .model import DepthModel, processing_size
from .output import run_metadata, write_depth_frames
from .plan import Plan, make_plan, missing_blocks
from .plate import Plate
from .progress import ProgressCallback
from .protocol import KEY_SETTINGS
from .publish import Publisher, run_identity, split_pattern
from .request import cuts_source, file_hash, header_record, plate_cuts, used_record, who_record
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
        if cuts is None or isinstance(cuts, str):
            fit = processing_size(plate.info.height, plate.info.width, detect_res)
            text = cuts
            cuts, detected = plate_cuts(plate, fit, text, min_shot_frames=min_shot_frames)
            self.cuts_source = cuts_source(text, detected)
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
        if self.pending_snippets(config):
            self.encode(config, progress)
        size = self.processing_size(config)
        for state in self._shots:
            plan = self.plan(config, state)
            todo = missing_blocks(plan, state.store, config)
            if todo:
                stats = state.store.stats
                blocks, snippets = stats.blocks_computed, stats.snippets_computed
                try:
                    self._executor.compute(todo, plan, state.store, config, size,
                                           lambda: self.model, progress)  # fmt: skip
                finally:  # a cancelled run keeps (and counts) the blocks it finished
                    self.counters.predict_calls += stats.blocks_computed - blocks
                    self.counters.snippets_predicted += stats.snippets_computed - snippets
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
        preset: str = "custom",
        progress: ProgressCallback | None = None,
        anchor_fit: AnchorFit | None = None,
        metric_range: tuple[float, float] | None = None,
        overwrite: bool = False,
        message: Callable[[str], None] | None = None,
        front_end: str = "panel",
        requested_by: str | None = None,
        anchors: Anchors | None = None,
    ) -> list[Path]:
        """Publish ``prediction`` as an EXR sequence, as a run publishes (:mod:`.publish`:
        staged, swapped in whole, under the sequence's lock; another run's frames in the folder
        are refused unless ``overwrite``; the manifest records the settings, the holdout and
        the cuts), each shot written with its own range as a run writes it.

        ``pattern`` names the files, ``FOLDER/NAME.####.exr`` (``#`` per digit, or ``%04d``);
        frames are numbered as in the plate. ``frame_range`` (inclusive, plate numbering)
        limits which frames are written (they are the sequence then); the depth convention is
        computed over each whole shot either way, so a partial export matches a full one.
        ``anchor_fit`` (and its ``metric_range``, from :func:`.method.anchor` on
        ``prediction.depth``) writes scene units, as ``rollingdepth run --anchors`` does;
        ``anchors`` (what it was fitted to) is recorded as a run records its anchors file.
        The manifest and the EXR headers record what a run records (holdout, anchors, cuts,
        colour, timecode) and who asked: ``front_end`` and ``requested_by``.

        Raises
        ------
        ConfigError
            A pattern not of the form NAME.####.exr, a range outside the plate, or a
            confidence channel the alignment did not compute.
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
        conf = prediction.confidence
        if confidence and conf is None:
            raise ConfigError("the alignment has no confidence; align with `confidence=True`")
        folder, name, padding = split_pattern(pattern)
        chosen = [numbers[i] for i in selected]
        settings = {"checkpoint": checkpoint, "preset": preset, **asdict(prediction.config),
                    **asdict(output), "confidence_channel": confidence, "cuts": self.cuts,
                    "holdout": self._holdout_record(), "anchors": anchor_fit is not None}  # fmt: skip
        # what the run used, recorded as a run records it (one function for every front-end)
        used = used_record(numbers, self.cuts, self.cuts_source, self._holdout,
                           anchors if anchor_fit is not None else None,
                           anchors.source if anchors is not None else None)  # fmt: skip
        record = {"used": used, **who_record(front_end, requested_by),
                  KEY_SETTINGS: json.loads(json.dumps(settings, default=str))}  # fmt: skip
        if info.timecodes:
            record["timecode"] = info.timecodes.to_dict(chosen)
        publisher = Publisher(
            folder, name, chosen, run_identity(info.source, chosen, settings),
            input_paths=self.plate.source_files, overwrite=overwrite, source=info.source,
            record=record, message=message, padding=padding,
        )  # fmt: skip
        with publisher:
            publisher.check()
            with publisher.writing():
                self._write(prediction, publisher, output, selected, confidence, checkpoint,
                            preset, progress, anchor_fit, metric_range,
                            header_record(record))  # fmt: skip
            publisher.publish()
        return [publisher.frame_path(n) for n in chosen]

    def _write(self, prediction, publisher, output, selected, confidence, checkpoint, preset,
               progress, anchor_fit, metric_range, provenance) -> None:  # fmt: skip
        info = self.plate.info
        numbers = info.frame_numbers
        wanted = set(selected)
        plates = (rgb for _, rgb in self.plate.frames()) if output.restore_res else None
        for entry in prediction.shots:
            shot = entry.shot
            depth = prediction.depth[shot.start : shot.stop]
            lo, hi = float(depth.min()), float(depth.max())
            header = run_metadata(
                checkpoint, preset, prediction.config, output, info.source, (lo, hi),
                entry.dilations, anchor_fit, metric_range if anchor_fit else None,
                info.color,
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
                (lo, hi),
                numbers[shot.start : shot.stop],
                publisher.staging_pattern(),
                output,
                header,
                plate_size=(info.height, info.width),
                confidence=iter(conf[shot.start : shot.stop]) if confidence else None,
                progress=progress,
                select=[i - shot.start for i in range(shot.start, shot.stop) if i in wanted],
                guides=guides,
                anchor_fit=anchor_fit,
                windows=info.exr_windows(),
                on_written=publisher.wrote,
                timecodes=info.timecodes,
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

    def _holdout_record(self) -> dict | None:
        if self._holdout is None:
            return None
        return {"pattern": str(self._holdout.source), "alpha": bool(self._holdout.alpha_only),
                "sha256": file_hash(self._holdout.used_files())}  # fmt: skip

    def _keys(self, plan: Plan, config: InferenceConfig, state: _ShotState) -> list[tuple]:
        return [state.store.block_key(b, config) for b in plan.blocks]

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
