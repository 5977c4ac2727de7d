"""The reference objective and optimiser (``method="adam"``), to the letter."""

from __future__ import annotations

import numpy as np
import torch

from .checks import tensor_view


class DenseL1(torch.autograd.Function):
    """The reference's L1 term ``mean(|(M - target) * B / norm|)`` over the dense array.

    ``M`` ([R, N, P], zeros where a row does not cover a frame) is built from the occurrence
    values, ``target = M.sum(0) / B.sum(0)`` and ``norm = mean |target|`` are constants, as
    the reference detaches them. The gradient is written out: ``B = 0`` off the covered
    entries, so it is ``sign(M - target) / norm / M.numel()`` gathered at those entries; this
    is what autograd computes through the dense graph, without its dense backward passes.
    ``keep`` (``[N,P]``, 1 - holdout, or None) weights every term by its frame and pixel,
    and ``norm`` is then the weighted mean over the frame's pixels.
    """

    @staticmethod
    def forward(ctx, values, rows, frames, covered, count, keep):
        rows_total, n_frames = covered.shape[:2]
        dense = values.new_zeros(rows_total, n_frames, values.shape[-1])  # [R,N,P]
        dense.index_put_((rows, frames), values)
        target = dense.sum(0) / count  # [N,P]
        norm = target.abs().mean(-1, keepdim=True)  # [N,1]
        if keep is not None:  # over the pixels that count (all of a frame held out entirely)
            kept = keep.sum(-1, keepdim=True)
            norm = torch.where(kept > 0, (target.abs() * keep).sum(-1, keepdim=True) / kept, norm)
        numel = dense.numel()
        diff = dense.sub_(target).mul_(covered / norm).abs_()
        loss = (diff if keep is None else diff.mul_(keep)).mean()
        ctx.save_for_backward(values, frames, target, norm)
        ctx.keep = keep
        ctx.numel = numel
        return loss

    @staticmethod
    def backward(ctx, grad):
        values, frames, target, norm = ctx.saved_tensors
        # the same operations in the same order as autograd through the dense graph, so that
        # the Adam trajectory (which amplifies last-bit differences) follows the reference
        g = torch.sign(values - target[frames]) * (grad / ctx.numel)
        g = g / norm[frames]
        return g if ctx.keep is None else g * ctx.keep[frames], None, None, None, None, None


def solve_adam(reduced, offset, indices, n_frames, progress, iterations, lr, keep=None):
    """The reference: dense L1 objective (values and reciprocals) + penalties, Adam.
    ``keep`` (``[N,P]``, 1 - holdout) weights both L1 terms per frame and pixel."""
    iterations = int(iterations)
    xs = [
        (tensor_view(r).float() - float(offset)).flatten(2) for r in reduced
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
        loss = DenseL1.apply(scaled, rows, frames, covered, count, keep)
        loss = loss + DenseL1.apply(scaled.clip(min=1e-3) ** -1, rows, frames, covered, count, keep)
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
