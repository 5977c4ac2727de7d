"""Anchored depth: anchors files, the sampling convention, the robust fit and its refusals."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rollingdepth_core.anchors import (
    AnchorFileError,
    AnchorFitError,
    Anchors,
    AnchorSampler,
    fit_anchors,
    load_anchors,
    sample_frame,
    sample_video,
    write_fits_json,
)
from rollingdepth_core.errors import ConfigError, RollingDepthError

FIT_RTOL = 1e-9  # exact data: float64 least squares
PLATE = (36, 64)  # (H, W) of the plate the anchors refer to
PROC = (18, 32)  # (h, w) of the depth maps


def make_anchors(frame, x, y, depth, weight=None, units="m") -> Anchors:
    k = len(frame)
    return Anchors(
        frame=np.asarray(frame, np.int64),
        x=np.asarray(x, float),
        y=np.asarray(y, float),
        depth=np.asarray(depth, float),
        weight=np.ones(k) if weight is None else np.asarray(weight, float),
        track=("",) * k,
        units=units,
    )


def relative_video(n_frames=12, seed=0) -> np.ndarray:
    """A smooth relative inverse depth ``[N,h,w]`` in [-1, 1]: floor, a box, a drift."""
    h, w = PROC
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    frames = []
    for f in range(n_frames):
        inv = -0.8 + 1.4 * yy**1.3 + 0.1 * np.sin(6 * xx + 0.3 * f)
        box = (np.abs(xx - 0.3 - 0.03 * f) < 0.12) & (np.abs(yy - 0.4) < 0.2)
        frames.append(np.where(box, 0.7, inv))
    return np.stack(frames).astype(np.float32)


def anchors_on(video, a, b, frame_numbers, per_frame=12, seed=0, a_of=None, b_of=None):
    """Anchors at random plate points whose depth follows ``1/Z = a d + b`` exactly, where d
    is the map read with the sampling convention (so exact recovery is expected)."""
    rng = np.random.default_rng(seed)
    big_h, big_w = PLATE
    frames, xs, ys, zs = [], [], [], []
    for k, number in enumerate(frame_numbers):
        x = rng.uniform(0, big_w, per_frame)
        y = rng.uniform(0, big_h, per_frame)
        d = sample_frame(video[k], x, y, PLATE)
        ak = a if a_of is None else a_of(k)
        bk = b if b_of is None else b_of(k)
        frames += [number] * per_frame
        xs.append(x)
        ys.append(y)
        zs.append(1.0 / (ak * d + bk))
    return make_anchors(frames, np.concatenate(xs), np.concatenate(ys), np.concatenate(zs))


# ------------------------------------------------------------------------------ loading
def test_load_csv_and_json_agree(tmp_path):
    csv_path = tmp_path / "anchors.csv"
    csv_path.write_text(
        "# from a survey\n# units: m\nframe,x,y,depth,weight\n"
        "1001,10.5,20.25,3.5,1\n1001,100,40,12.0,0.5\n1002,5,5,7.25,2\n"
    )
    json_path = tmp_path / "anchors.json"
    json_path.write_text(
        json.dumps(
            {
                "units": "m",
                "anchors": [
                    {"frame": 1001, "x": 10.5, "y": 20.25, "depth": 3.5},
                    {"frame": 1001, "x": 100, "y": 40, "depth": 12.0, "weight": 0.5},
                    {"frame": 1002, "x": 5, "y": 5, "depth": 7.25, "weight": 2},
                ],
            }
        )
    )
    a, b = load_anchors(csv_path), load_anchors(json_path)
    for got in (a, b):
        assert len(got) == 3
        assert got.units == "m"
        np.testing.assert_array_equal(got.frame, [1001, 1001, 1002])
        np.testing.assert_array_equal(got.x, [10.5, 100, 5])
        np.testing.assert_array_equal(got.y, [20.25, 40, 5])
        np.testing.assert_array_equal(got.depth, [3.5, 12.0, 7.25])
        np.testing.assert_array_equal(got.weight, [1, 0.5, 2])
    # a plain list, columns in any order, no weight column: weights are 1
    (tmp_path / "list.json").write_text('[{"depth": 2, "y": 1, "x": 1, "frame": 3}]')
    plain = load_anchors(tmp_path / "list.json")
    assert plain.units == "scene units" and plain.weight.tolist() == [1.0]


@pytest.mark.parametrize(
    "text, message",
    [
        ("frame,x,depth\n1,2,3\n", "missing y"),
        ("frame,x,y,depth,colour\n1,2,3,4,red\n", "unknown colour"),
        ("frame,x,y,depth\n1,2,abc,4\n", "line 2: `y` is 'abc', not a number"),
        ("frame,x,y,depth\n1,2,3,0\n", "`depth` is 0; it must be > 0"),
        ("frame,x,y,depth\n1,2,3,-2\n", "`depth` is -2; it must be > 0"),
        ("frame,x,y,depth\n1,2,3,inf\n", "`depth` is 'inf'; it must be finite"),
        ("frame,x,y,depth\n1,2,3,nan\n", "`depth` is 'nan'; it must be finite"),
        ("frame,x,y,depth\n1.5,2,3,4\n", "whole frame number"),
        ("frame,x,y,depth\n1,2,3\n", "3 values for 4 columns"),
        ("frame,x,y,depth\n", "no anchors"),
        ("frame,x,y,depth,weight\n1,2,3,4,0\n", "`weight` is 0; it must be > 0"),
        # a number, then checked as a frame number (it once overflowed with a traceback)
        (
            "frame,x,y,depth\n99999999999999999999999,2,3,4\n",
            "line 2: `frame` is '99999999999999999999999'; frame numbers go up to 1,000,000,000",
        ),
        ("frame,x,y,depth\n-1e12,2,3,4\n", "frame numbers go up to"),
    ],
)
def test_load_errors_are_one_clear_line(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(AnchorFileError, match=message.replace("(", r"\(")) as info:
        load_anchors(path)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, RollingDepthError)


def test_load_json_errors(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[{"frame": 1, "x": 2, "y": 3}]')
    with pytest.raises(AnchorFileError, match="anchor 0: missing depth"):
        load_anchors(path)
    path.write_text("{not json")
    with pytest.raises(AnchorFileError, match="not valid JSON"):
        load_anchors(path)
    with pytest.raises(AnchorFileError, match="cannot read anchors file"):
        load_anchors(tmp_path / "missing.csv")
    path.write_text('[{"frame": 1%s, "x": 2, "y": 3, "depth": 4}]' % ("0" * 400))
    with pytest.raises(AnchorFileError, match="anchor 0: `frame` is 1000.*, not a number"):
        load_anchors(path)


def test_a_file_over_the_cap_is_refused_in_one_line(tmp_path, monkeypatch):
    """The anchor count is capped (memory stays bounded whatever the file holds), and a JSON
    file, parsed whole, by its size; both refused while reading, before any model."""
    from rollingdepth_core import anchors as module

    monkeypatch.setattr(module, "MAX_ANCHORS", 3)
    path = tmp_path / "many.csv"
    path.write_text("frame,x,y,depth\n" + "1,2,3,4\n" * 3)
    assert len(load_anchors(path)) == 3
    path.write_text("frame,x,y,depth\n" + "1,2,3,4\n" * 4)
    with pytest.raises(AnchorFileError, match=r"many.csv: more than 3 anchors; thin the points"):
        load_anchors(path)
    monkeypatch.setattr(module, "MAX_JSON_BYTES", 100)
    big = tmp_path / "big.json"
    big.write_text(json.dumps([{"frame": 1, "x": 2, "y": 3, "depth": 4}] * 5))
    with pytest.raises(AnchorFileError, match="write large point sets as CSV") as info:
        load_anchors(big)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------ sampling
def test_pixel_centre_returns_that_pixel():
    rng = np.random.default_rng(1)
    m = rng.standard_normal(PROC).astype(np.float32)
    h, w = PROC
    j, i = np.mgrid[0:h, 0:w]
    got = sample_frame(m, (i + 0.5).ravel(), (j + 0.5).ravel(), PROC)
    np.testing.assert_array_equal(got, m.ravel().astype(np.float64))


def test_subpixel_is_bilinear_between_centres():
    m = np.zeros((4, 4))
    m[1, 1], m[1, 2], m[2, 1], m[2, 2] = 1.0, 3.0, 5.0, 9.0
    # a quarter of the way from centre (1,1) to (2,1) in x, half way down in y
    got = sample_frame(m, [1.5 + 0.25], [1.5 + 0.5], (4, 4))
    top = 1.0 * 0.75 + 3.0 * 0.25
    bottom = 5.0 * 0.75 + 9.0 * 0.25
    assert got[0] == pytest.approx(0.5 * top + 0.5 * bottom)
    # within half a pixel of the border: the edge value (clamped, as the resize does)
    assert sample_frame(m, [0.1], [1.5], (4, 4))[0] == m[1, 0]


def test_plate_to_processing_matches_align_corners_false_upsampling():
    """Reading a plate point equals upsampling the map to the plate size and reading there."""
    rng = np.random.default_rng(2)
    m = rng.standard_normal(PROC).astype(np.float32)
    up = F.interpolate(
        torch.from_numpy(m)[None, None], size=PLATE, mode="bilinear", align_corners=False
    )
    up = up[0, 0].double().numpy()
    big_h, big_w = PLATE
    j, i = np.mgrid[0:big_h, 0:big_w]
    got = sample_frame(m, (i + 0.5).ravel(), (j + 0.5).ravel(), PLATE)
    np.testing.assert_allclose(got, up.ravel(), rtol=0, atol=1e-5)
    # and a non-integer ratio (plate 37x61 from 18x32)
    up = F.interpolate(
        torch.from_numpy(m)[None, None], size=(37, 61), mode="bilinear", align_corners=False
    )
    j, i = np.mgrid[0:37, 0:61]
    got = sample_frame(m, (i + 0.5).ravel(), (j + 0.5).ravel(), (37, 61))
    np.testing.assert_allclose(got, up[0, 0].double().numpy().ravel(), rtol=0, atol=1e-5)


def test_outside_and_unprocessed_anchors_are_reported_not_dropped(tmp_path):
    video = relative_video(4)
    numbers = [1001, 1002, 1003, 1004]
    good = anchors_on(video, 0.2, 0.3, numbers, per_frame=6)
    big_h, big_w = PLATE
    extra = make_anchors(
        [1001, 1002, 1003, 999, 1010],
        [big_w + 0.0, -0.5, 10, 10, 10],  # x == W is past the last pixel
        [5, 5, big_h + 2.0, 5, 5],
        [4, 4, 4, 4, 4],
    )
    anchors = make_anchors(
        np.concatenate([good.frame, extra.frame]),
        np.concatenate([good.x, extra.x]),
        np.concatenate([good.y, extra.y]),
        np.concatenate([good.depth, extra.depth]),
    )
    samples = sample_video(video, anchors, numbers, PLATE)
    k = len(good)
    assert samples.outside.tolist() == [k, k + 1, k + 2]
    assert samples.unprocessed.tolist() == [k + 3, k + 4]
    assert sorted(samples.index.tolist()) == list(range(k))
    fit = fit_anchors(samples)
    assert (fit.n_outside, fit.n_unprocessed, fit.n_used) == (3, 2, k)
    sidecar = json.loads(fit.to_json())
    reasons = [(s["row"] - k, s["reason"]) for s in sidecar["skipped"]]
    assert reasons == [(0, "outside"), (1, "outside"), (2, "outside")] + [
        (3, "unprocessed"),
        (4, "unprocessed"),
    ]
    assert fit.header()["anchors.skipped"] == 5
    # the streamed sidecar holds what the fit holds, one shot or several
    assert sidecar == fit.to_dict()
    assert len(sidecar["anchors"]) == k and sidecar["anchors"][0].keys() >= {"predicted", "used"}
    on_frame = fit.frame_records(1002)
    assert on_frame and all(r["frame"] == 1002 for r in on_frame)
    assert on_frame == [r for r in sidecar["anchors"] if r["frame"] == 1002]
    write_fits_json(tmp_path / "shots.json", [fit, fit])
    assert json.loads((tmp_path / "shots.json").read_text()) == {"shots": [sidecar, sidecar]}


def test_sampler_takes_frames_in_any_order_and_records_extremes():
    video = relative_video(5)
    numbers = list(range(5))
    anchors = anchors_on(video, 0.3, 0.4, numbers, per_frame=3)
    sampler = AnchorSampler(anchors, numbers, PLATE)
    for k in (4, 0, 2, 1, 3):
        sampler.add(k, video[k])
    streamed = sampler.samples()
    whole = sample_video(video, anchors, numbers, PLATE)
    order = np.argsort(streamed.index)
    np.testing.assert_array_equal(streamed.d[order], whole.d[np.argsort(whole.index)])
    assert streamed.d_range == (float(video.min()), float(video.max()))
    missing = AnchorSampler(anchors, numbers, PLATE)
    missing.add(0, video[0])
    with pytest.raises(ConfigError, match="never sampled"):
        missing.samples()


# ------------------------------------------------------------------------------ the fit
def test_exact_recovery_of_a_and_b():
    video = relative_video(10)
    numbers = list(range(1001, 1011))
    anchors = anchors_on(video, 0.21, 0.35, numbers, per_frame=5)
    fit = fit_anchors(sample_video(video, anchors, numbers, PLATE))
    assert fit.a[0] == pytest.approx(0.21, rel=FIT_RTOL)
    assert fit.b[0] == pytest.approx(0.35, rel=FIT_RTOL)
    assert fit.n_used == len(anchors) and fit.n_rejected == 0
    assert fit.residual_p90 < 1e-9
    np.testing.assert_allclose(fit.depth(3, video[3]), 1.0 / (0.21 * video[3] + 0.35), rtol=1e-6)
    header = fit.header()
    assert header["anchors.units"] == "m" and header["anchors.mode"] == "global"
    assert header["anchors.a"] == pytest.approx(0.21)


@pytest.mark.parametrize("scored", [None, 40])
@pytest.mark.parametrize("fraction", [0.2, 0.3])
def test_robust_to_outliers(fraction, scored, monkeypatch):
    """``scored``: the robust start's median taken over that many of the 120 anchors (what
    a file of over 20,000 anchors gets: bounded memory), with the same outcome."""
    if scored is not None:
        from rollingdepth_core import anchors as module

        monkeypatch.setattr(module, "LMEDS_SCORE_ANCHORS", scored)
    video = relative_video(12)
    numbers = list(range(12))
    anchors = anchors_on(video, 0.25, 0.4, numbers, per_frame=10, seed=3)
    rng = np.random.default_rng(4)
    z = anchors.depth.copy()
    z *= 1 + 0.01 * rng.standard_normal(z.shape)  # 1 % measurement noise on every anchor
    bad = rng.choice(z.size, int(fraction * z.size), replace=False)
    z[bad] *= rng.choice([0.5, 1.7, 2.5, 3.0], bad.size)  # wrong tracks, moving objects
    noisy = make_anchors(anchors.frame, anchors.x, anchors.y, z)
    fit = fit_anchors(sample_video(video, noisy, numbers, PLATE))
    assert fit.a[0] == pytest.approx(0.25, rel=0.02)
    assert fit.b[0] == pytest.approx(0.4, rel=0.02)
    used = np.array([r["used"] for r in fit.records])
    rows = np.array([r["row"] for r in fit.records])
    assert not used[np.isin(rows, bad)].any()  # every corrupted anchor rejected
    assert used[~np.isin(rows, bad)].mean() > 0.95
    assert fit.residual_median < 0.015
    # plain least squares is pulled far off by the same anchors
    s = sample_video(video, noisy, numbers, PLATE)
    zs = noisy.depth[s.index]
    (a_ls, _), *_ = np.linalg.lstsq(np.stack([zs * s.d, zs], 1), np.ones(zs.size), rcond=None)
    assert abs(a_ls / 0.25 - 1) > 0.1


def test_smooth_mode_follows_slow_drift():
    n = 60
    video = relative_video(n)
    numbers = list(range(n))

    def a_of(k):
        return 0.25 * (1 + 0.3 * np.sin(2 * np.pi * k / 120))  # a drifts 30 % over the clip

    def b_of(k):
        return 0.4 + 0.05 * k / n

    anchors = anchors_on(video, None, None, numbers, per_frame=8, a_of=a_of, b_of=b_of)
    samples = sample_video(video, anchors, numbers, PLATE)
    smooth = fit_anchors(samples, "smooth", smooth_frames=24)
    glob = fit_anchors(samples, "global")

    def worst_depth_error(fit):
        """Largest relative depth error over every pixel of every frame."""
        return max(
            float(np.max(np.abs(fit.depth(k, video[k]) * (a_of(k) * video[k] + b_of(k)) - 1)))
            for k in range(n)
        )

    assert worst_depth_error(smooth) < 0.01
    assert worst_depth_error(glob) > 0.05
    assert smooth.residual_p90 < 0.005
    assert glob.residual_p90 > 10 * smooth.residual_p90
    header = smooth.header(10)
    assert header["anchors.mode"] == "smooth" and header["anchors.a"] == pytest.approx(smooth.a[10])
    assert "anchors.a_range" in header
    # frames with no anchor at all keep the trend of their neighbours
    kept = anchors.frame % 10 < 5
    holes = make_anchors(anchors.frame[kept], anchors.x[kept], anchors.y[kept], anchors.depth[kept])
    gappy = fit_anchors(sample_video(video, holes, numbers, PLATE), "smooth", smooth_frames=24)
    assert worst_depth_error(gappy) < 0.02


def test_refuses_too_few_anchors():
    video = relative_video(3)
    anchors = make_anchors([0, 7, 5], [10, 20, 10], [10, 20, 10], [3, 4, 5])
    with pytest.raises(AnchorFitError, match=r"1 usable anchor.*2 on frames not processed"):
        fit_anchors(sample_video(video[:1], anchors, [0], PLATE))
    with pytest.raises(AnchorFitError, match="0 usable anchor"):
        fit_anchors(sample_video(video, make_anchors([9], [1], [1], [2]), [0, 1, 2], PLATE))


def test_refuses_anchors_at_one_depth():
    video = relative_video(3)
    anchors = make_anchors([0, 1, 2, 2], [5, 30, 50, 10], [5, 30, 20, 33], [4.0, 4.0, 4.01, 4.0])
    with pytest.raises(AnchorFitError, match="all at one depth"):
        fit_anchors(sample_video(video, anchors, [0, 1, 2], PLATE))


def test_refuses_anchors_on_one_value_of_d():
    video = np.full((2, *PROC), 0.5, np.float32)
    video[:, 0, 0] = -1.0  # the clip's range is wide, the anchors sit on the flat part
    anchors = make_anchors([0, 0, 1], [30, 40, 50], [20, 25, 30], [2.0, 3.0, 4.0])
    with pytest.raises(AnchorFitError, match="one value of the relative depth"):
        fit_anchors(sample_video(video, anchors, [0, 1], PLATE))


def test_refuses_reversed_depth_order():
    video = relative_video(4)
    numbers = list(range(4))
    anchors = anchors_on(video, 0.25, 0.4, numbers, per_frame=8)
    # 1/Z = 1.2 - (0.25 d + 0.4): positive everywhere, but nearer-looking points are farther
    reversed_z = make_anchors(
        anchors.frame, anchors.x, anchors.y, 1.0 / (1.2 - 1.0 / anchors.depth)
    )
    with pytest.raises(AnchorFitError, match="contradict the depth order"):
        fit_anchors(sample_video(video, reversed_z, numbers, PLATE))


def test_refuses_fit_with_infinite_depth_in_the_clip():
    video = relative_video(4)
    numbers = list(range(4))
    # 1/Z = 0.5 d + 0.2 is positive at the anchors but reaches zero at d = -0.4, inside the clip
    anchors = anchors_on(video, 0.5, 0.2, numbers, per_frame=20, seed=5)
    samples = sample_video(video, anchors, numbers, PLATE)
    keep = samples.d > -0.3
    assert video.min() < -0.4 and keep.sum() > 10
    rows = samples.index[keep]
    near = make_anchors(anchors.frame[rows], anchors.x[rows], anchors.y[rows], anchors.depth[rows])
    with pytest.raises(AnchorFitError, match="at infinity or behind the camera"):
        fit_anchors(sample_video(video, near, numbers, PLATE))
    # the same anchors are fine for a clip whose d stays above -0.3
    fit = fit_anchors(sample_video(video, near, numbers, PLATE), d_range=(-0.3, 1.0))
    assert fit.a[0] == pytest.approx(0.5, rel=FIT_RTOL)


def test_sidecar_records_every_anchor():
    video = relative_video(3)
    numbers = [7, 8, 9]
    anchors = anchors_on(video, 0.3, 0.5, numbers, per_frame=4)
    z = anchors.depth.copy()
    z[2] *= 3.0
    fit = fit_anchors(
        sample_video(video, make_anchors(anchors.frame, anchors.x, anchors.y, z), numbers, PLATE)
    )
    data = json.loads(fit.to_json())
    assert len(data["anchors"]) == len(anchors)
    bad = next(r for r in data["anchors"] if r["row"] == 2)
    assert bad["used"] is False and bad["residual"] == pytest.approx(1 / 3 - 1, rel=1e-6)
    good = next(r for r in data["anchors"] if r["row"] == 0)
    assert good["used"] and good["predicted"] == pytest.approx(anchors.depth[0], rel=1e-9)
    assert good["frame"] == 7
    assert data["used"] == 11 and data["rejected"] == 1 and data["units"] == "m"


def test_header_fields_round_trip_through_an_exr(tmp_path):
    from rollingdepth_core.exr import read_exr, write_depth_exr

    n = 30
    video = relative_video(n)
    numbers = list(range(1001, 1001 + n))
    anchors = anchors_on(
        video, None, None, numbers, per_frame=6, a_of=lambda k: 0.25 + 0.001 * k, b_of=lambda k: 0.4
    )
    fit = fit_anchors(sample_video(video, anchors, numbers, PLATE), "smooth", smooth_frames=12)
    path = tmp_path / "depth.1005.exr"
    write_depth_exr(path, fit.depth(4, video[4]), metadata=fit.header(4))
    channels, header = read_exr(path)
    assert header["rollingdepth/anchors.units"] == "m"
    assert header["rollingdepth/anchors.mode"] == "smooth"
    assert header["rollingdepth/anchors.used"] == len(anchors)
    assert header["rollingdepth/anchors.a"] == pytest.approx(fit.a[4], rel=1e-6)
    low, high = (float(v) for v in header["rollingdepth/anchors.a_range"].split())
    assert low == pytest.approx(fit.a.min(), rel=1e-6) and high == pytest.approx(
        fit.a.max(), rel=1e-6
    )
    z = 1.0 / ((0.25 + 0.004) * video[4].astype(np.float64) + 0.4)
    np.testing.assert_allclose(channels["Z"], z, rtol=1e-5)


def test_argument_errors_name_the_argument():
    video = relative_video(2)
    anchors = anchors_on(video, 0.3, 0.4, [0, 1], per_frame=4)
    samples = sample_video(video, anchors, [0, 1], PLATE)
    with pytest.raises(ConfigError, match="`mode` must be one of"):
        fit_anchors(samples, "per-frame")
    with pytest.raises(ConfigError, match="`smooth_frames`"):
        fit_anchors(samples, "smooth", smooth_frames=0)
    with pytest.raises(ConfigError, match=r"`depth_hw` must be \[h,w\]"):
        sample_frame(video, [1.0], [1.0], PLATE)
    with pytest.raises(ConfigError, match="`frame_index` 2 outside 0..1"):
        AnchorSampler(anchors, [0, 1], PLATE).add(2, video[0])
