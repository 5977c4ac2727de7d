"""Co-alignment of overlapping depth snippets and their merge (METHOD.md step 9).

Every snippet k of every dilation entry gets a scale ``s_k`` and a shift ``t_k`` so that its
frames agree with the other snippets covering the same frames; the aligned snippets are then
averaged per frame at full resolution. All values are first shifted by the global minimum of
the snippets (``offset``), as the reference does, and ``(s, t)`` refer to those shifted values.

Two solvers:

``"adam"``
    The reference objective and optimiser, to the letter: dense ``[sum(L), N, P]`` arrays, the
    L1 term on values and on reciprocals, the soft penalties on ``s`` and ``t``, Adam for 2000
    steps, plain-mean merge. Its memory grows with ``sum(L) * N * P`` and its time with the
    2000 steps. The L1 terms' gradient is written out (the same operations, in the same
    order, as autograd through the dense graph: the trajectory matches the reference bit for
    bit on the tests' problem) instead of keeping the dense graph for backward.

``"robust"`` (default)
    A converged, outlier-robust solve of the same per-snippet affine model by robust
    Gauss-Newton on sparse normal equations; nothing grows with snippets x frames x pixels.

    * Model. Every snippet sees one latent video ``m`` (per frame and reduced pixel) through
      its own affine map, plus noise in its own units: ``x = a_k m + b_k + noise``; aligned,
      it is ``s_k x + t_k`` with ``s = 1/a``, ``t = -b/a``. Residuals are taken where the
      noise lives (the model normalises each snippet to [-1, 1], so its errors are about
      constant in snippet units): ``e = x - a_k m - b_k``. Fitting ``s x + t`` to ``m``
      instead is an errors-in-variables regression that shrinks the scale of snippets with a
      large depth range (benchmark clip, 30 frames, 2 % noise, no outliers: rms scale error
      1.5 %, max 3.4 %, against 0.06 % and 0.14 % here).
    * Objective: the sum over snippet frames and reduced pixels of ``rho(e / sigma_k)``,
      ``sigma_k`` the snippet's robust (MAD) noise level, so noisy snippets count less and
      the robust thresholds are in noise units.
    * Solver. With the per-pixel weights fixed, the best consensus is a weighted mean per
      pixel; eliminating it (Schur complement) leaves a Gauss-Newton system in ``(a, b)``
      that couples only snippets sharing a frame: a sparse ``2K x 2K`` matrix assembled from
      per-frame ``c x c`` Gram matrices (c = snippet frames covering the frame) and solved
      exactly with SuperLU. Residuals and weights are recomputed from the reduced maps in
      every pass, a few frames at a time, so memory is the reduced maps (not even copied
      when they come reduced and float32) plus one ``[N, P]`` consensus. Per-pixel robust
      weights rule out per-pair sufficient statistics; P is small, so recomputing is cheap.
    * Schedule. Start: the linear least-squares solution of ``s x + t`` against a free
      consensus (one exact solve). Then Huber passes (convex; noise levels re-estimated each
      pass) until the aligned values move less than 1e-3, then Cauchy passes (redescending:
      a pixel far from the consensus gets no say; noise levels frozen, so one fixed
      objective) until the largest relative change of the aligned values is below ``tol``.
    * Robustness. Per pixel (Cauchy weights) and per snippet (a wrong snippet's noise level
      is large, so it counts little). The merge weights every snippet by 1 / its mean squared
      leave-one-out residual to the converged robust consensus (in consensus units, over its
      frames), so an outlier patch or a wrong snippet barely reaches the output; adam's merge
      is the reference's plain mean. A dilation repeated by capping is solved once (the same
      data twice would vouch for itself) and, as in the reference, merged twice.
    * Gauge. ``x = a m + b`` is exactly invariant under ``m -> alpha m + beta`` with ``a, b``
      compensating; each step is constrained transversally to these two directions (no
      force on any snippet, no penalty: the objective is flat along them), the iterate is
      moved back to ``median(a) = 1`` after every step, and the answer is finally mapped to
      ``median(s) = 1``, ``median(t) = 0`` (a corrupted snippet cannot move a median).
    * Inverse depth only: the reference's reciprocal term is not affine in the unknowns; the
      benchmark meets the accuracy targets without it.
    * Scales stay positive: ``a`` is kept at or above 1e-3 of its median by an active set in
      the step (a wrong snippet may want a negative one).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from .errors import ConfigError, OutputError

METHODS = ("robust", "adam")
ADAM_OPTIONS = {"iterations": 2000, "lr": 1e-3}
ROBUST_OPTIONS = {"max_iterations": 50, "tol": 1e-5}

# Robust loss thresholds in units of the snippet's noise level (95 % efficiency constants).
HUBER_K = 1.345
CAUCHY_C = 2.385
HUBER_SWITCH_TOL = 1e-3  # Huber passes stop (Cauchy starts) once values move less than this
HUBER_MAX_PASSES = 8
NOISE_SAMPLES = 256  # residuals per snippet frame kept for the snippet's noise level (MAD)
SCALE_FLOOR = 1e-3  # a snippet's response ``a`` stays at or above this fraction of the median
DAMPING = 1e-7  # relative Levenberg damping of the normal equations
CHUNK_ELEMENTS = 1 << 18  # reduced-map values per frame chunk in a pass (1 MiB per temporary)
MAD_SAMPLES = 4096  # residuals per frame used for its median (confidence scale)
CONFIDENCE_KAPPA = 3.0  # confidence = 1 / (1 + var / (kappa sigma)^2)
MAD_TO_SIGMA = 1.4826  # MAD of a Gaussian times this is its standard deviation

ProgressFn = Callable[[int, int], None]


@dataclass
class AlignmentResult:
    """What co-alignment produced; ``depth`` is on the min-shifted values, not renormalised."""

    # [N,H,W] float32; None from solve_reduced (merged elsewhere) and in the pipeline's
    # results, which normalise it in place into DepthPrediction.aligned
    depth: np.ndarray | None
    scales: list[np.ndarray]  # per dilation entry [n_snippets]
    shifts: list[np.ndarray]  # per dilation entry [n_snippets]
    confidence: np.ndarray | None  # [N,H,W] float32 in [0,1] when asked
    frame_residuals: np.ndarray  # [N] mean |aligned occurrence - merged frame|, reduced maps
    method: str
    iterations: int
    seconds: float
    loss_history: list[float]
    offset: float
    converged: bool = True
    merge_weights: list[np.ndarray] | None = field(default=None, repr=False)  # [n] per entry
    # [N] robust spread of one occurrence around the merge (reduced maps), for confidence
    frame_sigma: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """JSON-ready summary (no per-pixel arrays)."""
        out = {
            "method": self.method,
            "iterations": int(self.iterations),
            "converged": bool(self.converged),
            "seconds": round(float(self.seconds), 4),
            "offset": float(self.offset),
            "n_frames": int(self.frame_residuals.shape[0]),
            "scales": [np.asarray(s, dtype=float).tolist() for s in self.scales],
            "shifts": [np.asarray(t, dtype=float).tolist() for t in self.shifts],
            "frame_residuals": np.asarray(self.frame_residuals, dtype=float).tolist(),
            "loss_history": [float(v) for v in self.loss_history],
        }
        if self.merge_weights is not None:
            out["merge_weights"] = [np.asarray(w, dtype=float).tolist() for w in self.merge_weights]
        return out

    def save_json(self, path) -> None:
        """Write :meth:`to_dict` atomically (temporary file in the same folder, then replace)."""
        path = Path(path)
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.to_dict(), fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
            raise OutputError(f"cannot write the alignment report {path}: {exc}") from exc


# ------------------------------------------------------------------------------ public API
def coalign(
    snippets: Sequence,
    indices: Sequence,
    method: str = "robust",
    *,
    confidence: bool = False,
    border: int = 2,
    subsample: int = 10,
    progress: ProgressFn | None = None,
    **solver_options,
) -> AlignmentResult:
    """Co-align snippets and merge them into one video.

    ``snippets``: one ``[n_snippets, L, H, W]`` array or tensor per dilation entry (duplicates
    allowed and counted, as the reference does); ``indices``: matching ``[n_snippets, L]`` frame
    numbers. The solver sees the maps with ``border`` pixels cropped and every ``subsample``-th
    pixel kept; the merge is at full resolution. ``progress(done, total)`` is called during the
    solve and may raise to cancel. Solver options: adam ``iterations``, ``lr``; robust
    ``max_iterations``, ``tol``.
    """
    clock = time.perf_counter()
    options = _solver_options(method, solver_options)
    arrays, idx, n_frames = _check_inputs(snippets, indices)
    _check_reduction(arrays[0].shape[-2:], border, subsample)

    # 1. global minimum, the reference's offset
    offset = np.float32(min(_array_min(a) for a in _unique(arrays)))
    # 2. reduced maps [n, L, h, w]: views, not shifted
    reduced = [_reduced(a, border, subsample) for a in arrays]
    # 3. solve (a dilation repeated by capping shares one array: found on the full maps)
    result, (scales, shifts, weights) = _solve(
        reduced, idx, n_frames, offset, method, options, progress, _first_copies(arrays, idx)
    )

    # 4. the full-resolution merge
    result.depth, result.confidence = _merge(
        arrays,
        idx,
        scales,
        shifts,
        n_frames,
        offset,
        weights,
        result.frame_sigma if confidence else None,
    )
    result.seconds = time.perf_counter() - clock
    return result


def solve_reduced(
    reduced: Sequence[np.ndarray],
    indices: Sequence,
    offset: float,
    method: str = "robust",
    *,
    progress: ProgressFn | None = None,
    **solver_options,
) -> AlignmentResult:
    """Solve the scales and shifts from reduced maps alone; nothing is merged (``depth=None``).

    ``reduced``: per dilation entry ``[n_snippets, L, h, w]`` (the maps with the border cropped
    and subsampled, as :func:`reduce_maps` makes them; an entry repeated by capping passes the
    same array object again, or a view of the same memory, e.g. :func:`reduce_maps` of the
    same snippet array); ``offset``: the global minimum of the full-resolution snippets.
    Gives the scales, shifts, merge weights and per-frame spread that :func:`coalign` would
    give for the same snippets, so long clips can be solved without their full-resolution maps
    in memory and merged frame by frame with :func:`merge_frame`. The scales, shifts and
    weights are the solver's own float64 values (coalign reports them as float32), which is
    what makes :func:`merge_frame` reproduce coalign's merge exactly.
    """
    clock = time.perf_counter()
    options = _solver_options(method, solver_options)
    if isinstance(reduced, (np.ndarray, torch.Tensor)) or not len(reduced):
        raise ConfigError("`reduced` must be a non-empty list with one entry per dilation entry")
    if len(reduced) != len(indices):
        raise ConfigError(
            f"`reduced` and `indices` need one entry per dilation entry each; got "
            f"{len(reduced)} and {len(indices)}"
        )
    converted: dict[int, np.ndarray] = {}  # a repeated entry stays one array
    maps = [converted.setdefault(id(r), _as_numpy(r)) for r in reduced]
    idx = [np.asarray(_as_numpy(k), dtype=np.int64) for k in indices]
    for i, (r, k) in enumerate(zip(maps, idx, strict=True)):
        if r.ndim != 4 or r.shape[:2] != k.shape:
            raise ConfigError(
                f"`reduced[{i}]` must be [n_snippets, L, h, w] matching `indices[{i}]` "
                f"{tuple(k.shape)}; got {tuple(r.shape)}"
            )
        if r.shape[-2:] != maps[0].shape[-2:]:
            raise ConfigError(
                f"`reduced[{i}]` maps are {tuple(r.shape[-2:])}; `reduced[0]` maps are "
                f"{tuple(maps[0].shape[-2:])}: all must have the same size"
            )
        if not np.issubdtype(r.dtype, np.floating):
            raise ConfigError(f"`reduced[{i}]` must hold floats; got dtype {r.dtype}")
        if k.size and k.min() < 0:
            raise ConfigError(f"`indices[{i}]` holds negative frame numbers ({int(k.min())})")
    n_frames = _covered_frames(idx)
    result, (scales, shifts, weights) = _solve(
        maps,
        idx,
        n_frames,
        np.float32(offset),
        method,
        options,
        progress,
        _first_copies(_canonical_views(maps), idx),
    )
    result.scales = [np.asarray(v, dtype=np.float64) for v in scales]
    result.shifts = [np.asarray(v, dtype=np.float64) for v in shifts]
    if weights is not None:
        result.merge_weights = [np.asarray(v, dtype=np.float64) for v in weights]
    result.seconds = time.perf_counter() - clock
    return result


def merge_solution(
    snippets: Sequence,
    indices: Sequence,
    solution: AlignmentResult,
    *,
    confidence: bool = False,
) -> AlignmentResult:
    """The full-resolution merge (:func:`coalign`'s last step) with a solve done before.

    ``solution``: what :func:`solve_reduced` gave for these snippets' reduced maps (with
    their global minimum as ``offset``); its float64 scales, shifts and weights make the
    depth and confidence bit-identical to :func:`coalign`'s. A caller that keeps snippets
    solves once and merges as often as it likes (with and without confidence). Returns a
    copy of ``solution`` with ``depth`` (and ``confidence``) set.
    """
    arrays, idx, n_frames = _check_inputs(snippets, indices)
    if solution.method not in METHODS or len(solution.scales) != len(arrays):
        raise ConfigError(
            f"`solution` must be a result for these snippets: it has {len(solution.scales)} "
            f"dilation entries, `snippets` has {len(arrays)}"
        )
    for i, (a, s) in enumerate(zip(arrays, solution.scales, strict=True)):
        if np.shape(s) != (a.shape[0],):
            raise ConfigError(
                f"`solution` has {np.size(s)} snippets for entry {i}; `snippets[{i}]` has "
                f"{a.shape[0]}"
            )
    if solution.frame_residuals.shape[0] != n_frames:
        raise ConfigError(
            f"`solution` covers {solution.frame_residuals.shape[0]} frames; the indices cover "
            f"{n_frames}"
        )
    depth, conf = _merge(
        arrays,
        idx,
        solution.scales,
        solution.shifts,
        n_frames,
        np.float32(solution.offset),
        solution.merge_weights,
        solution.frame_sigma if confidence else None,
    )
    return replace(solution, depth=depth, confidence=conf)


def reduce_maps(maps, border: int = 2, subsample: int = 10) -> np.ndarray:
    """``[n, L, H, W]`` → what the solver sees, ``[n, L, h, w]`` (border cropped, every
    ``subsample``-th pixel): a strided view of ``maps``, no copy and no dtype change."""
    maps = _as_numpy(maps)
    if maps.ndim != 4:
        raise ConfigError(f"`maps` must be [n_snippets, L, H, W]; got shape {tuple(maps.shape)}")
    _check_reduction(maps.shape[-2:], border, subsample)
    return _reduced(maps, border, subsample)


def merge_frame(
    maps: Sequence,
    scales: Sequence[float],
    shifts: Sequence[float],
    offset: float,
    weights: Sequence[float] | None = None,
    sigma: float | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One frame of the merge from the occurrences covering it, in :func:`coalign`'s order.

    ``maps``: the ``[H, W]`` snippet frames covering the frame, ordered by (dilation entry,
    snippet, position) as :func:`coalign` visits them; ``scales``, ``shifts`` and ``weights``
    (a result's ``merge_weights[i][n]``): the values of each map's snippet. With the values
    :func:`solve_reduced` gives and ``sigma`` (its ``frame_sigma[f]``) the frame and its
    confidence are bit-identical to coalign's. The maps are read twice when ``sigma`` is
    given. Returns (``[H,W]`` float32, confidence ``[H,W]`` float32 or None).
    """
    if not len(maps):
        raise ConfigError("`maps` is empty: a frame needs at least one covering snippet frame")
    if len(scales) != len(maps) or len(shifts) != len(maps):
        raise ConfigError("`scales` and `shifts` need one value per map")
    if weights is not None and len(weights) != len(maps):
        raise ConfigError("`weights` needs one value per map")
    offset = float(offset)
    views = [_tensor_view(_as_numpy(m)) for m in maps]
    terms = []  # (scale, constant, weight) in float64, as _merge computes them
    for n in range(len(views)):
        s_o = float(np.float64(scales[n]))
        b_o = float(np.float64(shifts[n])) - s_o * offset
        terms.append((s_o, b_o, 1.0 if weights is None else float(np.float64(weights[n]))))
    depth = torch.zeros(views[0].shape)
    conf = None if sigma is None else torch.empty(views[0].shape)
    _merge_one(
        views, terms, None if sigma is None else float(sigma), depth, conf, torch.empty_like(depth)
    )
    return depth.numpy(), None if conf is None else conf.numpy()


def _solve(reduced, idx, n_frames, offset, method, options, progress, first):
    """Step 3 of :func:`coalign` on reduced maps ``[n, L, h, w]``: the solve and the
    per-frame statistics. ``first``: :func:`_first_copies` of the entries.

    Returns the result (float32 parameters, no depth) and the solver's raw (scales, shifts,
    weights), which the merge uses."""
    n_pixels = reduced[0].shape[-2] * reduced[0].shape[-1]
    layout = _Layout(idx, n_frames, n_pixels)
    if method == "adam":
        scales, shifts, history, iterations = _solve_adam(
            reduced, offset, idx, n_frames, progress, **options
        )
        weights = None
        converged = True
    else:
        # a dilation repeated by capping is the same data twice: it is solved once (counted
        # twice it would pull the consensus towards itself) and, as the reference does,
        # merged twice
        keep = sorted(set(first))
        solved = _Layout([idx[i] for i in keep], n_frames, n_pixels)
        solver = _RobustSolver([reduced[i] for i in keep], offset, solved, progress)
        s, t, snippet_weights, history, iterations, converged = solver.solve(**options)

        def per_entry(values: np.ndarray) -> list[np.ndarray]:
            solved_entries = dict(zip(keep, solved.split(values), strict=True))
            return [solved_entries[i] for i in first]

        scales, shifts, weights = per_entry(s), per_entry(t), per_entry(snippet_weights)

    # per-frame agreement on the reduced maps (sigma: the confidence's scale)
    frame_res, sigma = _frame_statistics(reduced, offset, layout, scales, shifts, weights)
    result = AlignmentResult(
        depth=None,
        scales=[np.asarray(s, dtype=np.float32) for s in scales],
        shifts=[np.asarray(t, dtype=np.float32) for t in shifts],
        confidence=None,
        frame_residuals=frame_res,
        method=method,
        iterations=iterations,
        seconds=0.0,
        loss_history=history,
        offset=float(offset),
        converged=converged,
        merge_weights=None
        if weights is None
        else [np.asarray(w, dtype=np.float32) for w in weights],
        frame_sigma=sigma,
    )
    return result, (scales, shifts, weights)


def merge_snippets(
    snippets: Sequence,
    indices: Sequence,
    scales: Sequence,
    shifts: Sequence,
    n_frames: int,
    *,
    offset: float | None = None,
    weights: Sequence | None = None,
) -> np.ndarray:
    """Per-frame mean of ``s_k * (x - offset) + t_k`` over the snippets covering each frame.

    ``offset=None`` subtracts the snippets' global minimum, as :func:`coalign` does (so its
    scales and shifts reproduce its depth); pass ``0.0`` to merge the raw values. ``weights``
    (per entry: ``[n]`` per snippet or ``[n, L]`` per snippet frame, e.g. a result's
    ``merge_weights``) turn the mean into a weighted mean. Returns ``[N,H,W]`` float32.
    """
    arrays, idx, covered = _check_inputs(snippets, indices)
    if n_frames != covered:
        raise ConfigError(
            f"`n_frames` is {n_frames} but the indices cover frames 0..{covered - 1}; "
            f"every frame needs a snippet"
        )
    for name, values in (("scales", scales), ("shifts", shifts)) + (
        (("weights", weights),) if weights is not None else ()
    ):
        if len(values) != len(arrays):
            raise ConfigError(
                f"`{name}` needs one entry per dilation entry: expected {len(arrays)}, "
                f"got {len(values)}"
            )
        for i, (v, a) in enumerate(zip(values, arrays, strict=True)):
            allowed = [(a.shape[0],)] + ([tuple(a.shape[:2])] if name == "weights" else [])
            if np.shape(v) not in allowed:
                raise ConfigError(
                    f"`{name}[{i}]` must have shape {' or '.join(map(str, allowed))}; "
                    f"got {np.shape(v)}"
                )
    if offset is None:
        offset = min(_array_min(a) for a in _unique(arrays))
    depth, _ = _merge(arrays, idx, scales, shifts, n_frames, np.float32(offset), weights, None)
    return depth


def normalize_depth(depth: np.ndarray, *, inplace: bool = False) -> np.ndarray:
    """Min-max map the whole video to [-1, 1] (a constant video maps to zeros), float32.

    ``inplace=True`` overwrites ``depth`` (a writable float32 array) instead of allocating a
    second video; the values are the same either way."""
    depth = np.asarray(depth, dtype=np.float32)
    if inplace and not depth.flags.writeable:
        raise ConfigError("`depth` is read-only; cannot normalise it in place")
    lo, hi = (float(v) for v in torch.aminmax(_tensor_view(depth)))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ConfigError("`depth` contains non-finite values; cannot normalise it")
    return rescale_depth(depth, lo, hi, out=depth if inplace else None)


def rescale_depth(
    depth: np.ndarray, lo: float, hi: float, out: np.ndarray | None = None
) -> np.ndarray:
    """``(depth - lo) * 2 / (hi - lo) - 1`` in float32 (zeros when ``hi <= lo``): what
    :func:`normalize_depth` does with the video's extremes, for any part of it (a frame);
    into ``out`` (may be ``depth``) when given."""
    depth = np.asarray(depth, dtype=np.float32)
    if out is None:
        out = np.empty(depth.shape, np.float32)
    target = torch.from_numpy(out)
    if hi <= lo:
        return target.zero_().numpy()
    torch.sub(_tensor_view(depth), lo, out=target)
    return target.mul_(float(np.float32(2.0 / (hi - lo)))).sub_(1.0).numpy()


# ------------------------------------------------------------------------------ input checks
def _as_numpy(x) -> np.ndarray:
    """A numpy view of an array or (CPU) tensor; other devices and bfloat16 are copied."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.device.type != "cpu":
            x = x.cpu()
        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _check_inputs(snippets, indices) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Arrays per entry, int64 indices per entry and the frame count; ConfigError otherwise."""
    if isinstance(snippets, (np.ndarray, torch.Tensor)) or isinstance(
        indices, (np.ndarray, torch.Tensor)
    ):
        raise ConfigError(
            "`snippets` and `indices` must be lists with one entry per dilation "
            "([n_snippets, L, H, W] and [n_snippets, L]); wrap a single dilation in a list"
        )
    if len(snippets) == 0:
        raise ConfigError("`snippets` is empty; expected one array per dilation entry")
    if len(snippets) != len(indices):
        raise ConfigError(
            f"`snippets` and `indices` must have one entry per dilation each; got "
            f"{len(snippets)} and {len(indices)}"
        )
    arrays, idx = [], []
    converted: dict[int, np.ndarray] = {}  # a tensor repeated by capping stays one array
    for i, (x, ind) in enumerate(zip(snippets, indices, strict=True)):
        a = converted.setdefault(id(x), _as_numpy(x))
        if a.ndim != 4:
            raise ConfigError(
                f"`snippets[{i}]` must be [n_snippets, L, H, W]; got shape {tuple(a.shape)}"
            )
        if not np.issubdtype(a.dtype, np.floating):
            raise ConfigError(f"`snippets[{i}]` must hold floats; got dtype {a.dtype}")
        if a.shape[0] < 1 or a.shape[1] < 1:
            raise ConfigError(f"`snippets[{i}]` is empty: shape {tuple(a.shape)}")
        k = _as_numpy(ind)
        if not np.issubdtype(k.dtype, np.integer):
            raise ConfigError(f"`indices[{i}]` must hold integers; got dtype {k.dtype}")
        if k.shape != a.shape[:2]:
            raise ConfigError(
                f"`indices[{i}]` must have shape {tuple(a.shape[:2])} to match "
                f"`snippets[{i}]` {tuple(a.shape)}; got {tuple(k.shape)}"
            )
        if k.min() < 0:
            raise ConfigError(f"`indices[{i}]` holds negative frame numbers ({int(k.min())})")
        if arrays and a.shape[-2:] != arrays[0].shape[-2:]:
            raise ConfigError(
                f"`snippets[{i}]` maps are {tuple(a.shape[-2:])}; `snippets[0]` maps are "
                f"{tuple(arrays[0].shape[-2:])}: all must have the same size"
            )
        for j in range(k.shape[1]):
            if np.unique(k[:, j]).size != k.shape[0]:
                raise ConfigError(
                    f"`indices[{i}]` repeats a frame at snippet position {j}: within one "
                    "dilation entry each frame may appear at most once per position"
                )
        arrays.append(a)
        idx.append(k.astype(np.int64))
    n_frames = _covered_frames(idx)
    return arrays, idx, n_frames


def _check_reduction(hw: tuple[int, int], border: int, subsample: int) -> None:
    if border < 0 or subsample < 1:
        raise ConfigError(f"`border` must be >= 0 and `subsample` >= 1; got {border}, {subsample}")
    if min(hw) - 2 * border < 1:
        raise ConfigError(
            f"maps of {tuple(hw)} pixels leave nothing after cropping a {border}-pixel border"
        )


def _solver_options(method: str, solver_options: dict) -> dict:
    """The method's defaults with the caller's options, every one checked."""
    if method not in METHODS:
        raise ConfigError(f"`method` must be one of {', '.join(METHODS)}; got {method!r}")
    defaults = ADAM_OPTIONS if method == "adam" else ROBUST_OPTIONS
    unknown = sorted(set(solver_options) - set(defaults))
    if unknown:
        raise ConfigError(
            f"unknown solver option(s) {', '.join(f'`{k}`' for k in unknown)} for method "
            f"{method!r}; allowed: {', '.join(f'`{k}`' for k in defaults)}"
        )
    options = {**defaults, **solver_options}
    if method == "adam":
        _check_adam_options(options)
    else:
        _check_robust_options(options)
    return options


def _check_adam_options(options: dict) -> None:
    if int(options["iterations"]) != options["iterations"] or options["iterations"] < 1:
        raise ConfigError(f"`iterations` must be an integer >= 1; got {options['iterations']}")
    if not options["lr"] > 0:
        raise ConfigError(f"`lr` must be > 0; got {options['lr']}")


def _check_robust_options(options: dict) -> None:
    it = options["max_iterations"]
    if int(it) != it or it < 2:
        raise ConfigError(f"`max_iterations` must be an integer >= 2; got {it}")
    if not options["tol"] > 0:
        raise ConfigError(f"`tol` must be > 0; got {options['tol']}")


def _covered_frames(idx: list[np.ndarray]) -> int:
    """The frame count ``max + 1`` of the indices; ConfigError if a frame in it has no snippet."""
    n_frames = int(max(k.max() for k in idx)) + 1
    covered = np.bincount(np.concatenate([k.ravel() for k in idx]), minlength=n_frames) > 0
    if not covered.all():
        missing = np.flatnonzero(~covered)
        raise ConfigError(
            f"frames {missing[:10].tolist()}{' ...' if missing.size > 10 else ''} are covered "
            f"by no snippet; every frame 0..{n_frames - 1} needs at least one"
        )
    return n_frames


def _unique(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Entries without repeats of the same array (capping duplicates share one)."""
    seen: dict[int, np.ndarray] = {}
    for a in arrays:
        seen.setdefault(id(a), a)
    return list(seen.values())


def _tensor_view(a: np.ndarray) -> torch.Tensor:
    """A tensor on ``a``'s memory (copied only for negative strides); it is never written."""
    if any(step < 0 for step in a.strides):
        a = np.ascontiguousarray(a)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return torch.from_numpy(a)


def _first_copies(arrays: list[np.ndarray], indices: list[np.ndarray]) -> list[int]:
    """For every entry, the first entry with the same array and the same indices."""
    first = []
    for i, (a, k) in enumerate(zip(arrays, indices, strict=True)):
        same = (j for j in range(i) if arrays[j] is a and np.array_equal(indices[j], k))
        first.append(next(same, i))
    return first


def _canonical_views(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """``arrays`` with every array replaced by the first one that views the same memory the
    same way (data pointer, shape, strides, dtype): :func:`reduce_maps` of one snippet array
    passed twice gives two view objects of the same data, which count as one array."""
    seen: dict[tuple, np.ndarray] = {}
    out = []
    for a in arrays:
        key = (a.__array_interface__["data"][0], a.shape, a.strides, a.dtype.str)
        out.append(seen.setdefault(key, a))
    return out


def _array_min(a: np.ndarray) -> float:
    lo = float(_tensor_view(a).min())  # numpy's float16 reductions are ~20x slower
    if not np.isfinite(lo):
        raise ConfigError("`snippets` contain non-finite values (NaN or inf); cannot align them")
    return lo


def _reduced(a: np.ndarray, border: int, subsample: int) -> np.ndarray:
    """``a[..., b:-b, b:-b][..., ::sub, ::sub]``: a strided view ``[n, L, h, w]``, no copy.

    The solvers read it a few frames at a time (robust) or copy it once as float32 (adam).
    """
    h, w = a.shape[-2:]
    return a[..., border : h - border : subsample, border : w - border : subsample]


# ------------------------------------------------------------------------------ layout
class _Layout:
    """Who covers what. Occurrence o = (entry, snippet, position), global snippet id ``gid``.

    ``slots[f, q]`` is the q-th occurrence covering frame f (-1 past the frame's count);
    frames are processed in chunks whose gathers are planned once.
    """

    def __init__(self, indices: list[np.ndarray], n_frames: int, n_pixels: int):
        self.n_frames = n_frames
        self.n_pixels = n_pixels
        self.sizes = [k.shape[0] for k in indices]
        starts = np.concatenate([[0], np.cumsum(self.sizes)])
        self.n_snippets = int(starts[-1])
        gid, entry, row, frame = [], [], [], []
        for i, k in enumerate(indices):
            n, length = k.shape
            snip = np.repeat(np.arange(n), length)
            gid.append(starts[i] + snip)
            entry.append(np.full(n * length, i))
            row.append(snip * length + np.tile(np.arange(length), n))
            frame.append(k.ravel())
        self.entry_spans = [(int(starts[i]), k.shape[0], k.shape[1]) for i, k in enumerate(indices)]
        self.occ_gid = np.concatenate(gid)
        self.occ_entry = np.concatenate(entry)
        self.occ_row = np.concatenate(row)
        occ_frame = np.concatenate(frame)
        self.n_occurrences = occ_frame.size
        order = np.argsort(occ_frame, kind="stable")
        self.counts = np.bincount(occ_frame, minlength=n_frames)
        first = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
        rank = np.arange(order.size) - np.repeat(first, self.counts)
        self.slots = np.full((n_frames, int(self.counts.max())), -1, dtype=np.int64)
        self.slots[occ_frame[order], rank] = order
        per_frame = self.slots.shape[1] * n_pixels
        step = max(1, CHUNK_ELEMENTS // per_frame)
        self.chunks = [self._plan(f0, min(f0 + step, n_frames)) for f0 in range(0, n_frames, step)]

    def _plan(self, f0: int, f1: int) -> dict:
        occ = self.slots[f0:f1].ravel()
        valid = occ >= 0
        safe = np.where(valid, occ, 0)
        gathers = []
        for i in range(len(self.sizes)):
            pos = np.flatnonzero(valid & (self.occ_entry[safe] == i))
            if pos.size:
                rows = self.occ_row[occ[pos]]
                gathers.append((i, torch.from_numpy(pos), torch.from_numpy(rows)))
        shape = (f1 - f0, self.slots.shape[1])
        return {
            "f0": f0,
            "f1": f1,
            "gid": torch.from_numpy(np.where(valid, self.occ_gid[safe], 0).reshape(shape)),
            "gid_np": np.where(valid, self.occ_gid[safe], 0).reshape(shape),
            "valid": torch.from_numpy(valid.reshape(shape).astype(np.float32)),
            "shared": torch.from_numpy(
                (valid.reshape(shape) & (self.counts[f0:f1, None] >= 2)).astype(np.float32)
            ),
            "gathers": gathers,
            "occ": torch.from_numpy(occ[valid]),  # occurrence ids of the valid slots
            "occ_at": torch.from_numpy(np.flatnonzero(valid)),  # ... and their flat positions
            "full": bool(valid.all()),  # no pads
        }

    def gather(
        self, chunk: dict, maps: list[torch.Tensor], offset: float, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Reduced values minus ``offset`` of the chunk's occurrences: ``[F, c, P]`` (pads 0),
        into ``out`` when given."""
        f, c = chunk["gid"].shape
        if out is None:
            x = torch.zeros(f * c, self.n_pixels)
        else:  # a reused buffer: only its pads need clearing (all slots are overwritten)
            x = out.view(f * c, -1)
            if not chunk["full"]:
                x.zero_()
        for i, pos, rows in chunk["gathers"]:
            picked = maps[i].index_select(0, rows).float().flatten(1)  # new: free to change
            x.index_copy_(0, pos, picked.sub_(offset) if offset else picked)
        return x.view(f, c, self.n_pixels)

    def split(self, flat: np.ndarray) -> list[np.ndarray]:
        """Per-snippet values ``[K]`` into one ``[n]`` array per entry."""
        return np.split(np.asarray(flat), np.cumsum(self.sizes)[:-1])


def _flat_maps(reduced: list[np.ndarray]) -> list[torch.Tensor]:
    """The reduced views as tensors ``[n L, h, w]`` on the caller's memory."""
    return [_tensor_view(r).flatten(0, 1) for r in reduced]


# ------------------------------------------------------------------------------ adam
class _DenseL1(torch.autograd.Function):
    """The reference's L1 term ``mean(|(M - target) * B / norm|)`` over the dense array.

    ``M`` ([R, N, P], zeros where a row does not cover a frame) is built from the occurrence
    values, ``target = M.sum(0) / B.sum(0)`` and ``norm = mean |target|`` are constants, as
    the reference detaches them. The gradient is written out: ``B = 0`` off the covered
    entries, so it is ``sign(M - target) / norm / M.numel()`` gathered at those entries; this
    is what autograd computes through the dense graph, without its dense backward passes.
    """

    @staticmethod
    def forward(ctx, values, rows, frames, covered, count):
        rows_total, n_frames = covered.shape[:2]
        dense = values.new_zeros(rows_total, n_frames, values.shape[-1])  # [R,N,P]
        dense.index_put_((rows, frames), values)
        target = dense.sum(0) / count  # [N,P]
        norm = target.abs().mean(-1, keepdim=True)  # [N,1]
        numel = dense.numel()
        loss = dense.sub_(target).mul_(covered / norm).abs_().mean()
        ctx.save_for_backward(values, frames, target, norm)
        ctx.numel = numel
        return loss

    @staticmethod
    def backward(ctx, grad):
        values, frames, target, norm = ctx.saved_tensors
        # the same operations in the same order as autograd through the dense graph, so that
        # the Adam trajectory (which amplifies last-bit differences) follows the reference
        g = torch.sign(values - target[frames]) * (grad / ctx.numel)
        return g / norm[frames], None, None, None, None


def _solve_adam(reduced, offset, indices, n_frames, progress, iterations, lr):
    """The reference: dense L1 objective (values and reciprocals) + penalties, Adam."""
    iterations = int(iterations)
    xs = [
        (_tensor_view(r).float() - float(offset)).flatten(2) for r in reduced
    ]  # [n,L,P] min-shifted float32 copies
    n_pixels = xs[0].shape[-1]
    lengths = [x.shape[1] for x in xs]
    rows_total = sum(lengths)
    row_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    rows = torch.from_numpy(
        np.concatenate(
            [
                np.broadcast_to(row_start[i] + np.arange(x.shape[1]), x.shape[:2]).ravel()
                for i, x in enumerate(xs)
            ]
        )
    )
    frames = torch.from_numpy(np.concatenate([k.ravel() for k in indices]))
    covered = torch.zeros(rows_total, n_frames, 1)  # B, the same for every pixel
    covered[rows, frames] = 1.0
    count = covered.sum(0)  # [N,1]
    scales = [torch.ones(x.shape[0], requires_grad=True) for x in xs]
    shifts = [torch.zeros(x.shape[0], requires_grad=True) for x in xs]
    optimiser = torch.optim.Adam(scales + shifts, lr=lr, betas=(0.5, 0.9))
    history: list[float] = []
    keep_every = max(1, iterations // 200)
    for it in range(iterations):
        optimiser.zero_grad()
        scaled = torch.cat(
            [
                (x * s[:, None, None] + t[:, None, None]).reshape(-1, n_pixels)
                for x, s, t in zip(xs, scales, shifts, strict=True)
            ]
        )  # [sum(n L), P], row k*L+j of each entry
        loss = _DenseL1.apply(scaled, rows, frames, covered, count)
        loss = loss + _DenseL1.apply(scaled.clip(min=1e-3) ** -1, rows, frames, covered, count)
        for s, t in zip(scales, shifts, strict=True):
            loss = loss + 0.1 * (torch.clamp(1 - s, min=0) ** 2).mean() + 10 * (t**2).mean()
        loss.backward()
        optimiser.step()
        if it % keep_every == 0 or it == iterations - 1:
            history.append(float(loss.detach()))
        if progress is not None and (it % 20 == 19 or it == iterations - 1):
            progress(it + 1, iterations)
    return (
        [s.detach().numpy().astype(np.float64) for s in scales],
        [t.detach().numpy().astype(np.float64) for t in shifts],
        history,
        iterations,
    )


# ------------------------------------------------------------------------------ robust
def _masked_median(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-frame median of ``values[F, c, P]`` where ``mask[F, c]``, from a strided sample."""
    f, c, p = values.shape
    stride = max(1, (c * p) // MAD_SAMPLES)
    sample = values[:, :, ::stride]
    sample = torch.where(mask[..., None] > 0, sample, torch.nan).reshape(f, -1)
    return torch.nan_to_num(torch.nanmedian(sample, dim=1).values, nan=0.0)


class _RobustSolver:
    """Robust Gauss-Newton over frame chunks; see the module docstring for the model.

    Unknowns: per snippet ``a_k, b_k`` (``x = a m + b`` in the snippet's own units, so
    ``s = 1/a``, ``t = -b/a``) and the consensus ``m`` per frame and reduced pixel. A pass:
    residuals ``e = x - a m - b`` against the consensus kept from the previous pass give the
    robust weights; the consensus is re-solved for those weights (weighted mean, exact) and a
    Gauss-Newton step in ``(a, b)`` is taken with the consensus eliminated (Schur complement,
    sparse). Phase A (least squares, then Huber) re-estimates every snippet's noise level after
    each pass; phase B (Cauchy) keeps them fixed, so it iterates on one objective.
    """

    def __init__(self, reduced, offset, layout: _Layout, progress):
        self.maps = _flat_maps(reduced)
        self.offset = float(offset)
        self.layout = layout
        self.progress = progress
        self.consensus = torch.zeros(layout.n_frames, layout.n_pixels)  # [N,P]
        self.stride = max(1, layout.n_pixels // NOISE_SAMPLES)
        n_samples = -(-layout.n_pixels // self.stride)
        self.samples = torch.full((layout.n_occurrences, n_samples), torch.nan)  # |e| per occ.
        self.mean_square = torch.full((layout.n_occurrences,), torch.nan)  # final pass, per occ.
        self.workspace: dict[tuple[int, int, int], list[torch.Tensor]] = {}

    def solve(self, max_iterations: int, tol: float):
        k = self.layout.n_snippets
        if not (self.layout.counts >= 2).any():  # no frame seen twice: nothing to align
            return np.ones(k), np.zeros(k), np.ones(k), [], 0, True
        # start: the linear least-squares solution in consensus units (s x + t against a
        # plain per-pixel mean, exact in one step); its bias towards shrinking noisy snippets
        # is what the x-space passes then remove
        stats = self._initial_pass()
        history: list[float] = []
        ds, dt = _gauge_step(stats, np.ones(k))
        s0 = np.maximum(1.0 + ds, SCALE_FLOOR)
        a, b, noise = 1.0 / s0, -dt / s0, np.ones(k)
        # a snippet the start pinned at the scale floor (it wanted a negative scale) starts
        # as "no response" in x-space: a small, b its mean; never as a huge response
        pinned = s0 <= SCALE_FLOOR * (1 + 1e-9)
        a[pinned] = SCALE_FLOOR * np.median(a)
        b[pinned] = stats["snippet_mean"][pinned]
        if self.progress is not None:
            self.progress(1, int(max_iterations))
        kind, huber_passes, converged = "huber", 0, False
        it = 1
        for it in range(2, int(max_iterations) + 1):
            stats = self._pass(a, b, noise, kind, first=it == 2)
            history.append(stats["loss"])
            da, db = _gauge_step(stats, a, gauge_weights=1.0 / np.maximum(a, np.median(a)))
            a_new = np.maximum(a + da, SCALE_FLOOR * np.median(a))
            b_new = b + db
            # largest change of the aligned values y = (x - b) / a, relative to the consensus
            # magnitude, each snippet counted by its precision in y (at most 1)
            precision = (a / noise) ** 2
            relevance = np.minimum(1.0, precision / np.median(precision))
            moved = np.abs(1 / a_new - 1 / a) * self.x_level + np.abs(b_new / a_new - b / a)
            change = float(np.max(relevance * moved)) / max(stats["magnitude"], 1e-30)
            if self.progress is not None:
                self.progress(it, int(max_iterations))
            a, b = self._canonical_gauge(a_new, b_new)
            if kind == "cauchy" and change < tol:
                converged = True
                break
            if kind == "huber":
                noise = self._snippet_noise()
                huber_passes += 1
                if change < HUBER_SWITCH_TOL or huber_passes >= HUBER_MAX_PASSES:
                    kind = "cauchy"
        # merge weights from the residuals against the converged robust consensus: an outlier
        # patch or a wrong snippet barely reaches the output
        final = self._pass(a, b, noise, "cauchy", first=False, solve=False)
        history.append(final["loss"])
        weights = self._merge_weights()
        if self.progress is not None and converged:
            self.progress(int(max_iterations), int(max_iterations))
        s, t = 1.0 / a, -b / a
        alpha = 1.0 / np.median(s)
        s, t = alpha * s, alpha * (t - np.median(t))
        return s, t, weights, history, it, converged

    def _canonical_gauge(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Move along the exact invariance ``m -> alpha m + beta`` (``a -> a / alpha``,
        ``b -> b - a beta / alpha``) to ``median(a) = 1``, ``median(b / a) = 0``, the kept
        consensus with it: nothing changes but the numbers stay of order one."""
        alpha = float(np.median(a))
        a = a / alpha
        beta = float(np.median(b / a))
        self.consensus.mul_(alpha).add_(beta)
        return a, b - a * beta

    def _merge_weights(self) -> np.ndarray:
        """Per snippet: 1 / its mean squared leave-one-out residual (consensus units) over its
        frames shared with others, relative to the median. No floor that matters: a wrong
        snippet may have a huge aligned scale, and only a tiny weight keeps it out."""
        spread = np.full(self.layout.n_snippets, np.nan)
        start = 0
        for first_gid, n, length in self.layout.entry_spans:
            block = self.mean_square[start : start + n * length].reshape(n, length)
            spread[first_gid : first_gid + n] = torch.nanmean(block, dim=1).numpy()
            start += n * length
        known = np.isfinite(spread) & (spread > 0)
        typical = float(np.median(spread[known])) if known.any() else 1.0
        spread[~np.isfinite(spread)] = typical  # snippets that share no frame with another
        return typical / np.maximum(spread, 1e-12 * typical)

    def _snippet_noise(self) -> np.ndarray:
        """Robust residual spread of every snippet (MAD over its sampled pixels), floored."""
        spread = np.full(self.layout.n_snippets, np.nan)
        start = 0
        for first_gid, n, length in self.layout.entry_spans:
            block = self.samples[start : start + n * length].reshape(n, -1)
            spread[first_gid : first_gid + n] = torch.nanmedian(block, dim=1).values.numpy()
            start += n * length
        spread = MAD_TO_SIGMA * spread
        known = np.isfinite(spread) & (spread > 0)
        typical = float(np.median(spread[known])) if known.any() else 1.0
        spread[~np.isfinite(spread)] = typical  # snippets that share no frame with another
        return np.maximum(spread, max(1e-2 * typical, 1e-6 * self.x_level, 1e-30))

    def _initial_pass(self) -> dict:
        """The least-squares system of ``s x + t`` against a free consensus, from s=1, t=0."""
        k = self.layout.n_snippets
        system = _NormalEquations(k)
        level = 0.0
        sums = np.zeros(k)
        for chunk in self.layout.chunks:
            valid, shared = chunk["valid"], chunk["shared"]
            x = self.layout.gather(chunk, self.maps, self.offset)  # [F,c,P], pads 0
            m = x.sum(1) / valid.sum(1)[:, None]  # plain mean
            level += float(x.abs().sum()) / max(float(valid.sum()) * x.shape[-1], 1.0)
            occ_mean = x.mean(-1).double().numpy().ravel()  # [F c], pads 0
            sums += np.bincount(chunk["gid_np"].ravel(), occ_mean, minlength=k)
            w = shared[..., None].expand_as(x)
            # y = s x + t: residual to reduce e = m - y, Jacobian (x, 1), consensus coefficient 1
            system.add(
                chunk["gid_np"],
                w,
                w.clone(),
                w.sum(1),
                x,
                m[:, None] - x,
                torch.empty_like(x),
                torch.empty_like(x),
            )
        self.x_level = level / len(self.layout.chunks)
        lengths = np.concatenate([np.full(n, length) for _, n, length in self.layout.entry_spans])
        out = system.result(loss=float("nan"), magnitude=self.x_level)
        out["snippet_mean"] = sums / lengths
        return out

    def _pass(self, a, b, noise, kind, first, solve=True) -> dict:
        """One sweep over the frames: residuals, weights, consensus, normal equations.

        Works in chunk-sized buffers that are reused from chunk to chunk, so a pass allocates
        almost nothing. Sums over a frame's occurrences and over its pixels are batched matrix
        products (one read of the ``[F, c, P]`` operand for several sums).
        """
        k = self.layout.n_snippets
        a_t = torch.from_numpy(a.astype(np.float32))
        b_t = torch.from_numpy((b + self.offset).astype(np.float32))  # raw x: offset into b
        noise_t = torch.from_numpy(noise.astype(np.float32))
        system = _NormalEquations(k)
        loss_sum, loss_count, magnitude = 0.0, 0.0, 0.0
        for chunk in self.layout.chunks:
            f0, f1 = chunk["f0"], chunk["f1"]
            gid, valid, shared = chunk["gid"], chunk["valid"], chunk["shared"]
            c = gid.shape[1]
            x, e, w, we, t1, t2 = self._buffers((f1 - f0, c, self.layout.n_pixels))
            a_f = a_t[gid] * valid  # [F,c], 0 on pads
            a_o = a_f[..., None]
            b_o = (b_t[gid] * valid)[..., None]
            self.layout.gather(chunk, self.maps, 0.0, out=x)  # raw values, pads 0
            if first:  # least squares for equal weights: sum a (x - b) / sum a^2
                torch.sub(x, b_o, out=t1).mul_(a_o)
                self.consensus[f0:f1] = t1.sum(1) / a_o.square().sum(1)
            m = self.consensus[f0:f1]  # [F,P], a view
            # 1. residuals against the kept consensus: robust weights and the objective
            torch.sub(x, b_o, out=e).addcmul_(a_o, m[:, None], value=-1.0)  # e = x - a m - b
            if kind == "huber":
                sample = e[:, :, :: self.stride].abs()
                sample = torch.where(shared[..., None] > 0, sample, torch.nan)
                self.samples[chunk["occ"]] = sample.reshape(-1, sample.shape[-1])[chunk["occ_at"]]
            # W: robust weight / noise^2, 0 on pads and on frames seen once
            loss_sum += _robust_weights(kind, e, noise_t[gid], shared, out=w, scratch=(t1, t2))
            loss_count += float(shared.sum()) * x.shape[-1]
            # 2. the consensus that is optimal for these weights and the current (a, b): the
            # kept one moved by sum_c W a e / sum_c W a^2 (a weighted mean of x - b over a)
            torch.mul(w, e, out=we)
            total = torch.bmm(a_f.square()[:, None], w).squeeze(1)  # [F,P] sum_c W a^2
            pull = torch.bmm(a_f[:, None], we).squeeze(1)  # [F,P] sum_c W a e
            delta = torch.where(total > 0, pull / total.clamp_min(1e-30), 0.0)
            m_new = m + delta
            self.consensus[f0:f1] = m_new  # (after m, a view of it, was used)
            magnitude += float(m_new.abs().mean(-1).sum())
            if solve:
                # 3. Gauss-Newton in (a, b), consensus eliminated: Jacobian (m, 1), coeff. a
                system.add_frames(chunk["gid_np"], a_f, w, we, total, m_new, delta, t1, t2)
            else:
                # leave-one-out residual in consensus units: against the consensus of the
                # others, (y - m) S / (S - w a^2), so a snippet frame does not vouch for itself
                e.addcmul_(a_o, delta[:, None], value=-1.0)  # against the new consensus
                y_res = torch.div(e, a_o.clamp_min(1e-30), out=t1)
                own = torch.mul(w, a_o, out=t2).mul_(a_o)
                rest = total.unsqueeze(1) - own
                y_res.mul_(total.unsqueeze(1) / rest.clamp_min(1e-6 * total.unsqueeze(1) + 1e-30))
                msq = torch.where(shared > 0, y_res.square_().mean(-1), torch.nan)
                self.mean_square[chunk["occ"]] = msq.reshape(-1)[chunk["occ_at"]]
        return system.result(
            loss=loss_sum / max(loss_count, 1.0), magnitude=magnitude / self.layout.n_frames
        )

    def _buffers(self, shape: tuple[int, int, int]) -> list[torch.Tensor]:
        """Six reusable ``shape`` buffers (there are at most two chunk shapes)."""
        if shape not in self.workspace:
            self.workspace[shape] = [torch.empty(shape) for _ in range(6)]
        return self.workspace[shape]


def _robust_weights(kind, e, noise, shared, out, scratch) -> float:
    """Weights ``W = shared psi(u)/u / noise^2`` of ``u = e / noise`` into ``out`` (``e``
    ``[F,c,P]``, ``noise`` and ``shared`` ``[F,c]``); returns the sum of rho(u) over the
    ``shared`` occurrences. ``scratch``: two buffers shaped like ``e``."""
    t1, t2 = scratch
    factor = (shared / noise.square())[..., None]
    if kind == "huber":
        u = torch.mul(e, noise.reciprocal()[..., None], out=t2).abs_()
        clipped = torch.clamp(u, max=HUBER_K, out=t1)  # rho = r (|u| - r / 2), r = min(|u|, k)
        rho = torch.mul(clipped, -0.5, out=out).add_(u).mul_(clipped)
        loss = float((rho.sum(-1) * shared).sum())
        torch.reciprocal(u, out=out).mul_(HUBER_K).clamp_(max=1.0).mul_(factor)  # min(1, k/|u|)
        return loss
    # Cauchy: q = 1 + (u / c)^2, weight 1 / q, rho = c^2 / 2 log q
    q = torch.mul(e, (noise * CAUCHY_C).reciprocal()[..., None], out=t2).square_().add_(1.0)
    torch.div(factor, q, out=out)
    return 0.5 * CAUCHY_C**2 * float((torch.log(q, out=t1).sum(-1) * shared).sum())


class _NormalEquations:
    """Sparse Gauss-Newton system for per-snippet pairs (p, q) with the consensus eliminated.

    Residual model per occurrence o and pixel: ``e_o - (j_o p_o + q_o) - c_o dm``; the
    consensus change ``dm`` is eliminated per pixel (Schur complement), leaving
    ``H = sum_p [diag(W J J^T) - (W c J)(W c J)^T / sum W c^2]`` and ``g = sum_p W J e`` (the
    consensus-term of g vanishes because the consensus is optimal for W). Frames contribute
    ``c x c`` blocks (c = occurrences of the frame), assembled into one sparse matrix.
    """

    def __init__(self, n_snippets: int):
        self.k = n_snippets
        self.entries: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.g = np.zeros(2 * n_snippets)

    def add(self, gid_np, w, wc, total, j, e, t1, t2) -> None:
        """``w`` (W), ``wc`` (W c, overwritten), ``e``, ``t1``, ``t2`` (scratch) ``[F,c,P]``;
        ``total`` (sum over c of W c^2) ``[F,P]``; ``j`` broadcastable to ``[F,c,P]``."""
        inv_sqrt = torch.where(total > 0, total.clamp_min(1e-30).rsqrt(), 0.0)
        wj = torch.mul(w, j, out=t1)
        g_p = torch.mul(wj, e, out=t2).sum(-1)  # [F,c]
        d_jj = torch.mul(wj, j, out=t2).sum(-1)
        d_j = wj.sum(-1)
        g_q = torch.mul(w, e, out=t2).sum(-1)
        d_1 = w.sum(-1)
        root = wc.mul_(inv_sqrt[:, None])  # W c / sqrt(sum W c^2)
        root_j = torch.mul(root, j, out=t1)
        g_jj = torch.bmm(root_j, root_j.transpose(1, 2)).double().numpy()  # [F,c,c]
        g_j1 = torch.bmm(root_j, root.transpose(1, 2)).double().numpy()
        g_11 = torch.bmm(root, root.transpose(1, 2)).double().numpy()
        self._add_blocks(gid_np, (d_jj, d_j, d_1), (g_jj, g_j1, g_11), g_p, g_q)

    def _add_blocks(self, gid_np, diagonals, grams, g_p, g_q) -> None:
        """Frames' ``c x c`` blocks ``diag(d) - G`` for (pp, pq, qq) and the gradient sums
        ``g_p``, ``g_q`` ``[F,c]`` into the system."""
        (d_jj, d_j, d_1), (g_jj, g_j1, g_11) = diagonals, grams
        eye = np.eye(gid_np.shape[1])
        h_pp = eye * d_jj.double().numpy()[:, None, :] - g_jj
        h_pq = eye * d_j.double().numpy()[:, None, :] - g_j1
        h_qq = eye * d_1.double().numpy()[:, None, :] - g_11
        rr = np.broadcast_to(gid_np[:, :, None], h_pp.shape).ravel()
        cc = np.broadcast_to(gid_np[:, None, :], h_pp.shape).ravel()
        self.entries.append((2 * rr, 2 * cc, h_pp.ravel()))
        self.entries.append((2 * rr, 2 * cc + 1, h_pq.ravel()))
        self.entries.append((2 * cc + 1, 2 * rr, h_pq.ravel()))
        self.entries.append((2 * rr + 1, 2 * cc + 1, h_qq.ravel()))
        # _gauge_step solves H d = -gradient; the step that reduces |e - J d|_W is H^-1 J^T W e
        self.g[0::2] -= np.bincount(gid_np.ravel(), g_p.double().numpy().ravel(), minlength=self.k)
        self.g[1::2] -= np.bincount(gid_np.ravel(), g_q.double().numpy().ravel(), minlength=self.k)

    def add_frames(self, gid_np, a_f, w, we, total, m, delta, t1, t2) -> None:
        """The same sums as :meth:`add` for the passes, where the Jacobian of every occurrence
        is the frame's consensus ``m`` ``[F,P]`` and the consensus coefficient its ``a``
        (``a_f`` ``[F,c]``); ``we`` = W e against the consensus before it moved by ``delta``
        (residuals against the moved one are ``e - a delta``); ``t1``, ``t2``: scratch.

        The sums over pixels are products of per-pixel rows ``[F,k,P]`` with the transposed
        ``[F,c,P]`` operand, the form the BLAS does fastest (several sums, one read)."""
        rows = torch.stack([torch.ones_like(m), m, m * m, delta, delta * m], dim=1)  # [F,5,P]
        w_sums = torch.bmm(rows, w.transpose(1, 2))  # [F,5,c]: sum W, W m, W m^2, W d, W d m
        e_sums = torch.bmm(rows[:, :2], we.transpose(1, 2))  # [F,2,c]: sum W e, W e m
        d_1, d_j, d_jj, w_delta, w_delta_m = w_sums.unbind(1)
        g_q = e_sums[:, 0] - a_f * w_delta
        g_p = e_sums[:, 1] - a_f * w_delta_m
        # Schur term: (W a)(W a)^T / S = a a^T (W / sqrt S)(W / sqrt S)^T, S = sum_c W a^2
        inv_sqrt = torch.where(total > 0, total.clamp_min(1e-30).rsqrt(), 0.0)  # [F,P]
        r = torch.mul(w, inv_sqrt[:, None], out=t1)
        r_j = torch.mul(r, m[:, None], out=t2)
        aa = (a_f[:, :, None] * a_f[:, None, :]).double().numpy()  # [F,c,c]
        grams = [
            torch.bmm(left, right.transpose(1, 2)).double().numpy() * aa
            for left, right in ((r_j, r_j), (r_j, r), (r, r))
        ]
        self._add_blocks(gid_np, (d_jj, d_j, d_1), grams, g_p, g_q)

    def result(self, loss: float, magnitude: float) -> dict:
        out = {"loss": loss, "magnitude": magnitude, "gradient": self.g}
        if self.entries:
            rows = np.concatenate([e[0] for e in self.entries])
            cols = np.concatenate([e[1] for e in self.entries])
            vals = np.concatenate([e[2] for e in self.entries])
            out["hessian"] = sp.coo_matrix(
                (vals, (rows, cols)), shape=(2 * self.k, 2 * self.k)
            ).tocsc()
        return out


def _gauge_step(
    stats: dict, s: np.ndarray, gauge_weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Minimiser of the pass's quadratic with the two global (gauge) directions fixed, and
    the first parameter of every snippet kept at or above its floor (active set: one that
    would cross it is pinned there and the rest re-solved).

    The step keeps ``sum_k gauge_weights_k * d_k`` at 0 for each parameter. In x-space the
    objective is exactly invariant along the gauge directions ``(-a, 0)`` and ``(0, -a)``,
    so its gradient is orthogonal to them and any transverse constraint costs no force on
    any snippet; weights ``1/a`` give the step of least relative change (capped for snippets
    with almost no response, which must not dominate the constraint). ``None`` (y-space,
    where scaling everything down is not free): the stiffness-weighted means are kept, the
    stiffness being the Hessian's diagonal, so snippets with no say get no share."""
    h = stats["hessian"]
    k2 = h.shape[0]
    diag = h.diagonal()
    tiny = np.empty(k2)
    tiny[0::2] = max(diag[0::2].mean(), 1e-30) * 1e-9
    tiny[1::2] = max(diag[1::2].mean(), 1e-30) * 1e-9
    damped = h + sp.diags(DAMPING * np.abs(diag) + tiny)
    gauge = np.zeros((2, k2))
    if gauge_weights is None:
        gauge[0, 0::2] = np.abs(diag[0::2]) / max(np.abs(diag[0::2]).max(), 1e-30)
        gauge[1, 1::2] = np.abs(diag[1::2]) / max(np.abs(diag[1::2]).max(), 1e-30)
    else:
        gauge[0, 0::2] = gauge[1, 1::2] = gauge_weights / np.linalg.norm(gauge_weights)
    floor = SCALE_FLOOR * np.median(s)
    pinned = np.flatnonzero(s < floor)  # only after an earlier clamp
    for _ in range(8):
        rows = sp.vstack(
            [
                sp.csr_matrix(gauge),
                sp.csr_matrix(
                    (np.ones(pinned.size), (np.arange(pinned.size), 2 * pinned)),
                    shape=(pinned.size, k2),
                ),
            ]
        )
        kkt = sp.bmat([[damped, rows.T], [rows, None]], format="csc")
        rhs = np.concatenate([-stats["gradient"], np.zeros(2), floor - s[pinned]])
        delta = spla.splu(kkt, permc_spec="MMD_AT_PLUS_A").solve(rhs)[:k2]
        crossing = np.flatnonzero(s + delta[0::2] < floor * (1 - 1e-9))
        crossing = np.setdiff1d(crossing, pinned)
        if crossing.size == 0:
            break
        pinned = np.union1d(pinned, crossing)
    return delta[0::2], delta[1::2]


# ------------------------------------------------------------------------------ statistics
def _frame_statistics(reduced, offset, layout: _Layout, scales, shifts, weights):
    """Per frame on the reduced maps: mean |aligned occurrence - merged frame| and the
    robust spread of one occurrence around the merge (for the confidence map)."""
    maps = _flat_maps(reduced)
    s = torch.from_numpy(np.concatenate(scales).astype(np.float32))
    t = torch.from_numpy(np.concatenate(shifts).astype(np.float32))
    v = torch.from_numpy(
        np.ones(layout.n_snippets, np.float32)
        if weights is None
        else np.concatenate(weights).astype(np.float32)
    )  # [K] per snippet
    n = layout.n_frames
    residual = np.zeros(n, np.float32)
    sigma = np.zeros(n, np.float64)
    level = np.zeros(n, np.float64)
    for chunk in layout.chunks:
        f0, f1 = chunk["f0"], chunk["f1"]
        gid, valid = chunk["gid"], chunk["valid"]
        x = layout.gather(chunk, maps, float(offset))
        y = x * s[gid][..., None] + t[gid][..., None]
        w = (v[gid] * valid)[..., None]
        merged = (w * y).sum(1) / w.sum(1).clamp_min(1e-30)
        dev = (y - merged[:, None]).abs() * valid[..., None]
        residual[f0:f1] = (dev.sum((1, 2)) / (valid.sum(1) * x.shape[-1])).numpy()
        sigma[f0:f1] = MAD_TO_SIGMA * _masked_median(dev, valid).double().numpy()
        level[f0:f1] = merged.abs().mean(-1).double().numpy()
    # the spread around a mean of n is sqrt((n-1)/n) of one occurrence's spread
    counts = layout.counts
    multi = counts >= 2
    sigma[multi] *= np.sqrt(counts[multi] / (counts[multi] - 1))
    if multi.any() and not multi.all():
        frames = np.arange(n)
        sigma[~multi] = np.interp(frames[~multi], frames[multi], sigma[multi])
    sigma = np.maximum(sigma, 1e-6 * level + 1e-30)
    return residual, sigma


# ------------------------------------------------------------------------------ merge
def _occurrence_shape(weights, shape: tuple[int, int]) -> np.ndarray:
    """Per-snippet ``[n]`` or per-occurrence ``[n, L]`` weights as ``[n, L]`` float64."""
    w = np.asarray(weights, dtype=np.float64)
    return np.broadcast_to(w[:, None] if w.ndim == 1 else w, shape)


def _merge(arrays, indices, scales, shifts, n_frames, offset, weights, sigma):
    """Streamed full-resolution merge; with ``sigma`` also the agreement confidence.

    Frame by frame (:func:`_merge_one`), the snippet frames covering it in (entry, snippet,
    position) order. Memory: the output (one or two ``[N,H,W]`` arrays), nothing per
    snippet.
    """
    h, w = arrays[0].shape[-2:]
    offset = float(offset)
    tensors: dict[int, torch.Tensor] = {}  # one view per array (entries may share one)
    covering = [[] for _ in range(n_frames)]  # per frame: (snippet frame, (scale, const, w))
    for i, (a, k) in enumerate(zip(arrays, indices, strict=True)):
        tensor = tensors.setdefault(id(a), _tensor_view(a))
        sc = np.asarray(scales[i], dtype=np.float64)
        sh = np.asarray(shifts[i], dtype=np.float64)
        wt = np.ones(k.shape) if weights is None else _occurrence_shape(weights[i], k.shape)
        for n in range(a.shape[0]):
            for j in range(a.shape[1]):
                term = (float(sc[n]), float(sh[n] - sc[n] * offset), float(wt[n, j]))
                covering[int(k[n, j])].append((tensor[n, j], term))
    depth = torch.zeros(n_frames, h, w)
    conf = None if sigma is None else torch.empty(n_frames, h, w)
    scratch = torch.empty(h, w)
    for f, occurrences in enumerate(covering):
        views, terms = zip(*occurrences, strict=True)
        _merge_one(
            views,
            terms,
            None if sigma is None else float(sigma[f]),
            depth[f],
            None if conf is None else conf[f],
            scratch,
        )
    return depth.numpy(), None if conf is None else conf.numpy()


def _merge_one(views, terms, sigma, depth, conf, scratch) -> None:
    """One frame of the merge, in place (:func:`coalign` and :func:`merge_frame` alike).

    ``depth`` (``[H,W]`` float32 zeros) gets the mean of the ``views`` (the snippet frames
    covering the frame, any float dtype) aligned and weighted by their ``terms`` (scale,
    constant, weight), float64 constants rounded once to float32. With ``sigma`` (the
    frame's spread), ``conf`` gets the agreement confidence: var = mean squared deviation of
    the aligned snippet frames from the merge + sigma^2 / n (about sigma^2 where they agree,
    however many there are; one alone gets the prior), confidence = 1 / (1 + var / (kappa
    sigma)^2). ``scratch``: an ``[H,W]`` float32 buffer.
    """
    weight_sum = const = 0.0
    for x, (s_o, b_o, w_o) in zip(views, terms, strict=True):
        depth.add_(x, alpha=w_o * s_o)
        weight_sum += w_o
        const += w_o * b_o
    depth.div_(torch.tensor(np.float32(weight_sum)))
    depth.add_(torch.tensor(np.float32(const / weight_sum)))
    if sigma is None:
        return
    count = float(len(views))
    spread = conf.zero_()
    for x, (s_o, b_o, _) in zip(views, terms, strict=True):
        # merged - aligned (the sign does not matter once squared); the input is not written
        deviation = torch.sub(depth, x, alpha=s_o, out=scratch).sub_(b_o)
        spread.addcmul_(deviation, deviation)
    spread.div_(torch.tensor(np.float32(count)))
    spread.add_(torch.tensor(np.float32(sigma**2 / count)))
    spread.div_(torch.tensor(np.float32((CONFIDENCE_KAPPA * sigma) ** 2)))
    spread.add_(1.0).reciprocal_()
