import numpy as np
import pytest
import torch

from rollingdepth_core.config import preset_config
from rollingdepth_core.errors import DeviceError, InputError
from rollingdepth_core.pipeline import (
    RollingDepthPipeline,
    estimated_snippet_count,
    pad_to_multiple,
    processing_size,
)
from rollingdepth_core.sample import sample_frame


@pytest.fixture(scope="module")
def pipe(tiny_checkpoint):
    return RollingDepthPipeline.from_pretrained(str(tiny_checkpoint), device="cpu", dtype="fp32")


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


def test_odd_sizes_are_padded_and_cropped_back(pipe):
    frames = [sample_frame(i, 5, 37, 51) for i in range(5)]
    config = preset_config("fast", dilations=(1,), processing_res=0, dtype="fp32")
    out = pipe(iter(frames), config)
    assert out.depth.shape == (5, 37, 51)
    assert out.processing_size == (37, 51)
    assert np.isfinite(out.depth).all()
    assert out.depth.min() >= -1 - 1e-6 and out.depth.max() <= 1 + 1e-6


def test_duplicate_dilations_are_predicted_once(pipe, monkeypatch):
    calls = []
    original = pipe.predict_snippets

    def counting(latents, noise, indices, *args, **kwargs):
        calls.append(indices.shape)
        return original(latents, noise, indices, *args, **kwargs)

    monkeypatch.setattr(pipe, "predict_snippets", counting)
    frames = [sample_frame(i, 8, 32, 32) for i in range(8)]
    config = preset_config("fast", dilations=(1, 10, 25), processing_res=32, dtype="fp32")
    out = pipe(iter(frames), config)
    assert out.dilations == [1, 1, 1]  # 8 frames: int(8/3)-1 = 1
    assert len(calls) == 1
    assert len(out.snippets) == 3 and out.snippets[1] is out.snippets[0]
    assert estimated_snippet_count(8, config) == 6


def test_mixed_frame_sizes_are_refused(pipe):
    frames = [sample_frame(0, 3, 32, 32), sample_frame(1, 3, 32, 40), sample_frame(2, 3, 32, 32)]
    with pytest.raises(InputError, match="one size"):
        pipe(iter(frames), preset_config("fast", processing_res=32, dtype="fp32"))


def test_half_precision_on_cpu(tiny_checkpoint):
    with pytest.raises(DeviceError, match="fp32"):
        RollingDepthPipeline.from_pretrained(str(tiny_checkpoint), device="cpu", dtype="fp16")
    mapped = RollingDepthPipeline.from_pretrained(
        str(tiny_checkpoint), device="cpu", dtype="fp16", dtype_explicit=False
    )
    assert mapped.dtype == torch.float32
