"""Input validation and the array views every stage shares (no solving, no merging)."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..errors import ConfigError

METHODS = ("robust", "adam")
ADAM_OPTIONS = {"iterations": 2000, "lr": 1e-3}
ROBUST_OPTIONS = {"max_iterations": 50, "tol": 1e-5}


def as_numpy(x) -> np.ndarray:
    """A numpy view of an array or (CPU) tensor; other devices and bfloat16 are copied."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.device.type != "cpu":
            x = x.cpu()
        if x.dtype == torch.bfloat16:
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def check_inputs(snippets, indices) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Arrays per entry, int64 indices per entry and the frame count; ConfigError otherwise."""
    if isinstance(snippets, (np.ndarray, torch.Tensor)) or isinstance(
        indices, (np.ndarray, torch.Tensor)
    ):
        raise ConfigError(
            "`snippets` and `indices` must be lists with one entry per dilation "
            "([n_snippets, L, H, W] and [n_snippets, L]); wrap a single dilation in a list"
        )
    if len(snippets) == 0:
        raise ConfigError("`snippets` is empty; expected one array per dilation entry")
    if len(snippets) != len(indices):
        raise ConfigError(
            f"`snippets` and `indices` must have one entry per dilation each; got "
            f"{len(snippets)} and {len(indices)}"
        )
    arrays, idx = [], []
    converted: dict[int, np.ndarray] = {}  # a tensor repeated by capping stays one array
    for i, (x, ind) in enumerate(zip(snippets, indices, strict=True)):
        a = converted.setdefault(id(x), as_numpy(x))
        if a.ndim != 4:
            raise ConfigError(
                f"`snippets[{i}]` must be [n_snippets, L, H, W]; got shape {tuple(a.shape)}"
            )
        if not np.issubdtype(a.dtype, np.floating):
            raise ConfigError(f"`snippets[{i}]` must hold floats; got dtype {a.dtype}")
        if a.shape[0] < 1 or a.shape[1] < 1:
            raise ConfigError(f"`snippets[{i}]` is empty: shape {tuple(a.shape)}")
        k = as_numpy(ind)
        if not np.issubdtype(k.dtype, np.integer):
            raise ConfigError(f"`indices[{i}]` must hold integers; got dtype {k.dtype}")
        if k.shape != a.shape[:2]:
            raise ConfigError(
                f"`indices[{i}]` must have shape {tuple(a.shape[:2])} to match "
                f"`snippets[{i}]` {tuple(a.shape)}; got {tuple(k.shape)}"
            )
        if k.min() < 0:
            raise ConfigError(f"`indices[{i}]` holds negative frame numbers ({int(k.min())})")
        if arrays and a.shape[-2:] != arrays[0].shape[-2:]:
            raise ConfigError(
                f"`snippets[{i}]` maps are {tuple(a.shape[-2:])}; `snippets[0]` maps are "
                f"{tuple(arrays[0].shape[-2:])}: all must have the same size"
            )
        for j in range(k.shape[1]):
            if np.unique(k[:, j]).size != k.shape[0]:
                raise ConfigError(
                    f"`indices[{i}]` repeats a frame at snippet position {j}: within one "
                    "dilation entry each frame may appear at most once per position"
                )
        arrays.append(a)
        idx.append(k.astype(np.int64))
    n_frames = covered_frames(idx)
    return arrays, idx, n_frames


def holdout_keep(holdout, shape: tuple[int, int, int], border: int, subsample: int):
    """``1 - holdout`` at the solver's pixels, ``[N,P]`` float32 (None without a matte).

    ``holdout``: ``[N,H,W]`` per-frame mattes in 0..1 (1 = the pixel does not count in the
    alignment objective), array or tensor, float or bool, ``shape`` = (frames, map size);
    reduced as the maps are (``border`` cropped, every ``subsample``-th pixel)."""
    if holdout is None:
        return None
    matte = as_numpy(holdout)
    if matte.shape != tuple(shape):
        raise ConfigError(
            f"`holdout` must be one matte per frame at the maps' size, [N, H, W] = "
            f"{tuple(shape)}; got {tuple(matte.shape)}"
        )
    if np.issubdtype(matte.dtype, np.floating):
        lo, hi = (float(v) for v in torch.aminmax(tensor_view(matte)))
        if not (lo >= 0.0 and hi <= 1.0):  # also false for NaN
            raise ConfigError(f"`holdout` values must lie in 0..1; got {lo:g}..{hi:g}")
    elif matte.dtype != np.bool_:
        raise ConfigError(f"`holdout` must hold floats (or bools) in 0..1; got dtype {matte.dtype}")
    # only the solver's pixels are converted (a full-size float copy would be the maps' size)
    reduced = reduced_view(matte, border, subsample).reshape(shape[0], -1)
    keep = torch.from_numpy(1.0 - reduced.astype(np.float32))
    if not float(keep.sum()) > 0:
        # the robust solver's normal equations would be singular: nothing ties the snippets
        raise ConfigError(
            "the holdout mattes leave no pixel for the alignment: every pixel it samples is "
            "held out (1); hold out less of the frame"
        )
    return keep


def check_reduction(hw: tuple[int, int], border: int, subsample: int) -> None:
    if border < 0 or subsample < 1:
        raise ConfigError(f"`border` must be >= 0 and `subsample` >= 1; got {border}, {subsample}")
    if min(hw) - 2 * border < 1:
        raise ConfigError(
            f"maps of {tuple(hw)} pixels leave nothing after cropping a {border}-pixel border"
        )


def check_solver_options(method: str, solver_options: dict) -> dict:
    """The method's defaults with the caller's options, every one checked."""
    if method not in METHODS:
        raise ConfigError(f"`method` must be one of {', '.join(METHODS)}; got {method!r}")
    defaults = ADAM_OPTIONS if method == "adam" else ROBUST_OPTIONS
    unknown = sorted(set(solver_options) - set(defaults))
    if unknown:
        raise ConfigError(
            f"unknown solver option(s) {', '.join(f'`{k}`' for k in unknown)} for method "
            f"{method!r}; allowed: {', '.join(f'`{k}`' for k in defaults)}"
        )
    options = {**defaults, **solver_options}
    if method == "adam":
        _check_adam_options(options)
    else:
        _check_robust_options(options)
    return options


def _check_adam_options(options: dict) -> None:
    if int(options["iterations"]) != options["iterations"] or options["iterations"] < 1:
        raise ConfigError(f"`iterations` must be an integer >= 1; got {options['iterations']}")
    if not options["lr"] > 0:
        raise ConfigError(f"`lr` must be > 0; got {options['lr']}")


def _check_robust_options(options: dict) -> None:
    it = options["max_iterations"]
    if int(it) != it or it < 2:
        raise ConfigError(f"`max_iterations` must be an integer >= 2; got {it}")
    if not options["tol"] > 0:
        raise ConfigError(f"`tol` must be > 0; got {options['tol']}")


def covered_frames(idx: list[np.ndarray]) -> int:
    """The frame count ``max + 1`` of the indices; ConfigError if a frame in it has no snippet."""
    n_frames = int(max(k.max() for k in idx)) + 1
    covered = np.bincount(np.concatenate([k.ravel() for k in idx]), minlength=n_frames) > 0
    if not covered.all():
        missing = np.flatnonzero(~covered)
        raise ConfigError(
            f"frames {missing[:10].tolist()}{' ...' if missing.size > 10 else ''} are covered "
            f"by no snippet; every frame 0..{n_frames - 1} needs at least one"
        )
    return n_frames


def unique_arrays(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Entries without repeats of the same array (capping duplicates share one)."""
    seen: dict[int, np.ndarray] = {}
    for a in arrays:
        seen.setdefault(id(a), a)
    return list(seen.values())


def tensor_view(a: np.ndarray) -> torch.Tensor:
    """A tensor on ``a``'s memory (copied only for negative strides); it is never written."""
    if any(step < 0 for step in a.strides):
        a = np.ascontiguousarray(a)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not writable.*")
        return torch.from_numpy(a)


def first_copies(arrays: list[np.ndarray], indices: list[np.ndarray]) -> list[int]:
    """For every entry, the first entry with the same array and the same indices."""
    first = []
    for i, (a, k) in enumerate(zip(arrays, indices, strict=True)):
        same = (j for j in range(i) if arrays[j] is a and np.array_equal(indices[j], k))
        first.append(next(same, i))
    return first


def canonical_views(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """``arrays`` with every array replaced by the first one that views the same memory the
    same way (data pointer, shape, strides, dtype): :func:`reduce_maps` of one snippet array
    passed twice gives two view objects of the same data, which count as one array."""
    seen: dict[tuple, np.ndarray] = {}
    out = []
    for a in arrays:
        key = (a.__array_interface__["data"][0], a.shape, a.strides, a.dtype.str)
        out.append(seen.setdefault(key, a))
    return out


def array_min(a: np.ndarray) -> float:
    lo = float(tensor_view(a).min())  # numpy's float16 reductions are ~20x slower
    if not np.isfinite(lo):
        raise ConfigError("`snippets` contain non-finite values (NaN or inf); cannot align them")
    return lo


def reduced_view(a: np.ndarray, border: int, subsample: int) -> np.ndarray:
    """``a[..., b:-b, b:-b][..., ::sub, ::sub]``: a strided view ``[n, L, h, w]``, no copy.

    The solvers read it a few frames at a time (robust) or copy it once as float32 (adam).
    """
    h, w = a.shape[-2:]
    return a[..., border : h - border : subsample, border : w - border : subsample]
