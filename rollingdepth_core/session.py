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

import re
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .alignment import (
    AlignmentResult,
    merge_solution,
    normalize_depth,
    reduce_maps,
    solve_reduced,
)
from .config import InferenceConfig, OutputConfig
from .errors import ConfigError, RollingDepthError
from .exr import write_depth_exr
from .output import convert_depth, ensure_writable, resize_map, run_metadata
from .pipeline import DepthPrediction, RollingDepthPipeline, processing_size
from .plate import Plate
from .progress import ProgressCallback, report
from .snippets import resolve_dilations, snippet_indices

# What a snippet prediction depends on: (dilation, snippet_len, denoise_steps, seed, res).
SnippetKey = tuple[int, int, int, int, int]
DEFAULT_CACHE_BYTES = 4 * 1024**3
NON_FINITE = "the model produced non-finite depth; with fp16 try bf16 or fp32"
MAX_ALIGNMENTS = 2  # the current and the previous: toggling a setting back is free
MAX_SOLUTIONS = 8  # solves are small (per-snippet numbers); merging again is what costs
# `####` (one digit of padding per `#`) or printf `%04d` / `%d` in an output pattern.
_FRAME_TOKEN = re.compile(r"#+|%(0\d+)?d")


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
    """Depth for one plate with one pipeline, recomputing only what a settings change needs.

    Parameters
    ----------
    pipeline : RollingDepthPipeline
        The loaded model; its dtype overrides ``config.dtype`` everywhere.
    plate : Plate
        The opened plate; frames are streamed from it whenever latents are (re)encoded.
    cache_bytes : int
        Snippet predictions beyond this size are dropped, least recently used first, except
        those the current settings use.
    """

    def __init__(
        self,
        pipeline: RollingDepthPipeline,
        plate: Plate,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.pipeline = pipeline
        self.plate = plate
        self.cache_bytes = cache_bytes
        self.counters = SessionCounters()
        self._latents: torch.Tensor | None = None  # [N,4,h,w] at `_latents_res`
        self._latents_res: int | None = None
        self._noise: dict[tuple[int, tuple[int, int]], torch.Tensor] = {}
        self._snippets: OrderedDict[SnippetKey, np.ndarray] = OrderedDict()
        # alignment key -> (result, its depth renormalised to [-1,1] [N,H,W])
        self._alignments: OrderedDict[tuple, tuple[AlignmentResult, np.ndarray]] = OrderedDict()
        # (snippet keys, aligner) -> the solve (no depth): a confidence toggle only re-merges
        self._solutions: OrderedDict[tuple, AlignmentResult] = OrderedDict()
        # per snippet array: its minimum (for the offset) and its reduced maps, copied once
        # (1 % of the snippets' bytes; the solver reads them every pass, and strided reads
        # from the full maps would cost about a third of the solve)
        self._reduced: dict[SnippetKey, tuple[float, np.ndarray]] = {}
        self._refined: tuple[tuple, np.ndarray] | None = None

    # ---------------------------------------------------------------- what a config needs
    @property
    def n_frames(self) -> int:
        return len(self.plate)

    def settings(self, config: InferenceConfig) -> InferenceConfig:
        """``config`` checked, with the dtype the pipeline actually runs in."""
        config.check()
        return replace(config, dtype=self.pipeline.dtype_name)

    def processing_size(self, config: InferenceConfig) -> tuple[int, int]:
        info = self.plate.info
        return processing_size(info.height, info.width, config.processing_res)

    def dilations(self, config: InferenceConfig) -> list[int]:
        """The dilations a run uses, after capping, duplicates kept."""
        return resolve_dilations(
            self.n_frames, config.snippet_len, config.dilations, config.cap_dilation
        )

    @staticmethod
    def snippet_key(config: InferenceConfig, dilation: int) -> SnippetKey:
        return (
            dilation,
            config.snippet_len,
            config.denoise_steps,
            config.seed,
            config.processing_res,
        )

    def pending_snippets(self, config: InferenceConfig) -> int:
        """How many snippets `predict` would have to run the UNet for."""
        config.check()
        return sum(
            len(snippet_indices(self.n_frames, config.snippet_len, d))
            for d in dict.fromkeys(self.dilations(config))
            if self.snippet_key(config, d) not in self._snippets
        )

    def needs_model(self, config: InferenceConfig) -> bool:
        """Whether `run` with ``config`` would run the model (snippets or refinement)."""
        if self.pending_snippets(config) > 0:
            return True
        if config.refine_steps == 0:
            return False
        return self._refined is None or self._refined[0] != self._refine_key(config)

    # ---------------------------------------------------------------- cached stages
    def encode(
        self, config: InferenceConfig, progress: ProgressCallback | None = None
    ) -> torch.Tensor:
        """RGB latents ``[N,4,h,w]`` at the config's processing size, encoded once per size."""
        if self._latents is None or self._latents_res != config.processing_res:
            self._latents = None  # free the old size before encoding the new one
            frames = (rgb for _, rgb in self.plate.frames())
            latents, _ = self.pipeline.encode_frames(frames, config, self.n_frames, progress)
            self._latents, self._latents_res = latents, config.processing_res
            self.counters.encode_passes += 1
            self.counters.frames_encoded += latents.shape[0]
        return self._latents

    def noise(self, seed: int, latent_shape: tuple[int, int]) -> torch.Tensor:
        """The shared noise latent ``[1,4,h,w]`` for ``seed``, drawn once."""
        key = (seed, tuple(latent_shape))
        if key not in self._noise:
            self._noise[key] = self.pipeline.shared_noise(tuple(latent_shape), seed)
        return self._noise[key]

    def predict(
        self, config: InferenceConfig, progress: ProgressCallback | None = None
    ) -> list[np.ndarray]:
        """Snippet predictions per dilation entry ``[n_snippets, L, H, W]``; runs only new ones."""
        config = self.settings(config)
        dilations = self.dilations(config)
        missing = [
            d for d in dict.fromkeys(dilations) if self.snippet_key(config, d) not in self._snippets
        ]
        if missing:
            latents = self.encode(config, progress)  # [N,4,h,w]
            noise = self.noise(config.seed, tuple(latents.shape[-2:]))  # [1,4,h,w]
            size = self.processing_size(config)
            plans = [(d, snippet_indices(self.n_frames, config.snippet_len, d)) for d in missing]
            total = sum(len(idx) for _, idx in plans)
            done = 0
            for d, idx in plans:
                self._snippets[self.snippet_key(config, d)] = self.pipeline.predict_snippets(
                    latents, noise, idx, size, config, progress, done, total
                )
                done += len(idx)
                self.counters.predict_calls += 1
                self.counters.snippets_predicted += len(idx)
        used = [self.snippet_key(config, d) for d in dilations]
        for key in used:
            self._snippets.move_to_end(key)
        self._trim_cache(set(used))
        return [self._snippets[key] for key in used]

    def align(
        self, config: InferenceConfig, progress: ProgressCallback | None = None
    ) -> DepthPrediction:
        """Co-align, merge and (optionally) refine the cached snippets; no new snippets run.

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
        dilations = self.dilations(config)
        keys = [self.snippet_key(config, d) for d in dilations]
        snippets = [self._snippets[key] for key in keys]
        indices = [snippet_indices(self.n_frames, config.snippet_len, d) for d in dilations]

        # 9. co-alignment, merge, renormalisation: cached per snippets and aligner settings
        clock = time.perf_counter()
        cached = self._cached_alignment(keys, config)
        if cached is None:
            solution = self._solution(keys, snippets, indices, config, progress)
            alignment = merge_solution(snippets, indices, solution, confidence=config.confidence)
            try:
                # [N,H,W] float32 in [-1,1], in place: a cached alignment holds one video
                aligned = normalize_depth(alignment.depth, inplace=True)
                alignment.depth = None
            except ConfigError as exc:  # non-finite values
                raise RollingDepthError(NON_FINITE) from exc
            self._alignments[self._alignment_key(keys, config)] = (alignment, aligned)
            while len(self._alignments) > MAX_ALIGNMENTS:
                self._alignments.popitem(last=False)
            self.counters.alignments += 1
        else:
            alignment, aligned = cached
        timings["align"] = time.perf_counter() - clock

        # 10. refinement: the model runs again, so its result is cached too
        depth = aligned
        if config.refine_steps > 0:
            key = self._refine_key(config)
            if self._refined is not None and self._refined[0] == key:
                depth = self._refined[1]
            else:
                clock = time.perf_counter()
                latents = self.encode(config, progress)
                noise = self.noise(config.seed, tuple(latents.shape[-2:]))
                size = self.processing_size(config)
                depth = self.pipeline.refine(latents, aligned, noise, size, config, progress)
                if not np.isfinite(depth).all():
                    raise RollingDepthError(NON_FINITE)
                self._refined = (key, depth)
                self.counters.refine_passes += 1
                timings["refine"] = time.perf_counter() - clock
        return DepthPrediction(
            depth=depth,
            aligned=aligned,
            alignment=alignment,
            dilations=dilations,
            indices=indices,
            snippets=snippets,
            processing_size=self.processing_size(config),
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
    ) -> list[Path]:
        """Write ``prediction`` as one EXR per frame through `write_depth_exr`.

        ``pattern`` names the files, e.g. ``/shots/sh010/depth.####.exr`` (``#`` per digit,
        or ``%04d``); frames are numbered as in the plate. ``frame_range`` (inclusive, plate
        numbering) limits which frames are written; the depth convention is computed over
        the whole clip either way, so a partial export matches a full one. ``checkpoint``
        and ``preset`` are recorded in the headers with the run's settings.

        Raises
        ------
        ConfigError
            A pattern without exactly one frame token, a range outside the plate, or a
            confidence channel the alignment did not compute.
        OutputError
            The folder cannot be written, or a write fails.
        """
        output.check()
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
        size = (info.height, info.width) if output.restore_res else depth.shape[1:]
        header = run_metadata(
            checkpoint,
            preset,
            prediction.config,
            output,
            info.source,
            (lo, hi),
            prediction.dilations,
        )
        written = []
        for count, i in enumerate(selected, start=1):
            values = convert_depth(depth[i], output.depth_mode, output.near, output.far, lo, hi)
            extra = {"confidence": resize_map(conf[i], size)} if confidence else None
            path = Path(expand_pattern(pattern, numbers[i]))
            write_depth_exr(
                path,
                resize_map(values, size),
                channel=output.channel,
                half=output.half,
                metadata={**header, "source_frame": int(numbers[i])},
                extra_channels=extra,
            )
            written.append(path)
            report(progress, "write", count, len(selected))
        return written

    # ---------------------------------------------------------------- internals
    @staticmethod
    def _alignment_key(keys: list[SnippetKey], config: InferenceConfig) -> tuple:
        return (tuple(keys), config.aligner, config.confidence)

    def _solution(self, keys, snippets, indices, config, progress) -> AlignmentResult:
        """The solver's scales, shifts and weights for these snippets, solved once."""
        key = (tuple(keys), config.aligner)
        if key in self._solutions:
            self._solutions.move_to_end(key)
            return self._solutions[key]
        for k, a in zip(keys, snippets, strict=True):
            if k not in self._reduced:
                lo = float(torch.from_numpy(a).min())
                if not np.isfinite(lo):
                    raise RollingDepthError(NON_FINITE)
                self._reduced[k] = (lo, np.ascontiguousarray(reduce_maps(a)))
        solution = solve_reduced(
            [self._reduced[k][1] for k in keys],  # a capped duplicate passes the same array
            indices,
            np.float32(min(self._reduced[k][0] for k in keys)),  # the global min, as coalign
            method=config.aligner,
            progress=None if progress is None else lambda d, t: progress("align", d, t),
        )
        self.counters.solves += 1
        self._solutions[key] = solution
        while len(self._solutions) > MAX_SOLUTIONS:
            self._solutions.popitem(last=False)
        return solution

    def _cached_alignment(
        self, keys: list[SnippetKey], config: InferenceConfig
    ) -> tuple[AlignmentResult, np.ndarray] | None:
        # An alignment computed with confidence serves a request without it.
        for confidence in (config.confidence, True):
            key = self._alignment_key(keys, replace(config, confidence=confidence))
            if key in self._alignments:
                self._alignments.move_to_end(key)
                return self._alignments[key]
        return None

    def _refine_key(self, config: InferenceConfig) -> tuple:
        keys = [self.snippet_key(config, d) for d in self.dilations(config)]
        return (
            self._alignment_key(keys, replace(config, confidence=False)),
            config.refine_steps,
            config.refine_snippet_len,
            config.refine_start_dilation,
            config.cap_dilation,
        )

    def _trim_cache(self, keep: set[SnippetKey]) -> None:
        total = sum(a.nbytes for a in self._snippets.values())
        for key in list(self._snippets):
            if total <= self.cache_bytes:
                break
            if key not in keep:
                total -= self._snippets.pop(key).nbytes
                self._reduced.pop(key, None)
                for solved in [k for k in self._solutions if key in k[0]]:
                    del self._solutions[solved]  # a recomputed prediction is solved anew


def expand_pattern(pattern: str, frame: int) -> str:
    """``depth.####.exr`` with frame 7 → ``depth.0007.exr``; ``%04d`` works too.

    Raises
    ------
    ConfigError
        The file name holds no frame token, or more than one.
    """
    folder, name = Path(pattern).parent, Path(pattern).name
    tokens = list(_FRAME_TOKEN.finditer(name))
    if len(tokens) != 1:
        raise ConfigError(
            f"output pattern {pattern!r} must hold exactly one frame token in its file name "
            f"(`####` or `%04d`), e.g. `depth.####.exr`"
        )
    token = tokens[0]
    text = token.group(0)
    width = int(token.group(1) or 0) if text.startswith("%") else len(text)
    digits = f"{frame:0{width}d}"
    return str(folder / (name[: token.start()] + digits + name[token.end() :]))
