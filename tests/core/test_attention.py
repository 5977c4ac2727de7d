import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0

from rollingdepth_core.attention import CrossFrameAttnProcessor, enable_cross_frame_attention
from rollingdepth_core.random_checkpoint import _unet_config


@pytest.fixture(scope="module")
def unets():
    torch.manual_seed(0)
    stock = UNet2DConditionModel(**_unet_config("tiny")).eval()
    stock.set_attn_processor(AttnProcessor2_0())
    ours = UNet2DConditionModel(**_unet_config("tiny")).eval()
    ours.load_state_dict(stock.state_dict())
    enable_cross_frame_attention(ours)
    return stock, ours


def run(unet, x, frames):
    text = torch.randn(1, 2, 32, generator=torch.Generator().manual_seed(1)).expand(len(x), -1, -1)
    with torch.no_grad():
        return unet(
            x,
            torch.full((len(x),), 999),
            encoder_hidden_states=text,
            cross_attention_kwargs={"num_frames": frames},
        ).sample


def test_every_attention_gets_the_processor(unets):
    _, ours = unets
    procs = ours.attn_processors
    assert procs and all(isinstance(p, CrossFrameAttnProcessor) for p in procs.values())
    assert any(k.endswith("attn1.processor") for k in procs)


def test_single_frame_snippets_equal_stock_attention(unets):
    stock, ours = unets
    x = torch.randn(3, 8, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        text = torch.randn(1, 2, 32, generator=torch.Generator().manual_seed(1)).expand(3, -1, -1)
        expected = stock(x, torch.full((3,), 999), encoder_hidden_states=text).sample
    torch.testing.assert_close(run(ours, x, 1), expected, rtol=0, atol=1e-5)


def test_frames_of_a_snippet_see_each_other(unets):
    _, ours = unets
    x = torch.randn(3, 8, 16, 16, generator=torch.Generator().manual_seed(2))
    changed = x.clone()
    changed[2] = torch.randn(8, 16, 16, generator=torch.Generator().manual_seed(3))
    a, b = run(ours, x, 3), run(ours, changed, 3)
    assert (a[0] - b[0]).abs().max() > 1e-4  # frame 0 depends on frame 2
    # with single-frame snippets frame 0 does not
    torch.testing.assert_close(run(ours, x, 1)[0], run(ours, changed, 1)[0], rtol=0, atol=1e-6)


def test_snippets_in_one_batch_stay_independent(unets):
    _, ours = unets
    x = torch.randn(6, 8, 16, 16, generator=torch.Generator().manual_seed(4))
    both = run(ours, x, 3)
    torch.testing.assert_close(both[:3], run(ours, x[:3], 3), rtol=0, atol=1e-5)
    torch.testing.assert_close(both[3:], run(ours, x[3:], 3), rtol=0, atol=1e-5)


def test_permuting_frames_permutes_outputs(unets):
    _, ours = unets
    x = torch.randn(3, 8, 16, 16, generator=torch.Generator().manual_seed(5))
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(run(ours, x[perm], 3), run(ours, x, 3)[perm], rtol=0, atol=1e-5)
