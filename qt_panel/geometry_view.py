"""P and N as false colour for the viewer: the frame's depth through the shot's camera.

P: x, y, z -> red, green, blue, each stretched over the frame's own range (so the legend gives
the range per axis). N: the usual 0.5 + 0.5 n (a normal facing the camera looks blue-violet);
pixels at depth edges, which the passes mark (0, 0, 0), are mid grey.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rollingdepth_core.geometry import normal_planes, position_planes
from rollingdepth_core.geometry.camera import PinholeCamera

AXES = ("X", "Y", "Z")
GEOMETRY_NEEDS_CAMERA = "P and N need the shot's camera: choose a camera file under Camera"
GEOMETRY_NEEDS_UNITS = (
    "P and N need depth in scene units: set the depth convention to depth (near/far in "
    "scene units) or fit anchors"
)


@dataclass(frozen=True)
class GeometryView:
    """One frame's P and N as colours ``[h,w,3]`` in 0..1, and their legends."""

    position: np.ndarray
    normals: np.ndarray
    ranges: tuple[tuple[float, float], ...]  # P's (low, high) per axis over the frame
    space: str  # "world" or "camera"

    def legend(self, kind: str) -> list[str]:
        """The lines under the image that say what its colours are."""
        if kind == "position":
            head = f"P ({self.space}): colour = xyz over this frame"
            return [head] + [
                f"{channel} = {axis} {lo:.4g} … {hi:.4g}"
                for channel, axis, (lo, hi) in zip("RGB", AXES, self.ranges, strict=True)
            ]
        return [
            f"N ({self.space}): colour = 0.5 + 0.5 · xyz",
            "R = X, G = Y, B = Z (−1 … 1)",
            "grey: a depth edge (no normal)",
        ]


def geometry_view(depth: np.ndarray, camera: PinholeCamera, space: str) -> GeometryView:
    """Planar depth ``[h,w]`` in scene units through ``camera`` -> P and N colours."""
    position = position_planes(depth, camera)  # 3 x [h,w]
    normals, _ = normal_planes(depth, camera)  # 3 x [h,w]; (0, 0, 0) at depth edges
    ranges = []
    channels = []
    for plane in position:
        finite = plane[np.isfinite(plane)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        ranges.append((lo, hi))
        channels.append((plane - lo) / max(hi - lo, 1e-12))
    colour_p = np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)
    colour_n = (0.5 + 0.5 * np.stack(normals, axis=-1)).astype(np.float32)
    return GeometryView(colour_p, colour_n, tuple(ranges), space)
