"""P and N in the EXRs and the points USD, end to end through `rollingdepth run` (tiny
random model), and the pass module on its own."""

from __future__ import annotations

import numpy as np
import pytest
from pxr import Usd, UsdGeom

from rollingdepth_core.cameras import CameraRequest, load_camera
from rollingdepth_core.cli import main
from rollingdepth_core.exr import read_exr
from rollingdepth_core.geometry import depth_normals, depth_to_position
from rollingdepth_core.passes import FrameGeometry
from rollingdepth_core.points import PointCloud, grid_stride

from .plate_fixtures import make_image_sequence

NUMBERS = list(range(1001, 1007))
FAST = ["--res", "48", "--dilations", "1", "2", "--device", "cpu", "--dtype", "fp32"]
P = ("P.X", "P.Y", "P.Z")
N = ("N.X", "N.Y", "N.Z")


def stack(channels, names):
    return np.stack([channels[n] for n in names], -1)


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    # 96 x 64: larger than the processing size, so --restore-res upsamples (edge-aware)
    return make_image_sequence(tmp_path_factory.mktemp("plate"), len(NUMBERS), 96, 64)


@pytest.fixture(scope="module")
def chan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("camera")
    lines = []
    for k, f in enumerate(NUMBERS):
        lines.append(f"{f} {0.1 * k} 1.6 {4 - 0.2 * k} -8 {2 * k} 0 45")
    (folder / "cam.chan").write_text("\n".join(lines) + "\n")
    return str(folder / "cam.chan")


@pytest.fixture(scope="module")
def run_with_camera(plate, chan, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    args = ["run", plate, "-o", str(out), "--checkpoint", str(tiny_checkpoint), *FAST,
            "--depth-mode", "depth", "--near", "2", "--far", "30", "--restore-res",
            "--camera", chan, "--points", "shot.usda", "--points-budget", "500"]  # fmt: skip
    assert main(args) == 0
    return out


def test_frames_carry_p_and_n_at_the_written_resolution(run_with_camera, chan):
    track = load_camera(CameraRequest(file=chan), NUMBERS, (64, 96))
    for number in (NUMBERS[0], NUMBERS[-1]):
        channels, header = read_exr(run_with_camera / f"depth.{number}.exr")
        assert set(channels) == {"Z", *P, *N}
        assert all(header["channel_formats"][c] == "float" for c in (*P, *N))
        assert header["compression"] == "none"  # zip is 4x the write time for ~18 % of size
        assert channels["Z"].shape == (64, 96)  # the plate's size, not the processing size
        assert header["rollingdepth/camera.frame"] == number
        assert header["rollingdepth/camera.file"] == track.source
        assert header["rollingdepth/camera.sha256"] == track.sha256
        assert header["rollingdepth/P.space"].startswith("world")
        # P is the file's own Z through this frame's camera; N follows from P
        expected = depth_to_position(channels["Z"], track.at(number))
        np.testing.assert_allclose(stack(channels, P), expected, rtol=1e-6, atol=1e-6)
        normals, valid = depth_normals(channels["Z"], track.at(number))
        np.testing.assert_allclose(stack(channels, N), normals, atol=1e-6)
        length = np.linalg.norm(stack(channels, N), axis=-1)
        np.testing.assert_allclose(length[valid], 1.0, atol=1e-5)
        assert (length[~valid] == 0).all()


def test_points_stage_reads_back_with_the_camera(run_with_camera, chan):
    stage = Usd.Stage.Open(str(run_with_camera / "shot.usda"))
    assert stage.GetStartTimeCode() == NUMBERS[0] and stage.GetEndTimeCode() == NUMBERS[-1]
    points = UsdGeom.Points(stage.GetPrimAtPath("/shot/points"))
    camera = UsdGeom.Camera(stage.GetPrimAtPath("/shot/camera"))
    track = load_camera(CameraRequest(file=chan), NUMBERS, (64, 96))
    assert points.GetPointsAttr().GetTimeSamples() == NUMBERS
    trusted = UsdGeom.PrimvarsAPI(points.GetPrim()).GetPrimvar("trusted")
    step = grid_stride((64, 96), 500)
    cells = len(range(step // 2, 64, step)) * len(range(step // 2, 96, step))
    for number in NUMBERS:
        xyz = np.asarray(points.GetPointsAttr().Get(number))
        colour = np.asarray(points.GetDisplayColorAttr().Get(number))
        # the same count every frame (Blender renders a changing count on its first frame only)
        assert len(xyz) == cells <= 500 and colour.shape == xyz.shape
        assert ((colour >= 0) & (colour <= 1)).all()
        widths = np.asarray(points.GetWidthsAttr().Get(number))
        flags = np.asarray(trusted.Get(number))
        assert widths.shape == flags.shape == (len(xyz),) and 0 < flags.sum() < len(xyz)
        assert ((widths > 0) == (flags == 1)).all()  # the untrusted are there, 0 wide
        # every point is a pixel of that frame's P
        channels, _ = read_exr(run_with_camera / f"depth.{number}.exr")
        frame_p = stack(channels, P).reshape(-1, 3)
        nearest = np.abs(frame_p[None, :, :] - xyz[:, None, :]).max(-1).min(-1)
        assert nearest.max() < 1e-5
        matrix = np.array(
            UsdGeom.Xformable(camera.GetPrim()).ComputeLocalToWorldTransform(number)
        ).T
        np.testing.assert_allclose(matrix, track.at(number).to_world, atol=1e-9)
    # the written stage is itself a camera file the engine reads back
    again = load_camera(CameraRequest(file=str(run_with_camera / "shot.usda")), NUMBERS, (64, 96))
    assert again.at(1003).focal_length == pytest.approx(track.at(1003).focal_length)


def test_passes_choose_and_half_applies(plate, tiny_checkpoint, tmp_path):
    args = ["run", plate, "-o", str(tmp_path / "o"), "--checkpoint", str(tiny_checkpoint),
            *FAST, "--depth-mode", "depth", "--fov", "40", "--passes", "Z,N", "--half"]  # fmt: skip
    assert main(args) == 0
    channels, header = read_exr(tmp_path / "o" / "depth.1001.exr")
    assert set(channels) == {"Z", *N}
    assert header["channel_formats"]["N.X"] == "half"
    assert header["rollingdepth/N.space"].startswith("camera")
    assert header["rollingdepth/passes"] == "Z N"


def test_blenders_channel_beside_layers_gets_a_grey_copy_blender_shows(
    plate, tiny_checkpoint, tmp_path
):
    """Depth in Blender's `Y` beside P/N layers is also written as plain half R, G, B (Blender
    shows a layered EXR only through R G B); `Y` without layers, or `Z`, gets no copy."""
    common = [plate, "--checkpoint", str(tiny_checkpoint), *FAST, "--depth-mode", "depth",
              "--near", "2", "--far", "30", "--fov", "40", "--channel", "Y"]  # fmt: skip
    assert main(["run", *common, "-o", str(tmp_path / "pn")]) == 0
    channels, header = read_exr(tmp_path / "pn" / "depth.1003.exr")
    assert set(channels) == {"Y", "R", "G", "B", *P, *N}
    assert header["channel_formats"]["Y"] == "float"
    for name in ("R", "G", "B"):
        assert header["channel_formats"][name] == "half"
        np.testing.assert_array_equal(channels[name], channels["Y"].astype(np.float16))
    assert main(["run", *common, "-o", str(tmp_path / "z"), "--passes", "Z"]) == 0
    assert set(read_exr(tmp_path / "z" / "depth.1003.exr")[0]) == {"Y"}


def test_no_camera_writes_z_only(plate, tiny_checkpoint, tmp_path):
    args = ["run", plate, "-o", str(tmp_path / "o"), "--checkpoint", str(tiny_checkpoint), *FAST]
    assert main(args) == 0
    channels, header = read_exr(tmp_path / "o" / "depth.1001.exr")
    assert set(channels) == {"Z"} and "rollingdepth/camera.file" not in header
    assert header["compression"] == "zip"


def test_anchored_inverse_depth_gives_p_from_its_reciprocal(tmp_path):
    """Anchored ``--depth-mode inverse`` files hold 1/Z: P comes from Z, not from 1/Z."""
    track = load_camera(CameraRequest(focal_length=30.0), [1], (32, 48))
    z = np.linspace(2, 9, 32 * 48, dtype=np.float32).reshape(32, 48)
    geometry = FrameGeometry(track, ("Z", "P", "N"))
    from_inverse = geometry.channels(1, np.float32(1) / z, "inverse")
    from_depth = geometry.channels(1, z, "depth")
    np.testing.assert_allclose(from_inverse["P.Z"], -z, rtol=1e-6)
    np.testing.assert_allclose(from_inverse["P.X"], from_depth["P.X"], rtol=1e-6)


def test_point_cloud_budget_and_filter():
    cloud = PointCloud(budget=100)
    position = np.random.default_rng(0).random((60, 80, 3)).astype(np.float32)
    valid = np.ones((60, 80), bool)
    valid[:30] = False  # the top half has no normals: depth edges
    confidence = np.ones((60, 80), np.float32)
    confidence[:, :40] = 0.2  # the left half is not trusted
    colour = np.zeros((30, 40, 3), np.float32)
    colour[..., 1] = 1.0
    footprint = np.full((60, 80), 0.01, np.float32)
    cloud.add(7, position, valid, colour, confidence, footprint)
    xyz, rgb, widths, trusted = cloud.frames[7]
    step = grid_stride((60, 80), 100)
    rows, cols = np.arange(step // 2, 60, step), np.arange(step // 2, 80, step)
    assert len(xyz) == len(rows) * len(cols) <= 100  # every cell, trusted or not
    assert trusted.sum() == (rows >= 30).sum() * (cols >= 40).sum() > 0  # the bottom right
    assert (rgb == (0, 1, 0)).all()
    # a trusted point is its cell's diagonal wide; the others 0 (no renderer draws them)
    np.testing.assert_allclose(widths[trusted], 0.01 * step * np.sqrt(2), rtol=1e-6)
    assert (widths[~trusted] == 0).all()
    rows, cols = np.nonzero((position[None] == xyz[trusted][:, None, None, :]).all(-1).any(0))
    assert (rows >= 30).all() and (cols >= 40).all()


def _model_depth_at(folder, rows):
    """The run's relative inverse depth (file values) at each anchor's pixel."""
    images = {}
    out = []
    for frame, x, y in rows:
        if frame not in images:
            images[frame] = read_exr(folder / f"depth.{frame}.exr")[0]["Z"]
        out.append(float(images[frame][int(y), int(x)]))
    return np.array(out)


def test_points_lie_on_anchors_from_a_solve(plate, chan, tiny_checkpoint, tmp_path, capsys):
    """Anchors as a solve gives them (frame, pixel, planar depth of a bundle), made consistent
    with the tiny random model's own depth order (its depth is noise, which real bundles would
    contradict): the anchored run's P, and its points read back with pxr, lie on each anchor's
    3D position (the camera's ray through the anchor's pixel at the anchor's depth)."""
    common = ["--checkpoint", str(tiny_checkpoint), *FAST, "--restore-res", "--upsample",
              "bilinear"]  # fmt: skip
    relative = tmp_path / "relative"
    assert main(["run", plate, "-o", str(relative), *common, "--depth-mode", "inverse"]) == 0
    rng = np.random.default_rng(5)
    rows = [(f, int(x), int(y)) for f in NUMBERS for x, y in
            zip(rng.integers(4, 92, 8), rng.integers(4, 60, 8), strict=True)]  # fmt: skip
    d = _model_depth_at(relative, rows)
    a = (1 / 4.0 - 1 / 12.0) / (d.max() - d.min())
    b = 1 / 12.0 - a * d.min()
    depth = 1.0 / (a * d + b)  # 4 .. 12 scene units, in the model's depth order
    lines = ["frame,x,y,depth"] + [
        f"{f},{x + 0.5},{y + 0.5},{float(z)!r}" for (f, x, y), z in zip(rows, depth, strict=True)
    ]
    (tmp_path / "anchors.csv").write_text("\n".join(lines) + "\n")
    anchored = tmp_path / "anchored"
    args = ["run", plate, "-o", str(anchored), *common, "--depth-mode", "depth", "--anchors",
            str(tmp_path / "anchors.csv"), "--camera", chan, "--points", "shot.usdc",
            "--points-budget", str(96 * 64)]  # fmt: skip
    assert main(args) == 0
    track = load_camera(CameraRequest(file=chan), NUMBERS, (64, 96))
    stage = Usd.Stage.Open(str(anchored / "shot.usdc"))
    cloud = UsdGeom.Points(stage.GetPrimAtPath("/shot/points"))
    p_error, point_error = [], []
    for (frame, x, y), z in zip(rows, depth, strict=True):
        cam = track.at(frame)
        ray = (np.array([(x + 0.5) / 96 - 0.5, 0.5 - (y + 0.5) / 64]) *
               np.array(cam.film_back) / cam.focal_length)  # fmt: skip
        target = cam.to_world @ np.array([z * ray[0], z * ray[1], -z, 1.0])  # the bundle
        channels, _ = read_exr(anchored / f"depth.{frame}.exr")
        here = np.array([channels[c][y, x] for c in P])
        p_error.append(np.linalg.norm(here - target[:3]) / z)
        xyz = np.asarray(cloud.GetPointsAttr().Get(frame))
        match = np.abs(xyz - here).max(-1) < 1e-6  # this pixel's point, if it was kept
        if match.any():
            point_error.append(np.linalg.norm(xyz[match][0] - target[:3]) / z)
    with capsys.disabled():
        print(f"\nanchored P at {len(rows)} anchors: median {np.median(p_error):.2e}, max "
              f"{max(p_error):.2e} of the depth; points kept at {len(point_error)} anchors: "
              f"max {max(point_error, default=0):.2e}")  # fmt: skip
    assert np.median(p_error) < 1e-3 and max(p_error) < 1e-2
    assert point_error and max(point_error) < 1e-2


def test_half_that_cannot_hold_p_is_refused_before_any_frame(plate, tiny_checkpoint, tmp_path,
                                                             capsys):  # fmt: skip
    """A camera in survey coordinates (70 km from the origin): P does not fit in half floats;
    the run says so before writing anything."""
    lines = [f"{f} 70000 1.6 4 -8 0 0 45" for f in NUMBERS]
    (tmp_path / "far.chan").write_text("\n".join(lines) + "\n")
    out = tmp_path / "o"
    args = ["run", plate, "-o", str(out), "--checkpoint", str(tiny_checkpoint), *FAST,
            "--depth-mode", "depth", "--camera", str(tmp_path / "far.chan"), "--half"]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert "P reaches about 7" in err and "beyond the half range" in err, err
    assert not list(out.glob("depth.*.exr"))
    # without P the same run fits
    assert main([*args, "--passes", "Z,N"]) == 0
