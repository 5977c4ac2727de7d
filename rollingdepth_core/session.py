"""A tuning session: one plate and one model, with everything expensive kept between runs.

Front-ends that let a user try settings (the Qt panel) hold one `DepthSession` per plate and
model. The session keeps the RGB latents of the current processing size, the shared noise per
seed, and every snippet prediction, keyed by what the model saw. So:

- changing alignment, merge or output settings runs no model at all (`align` only); each
  solve is kept too, so switching the confidence channel on only merges again;
- adding a dilation predicts only that dilation's snippets;
- a new processing size re-encodes the frames; a new plate or model needs a new session.

The session is not thread-safe: one thread at a time may call it (a GUI's worker thread).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .alignment import AlignmentResult, rescale_depth
from .anchors import AnchorFit
from .config import InferenceConfig, OutputConfig
from .errors import ConfigError, NonFiniteDepth, RollingDepthError
from .executors import LocalExecutor
from .method import merge, reduce_mattes, refine, solve
from .model import DepthModel, processing_size
from .output import ensure_writable, expand_pattern, run_metadata, write_depth_frames
from .plan import Plan, make_plan, missing_blocks
from .plate import Plate
from .progress import ProgressCallback
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


class DepthSession:
    """Depth for one plate with one model, recomputing only what a settings change needs.

    A thin driver of :mod:`.method` over a :class:`.stores.MemoryStore` that lives as long as
    the session, so snippet blocks (and the latents of the current processing size) are kept
    between runs; solves and merges are kept too.

    Parameters
    ----------
    model : DepthModel
        The loaded model; its dtype overrides ``config.dtype`` everywhere.
    plate : Plate
        The opened plate; frames are streamed from it whenever latents are (re)encoded.
    cache_bytes : int
        Snippet predictions beyond this size are dropped, least recently used first, except
        those the current settings use.
    """

    def __init__(
        self,
        model: DepthModel,
        plate: Plate,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.model = model
        self.plate = plate
        self.counters = SessionCounters()
        self.store = MemoryStore(cache_bytes)
        self._executor = LocalExecutor()
        # alignment key -> (result, its depth renormalised to [-1,1] [N,H,W])
        self._alignments: OrderedDict[tuple, tuple[AlignmentResult, np.ndarray]] = OrderedDict()
        # (block keys, aligner) -> the solve (no depth): a confidence toggle only re-merges
        self._solutions: OrderedDict[tuple, AlignmentResult] = OrderedDict()
        self._refined: tuple[tuple, np.ndarray] | None = None
        # holdout mattes (a .mattes.MatteSource): they change the solve, never the snippets
        self._holdout = None
        self._holdout_version = 0
        self._reduced_mattes: tuple[tuple[int, int], np.ndarray] | None = None

    # ---------------------------------------------------------------- what a config needs
    @property
    def n_frames(self) -> int:
        return len(self.plate)

    def settings(self, config: InferenceConfig) -> InferenceConfig:
        """``config`` checked, with the dtype the model actually runs in."""
        config.check()
        return replace(config, dtype=self.model.dtype_name)

    def processing_size(self, config: InferenceConfig) -> tuple[int, int]:
        info = self.plate.info
        return processing_size(info.height, info.width, config.processing_res)

    def plan(self, config: InferenceConfig) -> Plan:
        """The snippets of ``config``: one block per dilation, dilations after capping."""
        return make_plan(self.n_frames, config, self.store.block_snippets)

    def dilations(self, config: InferenceConfig) -> list[int]:
        """The dilations a run uses, after capping, duplicates kept."""
        return self.plan(config).dilations

    def pending_snippets(self, config: InferenceConfig) -> int:
        """How many snippets `predict` would have to run the UNet for."""
        config.check()
        return sum(len(b.indices) for b in missing_blocks(self.plan(config), self.store, config))

    def needs_model(self, config: InferenceConfig) -> bool:
        """Whether `run` with ``config`` would run the model (snippets or refinement)."""
        if self.pending_snippets(config) > 0:
            return True
        if config.refine_steps == 0:
            return False
        return self._refined is None or self._refined[0] != self._refine_key(config)

    def set_holdout(self, mattes) -> None:
        """Holdout mattes for the alignments from now on (a :class:`.mattes.MatteSource`, or
        None for none): pixels the co-alignment must not trust. Only the solve runs again; the
        kept snippets are reused."""
        self._holdout = mattes
        self._holdout_version += 1
        self._reduced_mattes = None

    # ---------------------------------------------------------------- cached stages
    def encode(self, config: InferenceConfig, progress: ProgressCallback | None = None) -> None:
        """1. RGB latents at the config's processing size, encoded once per size."""
        if self.store.needs_scan(config):
            # read as a run reads (runner.run_plate): resized, then converted to display
            fit = self.processing_size(config)
            frames = (rgb for _, rgb in self.plate.frames(fit))
            self.store.scan(frames, self.n_frames, config, lambda: self.model, None, progress)
            self.counters.encode_passes += 1
            self.counters.frames_encoded += self.n_frames

    def predict(
        self, config: InferenceConfig, progress: ProgressCallback | None = None
    ) -> list[np.ndarray]:
        """3. Snippet predictions per dilation entry ``[n_snippets, L, H, W]``; runs only new
        ones."""
        config = self.settings(config)
        plan = self.plan(config)
        todo = missing_blocks(plan, self.store, config)
        if todo:
            self.encode(config, progress)
            size = self.processing_size(config)
            stats = self.store.stats
            blocks, snippets = stats.blocks_computed, stats.snippets_computed
            try:
                self._executor.compute(todo, plan, self.store, config, size, lambda: self.model,
                                       progress)  # fmt: skip
            finally:  # a cancelled run keeps (and counts) the blocks it finished
                self.counters.predict_calls += stats.blocks_computed - blocks
                self.counters.snippets_predicted += stats.snippets_computed - snippets
        keys = self._keys(plan, config)
        for dropped in self.store.trim(set(keys)):
            for solved in [k for k in self._solutions if dropped in k[0]]:
                del self._solutions[solved]  # a recomputed prediction is solved anew
        return self._snippets(plan, config)

    def align(
        self, config: InferenceConfig, progress: ProgressCallback | None = None
    ) -> DepthPrediction:
        """4-7. Co-align, merge, normalise and (optionally) refine the kept snippets; no new
        snippets run.

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
        timings: dict[str, float] = {}
        plan = self.plan(config)
        keys = self._keys(plan, config)
        size = self.processing_size(config)

        # 4-6. solve, merge, normalise: cached per snippets and aligner settings
        clock = time.perf_counter()
        cached = self._cached_alignment(keys, config)
        if cached is None:
            solution = self._solution(plan, keys, config, progress)
            merged = self.store.frames_buffer("merged", self.n_frames, size)
            conf = (
                self.store.frames_buffer("confidence", self.n_frames, size)
                if config.confidence
                else None
            )
            merge(plan, self.store, config, solution, merged, conf, progress)
            if not (np.isfinite(merged.lo) and np.isfinite(merged.hi)):
                raise NonFiniteDepth()
            # [N,H,W] float32 in [-1,1], in place: a cached alignment holds one video
            aligned = rescale_depth(merged.array, merged.lo, merged.hi, out=merged.array)
            alignment = replace(solution, confidence=None if conf is None else conf.array)
            self._alignments[self._alignment_key(keys, config)] = (alignment, aligned)
            while len(self._alignments) > MAX_ALIGNMENTS:
                self._alignments.popitem(last=False)
            self.counters.alignments += 1
        else:
            alignment, aligned = cached
        timings["align"] = time.perf_counter() - clock

        # 7. refinement: the model runs again, so its result is cached too
        depth = aligned
        if config.refine_steps > 0:
            key = self._refine_key(config)
            if self._refined is not None and self._refined[0] == key:
                depth = self._refined[1]
            else:
                clock = time.perf_counter()
                self.encode(config, progress)
                out = self.store.frames_buffer("refined", self.n_frames, size)
                chunks = (
                    aligned[start : start + config.vae_batch_size]
                    for start in range(0, self.n_frames, config.vae_batch_size)
                )
                refine(self.model, self.store.all_latents(self.model), chunks, config, size,
                       out, progress)  # fmt: skip
                depth = out.array
                self._refined = (key, depth)
                self.counters.refine_passes += 1
                timings["refine"] = time.perf_counter() - clock
        return DepthPrediction(
            depth=depth,
            aligned=aligned,
            alignment=alignment,
            dilations=plan.dilations,
            indices=plan.indices,
            snippets=self._snippets(plan, config),
            processing_size=size,
            config=config,
            timings=timings,
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
    ) -> list[Path]:
        """Write ``prediction`` as one EXR per frame through the one writer
        (:func:`.output.write_depth_frames`, as a CLI run writes).

        ``pattern`` names the files, e.g. ``/shots/sh010/depth.####.exr`` (``#`` per digit,
        or ``%04d``); frames are numbered as in the plate. ``frame_range`` (inclusive, plate
        numbering) limits which frames are written; the depth convention is computed over
        the whole clip either way, so a partial export matches a full one. ``checkpoint``
        and ``preset`` are recorded in the headers with the run's settings. ``anchor_fit``
        (and its ``metric_range``, from :func:`.method.anchor` on ``prediction.depth``) writes
        scene units, as ``rollingdepth run --anchors`` does.

        Raises
        ------
        ConfigError
            A pattern without exactly one frame token, a range outside the plate, or a
            confidence channel the alignment did not compute.
        OutputError
            The folder cannot be written, or a write fails.
        """
        output.check(confidence=confidence)
        numbers = self.plate.info.frame_numbers
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
        conf = prediction.alignment.confidence
        if confidence and conf is None:
            raise ConfigError("the alignment has no confidence; align with `confidence=True`")
        ensure_writable(Path(expand_pattern(pattern, numbers[selected[0]])).parent)

        depth = prediction.depth
        lo, hi = float(depth.min()), float(depth.max())
        info = self.plate.info
        header = run_metadata(
            checkpoint, preset, prediction.config, output, info.source, (lo, hi),
            prediction.dilations, anchor_fit, metric_range if anchor_fit else None, info.color,
        )  # fmt: skip
        header.update(info.header_metadata())
        return write_depth_frames(
            iter(depth),
            (lo, hi),
            numbers,
            pattern,
            output,
            header,
            plate_size=(info.height, info.width),
            confidence=iter(conf) if confidence else None,
            progress=progress,
            select=selected,
            guides=(rgb for _, rgb in self.plate.frames()) if output.restore_res else None,
            anchor_fit=anchor_fit,
            windows=info.exr_windows(),
            timecodes=info.timecodes,
        )

    # ---------------------------------------------------------------- internals
    def _keys(self, plan: Plan, config: InferenceConfig) -> list[tuple]:
        return [self.store.block_key(b, config) for b in plan.blocks]

    def _snippets(self, plan: Plan, config: InferenceConfig) -> list[np.ndarray]:
        """Per dilation entry (duplicates share one array) its ``[n, L, H, W]`` snippets."""
        arrays = {b.dilation: self.store.block(self.store.block_key(b, config))
                  for b in plan.blocks}  # fmt: skip
        return [arrays[d] for d in plan.dilations]

    def _alignment_key(self, keys: list[tuple], config: InferenceConfig) -> tuple:
        return (tuple(keys), config.aligner, config.confidence, self._holdout_version)

    def _solution(self, plan, keys, config, progress) -> AlignmentResult:
        """The solver's scales, shifts and weights for these snippets, solved once."""
        key = (tuple(keys), config.aligner, self._holdout_version)
        if key in self._solutions:
            self._solutions.move_to_end(key)
            return self._solutions[key]
        mattes = None
        if self._holdout is not None:
            size = self.processing_size(config)
            if self._reduced_mattes is None or self._reduced_mattes[0] != size:
                self._reduced_mattes = (size, reduce_mattes(self._holdout.frames(), size))
            mattes = self._reduced_mattes[1]  # [N,h,w]
        solution = solve(plan, self.store, config, progress, mattes)
        self.counters.solves += 1
        self._solutions[key] = solution
        while len(self._solutions) > MAX_SOLUTIONS:
            self._solutions.popitem(last=False)
        return solution

    def _cached_alignment(
        self, keys: list[tuple], config: InferenceConfig
    ) -> tuple[AlignmentResult, np.ndarray] | None:
        # An alignment computed with confidence serves a request without it.
        for confidence in (config.confidence, True):
            key = self._alignment_key(keys, replace(config, confidence=confidence))
            if key in self._alignments:
                self._alignments.move_to_end(key)
                return self._alignments[key]
        return None

    def _refine_key(self, config: InferenceConfig) -> tuple:
        keys = self._keys(self.plan(config), config)
        return (
            self._alignment_key(keys, replace(config, confidence=False)),
            config.refine_steps,
            config.refine_snippet_len,
            config.refine_start_dilation,
            config.cap_dilation,
        )
