"""The robust solver (``method="robust"``): its schedule and its sweeps over the frames."""

from __future__ import annotations

import numpy as np
import torch

from .gauss_newton import SCALE_FLOOR, NormalEquations, gauge_step, robust_weights
from .layout import Layout, flat_maps
from .statistics import MAD_TO_SIGMA

HUBER_SWITCH_TOL = 1e-3  # Huber passes stop (Cauchy starts) once values move less than this
HUBER_MAX_PASSES = 8
NOISE_SAMPLES = 256  # residuals per snippet frame kept for the snippet's noise level (MAD)


class RobustSolver:
    """Robust Gauss-Newton over frame chunks; see the package docstring for the model.

    Unknowns: per snippet ``a_k, b_k`` (``x = a m + b`` in the snippet's own units, so
    ``s = 1/a``, ``t = -b/a``) and the consensus ``m`` per frame and reduced pixel. A pass:
    residuals ``e = x - a m - b`` against the consensus kept from the previous pass give the
    robust weights; the consensus is re-solved for those weights (weighted mean, exact) and a
    Gauss-Newton step in ``(a, b)`` is taken with the consensus eliminated (Schur complement,
    sparse). Phase A (least squares, then Huber) re-estimates every snippet's noise level after
    each pass; phase B (Cauchy) keeps them fixed, so it iterates on one objective.
    """

    def __init__(self, reduced, offset, layout: Layout, progress, keep=None):
        self.maps = flat_maps(reduced)
        self.keep = keep  # [N,P] weight of every reduced pixel (1 - holdout) or None
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
        ds, dt = gauge_step(stats, np.ones(k))
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
            da, db = gauge_step(stats, a, gauge_weights=1.0 / np.maximum(a, np.median(a)))
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
        system = NormalEquations(k)
        level = 0.0
        sums = np.zeros(k)
        for chunk in self.layout.chunks:
            valid, shared = chunk["valid"], chunk["shared"]
            x = self.layout.gather(chunk, self.maps, self.offset)  # [F,c,P], pads 0
            m = x.sum(1) / valid.sum(1)[:, None]  # plain mean
            w = shared[..., None].expand_as(x)
            if self.keep is None:
                level += float(x.abs().sum()) / max(float(valid.sum()) * x.shape[-1], 1.0)
                occ_mean = x.mean(-1)
            else:  # held-out values must not set the scales the solver measures with
                keep = self.keep[chunk["f0"] : chunk["f1"]]  # [F,P]
                count = (valid.sum(1) * keep.sum(-1)).sum()
                level += float((x.abs() * keep[:, None]).sum()) / max(float(count), 1e-30)
                occ_mean = (x * keep[:, None]).sum(-1) / keep.sum(-1).clamp_min(1e-30)[:, None]
                w = w * keep[:, None]
            occ_mean = occ_mean.double().numpy().ravel()  # [F c], pads 0
            sums += np.bincount(chunk["gid_np"].ravel(), occ_mean, minlength=k)
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
        system = NormalEquations(k)
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
            keep = None if self.keep is None else self.keep[f0:f1]  # [F,P]
            if kind == "huber":
                sample = e[:, :, :: self.stride].abs()
                sample = torch.where(shared[..., None] > 0, sample, torch.nan)
                if keep is not None:  # held-out pixels say nothing about a snippet's noise
                    sample = torch.where(keep[:, None, :: self.stride] >= 0.5, sample, torch.nan)
                self.samples[chunk["occ"]] = sample.reshape(-1, sample.shape[-1])[chunk["occ_at"]]
            # W: robust weight / noise^2, 0 on pads and on frames seen once
            loss_sum += robust_weights(
                kind, e, noise_t[gid], shared, out=w, scratch=(t1, t2), keep=keep
            )
            if keep is None:
                loss_count += float(shared.sum()) * x.shape[-1]
            else:
                loss_count += float((shared.sum(1) * keep.sum(-1)).sum())
            # 2. the consensus that is optimal for these weights and the current (a, b): the
            # kept one moved by sum_c W a e / sum_c W a^2 (a weighted mean of x - b over a)
            torch.mul(w, e, out=we)
            total = torch.bmm(a_f.square()[:, None], w).squeeze(1)  # [F,P] sum_c W a^2
            pull = torch.bmm(a_f[:, None], we).squeeze(1)  # [F,P] sum_c W a e
            delta = torch.where(total > 0, pull / total.clamp_min(1e-30), 0.0)
            m_new = m + delta
            self.consensus[f0:f1] = m_new  # (after m, a view of it, was used)
            if keep is None:
                magnitude += float(m_new.abs().mean(-1).sum())
            else:
                level = (m_new.abs() * keep).sum(-1) / keep.sum(-1).clamp_min(1e-30)
                magnitude += float(level.sum())
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
                if keep is None:
                    msq = y_res.square_().mean(-1)
                else:  # over the pixels that count (NaN where none does)
                    msq = y_res.square_().mul_(keep[:, None]).sum(-1) / keep.sum(-1)[:, None]
                msq = torch.where(shared > 0, msq, torch.nan)
                self.mean_square[chunk["occ"]] = msq.reshape(-1)[chunk["occ_at"]]
        return system.result(
            loss=loss_sum / max(loss_count, 1.0), magnitude=magnitude / self.layout.n_frames
        )

    def _buffers(self, shape: tuple[int, int, int]) -> list[torch.Tensor]:
        """Six reusable ``shape`` buffers (there are at most two chunk shapes)."""
        if shape not in self.workspace:
            self.workspace[shape] = [torch.empty(shape) for _ in range(6)]
        return self.workspace[shape]
