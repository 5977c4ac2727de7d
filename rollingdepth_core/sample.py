"""A synthetic plate: textured ground, a back wall and a ball that rolls towards the camera.

Used by ``rollingdepth selftest``, the README's sample run and the benchmarks, so that none of
them needs footage on disk.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def sample_frame(index: int, n_frames: int, height: int, width: int) -> np.ndarray:
    """Frame ``index`` of the clip: float32 RGB ``[H,W,3]`` in [0,1]."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y /= max(height - 1, 1)
    x /= max(width - 1, 1)
    phase = index / max(n_frames - 1, 1)
    horizon = 0.45
    ground = y > horizon
    # perspective checkerboard on the ground, vertical stripes on the wall, panning with time
    depth_ground = np.where(ground, 0.08 / np.maximum(y - horizon, 1e-3), 1.0)
    checks = (
        np.floor(depth_ground * 6 + phase * 2)
        + np.floor((x - 0.5 + phase * 0.3) * 8 / depth_ground.clip(0.3))
    ) % 2
    wall = 0.5 + 0.4 * np.sin((x + phase * 0.2) * 40)
    shade = np.where(ground, 0.35 + 0.4 * checks, 0.25 + 0.3 * wall)
    rgb = np.stack([shade * 0.9, shade * 0.8, shade * 0.7], axis=-1)
    # the ball grows as it approaches
    cx, cy = 0.3 + 0.4 * phase, 0.55 + 0.15 * phase
    radius = 0.08 + 0.18 * phase
    aspect = width / height
    dist = np.sqrt(((x - cx) * aspect) ** 2 + (y - cy) ** 2)
    ball = dist < radius
    light = np.clip(1.0 - dist / radius, 0, 1) ** 0.5
    rgb[ball] = np.stack([0.9 * light, 0.3 * light, 0.2 * light], axis=-1)[ball]
    return np.clip(rgb, 0, 1).astype(np.float32)


def write_sample_video(
    path: str | Path,
    n_frames: int = 24,
    height: int = 144,
    width: int = 256,
    fps: Fraction = Fraction(24000, 1001),
) -> Path:
    """Encode the clip as h264 (yuv420p) with an exact frame rate."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "12"}
        for i in range(n_frames):
            rgb = (sample_frame(i, n_frames, height, width) * 255 + 0.5).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
