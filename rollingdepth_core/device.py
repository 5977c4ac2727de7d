"""Device and dtype choice: cuda, then mps, then cpu; half precision only where it runs."""

from __future__ import annotations

import logging

import torch

from .errors import DeviceError

log = logging.getLogger(__name__)

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("`--device cuda` asked for, but torch sees no CUDA GPU here")
    if name == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("`--device mps` asked for, but Apple MPS is not available here")
    if name not in ("cuda", "mps", "cpu"):
        raise DeviceError(f"`--device` must be auto, cuda, mps or cpu; got {name!r}")
    return torch.device(name)


def resolve_dtype(dtype: str, device: torch.device, explicit: bool) -> str:
    """The dtype to run in.

    Half precision on the CPU is slow and poorly supported. A preset's fp16 is mapped to fp32
    there with a warning; an fp16/bf16 the user asked for by name is refused.
    """
    if device.type != "cpu" or dtype == "fp32":
        return dtype
    if explicit:
        raise DeviceError(
            f"`--dtype {dtype}` is not supported on the CPU; use `--dtype fp32` or a GPU"
        )
    log.warning("running on the CPU: the preset's %s is replaced by fp32", dtype)
    return "fp32"


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type
