"""Depth + camera -> world position P and normals N, and back: pure functions on arrays.

Depth here is planar: the distance along the camera's view axis (-Z in camera space), not
along the ray, in scene units. That is what the engine writes in ``--depth-mode depth`` with
``--anchors`` (or with ``--near``/``--far`` as the units), what Cycles' Depth pass holds, and
what Nuke's and Blender's Z mean. A point of planar depth ``Z`` seen through pixel ``(x, y)``
is ``Z * ray(x, y)`` with :func:`.camera.pixel_rays` (z = -1), in camera space.

Normals come from P by finite differences that never reach across a depth edge (computed
plane by plane from the depth and the camera's rays, which is what P's differences are). Two
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


def _along(array: np.ndarray, axis: int, start: int | None, stop: int | None) -> np.ndarray:
    """``array[start:stop]`` along ``axis`` (0: rows, 1: columns), a view."""
    return array[start:stop] if axis == 0 else array[:, start:stop]


def _agree(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether two inverse-depth steps continue one plane (equal within the tolerance)."""
    return np.abs(a - b) <= PLANAR_STEP_TOLERANCE * np.maximum(np.abs(a), np.abs(b))


def connected_neighbours(depth: np.ndarray, axis: int, max_jump: float = MAX_JUMP) -> np.ndarray:
    """Whether each pixel and its next neighbour along ``axis`` (1: to the right, 0: below)
    lie on one surface: ``[H,W-1]`` (axis 1) or ``[H-1,W]`` (axis 0), see the module text."""
    depth = check_depth(depth)
    return _connected(depth, _steps(depth, axis), axis, max_jump)


def _steps(depth: np.ndarray, axis: int) -> np.ndarray:
    """Inverse-depth steps along ``axis`` (step i: from pixel i to pixel i+1)."""
    inverse = np.float32(1.0) / depth
    return _along(inverse, axis, 1, None) - _along(inverse, axis, None, -1)


def _connected(depth, step, axis: int, max_jump: float) -> np.ndarray:
    ahead, here = _along(depth, axis, 1, None), _along(depth, axis, None, -1)
    link = np.abs(ahead - here) <= np.float32(max_jump) * np.minimum(ahead, here)
    n = step.shape[axis]
    if n > 2:
        agree = _agree(_along(step, axis, 1, None), _along(step, axis, None, -1))  # i vs i+1
        # both neighbouring steps: one step beside a jump may match the jump by chance
        _along(link, axis, 1, -1)[...] |= _along(agree, axis, 1, None) & _along(
            agree, axis, None, -1
        )
    return link


def _line_choice(depth: np.ndarray, axis: int, max_jump: float):
    """Per pixel along ``axis``, ``[H,W]`` masks: use the forward difference, the backward
    one (both: their sum, the central difference), or neither.

    Both neighbours connected: central where the two steps continue one plane; at a crease
    (both connected, steps unlike) the side whose step continues into the next pixel's (that
    side is one flat face; the smaller step if both are), central if neither is (a curved or
    noisy surface). One neighbour connected: that side if its step continues into the next
    one (a face one or two pixels wide would otherwise lend its neighbour's slope)."""
    step = _steps(depth, axis)  # n-1 along axis
    link = _connected(depth, step, axis, max_jump)  # n-1 along axis
    shape = depth.shape
    ahead = np.zeros(shape, bool)  # pair (i, i+1) connected
    behind = np.zeros(shape, bool)  # pair (i-1, i) connected
    _along(ahead, axis, None, -1)[...] = link
    _along(behind, axis, 1, None)[...] = link
    central = np.zeros(shape, bool)  # steps i-1 and i continue one plane
    forward_flat = np.zeros(shape, bool)  # step i continues into step i+1, same surface
    backward_flat = np.zeros(shape, bool)  # step i-1 continues step i-2
    small_forward = np.zeros(shape, bool)  # |step i| <= |step i-1|
    if shape[axis] > 2:
        agree = _agree(_along(step, axis, 1, None), _along(step, axis, None, -1))  # n-2
        _along(central, axis, 1, -1)[...] = agree
        _along(forward_flat, axis, None, -2)[...] = agree & _along(link, axis, 1, None)
        _along(backward_flat, axis, 2, None)[...] = agree & _along(link, axis, None, -1)
        magnitude = np.abs(step)
        _along(small_forward, axis, 1, -1)[...] = _along(magnitude, axis, 1, None) <= _along(
            magnitude, axis, None, -1
        )
    both = ahead & behind
    crease = both & ~central
    pick_forward = forward_flat & (~backward_flat | small_forward)
    pick_backward = backward_flat & ~pick_forward
    use_forward = (ahead & ~behind & forward_flat) | (both & ~(crease & pick_backward))
    use_backward = (behind & ~ahead & backward_flat) | (both & ~(crease & pick_forward))
    return use_forward, use_backward


def _ray_coordinates(camera: PinholeCamera, size: tuple[int, int]):
    """The rays' x per column ``[1,W]`` and y per row ``[H,1]`` (z = -1), float32."""
    rays = pixel_rays(camera, (1, size[1]))[0, :, 0], pixel_rays(camera, (size[0], 1))[:, 0, 1]
    return rays[0].astype(np.float32)[None, :], rays[1].astype(np.float32)[:, None]


def _to_space(planes, camera: PinholeCamera, space: str, normals: bool = False):
    """Camera-space planes (x, y, z) moved into ``space``: points by the camera's placement,
    normals by its inverse transpose (renormalised when the placement carries a scale)."""
    if space not in SPACES:
        raise ConfigError(f"`space` must be one of {', '.join(SPACES)}; got {space!r}")
    if space == "camera":
        return list(planes)
    matrix = np.asarray(camera.to_world, np.float64)
    linear = matrix[:3, :3]
    rigid = np.allclose(linear.T @ linear, np.eye(3), atol=1e-6)
    if normals and not rigid:
        linear = np.linalg.inv(linear).T
    out = []
    for row in range(3):
        plane = planes[0] * np.float32(linear[row, 0])
        plane += planes[1] * np.float32(linear[row, 1])
        plane += planes[2] * np.float32(linear[row, 2])
        if not normals:
            plane += np.float32(matrix[row, 3])
        out.append(plane)
    if normals and not rigid:
        length = np.sqrt(out[0] * out[0] + out[1] * out[1] + out[2] * out[2])
        length[length == 0] = 1
        out = [plane / length for plane in out]
    return out


def position_planes(depth: np.ndarray, camera: PinholeCamera, space: str = "world"):
    """P as three float32 ``[H,W]`` planes (x, y, z) in ``space``; see :func:`depth_to_position`."""
    depth = check_depth(depth)
    ray_x, ray_y = _ray_coordinates(camera, depth.shape)
    return _to_space([depth * ray_x, depth * ray_y, -depth], camera, space)


def _difference(plane, axis, forward, backward) -> np.ndarray:
    """The chosen difference of ``plane`` along ``axis``: ``p[i+1] - p[i]`` where
    ``forward``, plus ``p[i] - p[i-1]`` where ``backward`` (both: the central difference)."""
    step = _along(plane, axis, 1, None) - _along(plane, axis, None, -1)  # p[i+1] - p[i]
    out = np.zeros(plane.shape, np.float32)
    _along(out, axis, None, -1)[...] = np.where(_along(forward, axis, None, -1), step, 0)
    _along(out, axis, 1, None)[...] += np.where(_along(backward, axis, 1, None), step, 0)
    return out


def normal_planes(
    depth: np.ndarray, camera: PinholeCamera, space: str = "world", max_jump: float = MAX_JUMP
):
    """N as three float32 ``[H,W]`` planes in ``space`` and ``valid`` ``[H,W]``; see
    :func:`depth_normals`.

    In camera space P = (Z x, Z y, -Z) with x fixed per column and y per row, so the tangent
    along a row is (d(Zx), y dZ, -dZ) and down a column (x dZ', d(Zy)', -dZ'); their cross
    product, written out, needs four difference planes instead of six."""
    depth = check_depth(depth)
    ray_x, ray_y = _ray_coordinates(camera, depth.shape)
    forward, backward = _line_choice(depth, 1, max_jump)  # along a row (to the right)
    valid = forward | backward
    across = _difference(depth * ray_x, 1, forward, backward)  # d(Zx) along the row
    dz_row = _difference(depth, 1, forward, backward)
    forward, backward = _line_choice(depth, 0, max_jump)  # down a column
    valid &= forward | backward
    down = _difference(depth * ray_y, 0, forward, backward)  # d(Zy) down the column
    dz_col = _difference(depth, 0, forward, backward)
    # down x right (right x down points into the screen: this faces the camera)
    nx = dz_row * (dz_col * ray_y - down)
    ny = dz_col * (dz_row * ray_x - across)
    nz = dz_col * ray_x * dz_row * ray_y - down * across
    length = np.sqrt(nx * nx + ny * ny + nz * nz)
    valid &= length > 0
    inverse = np.divide(np.float32(1.0), length, out=np.zeros_like(length), where=valid)
    return _to_space([nx * inverse, ny * inverse, nz * inverse], camera, space, True), valid


def depth_to_position(depth: np.ndarray, camera: PinholeCamera, space: str = "world") -> np.ndarray:
    """World (or camera) position ``[H,W,3]`` float32 of every pixel of planar ``depth``
    ``[H,W]`` seen by ``camera`` (its film back spans the whole map)."""
    return np.stack(position_planes(depth, camera, space), axis=-1)


def depth_normals(
    depth: np.ndarray, camera: PinholeCamera, space: str = "world", max_jump: float = MAX_JUMP
) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals ``[H,W,3]`` float32 of the surface planar ``depth`` ``[H,W]`` shows
    through ``camera``, in ``space``, facing the camera, and ``valid`` ``[H,W]`` bool: from
    the differences of P between connected neighbours (:func:`connected_neighbours`; at a
    crease, the side that continues a plane); a pixel with no usable neighbour on a line gets
    ``(0, 0, 0)`` and ``valid = False``."""
    planes, valid = normal_planes(depth, camera, space, max_jump)
    return np.stack(planes, axis=-1), valid


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
