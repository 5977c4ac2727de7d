"""The full-resolution merge (alignment/merge.py): covering order, weighted mean, confidence."""

import numpy as np

from rollingdepth_core.alignment import coalign, covering_order, merge_frame, merge_snippets

from .synthetic import cut, naive_merge, scene


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


def test_covering_order_is_entry_snippet_position_order():
    gt = scene(20, 4, 4)
    _, indices, _ = cut(gt, dilations=(1, 4, 4))  # a capped duplicate entry counts again
    cover = covering_order(indices, 20)
    assert len(cover) == 20
    for f in range(20):
        expected = [
            (i, n, j)
            for i, k in enumerate(indices)
            for n in range(k.shape[0])
            for j in range(k.shape[1])
            if k[n, j] == f
        ]
        assert cover[f].dtype == np.int64 and cover[f].tolist() == [list(t) for t in expected]


def test_merge_frame_in_covering_order_is_coaligns_merge(noisy):
    _, snippets, indices, _ = noisy
    result = coalign(snippets, indices, border=0, subsample=1, confidence=True)
    for f, cover in enumerate(covering_order(indices, 24)):
        depth, conf = merge_frame(
            [snippets[i][n, j] for i, n, j in cover],
            [result.scales[i][n] for i, n, _ in cover],
            [result.shifts[i][n] for i, n, _ in cover],
            result.offset,
            [result.merge_weights[i][n] for i, n, _ in cover],
            result.frame_sigma[f],
        )
        np.testing.assert_array_equal(depth, result.depth[f])
        np.testing.assert_array_equal(conf, result.confidence[f])
