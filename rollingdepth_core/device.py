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


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX, through oneDNN):
    there the networks run about twice as fast in bf16 as in fp32
    (``benchmarks/speed_bench.py``); elsewhere bf16 is emulated and slower."""
    try:
        # the instructions themselves: oneDNN's own bf16 check passes on any AVX-512 CPU
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_dtype(dtype: str, device: torch.device, explicit: bool) -> str:
    """The dtype to run in.

    fp16 on the CPU is slow and poorly supported: a preset's fp16 is mapped to fp32 there with
    a warning, and an fp16 the user asked for by name is refused. bf16 asked for by name runs
    on a CPU that computes it natively (`cpu_has_native_bf16`), and is refused on others.
    """
    if device.type != "cpu" or dtype == "fp32":
        return dtype
    if explicit:
        if dtype == "bf16" and cpu_has_native_bf16():
            return dtype
        hint = (
            "this CPU has no native bfloat16 (AVX512-BF16 or AMX)"
            if dtype == "bf16"
            else "use `--dtype bf16` on a CPU with AVX512-BF16 or AMX"
        )
        raise DeviceError(
            f"`--dtype {dtype}` is not supported on the CPU ({hint}); use `--dtype fp32` or a GPU"
        )
    log.warning("running on the CPU: the preset's %s is replaced by fp32", dtype)
    return "fp32"


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type
