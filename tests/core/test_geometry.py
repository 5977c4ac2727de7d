"""rollingdepth_core.geometry: depth + pinhole camera -> P, N and back, on analytic scenes.
(The proof against a renderer is tests/blender/test_geometry_cycles.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from rollingdepth_core.errors import ConfigError
from rollingdepth_core.geometry import (
    PinholeCamera,
    depth_normals,
    depth_to_position,
    euler_matrix,
    fov_camera,
    pixel_rays,
    placement,
    project_points,
)


def _camera(size=(48, 64)) -> PinholeCamera:
    h, w = size
    rotation = euler_matrix((-20.0, 10.0, 5.0), "ZXY")
    return PinholeCamera(30.0, (36.0, 36.0 * h / w), placement((1.0, 2.0, 3.0), rotation))


def _plane_depth(camera: PinholeCamera, size, normal, offset) -> np.ndarray:
    """Planar depth of the world plane ``normal . X = offset`` through every pixel centre."""
    rays = pixel_rays(camera, size)  # camera space, z = -1
    matrix = camera.to_world
    world_rays = rays @ matrix[:3, :3].T
    centre = matrix[:3, 3]
    return ((offset - normal @ centre) / (world_rays @ normal)).astype(np.float32)


def test_pixel_rays_go_through_pixel_centres():
    cam = fov_camera(90.0, 1.0)  # tan(45 deg) = 1: the film's edge at x/z = 1
    rays = pixel_rays(cam, (2, 2))
    np.testing.assert_allclose(rays[0, 0], (-0.5, 0.5, -1.0))  # top left: left and up
    np.testing.assert_allclose(rays[1, 1], (0.5, -0.5, -1.0))


def test_euler_order_applies_the_first_letter_first():
    rz = euler_matrix((0.0, 0.0, 90.0), "ZXY")
    rx = euler_matrix((90.0, 0.0, 0.0), "ZXY")
    np.testing.assert_allclose(euler_matrix((90.0, 0.0, 90.0), "ZXY"), rx @ rz, atol=1e-12)
    np.testing.assert_allclose(euler_matrix((90.0, 0.0, 90.0), "XYZ"), rz @ rx, atol=1e-12)
    with pytest.raises(ConfigError, match="permutation"):
        euler_matrix((0, 0, 0), "XXY")


def test_plane_positions_normals_and_round_trip():
    size = (48, 64)
    cam = _camera(size)
    normal = np.array([0.2, 0.3, 1.0]) / np.linalg.norm([0.2, 0.3, 1.0])
    depth = _plane_depth(cam, size, normal, -5.0)
    assert (depth > 0).all()
    P = depth_to_position(depth, cam)
    np.testing.assert_allclose(P @ normal, -5.0, atol=2e-5)
    N, valid = depth_normals(depth, cam)
    assert valid.all()
    facing = normal if normal @ (cam.position - P[0, 0]) > 0 else -normal
    assert np.degrees(np.arccos(np.clip(N @ facing, -1, 1))).max() < 0.05
    pixels, z = project_points(P, cam, size)
    ys, xs = np.mgrid[0 : size[0], 0 : size[1]]
    np.testing.assert_allclose(pixels, np.stack([xs + 0.5, ys + 0.5], -1), atol=1e-3)
    np.testing.assert_allclose(z, depth, rtol=1e-5)


def test_camera_space_ignores_the_placement():
    cam = _camera()
    depth = np.full((48, 64), 4.0, np.float32)
    P = depth_to_position(depth, cam, space="camera")
    np.testing.assert_allclose(P[..., 2], -4.0)
    N, valid = depth_normals(depth, cam, space="camera")
    np.testing.assert_allclose(N[valid], np.broadcast_to([0, 0, 1.0], N[valid].shape), atol=1e-5)
    # in world space the same normal is the camera's +Z axis
    world, _ = depth_normals(depth, cam)
    np.testing.assert_allclose(world[valid][0], cam.to_world[:3, 2], atol=1e-5)


def test_normals_never_average_across_a_depth_edge():
    """A card 2 units away in front of a wall 10 away, both facing the camera: every normal
    given is the wall's or the card's (+Z in camera space), none tilted by the jump."""
    size = (40, 40)
    cam = fov_camera(40.0, 1.0)
    depth = np.full(size, 10.0, np.float32)
    depth[10:30, 12:28] = 2.0
    N, valid = depth_normals(depth, cam)
    angle = np.degrees(np.arccos(np.clip(N[..., 2], -1, 1)))
    assert angle[valid].max() < 0.05  # float32 rounding
    # the card's own border pixels keep a normal from their own side
    assert valid[10, 12:28].all() and valid[29, 12:28].all()
    assert (N[~valid] == 0).all()


def test_a_one_pixel_sliver_is_marked_not_given_a_neighbours_normal():
    size = (20, 20)
    cam = fov_camera(40.0, 1.0)
    depth = np.full(size, 10.0, np.float32)
    depth[:, 10] = 3.0  # a pole one pixel wide: no horizontal neighbour on its surface
    N, valid = depth_normals(depth, cam)
    assert not valid[:, 10].any()
    assert (N[:, 10] == 0).all()


def test_a_grazing_plane_keeps_its_normals():
    """A floor seen almost edge-on: neighbouring depths differ by far more than 5 %, yet the
    steps in inverse depth are equal, so the floor stays connected."""
    size = (48, 64)
    cam = PinholeCamera(
        30.0, (36.0, 27.0), placement((0, 0, 0.3), euler_matrix((88.0, 0, 0), "XYZ"))
    )
    up = np.array([0.0, 0.0, 1.0])
    rays = pixel_rays(cam, size) @ cam.to_world[:3, :3].T
    floor = rays @ up < -1e-3  # pixels that see the floor
    depth = np.where(floor, _plane_depth(cam, size, up, 0.0), 1000.0).astype(np.float32)
    jump = np.abs(np.diff(depth, axis=0)) / np.minimum(depth[1:], depth[:-1])
    assert jump[floor[1:] & floor[:-1]].max() > 0.05
    N, valid = depth_normals(depth, cam)
    inner = floor & np.roll(floor, 2, 0)
    inner[-2:] = False
    assert valid[inner].mean() > 0.97
    assert np.degrees(np.arccos(np.clip(N[inner & valid] @ up, -1, 1))).max() < 0.5


def test_normals_follow_a_scaled_placement():
    """A camera transform with a scale (as USD exporters write): normals stay unit and
    perpendicular to the surface in world space."""
    size = (48, 64)
    cam = _camera(size)
    scaled = cam.to_world.copy()
    scaled[:3, :3] = scaled[:3, :3] @ np.diag([1.0, 1.0, 2.0])
    cam = PinholeCamera(cam.focal_length, cam.film_back, scaled)
    normal = np.array([0.2, 0.3, 1.0]) / np.linalg.norm([0.2, 0.3, 1.0])
    depth = _plane_depth(cam, size, normal, -5.0)
    N, valid = depth_normals(depth, cam)
    P = depth_to_position(depth, cam)
    tangent = P[10, 20] - P[30, 40]
    assert valid.all()
    assert np.abs(N @ tangent).max() < 1e-4 * np.linalg.norm(tangent)
    np.testing.assert_allclose(np.linalg.norm(N, axis=-1), 1.0, atol=1e-5)


def test_bad_depth_is_refused():
    cam = _camera()
    with pytest.raises(ConfigError, match="positive and finite"):
        depth_to_position(np.array([[1.0, np.nan]], np.float32), cam)
    with pytest.raises(ConfigError, match=r"\[H,W\]"):
        depth_to_position(np.ones(5, np.float32), cam)
    with pytest.raises(ConfigError, match="space"):
        depth_to_position(np.ones((2, 2), np.float32), cam, space="screen")
