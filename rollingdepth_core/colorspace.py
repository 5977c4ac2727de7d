"""Scene-linear to display sRGB, the encoding the depth model was trained on."""

from __future__ import annotations

import numpy as np

from .errors import ConfigError

INPUT_COLORSPACES = ("auto", "srgb", "linear")

# sRGB piecewise curve (IEC 61966-2-1).
_SRGB_BREAK_LINEAR = 0.0031308
_SRGB_BREAK_ENCODED = 0.04045


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """Encode scene-linear values with the sRGB OETF for display.

    Negatives and NaN become 0; values above 1 are hard-clipped to 1 (no soft
    roll-off), as a viewer without a view transform would show them. Highlights
    above 1 carry no shape the model could use, and a clip keeps the mapping
    exact for every value in [0, 1].

    Parameters
    ----------
    linear : np.ndarray
        Scene-linear values, any shape.

    Returns
    -------
    np.ndarray
        float32 display values in [0, 1], same shape.
    """
    x = clip_unit(linear)
    low = x * 12.92
    high = 1.055 * np.power(x, 1.0 / 2.4, dtype=np.float32) - 0.055
    encoded = np.where(x <= _SRGB_BREAK_LINEAR, low, high).astype(np.float32, copy=False)
    encoded[x >= 1.0] = 1.0  # float32 rounding would leave white at 0.99999994
    return encoded


def srgb_to_linear(encoded: np.ndarray) -> np.ndarray:
    """Decode display sRGB values in [0, 1] back to linear (inverse of `linear_to_srgb`)."""
    x = clip_unit(encoded)
    low = x / 12.92
    high = np.power((x + 0.055) / 1.055, 2.4, dtype=np.float32)
    return np.where(x <= _SRGB_BREAK_ENCODED, low, high).astype(np.float32, copy=False)


def clip_unit(values: np.ndarray) -> np.ndarray:
    """float32 copy clipped into [0, 1]; NaN -> 0, +inf -> 1, -inf -> 0."""
    x = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(x, 0.0, 1.0)


def to_display(rgb: np.ndarray, colorspace: str) -> np.ndarray:
    """Bring decoded pixels into display sRGB in [0, 1].

    Parameters
    ----------
    rgb : np.ndarray
        Pixels as read, float.
    colorspace : str
        ``"linear"`` (encode with the sRGB OETF) or ``"srgb"`` (already display
        referred: only clipped).
    """
    if colorspace == "linear":
        return linear_to_srgb(rgb)
    if colorspace == "srgb":
        return clip_unit(rgb)
    raise ConfigError(f"`colorspace` must be 'linear' or 'srgb'; got {colorspace!r}")
