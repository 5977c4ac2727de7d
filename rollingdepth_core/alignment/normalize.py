"""Min-max normalisation of the merged video to [-1, 1], whole or a frame at a time."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError
from .checks import tensor_view


def normalize_depth(depth: np.ndarray, *, inplace: bool = False) -> np.ndarray:
    """Min-max map the whole video to [-1, 1] (a constant video maps to zeros), float32.

    ``inplace=True`` overwrites ``depth`` (a writable float32 array) instead of allocating a
    second video; the values are the same either way."""
    depth = np.asarray(depth, dtype=np.float32)
    if inplace and not depth.flags.writeable:
        raise ConfigError("`depth` is read-only; cannot normalise it in place")
    lo, hi = (float(v) for v in torch.aminmax(tensor_view(depth)))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ConfigError("`depth` contains non-finite values; cannot normalise it")
    return rescale_depth(depth, lo, hi, out=depth if inplace else None)


def rescale_depth(
    depth: np.ndarray, lo: float, hi: float, out: np.ndarray | None = None
) -> np.ndarray:
    """``(depth - lo) * 2 / (hi - lo) - 1`` in float32 (zeros when ``hi <= lo``): what
    :func:`normalize_depth` does with the video's extremes, for any part of it (a frame);
    into ``out`` (may be ``depth``) when given."""
    depth = np.asarray(depth, dtype=np.float32)
    if out is None:
        out = np.empty(depth.shape, np.float32)
    target = torch.from_numpy(out)
    if hi <= lo:
        return target.zero_().numpy()
    torch.sub(tensor_view(depth), lo, out=target)
    return target.mul_(float(np.float32(2.0 / (hi - lo)))).sub_(1.0).numpy()
