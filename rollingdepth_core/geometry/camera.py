"""A pinhole camera per frame: where it stands, how it looks, how its film maps to pixels.

Conventions (USD's, Blender's and Nuke's cameras alike): in camera space the camera sits at the
origin looking down -Z, +Y up, +X right. ``to_world`` is the 4x4 camera-to-world matrix acting
on column vectors (``world = to_world @ [x, y, z, 1]``; the translation is its last column).
The film back (horizontal x vertical aperture, mm) is centred on the optical axis (principal
point at the image centre) and spans the whole image; pixel ``(x, y)`` (column, row, row 0 at
the top) has its centre at ``(x + 0.5, y + 0.5)``, as renderers sample it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError


@dataclass(frozen=True)
class PinholeCamera:
    """One frame's camera.

    ``focal_length`` and ``film_back`` (horizontal, vertical) are in mm (any one unit: only
    their ratios matter for the geometry); ``to_world`` is the camera-to-world matrix [4,4].
    """

    focal_length: float
    film_back: tuple[float, float]
    to_world: np.ndarray  # [4,4] float64

    def check(self, where: str = "camera") -> None:
        """ConfigError (naming ``where``) unless every value is finite and usable."""
        values = (self.focal_length, *self.film_back)
        if not all(math.isfinite(v) and v > 0 for v in values):
            raise ConfigError(
                f"{where}: focal length and film back must be positive and finite; got "
                f"focal {self.focal_length}, film back {self.film_back[0]} x {self.film_back[1]}"
            )
        matrix = np.asarray(self.to_world, np.float64)
        if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
            raise ConfigError(f"{where}: the camera's transform holds NaN or infinite values")
        linear = matrix[:3, :3]
        if not np.allclose(matrix[3], (0.0, 0.0, 0.0, 1.0)) or abs(np.linalg.det(linear)) < 1e-12:
            raise ConfigError(f"{where}: the camera's transform is not an invertible placement")

    @property
    def film_aspect(self) -> float:
        """Horizontal over vertical aperture."""
        return self.film_back[0] / self.film_back[1]

    @property
    def position(self) -> np.ndarray:
        """The camera's centre in world space [3]."""
        return np.asarray(self.to_world, np.float64)[:3, 3]


def fov_camera(
    vertical_fov_deg: float, aspect: float, to_world: np.ndarray | None = None,
    film_height: float = 24.0,
) -> PinholeCamera:  # fmt: skip
    """The camera with a vertical field of view (degrees) over an image of ``aspect`` (width /
    height of the picture, pixel aspect included); ``film_height`` (mm) only names the units
    the focal length is given in (24 mm: a full-frame still's film height)."""
    if not (math.isfinite(vertical_fov_deg) and 0 < vertical_fov_deg < 180):
        raise ConfigError(f"field of view must be in (0, 180) degrees; got {vertical_fov_deg}")
    focal = film_height / (2.0 * math.tan(math.radians(vertical_fov_deg) / 2.0))
    matrix = np.eye(4) if to_world is None else np.asarray(to_world, np.float64)
    return PinholeCamera(focal, (film_height * aspect, film_height), matrix)


def pixel_rays(camera: PinholeCamera, size: tuple[int, int]) -> np.ndarray:
    """Camera-space rays through the pixel centres of an image of ``size`` (H, W), scaled to
    unit planar depth: ``[H,W,3]`` with z = -1, so a point at planar depth Z is ``Z * ray``."""
    height, width = size
    fx = camera.focal_length / camera.film_back[0]  # focal length in image widths
    fy = camera.focal_length / camera.film_back[1]  # in image heights
    x = ((np.arange(width, dtype=np.float64) + 0.5) / width - 0.5) / fx  # [W]
    y = (0.5 - (np.arange(height, dtype=np.float64) + 0.5) / height) / fy  # [H], +Y up
    rays = np.empty((height, width, 3), np.float64)
    rays[..., 0] = x[None, :]
    rays[..., 1] = y[:, None]
    rays[..., 2] = -1.0
    return rays


def euler_matrix(degrees: tuple[float, float, float], order: str) -> np.ndarray:
    """The rotation [3,3] of Euler angles (rx, ry, rz in degrees) applied about the fixed axes
    in ``order``, the first letter first: ``"ZXY"`` (Nuke's camera default) rotates about Z,
    then X, then Y, so ``R = Ry @ Rx @ Rz`` on column vectors. Blender's rotation modes and
    Houdini's ``rOrd`` read the same way (Blender's ``XYZ`` is ``Rz @ Ry @ Rx``)."""
    order = order.upper()
    if sorted(order) != ["X", "Y", "Z"]:
        raise ConfigError(f"rotation order must be a permutation of XYZ; got {order!r}")
    rx, ry, rz = (math.radians(a) for a in degrees)
    single = {
        "X": np.array([[1, 0, 0], [0, math.cos(rx), -math.sin(rx)], [0, math.sin(rx), math.cos(rx)]]),
        "Y": np.array([[math.cos(ry), 0, math.sin(ry)], [0, 1, 0], [-math.sin(ry), 0, math.cos(ry)]]),
        "Z": np.array([[math.cos(rz), -math.sin(rz), 0], [math.sin(rz), math.cos(rz), 0], [0, 0, 1]]),
    }  # fmt: skip
    rotation = np.eye(3)
    for axis in order:
        rotation = single[axis] @ rotation
    return rotation


def placement(translate: tuple[float, float, float], rotation: np.ndarray) -> np.ndarray:
    """The camera-to-world matrix [4,4] of a rotation [3,3] then a translation."""
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = translate
    return matrix
