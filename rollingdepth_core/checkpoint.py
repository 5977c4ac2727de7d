"""Loading the model: a hub id or a local folder in the diffusers layout, stock classes only."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .attention import enable_cross_frame_attention
from .config import DEFAULT_CHECKPOINT
from .errors import WeightsError

SUBFOLDERS = ("unet", "vae", "scheduler", "text_encoder", "tokenizer")
_PATTERNS = ["model_index.json", *[f"{s}/*" for s in SUBFOLDERS]]


@dataclass
class Components:
    unet: torch.nn.Module
    vae: torch.nn.Module
    scheduler: object
    text_encoder: torch.nn.Module
    tokenizer: object
    source: str  # what the user passed: hub id or folder
    folder: Path  # where it was loaded from


def _missing_weights_message(checkpoint: str, reason: str) -> str:
    return (
        f"model weights {checkpoint!r} are not available: {reason}. "
        f"On a machine with internet run `hf download {checkpoint} --local-dir "
        f"rollingdepth-v1-0`, copy that folder here and pass `--checkpoint /path/to/"
        f"rollingdepth-v1-0` (or set HF_HOME to a shared cache that holds it). "
        f"`rollingdepth selftest` checks the installation without weights"
    )


def find_checkpoint(checkpoint: str = DEFAULT_CHECKPOINT) -> Path | None:
    """The local folder holding the checkpoint, without downloading: the path itself (checked
    for the diffusers layout) or the hub cache's snapshot; None for a hub id not cached."""
    path = Path(checkpoint).expanduser()
    looks_like_hub_id = re.fullmatch(r"[\w.-]+/[\w.-]+", checkpoint) is not None
    if path.exists() or not looks_like_hub_id:
        return _check_folder(path, checkpoint)
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(checkpoint, allow_patterns=_PATTERNS, local_files_only=True)
    except Exception:
        return None
    return _check_folder(Path(folder), checkpoint)


def hub_offline() -> bool:
    """True when downloads are off (HF_HUB_OFFLINE): an uncached hub id then cannot load."""
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


def locate_checkpoint(checkpoint: str = DEFAULT_CHECKPOINT) -> Path:
    """A local folder holding the checkpoint: the path itself, the hub cache, or a download."""
    folder = find_checkpoint(checkpoint)
    if folder is not None:
        return folder
    if hub_offline():
        raise WeightsError(
            _missing_weights_message(checkpoint, "not in the cache and HF_HUB_OFFLINE is set")
        )
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(checkpoint, allow_patterns=_PATTERNS)
    except Exception as exc:  # any hub or network failure means the same to the user
        reason = "the Hugging Face hub cannot be reached and nothing is cached"
        if "404" in str(exc) or "RepositoryNotFound" in type(exc).__name__:
            reason = "no such model on the Hugging Face hub"
        raise WeightsError(_missing_weights_message(checkpoint, reason)) from exc
    return _check_folder(Path(folder), checkpoint)


def _check_folder(path: Path, checkpoint: str) -> Path:
    if not path.is_dir():
        raise WeightsError(
            f"checkpoint folder {str(path)!r} does not exist; pass a folder with "
            f"{', '.join(SUBFOLDERS)} sub-folders or a hub id such as {DEFAULT_CHECKPOINT}"
        )
    missing = [s for s in SUBFOLDERS if not (path / s).is_dir()]
    if missing:
        raise WeightsError(
            f"checkpoint folder {str(path)!r} lacks {', '.join(f'{m}/' for m in missing)}: "
            f"expected the diffusers layout ({', '.join(f'{s}/' for s in SUBFOLDERS)})"
        )
    return path


def load_components(checkpoint: str, device: torch.device, dtype: torch.dtype) -> Components:
    """Every component through stock diffusers/transformers classes, cross-frame attention set."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = locate_checkpoint(checkpoint)
    try:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype)
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype)
        scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
        text_encoder = CLIPTextModel.from_pretrained(
            folder, subfolder="text_encoder", torch_dtype=dtype
        )
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"cannot load the checkpoint in {str(folder)!r}: {first}") from exc
    if unet.config.in_channels != 8:
        raise WeightsError(
            f"the UNet in {str(folder)!r} takes {unet.config.in_channels} input channels; a "
            f"RollingDepth/Marigold depth checkpoint takes 8 (RGB latent + depth latent)"
        )
    enable_cross_frame_attention(unet)
    for module in (unet, vae, text_encoder):
        module.to(device).eval().requires_grad_(False)
    return Components(unet, vae, scheduler, text_encoder, tokenizer, checkpoint, folder)
