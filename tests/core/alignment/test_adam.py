"""The reference Adam solver (alignment/adam.py) against docs/method.md step 9 written out plainly."""

import numpy as np
import pytest
import torch

from rollingdepth_core.alignment import (
    coalign,
    merge_snippets,
)

from .synthetic import ADAM_ATOL, affine_fit, cut, scene


def literal_reference(snippets, indices, iterations, border=0, subsample=1):
    """docs/method.md step 9 written out plainly: dense arrays, autograd, plain-mean merge."""
    n = max(int(k.max()) for k in indices) + 1
    xs = [torch.from_numpy(s) for s in snippets]
    ks = [torch.from_numpy(k) for k in indices]
    mn = min(x.min() for x in xs)
    xs = [x - mn for x in xs]
    h, w = xs[0].shape[-2:]
    red = [
        x[:, :, border : h - border : subsample, border : w - border : subsample].reshape(
            x.shape[0], x.shape[1], -1
        )
        for x in xs
    ]
    p = red[0].shape[-1]
    sc = [torch.ones(len(r), 1, 1, requires_grad=True) for r in red]
    sh = [torch.zeros(len(r), 1, 1, requires_grad=True) for r in red]
    opt = torch.optim.Adam(sc + sh, lr=1e-3, betas=(0.5, 0.9))
    history = []
    for _ in range(iterations):
        opt.zero_grad()
        rows_m, rows_i, rows_b = [], [], []
        for r, s, t, k in zip(red, sc, sh, ks, strict=True):
            a = r * s + t
            for j in range(a.shape[1]):
                rows_m.append(torch.zeros(n, p).index_put((k[:, j],), a[:, j]))
                rows_i.append(torch.zeros(n, p).index_put((k[:, j],), a[:, j].clip(1e-3) ** -1))
                rows_b.append(torch.zeros(n, p).index_put((k[:, j],), torch.ones_like(a[:, j])))
        m, mi, b = torch.stack(rows_m), torch.stack(rows_i), torch.stack(rows_b)
        tgt = (m.sum(0) / b.sum(0)).detach()
        tgti = (mi.sum(0) / b.sum(0)).detach()
        nrm = tgt.abs().mean(-1, keepdim=True)
        nrmi = tgti.abs().mean(-1, keepdim=True)
        loss = ((m - tgt) * b / nrm).abs().mean() + ((mi - tgti) * b / nrmi).abs().mean()
        for s, t in zip(sc, sh, strict=True):
            loss = loss + 0.1 * (torch.clamp(1 - s, min=0) ** 2).mean() + 10 * (t**2).mean()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    with torch.no_grad():
        merged = []
        for f in range(n):
            vals = [
                (x * s[:, :, :, None] + t[:, :, :, None])[k == f]
                for x, s, t, k in zip(xs, sc, sh, ks, strict=True)
            ]
            merged.append(torch.cat(vals).mean(0))
    scales = [s.detach().reshape(-1).numpy() for s in sc]
    shifts = [t.detach().reshape(-1).numpy() for t in sh]
    return scales, shifts, torch.stack(merged).numpy(), history


def test_adam_matches_the_literal_reference():
    gt = scene(14, 24, 30)  # with the pipeline's reduction: 2 x 3 reduced pixels
    snippets, indices, _ = cut(gt, dilations=(1, 4, 4), noise=0.01)
    scales, shifts, merged, history = literal_reference(
        snippets, indices, iterations=300, border=2, subsample=10
    )
    result = coalign(snippets, indices, "adam", iterations=300)
    for ours, ref in zip(result.scales + result.shifts, scales + shifts, strict=True):
        np.testing.assert_allclose(ours, ref, rtol=0, atol=ADAM_ATOL)
    np.testing.assert_allclose(result.depth, merged, rtol=0, atol=ADAM_ATOL * np.abs(merged).max())
    assert result.loss_history[-1] == pytest.approx(history[-1], rel=1e-5)


def test_adam_reduces_its_loss_and_roughly_recovers(noisy):
    gt, snippets, indices, _ = noisy
    result = coalign(snippets, indices, "adam", border=0, subsample=1, iterations=300)
    assert result.iterations == 300 and result.method == "adam"
    assert result.loss_history[-1] < 0.8 * result.loss_history[0]
    assert result.merge_weights is None
    # much better than no alignment at all (every snippet at s = 1, t = 0)
    raw = merge_snippets(
        snippets,
        indices,
        [np.ones(len(k)) for k in indices],
        [np.zeros(len(k)) for k in indices],
        gt.shape[0],
    )
    assert affine_fit(result.depth, gt)[2] < affine_fit(raw, gt)[2]


def test_adam_runs_its_true_default_on_a_tiny_problem():
    gt = scene(8, 5, 6)
    snippets, indices, _ = cut(gt, dilations=(1, 2), noise=0.0)
    result = coalign(snippets, indices, "adam", border=0, subsample=1)
    assert result.iterations == 2000
    assert len(result.loss_history) <= 201
    assert result.loss_history[-1] < result.loss_history[0]
