"""The full-resolution merge: the covering order, the per-frame weighted mean and the
agreement confidence."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import ConfigError
from .checks import array_min, as_numpy, check_inputs, tensor_view, unique_arrays
from .threads import intra_op_threads, threads_for

CONFIDENCE_KAPPA = 3.0  # confidence = 1 / (1 + var / (kappa sigma)^2)


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
    views = [tensor_view(as_numpy(m)) for m in maps]
    terms = []  # (scale, constant, weight) in float64, as merge_video computes them
    for n in range(len(views)):
        s_o = float(np.float64(scales[n]))
        b_o = float(np.float64(shifts[n])) - s_o * offset
        terms.append((s_o, b_o, 1.0 if weights is None else float(np.float64(weights[n]))))
    depth = torch.zeros(views[0].shape)
    conf = None if sigma is None else torch.empty(views[0].shape)
    with intra_op_threads(threads_for(depth.numel())):
        merge_into(
            views,
            terms,
            None if sigma is None else float(sigma),
            depth,
            conf,
            torch.empty_like(depth),
        )
    return depth.numpy(), None if conf is None else conf.numpy()


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
    arrays, idx, covered = check_inputs(snippets, indices)
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
        offset = min(array_min(a) for a in unique_arrays(arrays))
    depth, _ = merge_video(arrays, idx, scales, shifts, n_frames, np.float32(offset), weights, None)
    return depth


def occurrence_shape(weights, shape: tuple[int, int]) -> np.ndarray:
    """Per-snippet ``[n]`` or per-occurrence ``[n, L]`` weights as ``[n, L]`` float64."""
    w = np.asarray(weights, dtype=np.float64)
    return np.broadcast_to(w[:, None] if w.ndim == 1 else w, shape)


def covering_order(indices: Sequence, n_frames: int) -> list[np.ndarray]:
    """For every frame ``f``, the snippet frames covering it in the order the merge sums them:
    an int64 ``[c_f, 3]`` array of rows (dilation entry ``i``, snippet ``n``, position ``j``)
    with ``indices[i][n, j] == f``, sorted by ``(i, n, j)``; ``n_frames``: at least the
    largest index + 1.

    The one definition of that order: :func:`coalign`'s merge and a streamed merge (one frame at
    a time from stored snippets, then :func:`merge_frame`) both follow it, which is what makes
    their frames bit-identical. ``indices``: one ``[n_snippets, L]`` array per dilation entry
    (repeated entries included: each counts).
    """
    rows = []
    for i, k in enumerate(indices):
        k = np.asarray(k)
        n, j = np.indices(k.shape)
        rows.append(np.stack([np.full(k.size, i), n.ravel(), j.ravel(), k.ravel()], axis=1))
    table = np.concatenate(rows).astype(np.int64)  # [O,4] in (i, n, j) order
    order = np.argsort(table[:, 3], kind="stable")  # by frame; (i, n, j) order kept within
    counts = np.bincount(table[:, 3], minlength=n_frames)
    return np.split(table[order, :3], np.cumsum(counts)[:-1])


def merge_video(arrays, indices, scales, shifts, n_frames, offset, weights, sigma):
    """Streamed full-resolution merge; with ``sigma`` also the agreement confidence.

    Frame by frame (:func:`merge_into`), the snippet frames covering it in
    :func:`covering_order`. Memory: the output (one or two ``[N,H,W]`` arrays), nothing per
    snippet.
    """
    h, w = arrays[0].shape[-2:]
    offset = float(offset)
    tensors: dict[int, torch.Tensor] = {}  # one view per array (entries may share one)
    views, terms = [], []  # per entry: the [n, L, H, W] view; (scale, constant, weight) arrays
    for i, (a, k) in enumerate(zip(arrays, indices, strict=True)):
        views.append(tensors.setdefault(id(a), tensor_view(a)))
        sc = np.asarray(scales[i], dtype=np.float64)
        sh = np.asarray(shifts[i], dtype=np.float64)
        wt = np.ones(k.shape) if weights is None else occurrence_shape(weights[i], k.shape)
        terms.append((sc, sh - sc * offset, wt))
    depth = torch.zeros(n_frames, h, w)
    conf = None if sigma is None else torch.empty(n_frames, h, w)
    scratch = torch.empty(h, w)
    with intra_op_threads(threads_for(h * w)):
        for f, cover in enumerate(covering_order(indices, n_frames)):
            cover = cover.tolist()
            merge_into(
                [views[i][n, j] for i, n, j in cover],
                [
                    (float(terms[i][0][n]), float(terms[i][1][n]), float(terms[i][2][n, j]))
                    for i, n, j in cover
                ],
                None if sigma is None else float(sigma[f]),
                depth[f],
                None if conf is None else conf[f],
                scratch,
            )
    return depth.numpy(), None if conf is None else conf.numpy()


def merge_into(views, terms, sigma, depth, conf, scratch) -> None:
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
