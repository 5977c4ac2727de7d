"""The entry points: :func:`coalign` (solve and merge), :func:`solve_reduced` (solve from
reduced maps), :func:`merge_solution` (merge a solve done before), :func:`reduce_maps`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import torch

from ..errors import ConfigError
from .adam import solve_adam
from .checks import (
    METHODS,
    array_min,
    as_numpy,
    canonical_views,
    check_inputs,
    check_reduction,
    check_solver_options,
    covered_frames,
    first_copies,
    holdout_keep,
    reduced_view,
    unique_arrays,
)
from .layout import Layout
from .merge import merge_video
from .result import AlignmentResult
from .robust import RobustSolver
from .statistics import frame_statistics
from .threads import intra_op_threads, threads_for

ProgressFn = Callable[[int, int], None]


def coalign(
    snippets: Sequence,
    indices: Sequence,
    method: str = "robust",
    *,
    confidence: bool = False,
    border: int = 2,
    subsample: int = 10,
    holdout=None,
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

    ``holdout``: optional ``[N, H, W]`` mattes in 0..1 at the maps' size, 1 where a pixel must
    not count in the alignment (e.g. a moving object the model gets wrong): the objective's
    per-pixel weights are multiplied by ``1 - holdout`` (and held-out pixels leave the noise
    and spread estimates); the merge still fills those pixels from the aligned snippets.
    """
    clock = time.perf_counter()
    options = check_solver_options(method, solver_options)
    arrays, idx, n_frames = check_inputs(snippets, indices)
    check_reduction(arrays[0].shape[-2:], border, subsample)
    keep = holdout_keep(holdout, (n_frames, *arrays[0].shape[-2:]), border, subsample)  # [N,P]

    # 1. global minimum, the reference's offset
    offset = np.float32(min(array_min(a) for a in unique_arrays(arrays)))
    # 2. reduced maps [n, L, h, w]: views, not shifted
    reduced = [reduced_view(a, border, subsample) for a in arrays]
    # 3. solve (a dilation repeated by capping shares one array: found on the full maps)
    result = _solve(
        reduced, idx, n_frames, offset, method, options, progress, first_copies(arrays, idx), keep
    )

    # 4. the full-resolution merge
    result.depth, result.confidence = merge_video(
        arrays,
        idx,
        result.scales,
        result.shifts,
        n_frames,
        offset,
        result.merge_weights,
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
    holdout=None,
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
    weights are the solver's own float64 values (as from every entry point), which is what
    makes :func:`merge_frame` reproduce coalign's merge exactly. ``holdout``: the mattes of
    :func:`coalign` at the reduced size, ``[N, h, w]`` (:func:`reduce_holdout` of the
    full-size ones gives the same solve as coalign's).
    """
    clock = time.perf_counter()
    options = check_solver_options(method, solver_options)
    if isinstance(reduced, (np.ndarray, torch.Tensor)) or not len(reduced):
        raise ConfigError("`reduced` must be a non-empty list with one entry per dilation entry")
    if len(reduced) != len(indices):
        raise ConfigError(
            f"`reduced` and `indices` need one entry per dilation entry each; got "
            f"{len(reduced)} and {len(indices)}"
        )
    converted: dict[int, np.ndarray] = {}  # a repeated entry stays one array
    maps = [converted.setdefault(id(r), as_numpy(r)) for r in reduced]
    idx = [np.asarray(as_numpy(k), dtype=np.int64) for k in indices]
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
    n_frames = covered_frames(idx)
    keep = holdout_keep(holdout, (n_frames, *maps[0].shape[-2:]), 0, 1)  # [N,P]
    result = _solve(
        maps,
        idx,
        n_frames,
        np.float32(offset),
        method,
        options,
        progress,
        first_copies(canonical_views(maps), idx),
        keep,
    )
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
    arrays, idx, n_frames = check_inputs(snippets, indices)
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
    depth, conf = merge_video(
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
    maps = as_numpy(maps)
    if maps.ndim != 4:
        raise ConfigError(f"`maps` must be [n_snippets, L, H, W]; got shape {tuple(maps.shape)}")
    check_reduction(maps.shape[-2:], border, subsample)
    return reduced_view(maps, border, subsample)


def reduce_holdout(holdout, border: int = 2, subsample: int = 10) -> np.ndarray:
    """``[N, H, W]`` mattes → ``[N, h, w]``, reduced as :func:`reduce_maps` reduces the maps
    (what :func:`solve_reduced` takes): a strided view, no copy and no dtype change."""
    holdout = as_numpy(holdout)
    if holdout.ndim != 3:
        raise ConfigError(f"`holdout` must be [N, H, W]; got shape {tuple(holdout.shape)}")
    check_reduction(holdout.shape[-2:], border, subsample)
    return reduced_view(holdout, border, subsample)


def _solve(reduced, idx, n_frames, offset, method, options, progress, first, keep):
    """Step 3 of :func:`coalign` on reduced maps ``[n, L, h, w]``: the solve and the
    per-frame statistics. ``first``: :func:`first_copies` of the entries; ``keep``:
    ``[N,P]`` pixel weights (1 - holdout) or None.

    Returns the result without depth; its scales, shifts and merge weights are the solver's
    float64 values, the ones the merge uses."""
    n_pixels = reduced[0].shape[-2] * reduced[0].shape[-1]
    layout = Layout(idx, n_frames, n_pixels)
    if method == "adam":
        dense = sum(r.shape[1] for r in reduced) * n_frames * n_pixels  # its [R,N,P] arrays
        with intra_op_threads(threads_for(dense)):
            scales, shifts, history, iterations = solve_adam(
                reduced, offset, idx, n_frames, progress, keep=keep, **options
            )
        weights = None
        converged = True
    else:
        # a dilation repeated by capping is the same data twice: it is solved once (counted
        # twice it would pull the consensus towards itself) and, as the reference does,
        # merged twice
        unique = sorted(set(first))
        solved = Layout([idx[i] for i in unique], n_frames, n_pixels)
        solver = RobustSolver([reduced[i] for i in unique], offset, solved, progress, keep)
        with intra_op_threads(1):  # many small operations (threads.py)
            s, t, snippet_weights, history, iterations, converged = solver.solve(**options)

        def per_entry(values: np.ndarray) -> list[np.ndarray]:
            solved_entries = dict(zip(unique, solved.split(values), strict=True))
            return [solved_entries[i] for i in first]

        scales, shifts, weights = per_entry(s), per_entry(t), per_entry(snippet_weights)

    # per-frame agreement on the reduced maps (sigma: the confidence's scale)
    with intra_op_threads(1):
        frame_res, sigma = frame_statistics(reduced, offset, layout, scales, shifts, weights, keep)
    result = AlignmentResult(
        depth=None,
        scales=[np.asarray(s, dtype=np.float64) for s in scales],
        shifts=[np.asarray(t, dtype=np.float64) for t in shifts],
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
        else [np.asarray(w, dtype=np.float64) for w in weights],
        frame_sigma=sigma,
    )
    return result
