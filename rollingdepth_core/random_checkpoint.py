"""Randomly initialised checkpoints in the real folder layout.

They prove an installation (``rollingdepth selftest``), drive the tests through the real loading
code, and give honest speed figures at full size: speed does not depend on weight values. They
predict no meaningful depth.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

SIZES = ("tiny", "full")


def _unet_config(size: str) -> dict:
    if size == "tiny":
        return dict(
            sample_size=32,
            in_channels=8,
            out_channels=4,
            layers_per_block=1,
            block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=(2, 4),
            norm_num_groups=16,
            use_linear_projection=True,
        )
    return dict(  # Stable Diffusion 2 UNet with the 8-channel depth input
        sample_size=96,
        in_channels=8,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=(
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ),
        up_block_types=(
            "UpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
        ),
        cross_attention_dim=1024,
        attention_head_dim=(5, 10, 20, 20),
        use_linear_projection=True,
    )


def _vae_config(size: str) -> dict:
    channels = (8, 16, 16, 16) if size == "tiny" else (128, 256, 512, 512)
    return dict(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * 4,  # 3 downsamplings: latents are 1/8 size
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1 if size == "tiny" else 2,
        norm_num_groups=8 if size == "tiny" else 32,
        sample_size=64 if size == "tiny" else 768,
    )


def _text_config(size: str) -> dict:
    if size == "tiny":
        return dict(
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=1000,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=188,
            eos_token_id=189,
        )
    return dict(
        hidden_size=1024,
        intermediate_size=4096,
        num_attention_heads=16,
        num_hidden_layers=23,
        vocab_size=49408,
        max_position_embeddings=77,
        projection_dim=512,
        hidden_act="gelu",
        bos_token_id=188,
        eos_token_id=189,
    )


def _write_tokenizer(folder: Path) -> None:
    """A byte-level BPE vocabulary with no merges (ids 188/189 are the start/end tokens)."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    symbols = [chr(c) for c in range(33, 127)]
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": len(vocab) + i for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77
    )
    tokenizer.save_pretrained(folder)


def make_random_checkpoint(folder: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """Write a random RollingDepth-shaped checkpoint (diffusers layout) into ``folder``."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if size not in SIZES:
        raise ValueError(f"`size` must be one of {SIZES}; got {size!r}")
    folder = Path(folder)
    torch.manual_seed(seed)
    UNet2DConditionModel(**_unet_config(size)).save_pretrained(folder / "unet")
    AutoencoderKL(**_vae_config(size)).save_pretrained(folder / "vae")
    CLIPTextModel(CLIPTextConfig(**_text_config(size))).save_pretrained(folder / "text_encoder")
    _write_tokenizer(folder / "tokenizer")
    DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="v_prediction",
        timestep_spacing="trailing",
    ).save_pretrained(folder / "scheduler")
    index = {
        "_class_name": "RollingDepthPipeline",
        "_diffusers_version": "0.42.0",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "random_weights": True,
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder
