import pytest
import torch

from rollingdepth_core.errors import DeviceError
from rollingdepth_core.model import DepthModel, pad_to_multiple, processing_size


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


def test_latent_scale_comes_from_the_vae_config(tiny_checkpoint):
    model = DepthModel.from_pretrained(str(tiny_checkpoint), device="cpu", dtype="fp32")
    assert (
        model.latent_scale == model.components.vae.config.scaling_factor == pytest.approx(0.18215)
    )
