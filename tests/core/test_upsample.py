"""Depth upsampling to plate resolution: hard edges stay hard, soft edges follow the plate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rollingdepth_core import upsample_depth
from rollingdepth_core.errors import ConfigError
from rollingdepth_core.upsample import _box, _window_max, resize_map

NEAR, FAR = 0.8, 0.2


def _area(depth: np.ndarray, factor: int) -> np.ndarray:
    """What the model sees: the plate-resolution truth area-averaged to model resolution."""
    x = torch.from_numpy(depth)[None, None]
    return F.avg_pool2d(x, factor)[0, 0].numpy()


def _textured(rng, H, W, base):
    return np.asarray(base, np.float32) + rng.normal(0, 0.02, (H, W, 3)).astype(np.float32)


def _step_scene(H=64, W=128, edge=50, seed=0):
    """A hard vertical edge at a column that is not on the model's 4 px grid."""
    rng = np.random.default_rng(seed)
    right = np.zeros((H, W), bool)
    right[:, edge:] = True
    plate = np.where(
        right[..., None],
        _textured(rng, H, W, [0.8, 0.4, 0.2]),
        _textured(rng, H, W, [0.2, 0.3, 0.6]),
    )
    depth = np.where(right, NEAR, FAR).astype(np.float32)
    return np.clip(plate, 0, 1), depth


def test_hard_edge_is_reproduced_without_intermediate_values():
    plate, depth = _step_scene()
    low = _area(depth, 4)  # [16,32]; the column straddling the edge is a 50/50 mix
    assert ((low > FAR + 0.1) & (low < NEAR - 0.1)).any()
    out = upsample_depth(low, plate)
    assert out.shape == depth.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, depth, atol=1e-5)
    bilinear = resize_map(low, depth.shape)
    assert ((bilinear > FAR + 0.05) & (bilinear < NEAR - 0.05)).sum() >= 64 * 4


def test_hard_edge_with_noisy_depth_keeps_two_levels():
    rng = np.random.default_rng(3)
    plate, depth = _step_scene(H=128, W=256, edge=101)
    low = _area(depth, 4) + rng.normal(0, 0.005, (32, 64)).astype(np.float32)
    out = upsample_depth(low, plate)
    band = slice(101 - 3, 101 + 3)
    near_side = np.abs(out[:, band] - NEAR) < 0.03
    far_side = np.abs(out[:, band] - FAR) < 0.03
    assert (near_side | far_side).all(), "a value belonging to neither side was invented"
    assert near_side[:, 3:].all() and far_side[:, :3].all(), "the edge left the plate's edge"


def test_soft_edge_follows_the_plate():
    H, W, x0, width = 64, 128, 40, 16
    rng = np.random.default_rng(1)
    alpha = np.clip((np.arange(W, dtype=np.float32) - x0) / width, 0, 1)[None].repeat(H, 0)
    fg = _textured(rng, H, W, [0.8, 0.4, 0.2])
    bg = _textured(rng, H, W, [0.2, 0.3, 0.6])
    plate = np.clip(bg * (1 - alpha[..., None]) + fg * alpha[..., None], 0, 1)
    depth = (FAR + (NEAR - FAR) * alpha).astype(np.float32)  # motion blur blends depth alike
    out = upsample_depth(_area(depth, 4), plate)
    ramp = slice(x0 + 2, x0 + width - 2)
    assert np.abs(out[:, ramp] - depth[:, ramp]).mean() < 0.02
    # intermediate values across the whole ramp, rising with it: not snapped to two levels
    profile = out[:, ramp].mean(0)
    assert (np.diff(profile) > 0).all()


def test_bilinear_equals_resize_map():
    rng = np.random.default_rng(2)
    low = rng.random((18, 32)).astype(np.float32)
    plate = rng.random((72, 128, 3)).astype(np.float32)
    out = upsample_depth(low, plate, method="bilinear")
    np.testing.assert_array_equal(out, resize_map(low, (72, 128)))
    conf = rng.random((18, 32)).astype(np.float32)
    _, (conf_up,) = upsample_depth(low, plate, method="bilinear", extra=[conf])
    np.testing.assert_array_equal(conf_up, resize_map(conf, (72, 128)))


def test_smooth_depth_is_bilinear_bit_for_bit():
    """Away from depth steps there is nothing to correct: today's result, unchanged."""
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:24, 0:40].astype(np.float32)
    low = 0.3 + 0.01 * yy + 0.005 * xx  # a slanted plane
    plate = rng.random((96, 160, 3)).astype(np.float32)
    np.testing.assert_array_equal(upsample_depth(low, plate), resize_map(low, (96, 160)))


def test_confidence_follows_the_depth_side():
    plate, depth = _step_scene()
    conf = np.where(depth == NEAR, 0.9, 0.4).astype(np.float32)
    out, (conf_up,) = upsample_depth(_area(depth, 4), plate, extra=[_area(conf, 4)])
    assert conf_up.shape == depth.shape
    np.testing.assert_allclose(conf_up, conf, atol=1e-5)
    np.testing.assert_allclose(out, depth, atol=1e-5)


def _busy_scene(H=150, W=230, factor=4, seed=5):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    disk = (yy - 70) ** 2 + (xx - 110) ** 2 < 45**2
    bar = np.abs(xx - 0.4 * yy - 30) < 3
    depth = np.where(disk, NEAR, np.where(bar, 0.6, FAR + 0.1 * yy / H)).astype(np.float32)
    plate = rng.random((H, W, 3)).astype(np.float32) * 0.3 + depth[..., None] * 0.6
    h, w = H // factor, W // factor
    low = F.adaptive_avg_pool2d(torch.from_numpy(depth)[None, None], (h, w))[0, 0].numpy()
    low = low + rng.normal(0, 0.01, low.shape).astype(np.float32)
    return low, plate


def test_tiles_are_seamless():
    low, plate = _busy_scene()
    conf = np.linspace(0, 1, low.size, dtype=np.float32).reshape(low.shape)
    whole, (whole_c,) = upsample_depth(low, plate, extra=[conf], tile=10_000)
    tiled, (tiled_c,) = upsample_depth(low, plate, extra=[conf], tile=16)
    np.testing.assert_array_equal(tiled, whole)
    np.testing.assert_array_equal(tiled_c, whole_c)


def test_torch_input_stays_on_its_device_and_matches_numpy():
    low, plate = _busy_scene()
    expected = upsample_depth(low, plate)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        out = upsample_depth(torch.from_numpy(low).to(device), torch.from_numpy(plate).to(device))
        assert isinstance(out, torch.Tensor) and out.device.type == device
        assert out.dtype == torch.float32
        np.testing.assert_allclose(out.cpu().numpy(), expected, atol=1e-5)


def test_integer_plate_is_scaled_to_0_1():
    low, plate = _busy_scene()
    as_u16 = np.round(plate * 65535).astype(np.uint16)
    np.testing.assert_allclose(
        upsample_depth(low, as_u16), upsample_depth(low, as_u16 / np.float32(65535)), atol=1e-5
    )


def test_box_mean_matches_kornia():
    kornia = pytest.importorskip("kornia")
    x = torch.rand(1, 4, 19, 23)
    expected = kornia.filters.box_blur(x, 3, border_type="reflect", separable=True)
    torch.testing.assert_close(_box(x), expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "bicubic"}, "`method` must be one of edge, bilinear; got 'bicubic'"),
        (
            {"guide": np.zeros((64, 128))},
            "`guide` must be [H,W,3] (plate RGB); got shape [64, 128]",
        ),
        ({"extra": [np.zeros((16, 31))]}, "`extra[0]` must have the depth's shape [16, 32]"),
        ({"depth": np.zeros((1, 16, 32))}, "`depth` must be [h,w]; got shape [1, 16, 32]"),
    ],
)
def test_errors_name_what_is_allowed(kwargs, message):
    args = {"depth": np.zeros((16, 32), np.float32), "guide": np.zeros((64, 128, 3), np.float32)}
    args.update(kwargs)
    with pytest.raises(ConfigError) as info:
        upsample_depth(**args)
    assert message in str(info.value)


def test_same_size_leaves_the_callers_map_alone():
    plate, depth = _step_scene(H=32, W=64, edge=30)
    low = _area(depth, 2)
    same = np.ascontiguousarray(plate[::2, ::2])  # a plate at the map's own size
    before = low.copy()
    out = upsample_depth(low, same)
    np.testing.assert_array_equal(low, before)
    assert not np.shares_memory(out, low)


@pytest.mark.parametrize("k", [1, 2, 3, 5, 7, 8, 9])
def test_window_max_matches_max_pool(k):
    x = torch.randn(1, 3, 20, 23)
    expected = F.max_pool2d(F.max_pool2d(x, (1, k), 1), (k, 1), 1)
    torch.testing.assert_close(_window_max(_window_max(x, k, 3), k, 2), expected, rtol=0, atol=0)
