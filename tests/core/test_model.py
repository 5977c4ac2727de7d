from dataclasses import replace

import numpy as np
import pytest
import torch

from rollingdepth_core.errors import ConfigError, DeviceError
from rollingdepth_core.model import (
    DepthModel,
    SubPixelUpsample,
    pad_to_multiple,
    processing_size,
)


def test_processing_size_follows_the_longer_edge():
    assert processing_size(1080, 1920, 768) == (432, 768)
    assert processing_size(1920, 1080, 1024) == (1024, 576)
    assert processing_size(100, 50, 0) == (100, 50)


def test_padding_replicates_to_multiples_of_8():
    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).reshape(2, 3, 5, 6)
    y = pad_to_multiple(x)
    assert y.shape == (2, 3, 8, 8)
    torch.testing.assert_close(y[..., :5, :6], x)
    torch.testing.assert_close(y[..., 7, :6], x[..., 4, :])


def test_half_precision_on_cpu(tiny_checkpoint):
    with pytest.raises(DeviceError, match="fp32"):
        DepthModel.from_pretrained(str(tiny_checkpoint), device="cpu", dtype="fp16")
    mapped = DepthModel.from_pretrained(
        str(tiny_checkpoint), device="cpu", dtype="fp16", dtype_explicit=False
    )
    assert mapped.dtype == torch.float32


# bf16 against fp32 on the CPU, final map of a whole run (normalised depth, range 2; 8x8
# latents): measured 0.049 max / 0.0066 mean with the tiny random weights, 0.081 / 0.022 with
# full-size random weights (correlation 0.9994 both), on AVX512-BF16.
BF16_ATOL, BF16_MEAN_ATOL = 0.1, 0.015


def test_bf16_on_a_cpu_that_computes_it_natively(layouts, tiny_checkpoint):
    from rollingdepth_core.config import preset_config
    from rollingdepth_core.device import cpu_has_native_bf16
    from rollingdepth_core.method import estimate_depth
    from rollingdepth_core.sample import sample_frame

    if not cpu_has_native_bf16():
        with pytest.raises(DeviceError, match="no native bfloat16"):
            DepthModel.from_pretrained(str(tiny_checkpoint), device="cpu", dtype="bf16")
        return
    model = DepthModel.from_pretrained(str(tiny_checkpoint), device="cpu", dtype="bf16")
    assert model.dtype == torch.bfloat16
    assert next(model.components.unet.parameters()).dtype == torch.bfloat16
    # 8x8 latents: random networks on the 5x7 latents of smaller frames are ill-conditioned
    # (their GroupNorms see a handful of values), whatever the precision
    frames = [sample_frame(i, 8, 64, 64) for i in range(8)]
    config = preset_config("fast", dilations=(1, 2), processing_res=64, seed=3)
    fp32 = estimate_depth(layouts[1], frames, replace(config, dtype="fp32")).to_array()
    bf16 = estimate_depth(model, frames, replace(config, dtype="bf16")).to_array()
    assert bf16.dtype == np.float32 and np.isfinite(bf16).all()
    error = np.abs(bf16 - fp32)
    assert 0 < error.mean() < BF16_MEAN_ATOL and error.max() < BF16_ATOL, (
        error.max(),
        error.mean(),
    )


def test_latent_scale_comes_from_the_vae_config(tiny_checkpoint):
    model = DepthModel.from_pretrained(str(tiny_checkpoint), device="cpu", dtype="fp32")
    assert (
        model.latent_scale == model.components.vae.config.scaling_factor == pytest.approx(0.18215)
    )


def _weights_format(module: torch.nn.Module) -> set[bool]:
    """Channels-last or not, for every conv kernel wider than 1x1 (a 1x1 kernel is both)."""
    return {
        p.is_contiguous(memory_format=torch.channels_last)
        for p in module.parameters()
        if p.ndim == 4 and p.shape[-1] > 1
    }


@pytest.fixture(scope="module")
def layouts(tiny_checkpoint):
    """The same weights loaded twice: the reference's layout and ours (channels-last)."""
    load = DepthModel.from_pretrained
    return (
        load(str(tiny_checkpoint), device="cpu", dtype="fp32", reference=True),
        load(str(tiny_checkpoint), device="cpu", dtype="fp32"),
    )


def test_reference_keeps_contiguous_weights_and_ours_are_channels_last(layouts):
    reference, ours = layouts
    assert not reference.channels_last and ours.channels_last
    for name in ("unet", "vae"):
        assert _weights_format(getattr(reference.components, name)) == {False}
        assert _weights_format(getattr(ours.components, name)) == {True}


# Channels-last (and, on the CPU, the decoder's sub-pixel upsampling) runs other kernels with
# other summation orders: on the tiny checkpoint each network agrees with the contiguous one
# within 1e-5 absolute (outputs of order 1), and the whole method within 1e-4 of the [-1, 1]
# depth range.
LAYOUT_ATOL = 1e-5
METHOD_ATOL = 1e-4


def test_channels_last_networks_match_contiguous(layouts):
    reference, ours = layouts
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 48, 64, generator=gen) * 2 - 1
    latents = [m.encode(images) for m in layouts]
    torch.testing.assert_close(latents[1], latents[0], atol=LAYOUT_ATOL, rtol=0)
    depth = torch.randn(3, 4, 6, 8, generator=gen)
    steps = []
    for model in layouts:
        scheduler = model.new_scheduler()
        scheduler.set_timesteps(1)
        steps.append(model.unet_step(scheduler, latents[0], depth, scheduler.timesteps[0], 3))
    torch.testing.assert_close(steps[1], steps[0], atol=LAYOUT_ATOL, rtol=0)
    maps = [m.decode_depth(steps[0], (45, 60)) for m in layouts]
    assert maps[0].shape == (3, 45, 60)
    torch.testing.assert_close(maps[1], maps[0], atol=LAYOUT_ATOL, rtol=0)
    # and the layouts really differ: the decoder's output comes back channels-last
    assert ours.components.vae.decoder(steps[0]).is_contiguous(memory_format=torch.channels_last)


def test_sub_pixel_upsampling_matches_the_stock_upsampler(layouts):
    from diffusers.models.upsampling import Upsample2D

    reference, ours = layouts
    swapped = [
        up for block in ours.components.vae.decoder.up_blocks for up in block.upsamplers or []
    ]
    assert swapped and all(isinstance(up, SubPixelUpsample) for up in swapped)
    stock = Upsample2D(16, use_conv=True, out_channels=24)
    torch.nn.init.normal_(stock.conv.bias)
    x = torch.randn(2, 16, 7, 10, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = stock(x)
        got = SubPixelUpsample(stock)(x)
    assert got.shape == expected.shape == (2, 24, 14, 20)
    torch.testing.assert_close(got, expected, atol=LAYOUT_ATOL, rtol=0)


def test_channels_last_method_matches_contiguous(layouts):
    from rollingdepth_core.config import preset_config
    from rollingdepth_core.method import estimate_depth
    from rollingdepth_core.sample import sample_frame

    frames = [sample_frame(i, 8, 40, 56) for i in range(8)]
    config = preset_config("fast", dilations=(1, 2), processing_res=56, dtype="fp32", seed=3)
    reference, ours = (estimate_depth(m, frames, config).to_array() for m in layouts)
    assert reference.shape == (8, 40, 56)
    np.testing.assert_allclose(ours, reference, atol=METHOD_ATOL, rtol=0)


def test_reference_cannot_compile(tiny_checkpoint, tmp_path):
    from rollingdepth_core.cli import main

    with pytest.raises(ConfigError, match="compile"):
        DepthModel.from_pretrained(
            str(tiny_checkpoint), device="cpu", dtype="fp32", reference=True, compile=True
        )
    argv = ["run", str(tmp_path / "plate.mp4"), "-o", str(tmp_path), "--reference", "--compile"]
    assert main(argv) != 0
    # run_plate hands both flags to the model it loads: the model is what refuses here
    from rollingdepth_core.config import OutputConfig, preset_config
    from rollingdepth_core.runner import run_plate
    from rollingdepth_core.sample import write_sample_video

    plate = write_sample_video(tmp_path / "plate.mp4", 6, 32, 48)
    with pytest.raises(ConfigError, match="cannot `--compile`"):
        run_plate(
            str(plate),
            str(tmp_path / "out"),
            preset_config("fast", dtype="fp32"),
            OutputConfig(),
            str(tiny_checkpoint),
            device="cpu",
            reference=True,
            compile=True,
        )
