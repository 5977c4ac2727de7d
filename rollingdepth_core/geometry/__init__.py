"""Depth in the shot's 3D: a per-frame pinhole camera, depth -> position P and normals N, and
the projection back (pure functions, no pipeline; :mod:`.camera`, :mod:`.position`)."""

from .camera import PinholeCamera, euler_matrix, fov_camera, pixel_rays, placement
from .position import (
    MAX_JUMP,
    SPACES,
    connected_neighbours,
    depth_normals,
    depth_to_position,
    normal_planes,
    position_planes,
    project_points,
)

__all__ = [
    "MAX_JUMP",
    "SPACES",
    "PinholeCamera",
    "connected_neighbours",
    "depth_normals",
    "depth_to_position",
    "euler_matrix",
    "fov_camera",
    "pixel_rays",
    "placement",
    "normal_planes",
    "position_planes",
    "project_points",
]
