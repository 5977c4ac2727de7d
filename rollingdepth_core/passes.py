"""The P and N passes of a written frame, and what the points file takes from it.

The one writer (:func:`.output.write_depth_frames`) hands every frame's values, at the written
resolution (after the edge-aware upsampling, whose hard edges the normals then respect), to
:meth:`FrameGeometry.channels`: planar depth in scene units -> world position P and normals N
through that frame's camera (:mod:`.geometry`), as float32 ``P.X P.Y P.Z`` and ``N.X N.Y N.Z``
channels. Normals at depth edges (no neighbour on the same surface) are ``(0, 0, 0)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import protocol
from .cameras import CameraTrack
from .config import HALF_MAX
from .errors import ConfigError, OutputError
from .geometry import normal_planes, position_planes

SCENE_UNIT_MODES = ("depth", "inverse")  # "inverse" only when anchored: 1/Z in scene units


def wanted_passes(passes: tuple[str, ...] | None, camera_given: bool) -> tuple[str, ...]:
    """The passes a run writes: as listed, or by default Z, and P and N with a camera."""
    if passes is not None:
        return tuple(passes)
    return protocol.PASSES if camera_given else ("Z",)


def check_passes(
    passes: tuple[str, ...], camera_given: bool, depth_mode: str, anchored: bool,
    points: bool = False,
) -> None:  # fmt: skip
    """ConfigError unless the passes (and ``--points``) can be computed: P and N need a
    camera and depth in scene units (``--depth-mode depth``, or anchored 1/Z)."""
    geometric = [p for p in passes if p != "Z"] + (["--points"] if points else [])
    if not geometric:
        return
    what = " and ".join(f"`{p}`" for p in geometric)
    if not camera_given:
        raise ConfigError(
            f"{what} need a camera: `--camera FILE` (.usd or .chan), or `--focal-length` "
            "(with `--film-back`) or `--fov` for a fixed one"
        )
    if depth_mode == "depth" or (depth_mode == "inverse" and anchored):
        return
    raise ConfigError(
        f"{what} need depth in scene units: `--depth-mode depth` (units of `--near`/`--far`, "
        f"or anchored with `--anchors`), or `--anchors`; got `--depth-mode {depth_mode}`"
        + ("" if anchored else " without anchors")
    )


@dataclass
class FrameGeometry:
    """Per written frame: the P/N channels and header, and the points' share of them."""

    camera: CameraTrack
    passes: tuple[str, ...]
    points: object | None = None  # a .points.PointCloud collecting the frames

    def channels(
        self,
        number: int,
        values: np.ndarray,
        depth_mode: str,
        confidence: np.ndarray | None = None,
        colour: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """``values`` ``[H,W]`` (the file's Z, or 1/Z when ``depth_mode`` is inverse) of plate
        frame ``number`` -> ``{"P.X": [H,W], ...}`` float32; ``colour`` (the plate, any size,
        display RGB) and ``confidence`` ``[H,W]`` go to the points."""
        depth = values if depth_mode == "depth" else np.float32(1.0) / values  # [H,W] Z
        if not ("P" in self.passes or "N" in self.passes or self.points is not None):
            return {}
        camera = self.camera.at(number)
        position = position_planes(depth, camera)  # 3 x [H,W] world (camera space: pinhole)
        normals, valid = normal_planes(depth, camera)  # 3 x [H,W], [H,W]
        out: dict[str, np.ndarray] = {}
        for name, planes in (("P", position), ("N", normals)):
            if name in self.passes:
                out.update(zip(protocol.PASS_CHANNELS[name], planes, strict=True))
        if self.points is not None:
            pixel = camera.film_back[0] / camera.focal_length / depth.shape[1]  # at depth 1
            self.points.add(number, np.stack(position, axis=-1), valid, colour, confidence,
                            depth * np.float32(pixel))  # fmt: skip
        return out

    def header(self, number: int) -> dict[str, str | int | float]:
        """The frame's camera and the spaces P and N are in."""
        meta = self.camera.header(number)
        space = (
            "world: the camera file's world space (its units and up axis)"
            if self.camera.space == "world"
            else "camera: the camera at the origin looking down -Z, +Y up"
        )
        meta["passes"] = " ".join(self.passes)
        if "P" in self.passes:
            meta["P.space"] = space
        if "N" in self.passes:
            meta["N.space"] = space + "; unit normals facing the camera"
            meta["N.invalid"] = "0 0 0 where a pixel has no neighbour on its own surface"
        return meta


def check_half_positions(camera: CameraTrack, frame_numbers, farthest: float) -> None:
    """OutputError, before any frame is written, when ``--half`` cannot hold P: a point at
    the ``farthest`` planar depth in a corner of the picture, seen from any frame's camera."""
    worst, where = 0.0, None
    for number in frame_numbers:
        cam = camera.at(number)
        corner = math.hypot(1.0, cam.film_back[0] / 2 / cam.focal_length,
                            cam.film_back[1] / 2 / cam.focal_length)  # fmt: skip
        scale = float(np.linalg.norm(np.asarray(cam.to_world)[:3, :3], 2))
        reach = float(np.abs(cam.position).max()) + farthest * corner * scale
        if reach > worst:
            worst, where = reach, number
    if worst > HALF_MAX:
        raise OutputError(
            f"P reaches about {worst:.6g} (frame {where}), beyond the half range ({HALF_MAX:g}): "
            "drop `--half`, or leave P out with `--passes`"
        )
