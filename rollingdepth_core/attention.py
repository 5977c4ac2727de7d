"""Cross-frame self-attention on a stock diffusers UNet.

RollingDepth changes only the UNet's forward pass: inside every self-attention (``attn1``) the
tokens of the L frames of one snippet attend to each other as one sequence. We do this with our
own attention processor instead of a patched diffusers. The snippet length travels through
``cross_attention_kwargs={"num_frames": L}``; diffusers hands a kwarg to a processor only if its
``__call__`` names it, so the one processor below serves attn1 and attn2 alike.

The reference implementation also joins the L frames' tokens for cross-attention (``attn2``),
attending to the text embedding of one frame. With the same (empty-prompt) embedding for every
frame that is mathematically the same as per-frame cross-attention, but the matrix shapes and
so the float rounding differ (about 1e-6 in the UNet output), and the reference's sign-driven
Adam solver grows that to a few 1e-4 in the final map. ``join_cross_attention`` reproduces its
layout for `--reference`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # diffusers loads with the model, not with the engine (finalize needs none)
    from diffusers.models.attention_processor import Attention


class CrossFrameAttnProcessor:
    """Self-attention joined across the frames of a snippet; cross-attention unchanged.

    Frames of one snippet are consecutive on the batch axis: ``[(b L), hw, c]``. For
    self-attention the tokens are regrouped to ``[b, (L hw), c]`` before the projections and
    split back after the output projection. With ``join_cross_attention`` cross-attention is
    regrouped the same way, against the text embedding of each snippet's first frame (the
    reference's layout; see the module text).
    """

    def __init__(self, join_cross_attention: bool = False) -> None:
        self.join_cross_attention = join_cross_attention

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        num_frames: int = 1,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)

        image_layout = hidden_states.ndim == 4
        if image_layout:
            image_shape = hidden_states.shape
            hidden_states = hidden_states.flatten(2).transpose(1, 2)  # [B, hw, c]

        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        is_self = encoder_hidden_states is None
        joint = num_frames > 1 and (is_self or self.join_cross_attention)
        frames_batch, tokens, channels = hidden_states.shape
        if joint:
            if frames_batch % num_frames:
                raise ValueError(
                    f"batch of {frames_batch} frames is not a whole number of "
                    f"{num_frames}-frame snippets"
                )
            hidden_states = hidden_states.reshape(
                frames_batch // num_frames, num_frames * tokens, channels
            )  # [b, L*hw, c]

        if is_self:
            context = hidden_states
        else:
            context = encoder_hidden_states
            if joint:
                context = context[::num_frames]  # [b, tokens, c]: one frame's embedding
            if attn.norm_cross:
                context = attn.norm_encoder_hidden_states(context)

        batch = hidden_states.shape[0]
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])

        query = attn.to_q(hidden_states)
        key = attn.to_k(context)
        value = attn.to_v(context)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # [b, heads, q, d]
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)

        if joint:
            hidden_states = hidden_states.reshape(frames_batch, tokens, channels)
        if image_layout:
            hidden_states = hidden_states.transpose(-1, -2).reshape(image_shape)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def enable_cross_frame_attention(unet: torch.nn.Module, join_cross_attention: bool = False) -> None:
    """Give every attention of the UNet the cross-frame processor (diffusers wants a full set).

    ``join_cross_attention``: the reference's layout, for `--reference` (see the module text).
    """
    unet.set_attn_processor(CrossFrameAttnProcessor(join_cross_attention))
