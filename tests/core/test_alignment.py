"""Co-alignment (METHOD.md step 9): the robust solver, the reference Adam solver, the merge."""

import json

import numpy as np
import pytest
import torch

from rollingdepth_core.alignment import (
    AlignmentResult,
    coalign,
    merge_snippets,
    merge_solution,
    normalize_depth,
    reduce_maps,
    solve_reduced,
)
from rollingdepth_core.errors import ConfigError

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


@pytest.fixture(scope="module")
def clean():
    gt = scene(24, 12, 16)
    snippets, indices, truth = cut(gt)
    return gt, snippets, indices, truth


@pytest.fixture(scope="module")
def noisy():
    gt = scene(24, 12, 16)
    snippets, indices, truth = cut(gt, noise=0.01, seed=1)
    return gt, snippets, indices, truth


# ------------------------------------------------------------------------------ robust
def test_robust_recovers_scales_and_shifts_exactly_up_to_the_gauge(clean):
    gt, snippets, indices, truth = clean
    result = coalign(snippets, indices, border=0, subsample=1)
    assert result.method == "robust" and result.converged and result.iterations >= 2
    # s (x - offset) + t = alpha (s_true x + t_true) + beta for one global alpha, beta
    est = np.concatenate(result.scales)
    true_s = np.concatenate([s for s, _ in truth])
    alpha = np.median(est / true_s)
    np.testing.assert_allclose(est, alpha * true_s, rtol=EXACT_RTOL)
    const = np.concatenate(result.shifts) - est * result.offset
    beta = np.median(const - alpha * np.concatenate([t for _, t in truth]))
    np.testing.assert_allclose(
        const, alpha * np.concatenate([t for _, t in truth]) + beta, atol=EXACT_RTOL * 4
    )
    a, b, worst = affine_fit(result.depth, gt)
    assert worst < EXACT_RTOL * np.abs(gt).max()
    # the gauge: median scale 1, median shift 0
    assert np.median(est) == pytest.approx(1.0, abs=1e-6)
    assert np.median(np.concatenate(result.shifts)) == pytest.approx(0.0, abs=1e-6)


def test_robust_with_the_pipelines_reduction_and_float16(clean):
    gt = scene(16, 44, 54)  # reduced: 2-pixel border off, every 10th pixel -> 4 x 5
    snippets, indices, _ = cut(gt, dilations=(1, 4))
    result = coalign([s.astype(np.float16) for s in snippets], indices)
    assert result.depth.shape == gt.shape and result.depth.dtype == np.float32
    _, _, worst = affine_fit(result.depth, gt)
    assert worst < 2e-2 * np.abs(gt).max()  # float16 snippets: about 3 significant digits


@pytest.mark.parametrize("data, tol", [("clean", 1e-3), ("noisy", 1e-2)])
@pytest.mark.parametrize("corrupt", ["flipped", "patch"])
def test_a_corrupted_snippet_does_not_move_the_others(data, tol, corrupt, request):
    gt, snippets, indices, _ = request.getfixturevalue(data)
    base = coalign(snippets, indices, border=0, subsample=1)
    bad = [s.copy() for s in snippets]
    if corrupt == "flipped":
        bad[0][10] = bad[0][10][:, ::-1, ::-1]  # an entirely wrong snippet
    else:
        bad[0][10][:, 2:7, 3:9] += 3.0  # an outlier patch
    result = coalign(bad, indices, border=0, subsample=1)
    keep = np.ones(sum(len(k) for k in indices), bool)
    keep[10] = False
    # the others, up to the gauge x -> alpha x + beta
    s0, s1 = np.concatenate(base.scales), np.concatenate(result.scales)
    c0 = np.concatenate(base.shifts) - s0 * base.offset
    c1 = np.concatenate(result.shifts) - s1 * result.offset
    alpha = np.median(s1[keep] / s0[keep])
    beta = np.median(c1[keep] - alpha * c0[keep])
    np.testing.assert_allclose(s1[keep], alpha * s0[keep], rtol=tol)
    np.testing.assert_allclose(c1[keep], alpha * c0[keep] + beta, atol=tol * np.abs(c0).max())
    # and the merged video hardly notices (the bad snippet frames get tiny weights)
    assert result.merge_weights[0][10].max() < 0.05 * np.median(result.merge_weights[0])
    np.testing.assert_allclose(
        result.depth, alpha * base.depth + beta, atol=3 * tol * np.abs(base.depth).max()
    )


def test_confidence_is_high_where_snippets_agree_and_low_where_one_disagrees(noisy):
    gt, snippets, indices, _ = noisy
    bad = [s.copy() for s in snippets]
    bad[0][10][:, 2:7, 3:9] += 0.5  # snippet 10 covers frames 10, 11, 12
    result = coalign(bad, indices, border=0, subsample=1, confidence=True)
    conf = result.confidence
    assert conf.shape == gt.shape and conf.dtype == np.float32
    assert conf.min() >= 0.0 and conf.max() <= 1.0
    patch = np.zeros(gt.shape, bool)
    patch[10:13, 2:7, 3:9] = True
    assert np.median(conf[~patch]) > 0.8
    assert conf[patch].max() < 0.3
    assert coalign(snippets, indices, border=0, subsample=1).confidence is None


def test_confidence_of_frames_seen_once_is_sensible():
    gt = scene(12, 10, 10)
    snippets, indices, _ = cut(gt, dilations=(1,), noise=0.01)  # frame 0 is seen once
    result = coalign(snippets, indices, border=0, subsample=1, confidence=True)
    assert np.all(np.isfinite(result.confidence))
    assert 0.5 < result.confidence[0].mean() < 1.0


def test_robust_is_deterministic_and_leaves_its_inputs_alone(noisy):
    _, snippets, indices, _ = noisy
    before = [s.copy() for s in snippets]
    runs = [coalign(snippets, indices, border=0, subsample=1, confidence=True) for _ in range(2)]
    for s, b in zip(snippets, before, strict=True):
        np.testing.assert_array_equal(s, b)
    a, b = runs
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(a.confidence, b.confidence)
    for x, y in zip(a.scales + a.shifts, b.scales + b.shifts, strict=True):
        np.testing.assert_array_equal(x, y)
    assert a.iterations == b.iterations


def test_numpy_and_torch_inputs_give_the_same_result(noisy):
    _, snippets, indices, _ = noisy
    ref = coalign(snippets, indices, border=0, subsample=1)
    tensors = coalign(
        [torch.from_numpy(s) for s in snippets],
        [torch.from_numpy(k) for k in indices],
        border=0,
        subsample=1,
    )
    np.testing.assert_array_equal(ref.depth, tensors.depth)
    half_np = coalign([s.astype(np.float16) for s in snippets], indices, border=0, subsample=1)
    half_t = coalign([torch.from_numpy(s).half() for s in snippets], indices, border=0, subsample=1)
    np.testing.assert_array_equal(half_np.depth, half_t.depth)


def test_duplicate_dilation_entries_are_accepted_and_both_count():
    gt = scene(30, 8, 10)
    snippets, indices, _ = cut(gt, dilations=(1, 9), noise=0.01)
    snippets, indices = (
        [snippets[0], snippets[1], snippets[1]],
        [indices[0], indices[1], indices[1]],
    )
    for method, options in (("robust", {}), ("adam", {"iterations": 5})):
        result = coalign(snippets, indices, method, border=0, subsample=1, **options)
        assert [len(s) for s in result.scales] == [28, 12, 12]
        weights = result.merge_weights
        expected = naive_merge(
            snippets,
            indices,
            result.scales,
            result.shifts,
            result.offset,
            30,
            None if weights is None else weights,
        )
        np.testing.assert_allclose(result.depth, expected, rtol=1e-5, atol=1e-5)


def test_a_single_snippet_is_left_as_it_is():
    x = scene(3, 6, 7)[None]  # one snippet covering frames 0, 1, 2: nothing to align
    result = coalign([x], [np.arange(3)[None]], border=0, subsample=1, confidence=True)
    assert result.iterations == 0 and result.converged
    np.testing.assert_array_equal(result.scales[0], [1.0])
    np.testing.assert_allclose(result.depth, x[0] - x.min(), atol=1e-6)
    assert np.all(np.isfinite(result.confidence))


def test_progress_is_reported_and_can_cancel(clean):
    _, snippets, indices, _ = clean
    calls = []
    coalign(snippets, indices, border=0, subsample=1, progress=lambda d, t: calls.append((d, t)))
    assert calls and all(0 < d <= t for d, t in calls)

    class Stop(Exception):
        pass

    def cancel(done, total):
        raise Stop

    with pytest.raises(Stop):
        coalign(snippets, indices, border=0, subsample=1, progress=cancel)
    with pytest.raises(Stop):
        coalign(snippets, indices, "adam", border=0, subsample=1, progress=cancel)


# ------------------------------------------------------------------------------ adam
def literal_reference(snippets, indices, iterations, border=0, subsample=1):
    """METHOD.md step 9 written out plainly: dense arrays, autograd, plain-mean merge."""
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


# ------------------------------------------------------------------------------ merge & co
def test_merge_snippets_matches_a_naive_per_frame_mean(noisy):
    _, snippets, indices, _ = noisy
    rng = np.random.default_rng(3)
    scales = [rng.uniform(0.5, 2, len(k)) for k in indices]
    shifts = [rng.uniform(-1, 1, len(k)) for k in indices]
    offset = min(float(s.min()) for s in snippets)
    merged = merge_snippets(snippets, indices, scales, shifts, 24)
    expected = naive_merge(snippets, indices, scales, shifts, offset, 24)
    np.testing.assert_allclose(merged, expected, rtol=1e-5, atol=1e-5)
    raw = merge_snippets(snippets, indices, scales, shifts, 24, offset=0.0)
    np.testing.assert_allclose(
        raw, naive_merge(snippets, indices, scales, shifts, 0.0, 24), rtol=1e-5, atol=1e-5
    )
    weights = [rng.uniform(0.1, 1, len(k)) for k in indices]
    weighted = merge_snippets(snippets, indices, scales, shifts, 24, weights=weights)
    np.testing.assert_allclose(
        weighted,
        naive_merge(snippets, indices, scales, shifts, offset, 24, weights),
        rtol=1e-5,
        atol=1e-5,
    )
    per_frame = [rng.uniform(0.1, 1, k.shape) for k in indices]  # one weight per snippet frame
    np.testing.assert_allclose(
        merge_snippets(snippets, indices, scales, shifts, 24, weights=per_frame),
        naive_merge(snippets, indices, scales, shifts, offset, 24, per_frame),
        rtol=1e-5,
        atol=1e-5,
    )
    # a result's own merge reproduces its depth
    result = coalign(snippets, indices, border=0, subsample=1)
    again = merge_snippets(
        snippets, indices, result.scales, result.shifts, 24, weights=result.merge_weights
    )
    np.testing.assert_allclose(again, result.depth, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", ["robust", "adam"])
def test_solve_once_merge_twice_is_coalign(noisy, method):
    _, snippets, indices, _ = noisy
    options = {"iterations": 50} if method == "adam" else {}
    expected = coalign(snippets, indices, method, confidence=True, **options)
    offset = min(float(s.min()) for s in snippets)
    solution = solve_reduced([reduce_maps(s) for s in snippets], indices, offset, method, **options)
    assert solution.depth is None
    plain = merge_solution(snippets, indices, solution)
    both = merge_solution(snippets, indices, solution, confidence=True)
    assert plain.confidence is None and solution.depth is None  # a copy, not the solve
    np.testing.assert_array_equal(plain.depth, expected.depth)
    np.testing.assert_array_equal(both.depth, expected.depth)
    np.testing.assert_array_equal(both.confidence, expected.confidence)
    with pytest.raises(ConfigError, match="dilation entries"):
        merge_solution(snippets[:1], indices[:1], solution)
    with pytest.raises(ConfigError, match="snippets for entry 0"):
        merge_solution([snippets[0][1:]] + snippets[1:], [indices[0][1:]] + indices[1:], solution)


def test_normalize_depth_in_place_gives_the_same_values():
    depth = np.random.default_rng(1).uniform(-2, 5, (3, 4, 5)).astype(np.float32)
    expected = normalize_depth(depth)
    work = depth.copy()
    out = normalize_depth(work, inplace=True)
    assert np.shares_memory(out, work)
    np.testing.assert_array_equal(out, expected)
    frozen = depth.copy()
    frozen.flags.writeable = False
    with pytest.raises(ConfigError, match="read-only"):
        normalize_depth(frozen, inplace=True)


def test_normalize_depth_maps_the_video_to_minus_one_one():
    depth = np.random.default_rng(0).uniform(3, 7, (4, 5, 6)).astype(np.float32)
    out = normalize_depth(depth)
    assert out.dtype == np.float32
    assert out.min() == pytest.approx(-1.0) and out.max() == pytest.approx(1.0)
    np.testing.assert_allclose(
        out, (depth - depth.min()) / (depth.max() - depth.min()) * 2 - 1, atol=1e-6
    )
    np.testing.assert_array_equal(normalize_depth(np.full((2, 3, 3), 5.0)), np.zeros((2, 3, 3)))


def test_result_serialises_to_json_atomically(clean, tmp_path):
    _, snippets, indices, _ = clean
    result = coalign(snippets, indices, border=0, subsample=1)
    assert isinstance(result, AlignmentResult)
    path = tmp_path / "alignment.json"
    result.save_json(path)
    data = json.loads(path.read_text())
    assert data["method"] == "robust" and data["iterations"] == result.iterations
    assert [len(s) for s in data["scales"]] == [len(k) for k in indices]
    assert len(data["frame_residuals"]) == 24
    assert "depth" not in data and "confidence" not in data
    assert [p.name for p in tmp_path.iterdir()] == ["alignment.json"]  # no temp file left
    assert result.frame_residuals.shape == (24,) and np.all(result.frame_residuals >= 0)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s, k: (s[0], k), "lists"),
        (lambda s, k: (s, k[:1]), "one entry per dilation"),
        (lambda s, k: ([s[0][..., 0]] + s[1:], k), "n_snippets, L, H, W"),
        (lambda s, k: (s, [k[0][:, :2]] + k[1:]), "must have shape"),
        (lambda s, k: (s, [k[0] + 100] + k[1:]), "covered by no snippet"),
        (lambda s, k: ([s[0], s[1][..., :-1]], k), "same size"),
        (lambda s, k: (s, [k[0].astype(np.float32)] + k[1:]), "integers"),
        (lambda s, k: ([s[0].astype(np.int32)] + s[1:], k), "floats"),
    ],
)
def test_shape_errors_raise_config_error(clean, change, message):
    _, snippets, indices, _ = clean
    bad_snippets, bad_indices = change(list(snippets), list(indices))
    with pytest.raises(ConfigError, match=message):
        coalign(bad_snippets, bad_indices, border=0, subsample=1)


def test_bad_options_raise_config_error(clean):
    _, snippets, indices, _ = clean
    with pytest.raises(ConfigError, match="method"):
        coalign(snippets, indices, "sgd")
    with pytest.raises(ConfigError, match="unknown solver option"):
        coalign(snippets, indices, "robust", iterations=10)
    with pytest.raises(ConfigError, match="border"):
        coalign(snippets, indices, border=8)
    with pytest.raises(ConfigError, match="n_frames"):
        merge_snippets(
            snippets,
            indices,
            [np.ones(len(k)) for k in indices],
            [np.zeros(len(k)) for k in indices],
            30,
        )
    nan = [s.copy() for s in snippets]
    nan[1][0, 0, 0, 0] = np.nan
    with pytest.raises(ConfigError, match="non-finite"):
        coalign(nan, indices, border=0, subsample=1)
