"""Depth + camera -> world position P and normals N, and back: pure functions on arrays.

Depth here is planar: the distance along the camera's view axis (-Z in camera space), not
along the ray, in scene units. That is what the engine writes in ``--depth-mode depth`` with
``--anchors`` (or with ``--near``/``--far`` as the units), what Cycles' Depth pass holds, and
what Nuke's and Blender's Z mean. A point of planar depth ``Z`` seen through pixel ``(x, y)``
is ``Z * ray(x, y)`` with :func:`.camera.pixel_rays` (z = -1), in camera space.

Normals come from finite differences between neighbours on one surface, never across a
depth edge: the slopes of inverse depth, which on a plane are affine in the rays' x and y and
give the plane's normal exactly (the normal of P's differences there; see
:func:`normal_planes`). Two neighbouring pixels are *connected* when their depths differ by at
most ``max_jump`` of the nearer one, or when the step between them continues the step beside
it on the same line (on a plane, inverse depth is affine in pixel coordinates, so a plane seen
at a grazing angle takes big but equal steps, while a silhouette takes one step unlike the
steps on both sides of it). Each pixel takes the central difference where both neighbours on
a line are connected, the one-sided difference where one is, and no normal where neither is
on either line: such pixels get ``N = (0, 0, 0)`` and ``valid = False`` rather than an
average of two surfaces.

Everything is float32 array arithmetic on views, with no masked selects (``np.where`` costs
as much as ~15 plain operations here), and N is computed in bands of rows whose temporaries
stay in the cache: at 1920x1080, on one idle core, P takes ~6 ms and N ~25 ms (~90 ms
before; benchmarks/passes_bench.py prints both).
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


def connected_neighbours(depth: np.ndarray, axis: int, max_jump: float = MAX_JUMP) -> np.ndarray:
    """Whether each pixel and its next neighbour along ``axis`` (1: to the right, 0: below)
    lie on one surface: ``[H,W-1]`` (axis 1) or ``[H-1,W]`` (axis 0), see the module text."""
    depth = check_depth(depth)
    return _Line(depth, np.float32(1.0) / depth, axis, max_jump).link


class _Line:
    """The steps along one axis and which of them join one surface (``n`` pixels along the
    axis, step ``i`` from pixel ``i`` to ``i + 1``). Built from float32 views with no
    ``np.where`` (a masked select costs ~15 float operations on these machines)."""

    def __init__(self, depth: np.ndarray, inverse: np.ndarray, axis: int, max_jump: float):
        self.axis = axis
        step = _along(inverse, axis, 1, None) - _along(inverse, axis, None, -1)  # n-1
        ahead, here = _along(depth, axis, 1, None), _along(depth, axis, None, -1)
        link = np.abs(ahead - here) <= np.minimum(ahead, here) * np.float32(max_jump)
        self.step, self.link, self.agree = step, link, None
        self.magnitude = magnitude = np.abs(step)
        if step.shape[axis] > 1:
            # step i+1 continues step i (one plane: inverse depth affine in the pixel), n-2
            bound = np.maximum(_along(magnitude, axis, 1, None), _along(magnitude, axis, None, -1))
            bound *= np.float32(PLANAR_STEP_TOLERANCE)
            change = _along(step, axis, 1, None) - _along(step, axis, None, -1)
            self.agree = np.abs(change, out=change) <= bound
            # both neighbouring steps: one step beside a jump may match the jump by chance
            _along(link, axis, 1, -1)[...] |= _along(self.agree, axis, 1, None) & _along(
                self.agree, axis, None, -1
            )

    def choice(self) -> tuple[np.ndarray, np.ndarray]:
        """Per pixel, ``[H,W]`` masks: use the forward difference, the backward one (both:
        their mean, the central difference), or neither.

        Both neighbours connected: central where the two steps continue one plane; at a
        crease (both connected, steps unlike) the side whose step continues into the next
        pixel's (that side is one flat face; the smaller step if both are), central if
        neither is (a curved or noisy surface). One neighbour connected: that side if its
        step continues into the next one (a face one or two pixels wide would otherwise lend
        its neighbour's slope)."""
        axis, link, agree = self.axis, self.link, self.agree
        shape = list(link.shape)
        shape[axis] += 1
        ahead = np.zeros(shape, bool)  # pair (i, i+1) connected
        behind = np.zeros(shape, bool)  # pair (i-1, i) connected
        _along(ahead, axis, None, -1)[...] = link
        _along(behind, axis, 1, None)[...] = link
        central = np.zeros(shape, bool)  # steps i-1 and i continue one plane
        forward_flat = np.zeros(shape, bool)  # step i continues into step i+1, same surface
        backward_flat = np.zeros(shape, bool)  # step i-1 continues step i-2
        small_forward = np.zeros(shape, bool)  # |step i| <= |step i-1|
        if agree is not None:
            magnitude = self.magnitude
            _along(central, axis, 1, -1)[...] = agree
            np.logical_and(agree, _along(link, axis, 1, None),
                           out=_along(forward_flat, axis, None, -2))  # fmt: skip
            np.logical_and(agree, _along(link, axis, None, -1),
                           out=_along(backward_flat, axis, 2, None))  # fmt: skip
            np.less_equal(_along(magnitude, axis, 1, None), _along(magnitude, axis, None, -1),
                          out=_along(small_forward, axis, 1, -1))  # fmt: skip
        both = ahead & behind
        crease = both & ~central
        pick_forward = forward_flat & (~backward_flat | small_forward)
        pick_backward = backward_flat & ~pick_forward
        use_forward = (ahead & ~behind & forward_flat) | (both & ~(crease & pick_backward))
        use_backward = (behind & ~ahead & backward_flat) | (both & ~(crease & pick_forward))
        return use_forward, use_backward

    def slope(self, forward: np.ndarray, backward: np.ndarray, scale: float) -> np.ndarray:
        """``scale`` x the chosen step of inverse depth per pixel ``[H,W]`` float32: the
        forward step, the backward one, their mean where both are chosen, 0 where neither."""
        axis, step = self.axis, self.step
        half = np.float32(0.5 * scale)
        # weights: scale for one side alone, scale / 2 each for both, 0 for none
        ahead = forward.astype(np.float32)
        behind = backward.astype(np.float32)
        weight_ahead = ahead * (np.float32(scale) - behind * half)
        weight_behind = behind * (np.float32(scale) - ahead * half)
        out = np.zeros(forward.shape, np.float32)
        np.multiply(step, _along(weight_ahead, axis, None, -1), out=_along(out, axis, None, -1))
        _along(out, axis, 1, None)[...] += step * _along(weight_behind, axis, 1, None)
        return out


def _ray_coordinates(camera: PinholeCamera, size: tuple[int, int]):
    """The rays' x per column ``[1,W]`` and y per row ``[H,1]`` (z = -1), float64."""
    return pixel_rays(camera, (1, size[1]))[0, :, 0][None, :], pixel_rays(camera, (size[0], 1))[
        :, 0, 1
    ][:, None]


def _linear(camera: PinholeCamera, space: str, normals: bool = False):
    """The [3,3] map from camera space into ``space`` (None: camera space itself) and its
    translation [3]: points move by the camera's placement, normals by its inverse
    transpose (the same rotation when the placement carries no scale)."""
    if space not in SPACES:
        raise ConfigError(f"`space` must be one of {', '.join(SPACES)}; got {space!r}")
    if space == "camera":
        return None, np.zeros(3)
    matrix = np.asarray(camera.to_world, np.float64)
    linear = matrix[:3, :3]
    rigid = np.allclose(linear.T @ linear, np.eye(3), atol=1e-6)
    if normals and not rigid:
        linear = np.linalg.inv(linear).T
    return linear, matrix[:3, 3]


def position_planes(depth: np.ndarray, camera: PinholeCamera, space: str = "world"):
    """P as three float32 ``[H,W]`` planes (x, y, z) in ``space``; see :func:`depth_to_position`.

    P = Z (L r) + t for the pixel's camera-space ray r = (x, y, -1), so each plane is the
    depth times one row of the rays moved into ``space`` (x per column, y per row: a
    broadcast sum), plus the camera's offset."""
    depth = check_depth(depth)
    linear, offset = _linear(camera, space)
    ray_x, ray_y = _ray_coordinates(camera, depth.shape)
    if linear is None:
        linear = np.eye(3)
    planes = []
    for row in range(3):
        # rays[row] = L[row,0] x + L[row,1] y - L[row,2]: [1,W] + [H,1] -> [H,W]
        across = (linear[row, 0] * ray_x - linear[row, 2]).astype(np.float32)
        down = (linear[row, 1] * ray_y).astype(np.float32)
        plane = np.add(across, down)
        plane *= depth
        if offset[row]:
            plane += np.float32(offset[row])
        planes.append(plane)
    return planes


def normal_planes(
    depth: np.ndarray, camera: PinholeCamera, space: str = "world", max_jump: float = MAX_JUMP
):
    """N as three float32 ``[H,W]`` planes in ``space`` and ``valid`` ``[H,W]``; see
    :func:`depth_normals`.

    On a plane ``n . p = d`` seen through ray ``r = (x, y, -1)`` at planar depth Z, the
    inverse depth ``w = 1/Z = (n . r) / d`` is affine in (x, y), so its slopes give the
    plane: ``n / d = (w_x, w_y, x w_x + y w_y - w)``. The slopes come from the chosen
    differences of ``w`` between connected neighbours (the differences P's tangents would
    take, so the normal is exactly the plane's wherever the neighbours lie on one plane).
    Negated, the normal faces the camera (``n . r < 0``)."""
    depth = check_depth(depth)
    linear, _ = _linear(camera, space, normals=True)
    ray_x, ray_y = _ray_coordinates(camera, depth.shape)
    # ray steps per pixel (:func:`.camera.pixel_rays`): one column to the right (x grows),
    # one row down (y falls)
    dx = camera.film_back[0] / camera.focal_length / depth.shape[1]
    dy = -camera.film_back[1] / camera.focal_length / depth.shape[0]
    height = depth.shape[0]
    planes = [np.empty(depth.shape, np.float32) for _ in range(3)]
    valid = np.empty(depth.shape, bool)
    # band by band, so the dozens of temporaries stay in the cache (2x faster at 1080p); a
    # pixel's normal depends on the rows up to HALO away, which each band reads beyond its own
    for top in range(0, height, BAND_ROWS):
        bottom = min(top + BAND_ROWS, height)
        first, last = max(0, top - HALO), min(height, bottom + HALO)
        band, band_valid = _band_normals(depth[first:last], ray_x, ray_y[first:last], dx, dy,
                                         linear, max_jump)  # fmt: skip
        inner = slice(top - first, bottom - first)
        for plane, part in zip(planes, band, strict=True):
            plane[top:bottom] = part[inner]
        valid[top:bottom] = band_valid[inner]
    return planes, valid


BAND_ROWS = 96
HALO = 3  # rows: a pixel's choice reads the steps of the pixels up to 3 away (see _Line)


def _band_normals(depth, ray_x, ray_y, dx: float, dy: float, linear, max_jump: float):
    """:func:`normal_planes` of the rows ``depth`` (``[h,W]``, with their rays ``ray_y``)."""
    inverse = np.float32(1.0) / depth  # [h,W] w
    across, down = _Line(depth, inverse, 1, max_jump), _Line(depth, inverse, 0, max_jump)
    forward, backward = across.choice()
    valid = forward | backward
    a = across.slope(forward, backward, -1.0 / dx)  # -w_x
    forward, backward = down.choice()
    valid &= forward | backward
    b = down.slope(forward, backward, -1.0 / dy)  # -w_y
    # in camera space: (a, b, c) with c = w + x a + y b; moved by L: row r is
    # a (L[r,0] + L[r,2] x) + b (L[r,1] + L[r,2] y) + L[r,2] w (x per column, y per row)
    if linear is None:
        c = a * ray_x.astype(np.float32)
        c += b * ray_y.astype(np.float32)
        c += inverse
        planes = [a, b, c]
    else:
        planes = []
        for row in range(3):
            plane = a * (linear[row, 0] + linear[row, 2] * ray_x).astype(np.float32)
            plane += b * (linear[row, 1] + linear[row, 2] * ray_y).astype(np.float32)
            plane += inverse * np.float32(linear[row, 2])
            planes.append(plane)
    length = planes[0] * planes[0]
    length += planes[1] * planes[1]
    length += planes[2] * planes[2]
    np.sqrt(length, out=length)
    valid &= length > 0
    length += ~valid  # no division by 0: those pixels get (0, 0, 0), no normal given
    np.divide(valid, length, out=length)
    for plane in planes:
        plane *= length
    return planes, valid


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
