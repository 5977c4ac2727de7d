"""Per-frame agreement of the aligned snippets on the reduced maps (residuals, spread)."""

from __future__ import annotations

import numpy as np
import torch

from .layout import Layout, flat_maps

MAD_SAMPLES = 4096  # residuals per frame used for its median (confidence scale)
MAD_TO_SIGMA = 1.4826  # MAD of a Gaussian times this is its standard deviation


def masked_median(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-frame median of ``values[F, c, P]`` where ``mask[F, c]``, from a strided sample
    (NaN values are left out)."""
    f, c, p = values.shape
    stride = max(1, (c * p) // MAD_SAMPLES)
    sample = values[:, :, ::stride]
    sample = torch.where(mask[..., None] > 0, sample, torch.nan).reshape(f, -1)
    return torch.nan_to_num(torch.nanmedian(sample, dim=1).values, nan=0.0)


def frame_statistics(reduced, offset, layout: Layout, scales, shifts, weights, keep=None):
    """Per frame on the reduced maps: mean |aligned occurrence - merged frame| and the
    robust spread of one occurrence around the merge (for the confidence map). ``keep``
    (``[N,P]``, 1 - holdout): pixels below 1/2 are left out of both (a frame held out
    entirely is measured on all its pixels)."""
    maps = flat_maps(reduced)
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
        if keep is None:
            residual[f0:f1] = (dev.sum((1, 2)) / (valid.sum(1) * x.shape[-1])).numpy()
        else:
            kept = keep[f0:f1] >= 0.5  # [F,P]
            kept |= ~kept.any(-1, keepdim=True)
            dev = torch.where(kept[:, None], dev, torch.nan)
            residual[f0:f1] = (dev.nansum((1, 2)) / (valid.sum(1) * kept.sum(-1))).numpy()
        sigma[f0:f1] = MAD_TO_SIGMA * masked_median(dev, valid).double().numpy()
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
