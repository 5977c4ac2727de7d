"""The engine against a plain, unbatched implementation of docs/method.md (tests/core/reference_impl.py)."""

import numpy as np
import pytest
import torch

from rollingdepth_core.attention import enable_cross_frame_attention
from rollingdepth_core.config import preset_config
from rollingdepth_core.method import estimate_depth
from rollingdepth_core.model import DepthModel
from rollingdepth_core.sample import sample_frame

from .reference_impl import joined_attention, reference_run

N = 9


@pytest.fixture(scope="module")
def pipe(tiny_checkpoint):
    # the reference's memory layout (reference_run below runs on these same modules) with the
    # engine's default attention layout: cross-attention frame by frame
    model = DepthModel.from_pretrained(
        str(tiny_checkpoint), device="cpu", dtype="fp32", reference=True
    )
    enable_cross_frame_attention(model.components.unet, join_cross_attention=False)
    return model


@pytest.fixture(scope="module")
def reference_pipe(tiny_checkpoint):
    """The engine as `--reference` runs it: the reference's attention layout."""
    return DepthModel.from_pretrained(
        str(tiny_checkpoint), device="cpu", dtype="fp32", reference=True
    )


@pytest.fixture(scope="module")
def frames():
    # 8-bit values, as decoded from a video
    return [(np.round(sample_frame(i, N, 48, 64) * 255) / 255).astype(np.float32) for i in range(N)]


def unet_output(unet, text_per_frame=False):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(6, 8, 12, 16, generator=generator)  # two 3-frame snippets
    text = torch.randn(6 if text_per_frame else 1, 2, 32, generator=generator).expand(6, -1, -1)
    with torch.no_grad():
        return unet(
            x,
            torch.full((6,), 999),
            encoder_hidden_states=text,
            cross_attention_kwargs={"num_frames": 3},
        ).sample


def test_reference_attention_layout_is_reproduced_bit_for_bit(reference_pipe):
    unet = reference_pipe.components.unet
    ours = unet_output(unet)
    with joined_attention(unet):
        expected = unet_output(unet)
    assert torch.equal(ours, expected)


def test_joined_cross_attention_uses_one_frames_text(reference_pipe, pipe):
    # Equal texts make both layouts the same maths; different ones show which is which:
    # joined cross-attention attends to the first frame's text for the whole snippet.
    joined = unet_output(reference_pipe.components.unet, text_per_frame=True)
    with joined_attention(reference_pipe.components.unet):
        torch.testing.assert_close(
            joined, unet_output(reference_pipe.components.unet, text_per_frame=True)
        )
    per_frame = unet_output(pipe.components.unet, text_per_frame=True)
    assert (joined - per_frame).abs().max() > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("refine", [0, 2])
def test_matches_reference_with_adam(reference_pipe, frames, refine):
    # 9 frames: dilations 1 3 4 capped to 1 2 2 (a duplicate, as the reference keeps it)
    config = preset_config(
        "paper",
        cap_dilation=True,
        dilations=(1, 3, 4),
        processing_res=64,
        dtype="fp32",
        seed=7,
        aligner="adam",
        refine_steps=refine,
        batch_size=1,
        vae_batch_size=4,
    )  # what `--reference` sets
    ours = estimate_depth(reference_pipe, frames, config)
    assert ours.plan.dilations == [1, 2, 2]
    expected = reference_run(reference_pipe.components, frames, [1, 3, 4], 3, 64, 7, refine)
    depth = ours.to_array()
    assert depth.shape == expected.shape == (N, 48, 64)
    assert np.abs(depth - expected).max() < 1e-4


def test_batching_does_not_change_the_result(pipe, frames):
    base = dict(dilations=(1, 3), processing_res=64, dtype="fp32", seed=1)
    one = estimate_depth(
        pipe, frames, preset_config("fast", batch_size=1, vae_batch_size=1, **base)
    )
    many = estimate_depth(
        pipe, frames, preset_config("fast", batch_size=7, vae_batch_size=8, **base)
    )
    for a, b in zip(one.snippet_maps(), many.snippet_maps(), strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5)
    np.testing.assert_allclose(one.to_array(), many.to_array(), atol=1e-4)
