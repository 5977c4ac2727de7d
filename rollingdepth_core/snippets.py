"""Which frames go into which snippet: dilated rolling kernels and their capping."""

from __future__ import annotations

import numpy as np

from .errors import ConfigError, InputError


def cap_dilation(n_frames: int, snippet_len: int, dilation: int) -> int:
    """The reference capping rule: a dilation above ``int(N / L) - 1`` is reduced to it.

    Clips shorter than ``2 L`` would be capped below 1 by that rule (the reference fails
    there); dilation 1 still covers every frame of such a clip, so it is kept at 1.
    """
    max_dilation = int(n_frames / snippet_len) - 1
    return max(1, min(dilation, max_dilation))


def snippet_indices(n_frames: int, snippet_len: int, dilation: int) -> np.ndarray:
    """Frame indices ``[n_snippets, L]``: snippet i is ``[i, i+d, ..., i+(L-1)d]``, stride 1."""
    span = (snippet_len - 1) * dilation
    n_snippets = n_frames - span
    if n_snippets < 1:
        raise ConfigError(
            f"dilation {dilation} with snippet length {snippet_len} spans {span + 1} frames, "
            f"more than the clip's {n_frames}; lower `dilations` or keep dilation capping on"
        )
    starts = np.arange(n_snippets)[:, None]
    return (starts + dilation * np.arange(snippet_len)[None, :]).astype(np.int64)


def check_clip_length(n_frames: int, snippet_len: int) -> None:
    if n_frames < 2:
        raise InputError(f"RollingDepth needs at least 2 frames; got {n_frames}")
    if n_frames < snippet_len:
        raise InputError(
            f"snippet length {snippet_len} needs at least {snippet_len} frames; the clip has "
            f"{n_frames} (use `--snippet-len {n_frames}`)"
        )


def resolve_dilations(
    n_frames: int, snippet_len: int, dilations: tuple[int, ...], cap: bool
) -> list[int]:
    """The dilations actually run, in order, duplicates from capping kept (as the reference)."""
    check_clip_length(n_frames, snippet_len)
    resolved = [cap_dilation(n_frames, snippet_len, d) if cap else d for d in dilations]
    for d in resolved:
        snippet_indices(n_frames, snippet_len, d)  # raises for a dilation that does not fit
    return resolved


def refine_dilations(
    n_frames: int, snippet_len: int, start_dilation: int, steps: int, cap: bool
) -> list[int]:
    """Per refinement step, the dilation: shrinks linearly from the (capped) start towards 1."""
    start = cap_dilation(n_frames, snippet_len, start_dilation) if cap else start_dilation
    gaps = [int((1 - i / steps) * (start - 1)) for i in range(steps)]
    return [g + 1 for g in gaps]
