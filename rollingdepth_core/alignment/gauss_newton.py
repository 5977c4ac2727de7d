"""The robust solver's linear algebra: robust weights, the sparse Gauss-Newton system with the
consensus eliminated, and its gauge-constrained step."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

# Robust loss thresholds in units of the snippet's noise level (95 % efficiency constants).
HUBER_K = 1.345
CAUCHY_C = 2.385
SCALE_FLOOR = 1e-3  # a snippet's response ``a`` stays at or above this fraction of the median
DAMPING = 1e-7  # relative Levenberg damping of the normal equations


def robust_weights(kind, e, noise, shared, out, scratch, keep=None) -> float:
    """Weights ``W = shared psi(u)/u / noise^2`` of ``u = e / noise`` into ``out`` (``e``
    ``[F,c,P]``, ``noise`` and ``shared`` ``[F,c]``); returns the sum of rho(u) over the
    ``shared`` occurrences. ``scratch``: two buffers shaped like ``e``. ``keep`` (``[F,P]``,
    1 - holdout) weights every pixel's rho and W."""
    keep = None if keep is None else keep[:, None]
    t1, t2 = scratch
    factor = (shared / noise.square())[..., None]
    if kind == "huber":
        u = torch.mul(e, noise.reciprocal()[..., None], out=t2).abs_()
        clipped = torch.clamp(u, max=HUBER_K, out=t1)  # rho = r (|u| - r / 2), r = min(|u|, k)
        rho = torch.mul(clipped, -0.5, out=out).add_(u).mul_(clipped)
        if keep is not None:
            rho.mul_(keep)
        loss = float((rho.sum(-1) * shared).sum())
        torch.reciprocal(u, out=out).mul_(HUBER_K).clamp_(max=1.0).mul_(factor)  # min(1, k/|u|)
        if keep is not None:
            out.mul_(keep)
        return loss
    # Cauchy: q = 1 + (u / c)^2, weight 1 / q, rho = c^2 / 2 log q
    q = torch.mul(e, (noise * CAUCHY_C).reciprocal()[..., None], out=t2).square_().add_(1.0)
    torch.div(factor, q, out=out)
    log_q = torch.log(q, out=t1)
    if keep is not None:
        out.mul_(keep)
        log_q.mul_(keep)
    return 0.5 * CAUCHY_C**2 * float((log_q.sum(-1) * shared).sum())


class NormalEquations:
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
        # gauge_step solves H d = -gradient; the step that reduces |e - J d|_W is H^-1 J^T W e
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


def gauge_step(
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
