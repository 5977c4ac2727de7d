"""Synthetic co-alignment problems with known truth, shared by the alignment tests."""

import numpy as np

# tolerances in one place: exact recovery is limited by float32 sums over the reduced maps
EXACT_RTOL = 1e-4
ADAM_ATOL = 1e-5


def scene(n_frames: int, height: int, width: int) -> np.ndarray:
    """A smooth inverse-depth video with a blob that comes closer: ``[N,H,W]`` float32."""
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    frames = []
    for f in range(n_frames):
        blob = np.exp(-((xx - 0.3 - 0.02 * f) ** 2 + (yy - 0.4) ** 2) / 0.03)
        frames.append(1.0 + 0.5 * np.sin(3 * xx + 0.2 * f) + yy + (0.05 * f) * blob)
    return np.stack(frames).astype(np.float32)


def cut(gt, dilations=(1, 4), length=3, noise=0.0, seed=0):
    """Snippets ``x = (gt - t) / s`` (+ noise) as the pipeline cuts them, and the truth."""
    rng = np.random.default_rng(seed)
    n_frames = gt.shape[0]
    snippets, indices, truth = [], [], []
    for d in dilations:
        n = n_frames - (length - 1) * d
        idx = np.arange(n)[:, None] + d * np.arange(length)[None, :]
        s, t = rng.uniform(0.5, 2.0, n), rng.uniform(-0.5, 0.5, n)
        x = (gt[idx] - t[:, None, None, None]) / s[:, None, None, None]
        x = x + noise * rng.standard_normal(x.shape)
        snippets.append(x.astype(np.float32))
        indices.append(idx)
        truth.append((s, t))
    return snippets, indices, truth


def affine_fit(pred, target):
    """Least-squares ``a, b`` with ``a * pred + b ~ target`` and the worst residual."""
    p = np.ravel(pred).astype(np.float64)
    a, b = np.polyfit(p, np.ravel(target).astype(np.float64), 1)
    return a, b, float(np.abs(a * p + b - np.ravel(target)).max())


def naive_merge(snippets, indices, scales, shifts, offset, n_frames, weights=None):
    """Frame by frame, the (weighted) mean of ``s (x - offset) + t`` in float64."""
    out = []
    for f in range(n_frames):
        total, weight = 0.0, 0.0
        for i, (x, k) in enumerate(zip(snippets, indices, strict=True)):
            for n, j in zip(*np.nonzero(k == f), strict=True):
                w = 1.0 if weights is None else np.asarray(weights[i], dtype=np.float64)
                w = float(w if np.ndim(w) == 0 else w[n] if w.ndim == 1 else w[n, j])
                total = total + w * (
                    scales[i][n] * (x[n, j].astype(np.float64) - offset) + shifts[i][n]
                )
                weight += w
        out.append(total / weight)
    return np.stack(out)


def moving_region(n_frames: int, height: int, width: int, fraction: float = 0.57) -> np.ndarray:
    """``[N,H,W]`` bool: a rectangle of about ``fraction`` of every frame that moves across it."""
    rh, rw = round(height * fraction**0.5), round(width * fraction**0.5)
    region = np.zeros((n_frames, height, width), bool)
    for f in range(n_frames):
        y0, x0 = f % (height - rh + 1), (2 * f) % (width - rw + 1)
        region[f, y0 : y0 + rh, x0 : x0 + rw] = True
    return region


def spoil(snippets, indices, region, seed=5):
    """Copies of ``snippets`` whose ``region`` pixels hold a smooth wrong surface, different in
    every snippet frame (inconsistent garbage within each snippet's value range)."""
    rng = np.random.default_rng(seed)
    out = []
    for s, k in zip(snippets, indices, strict=True):
        bad = s.copy()
        for n in range(s.shape[0]):
            lo, hi = float(s[n].min()), float(s[n].max())
            for j in range(s.shape[1]):
                yy, xx = np.nonzero(region[k[n, j]])
                g = rng.normal(size=3)
                surface = np.tanh(g[0] + g[1] * yy / s.shape[-2] + g[2] * xx / s.shape[-1])
                bad[n, j][yy, xx] = lo + (hi - lo) * (0.5 + 0.4 * surface)
        out.append(bad)
    return out


def absrel(depth, gt, where) -> float:
    """AbsRel in depth over ``where`` after one least-squares scale and shift in inverse depth."""
    p, g = depth[where].astype(np.float64), gt[where].astype(np.float64)
    a, b = np.polyfit(p, g, 1)
    inv = np.clip(a * p + b, gt.min(), gt.max())
    return float(np.mean(np.abs(1 / inv - 1 / g) * g))
