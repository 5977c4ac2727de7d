"""The engine against a plain, unbatched implementation of docs/method.md (tests/core/reference_impl.py)."""

import numpy as np
import pytest

from rollingdepth_core.config import preset_config
from rollingdepth_core.method import estimate_depth
from rollingdepth_core.model import DepthModel
from rollingdepth_core.sample import sample_frame

from .reference_impl import reference_run

N = 9


@pytest.fixture(scope="module")
def pipe(tiny_checkpoint):
    # the reference's memory layout: reference_run below runs on these same modules
    return DepthModel.from_pretrained(
        str(tiny_checkpoint), device="cpu", dtype="fp32", reference=True
    )


@pytest.fixture(scope="module")
def frames():
    # 8-bit values, as decoded from a video
    return [(np.round(sample_frame(i, N, 48, 64) * 255) / 255).astype(np.float32) for i in range(N)]


@pytest.mark.slow
@pytest.mark.parametrize("refine", [0, 2])
def test_matches_reference_with_adam(pipe, frames, refine):
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
    ours = estimate_depth(pipe, frames, config)
    assert ours.plan.dilations == [1, 2, 2]
    expected = reference_run(pipe.components, frames, [1, 3, 4], 3, 64, 7, refine)
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
