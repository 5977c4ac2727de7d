"""Depth + camera -> world position P and normals N, and back: pure functions on arrays.

Depth here is planar: the distance along the camera's view axis (-Z in camera space), not
along the ray, in scene units. That is what the engine writes in ``--depth-mode depth`` with
``--anchors`` (or with ``--near``/``--far`` as the units), what Cycles' Depth pass holds, and
what Nuke's and Blender's Z mean. A point of planar depth ``Z`` seen through pixel ``(x, y)``
is ``Z * ray(x, y)`` with :func:`.camera.pixel_rays` (z = -1), in camera space.

Normals come from P by finite differences that never reach across a depth edge. Two
neighbouring pixels are *connected* when their depths differ by at most ``max_jump`` of the
nearer one, or when the step between them continues the step beside it on the same line
(on a plane, inverse depth is affine in pixel coordinates, so a plane seen at a grazing angle
takes big but equal steps, while a silhouette takes one step unlike the steps on both sides
of it). Each
pixel takes the central difference where both neighbours on a line are connected, the
one-sided difference where one is, and no normal where neither is on either line: such
pixels get ``N = (0, 0, 0)`` and ``valid = False`` rather than an average of two surfaces.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .camera import PinholeCamera, pixel_rays

SPACES = ("world", "camera")
MAX_JUMP = 0.05  # neighbours whose depths differ by more than 5 % may belong to two surfaces
PLANAR_STEP_TOLERANCE = 0.25  # a step within 25 % of the next one continues the same plane


def check_depth(depth: np.ndarray) -> np.ndarray:
    """``depth`` as float32 [H,W]; ConfigError unless it is a 2-D map of positive, finite
    values (planar depth in scene units has no other kind)."""
    depth = np.asarray(depth)
    if depth.ndim != 2 or 0 in depth.shape:
        raise ConfigError(f"`depth` must be a non-empty [H,W] map; got shape {depth.shape}")
    depth = depth.astype(np.float32, copy=False)
    if not (np.isfinite(depth).all() and (depth > 0).all()):
        raise ConfigError("`depth` must be positive and finite everywhere (planar depth)")
    return depth


def depth_to_position(depth: np.ndarray, camera: PinholeCamera, space: str = "world") -> np.ndarray:
    """World (or camera) position ``[H,W,3]`` float32 of every pixel of planar ``depth``
    ``[H,W]`` seen by ``camera`` (its film back spans the whole map)."""
    if space not in SPACES:
        raise ConfigError(f"`space` must be one of {', '.join(SPACES)}; got {space!r}")
    depth = check_depth(depth)
    rays = pixel_rays(camera, depth.shape).astype(np.float32)  # [H,W,3], z = -1
    points = rays * depth[..., None]  # [H,W,3] camera space
    if space == "camera":
        return points
    matrix = np.asarray(camera.to_world, np.float64)
    rotation = matrix[:3, :3].astype(np.float32)
    offset = matrix[:3, 3].astype(np.float32)
    return points @ rotation.T + offset  # [H,W,3] world space


def _agree(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether two inverse-depth steps continue one plane (equal within the tolerance)."""
    return np.abs(a - b) <= PLANAR_STEP_TOLERANCE * np.maximum(np.abs(a), np.abs(b))


def _steps(depth: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """The map moved so that ``axis`` is last ``[.., n]``, and its inverse-depth steps
    ``[.., n-1]`` (step i: from pixel i to pixel i+1)."""
    line = np.moveaxis(depth, axis, -1)
    inverse = 1.0 / line
    return line, inverse[..., 1:] - inverse[..., :-1]


def connected_neighbours(depth: np.ndarray, axis: int, max_jump: float = MAX_JUMP) -> np.ndarray:
    """Whether each pixel and its next neighbour along ``axis`` (1: to the right, 0: below)
    lie on one surface: ``[H,W-1]`` (axis 1) or ``[H-1,W]`` (axis 0), see the module text."""
    line, step = _steps(check_depth(depth), axis)
    near = np.minimum(line[..., 1:], line[..., :-1])
    small = np.abs(line[..., 1:] - line[..., :-1]) <= max_jump * near  # [.., n-1]
    planar = np.zeros_like(small)
    if step.shape[-1] > 2:
        agree = _agree(step[..., 1:], step[..., :-1])  # [.., n-2]: step i agrees with i+1
        # both neighbouring steps: one step beside a jump may match the jump by chance
        planar[..., 1:-1] = agree[..., 1:] & agree[..., :-1]
    return np.moveaxis(small | planar, -1, axis)


def _line_choice(depth: np.ndarray, axis: int, max_jump: float):
    """Per pixel along ``axis``, ``[.., n]`` masks moved last: use the forward difference,
    the backward one (their sum: central), or neither.

    Both neighbours connected: central where the two steps continue one plane; at a crease
    (both connected, steps unlike) the side whose step continues into the next pixel's (that
    side is one flat face; the smaller step if both are), central if neither is (a curved or
    noisy surface). One neighbour connected: that side if its step continues into the next
    one (a face one or two pixels wide would otherwise lend its neighbour's slope)."""
    _, step = _steps(depth, axis)  # [.., n-1]
    link = np.moveaxis(connected_neighbours(depth, axis, max_jump), axis, -1)  # [.., n-1]
    n = link.shape[-1] + 1
    shape = link.shape[:-1] + (n,)
    ahead = np.zeros(shape, bool)  # pair (i, i+1) connected
    behind = np.zeros(shape, bool)  # pair (i-1, i) connected
    ahead[..., :-1] = link
    behind[..., 1:] = link
    central = np.zeros(shape, bool)  # steps i-1 and i continue one plane
    forward_flat = np.zeros(shape, bool)  # step i continues into step i+1, same surface
    backward_flat = np.zeros(shape, bool)  # step i-1 continues step i-2
    small_forward = np.zeros(shape, bool)  # |step i| <= |step i-1|
    if n > 2:
        agree = _agree(step[..., 1:], step[..., :-1])  # [.., n-2]
        central[..., 1:-1] = agree
        forward_flat[..., :-2] = agree & link[..., 1:]
        backward_flat[..., 2:] = agree & link[..., :-1]
        small_forward[..., 1:-1] = np.abs(step[..., 1:]) <= np.abs(step[..., :-1])
    both = ahead & behind
    crease = both & ~central
    pick_forward = forward_flat & (~backward_flat | small_forward)
    pick_backward = backward_flat & ~pick_forward
    use_forward = (ahead & ~behind & forward_flat) | (both & ~(crease & pick_backward))
    use_backward = (behind & ~ahead & backward_flat) | (both & ~(crease & pick_forward))
    return use_forward, use_backward


def position_normals(
    position: np.ndarray, depth: np.ndarray, max_jump: float = MAX_JUMP
) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals ``[H,W,3]`` float32 of the surface ``position`` ``[H,W,3]`` (in its own
    space), facing the camera, and ``valid`` ``[H,W]`` bool; pixels with no connected
    neighbour on a line get ``(0, 0, 0)`` and ``valid = False``. ``depth`` ``[H,W]`` (planar)
    decides which neighbours are connected (:func:`connected_neighbours`) and, at a crease,
    which side's difference is taken."""
    depth = check_depth(depth)
    position = np.asarray(position, np.float32)
    if position.shape != (*depth.shape, 3):
        raise ConfigError(
            f"`position` must be [H,W,3] over the depth's {depth.shape}; got {position.shape}"
        )
    tangents = []
    valid = np.ones(depth.shape, bool)
    for axis in (1, 0):  # along a row (to the right), then down a column
        use_forward, use_backward = _line_choice(depth, axis, max_jump)  # [.., n]
        p = np.moveaxis(position, axis, -2)  # [.., n, 3]
        tangent = np.zeros_like(p)
        difference = p[..., 1:, :] - p[..., :-1, :]  # [.., n-1, 3]: p[i+1] - p[i]
        tangent[..., :-1, :] += np.where(use_forward[..., :-1, None], difference, 0)
        tangent[..., 1:, :] += np.where(use_backward[..., 1:, None], difference, 0)
        valid &= np.moveaxis(use_forward | use_backward, -1, axis)
        tangents.append(np.moveaxis(tangent, -2, axis))
    right, down = tangents
    normals = np.cross(down, right)  # right x down is into the screen: this faces the camera
    length = np.linalg.norm(normals, axis=-1)
    valid &= length > 0
    normals = np.where(valid[..., None], normals / np.where(length > 0, length, 1)[..., None], 0)
    return normals.astype(np.float32), valid


def project_points(
    points: np.ndarray, camera: PinholeCamera, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """World points ``[...,3]`` -> image coordinates ``[...,2]`` (x right, y down, in pixels;
    a pixel's centre is at ``+0.5``) in an image of ``size`` (H, W), and their planar depth
    ``[...]`` (negative: behind the camera). The inverse of :func:`depth_to_position`."""
    height, width = size
    matrix = np.asarray(camera.to_world, np.float64)
    rotation, offset = matrix[:3, :3], matrix[:3, 3]
    local = (np.asarray(points, np.float64) - offset) @ np.linalg.inv(rotation).T  # [...,3]
    depth = -local[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = local[..., 0] / depth * (camera.focal_length / camera.film_back[0])
        v = local[..., 1] / depth * (camera.focal_length / camera.film_back[1])
    pixels = np.stack([(u + 0.5) * width, (0.5 - v) * height], axis=-1)
    return pixels, depth
