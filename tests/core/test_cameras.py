"""rollingdepth_core.cameras: the run's camera from USD, .chan or a lens, and the bad cameras
a run refuses before the model loads, in one line naming the file and the frame."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pxr import Gf, Usd, UsdGeom

from rollingdepth_core.cameras import CameraRequest, load_camera
from rollingdepth_core.cli import main
from rollingdepth_core.errors import ConfigError
from rollingdepth_core.geometry import euler_matrix, placement

from .plate_fixtures import make_image_sequence

NUMBERS = list(range(1001, 1007))
PLATE = (48, 72)  # height, width: aspect 1.5, a 36 x 24 film back


def write_usd(path, frames=NUMBERS, aperture=(36.0, 24.0), camera=True, shift=0.0, nan=None):
    """A stage in cm (lens values in mm) with a camera under a moving parent."""
    stage = Usd.Stage.CreateNew(str(path))
    UsdGeom.SetStageMetersPerUnit(stage, 0.01)
    rig = UsdGeom.Xform.Define(stage, "/rig")
    move = rig.AddTranslateOp()
    turn = rig.AddRotateXYZOp()
    if camera:
        cam = UsdGeom.Camera.Define(stage, "/rig/cam")
        cam.GetFocalLengthAttr().Set(35.0)
        cam.GetHorizontalApertureAttr().Set(aperture[0])
        cam.GetVerticalApertureAttr().Set(aperture[1])
        cam.GetHorizontalApertureOffsetAttr().Set(shift)
    else:
        UsdGeom.Mesh.Define(stage, "/rig/box")
    for f in frames:
        x = float("nan") if f == nan else 10.0 * f - 10000
        move.Set(Gf.Vec3d(x, 150.0, 300.0), Usd.TimeCode(f))
        turn.Set(Gf.Vec3f(80.0, 0.0, 5.0 * (f - 1000)), Usd.TimeCode(f))
    stage.GetRootLayer().Save()
    return str(path)


def write_chan(path, frames=NUMBERS, columns=8, nan=None, vfov=40.0):
    lines = []
    for f in frames:
        values = [f, 1.0 * (f - 1000), 1.5, 3.0, -10.0, 20.0 + f - 1000, 5.0, vfov][:columns]
        if f == nan:
            values[2] = float("nan")
        lines.append(" ".join(str(v) for v in values))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_usd_camera_per_frame(tmp_path):
    track = load_camera(CameraRequest(file=write_usd(tmp_path / "cam.usda")), NUMBERS, PLATE)
    stage = Usd.Stage.Open(str(tmp_path / "cam.usda"))
    prim = stage.GetPrimAtPath("/rig/cam")
    assert track.prim == "/rig/cam" and track.space == "world" and len(track.sha256) == 16
    for f in NUMBERS:
        cam = track.at(f)
        expected = np.array(UsdGeom.Xformable(prim).ComputeLocalToWorldTransform(f)).T
        np.testing.assert_allclose(cam.to_world, expected)
        np.testing.assert_allclose(cam.position, (10.0 * f - 10000, 150, 300))
        # lens values in tenths of a scene unit (cm) -> mm
        assert cam.focal_length == pytest.approx(35.0 * 100 * 0.01)
        assert cam.film_back == pytest.approx((36.0, 24.0))


def test_chan_camera_rotation_order_and_fov(tmp_path):
    path = write_chan(tmp_path / "cam.chan")
    track = load_camera(CameraRequest(file=path), NUMBERS, PLATE)
    cam = track.at(1003)
    np.testing.assert_allclose(cam.to_world, placement((3.0, 1.5, 3.0),
                               euler_matrix((-10.0, 23.0, 5.0), "ZXY")))  # fmt: skip
    half = math.atan(cam.film_back[1] / 2 / cam.focal_length)
    assert math.degrees(2 * half) == pytest.approx(40.0)
    assert cam.film_aspect == pytest.approx(1.5)
    other = load_camera(CameraRequest(file=path, rotation_order="XYZ"), NUMBERS, PLATE).at(1003)
    assert not np.allclose(other.to_world, cam.to_world)
    given = load_camera(CameraRequest(file=path, film_back=(36.0, 24.0)), NUMBERS, PLATE).at(1003)
    assert given.focal_length == pytest.approx(12.0 / math.tan(half))


def test_fixed_pinhole_from_lens_or_fov():
    lens = load_camera(CameraRequest(focal_length=50.0), NUMBERS, PLATE)
    assert lens.space == "camera" and lens.at(1001).film_back == pytest.approx((36.0, 24.0))
    np.testing.assert_array_equal(lens.at(1006).to_world, np.eye(4))
    fov = load_camera(CameraRequest(fov=30.0), NUMBERS, PLATE).at(1001)
    assert math.degrees(2 * math.atan(fov.film_back[1] / 2 / fov.focal_length)) == pytest.approx(30)


BAD = [
    ("usd_missing", lambda p: write_usd(p / "cam.usda", frames=NUMBERS[:-2]), {},
     "cam.usda frame 1005 (and 1 more): no camera on this plate frame; the file covers frames 1001-1004"),
    ("usd_nan", lambda p: write_usd(p / "cam.usda", nan=1003), {},
     "cam.usda frame 1003: the camera's transform holds NaN"),
    ("usd_no_camera", lambda p: write_usd(p / "cam.usda", camera=False), {},
     "cam.usda: the stage holds no camera (UsdGeomCamera)"),
    ("usd_aspect", lambda p: write_usd(p / "cam.usda", aperture=(36.0, 27.0)), {},
     "cam.usda frame 1001: film back 36 x 27 (aspect 1.3333) does not match the plate's aspect 1.5000"),
    ("usd_shift", lambda p: write_usd(p / "cam.usda", shift=2.0), {},
     "cam.usda frame 1001: aperture offsets (lens shift)"),
    ("chan_missing", lambda p: write_chan(p / "cam.chan", frames=NUMBERS[1:]), {},
     "cam.chan frame 1001: no camera on this plate frame; the file covers frames 1002-1006"),
    ("chan_nan", lambda p: write_chan(p / "cam.chan", nan=1004), {},
     "cam.chan frame 1004: NaN or infinite value"),
    ("chan_6_columns", lambda p: write_chan(p / "cam.chan", columns=6), {},
     "cam.chan line 1: a .chan camera has 8 columns (frame tx ty tz rx ry rz vfov); got 6"),
    ("chan_aspect", lambda p: write_chan(p / "cam.chan"), {"film_back": (36.0, 27.0)},
     "cam.chan frame 1001: film back 36 x 27 (aspect 1.3333) does not match"),
    ("chan_fov", lambda p: write_chan(p / "cam.chan", vfov=190.0), {},
     "cam.chan frame 1001: vertical field of view 190"),
    ("not_usd", lambda p: (p / "cam.usda").write_text("not usd") and str(p / "cam.usda"), {},
     "cam.usda: not a readable USD stage"),
]  # fmt: skip


@pytest.mark.parametrize("make, options, message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_cameras_are_one_line_naming_file_and_frame(tmp_path, make, options, message):
    path = make(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_camera(CameraRequest(file=str(path), **options), NUMBERS, PLATE)
    text = str(caught.value)
    assert message in text and "\n" not in text, text


def test_a_bad_camera_stops_a_run_before_the_model(tmp_path, capsys):
    """The checkpoint does not exist: the camera's error comes first, in one line."""
    plate = make_image_sequence(tmp_path / "plate", len(NUMBERS), PLATE[1], PLATE[0])
    chan = write_chan(tmp_path / "cam.chan", columns=6)
    args = ["run", plate, "-o", str(tmp_path / "out"), "--checkpoint", str(tmp_path / "none"),
            "--device", "cpu", "--depth-mode", "depth", "--camera", chan]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cam.chan line 1: a .chan camera has 8 columns" in err
    assert not (tmp_path / "out" / "depth.1001.exr").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--passes", "Z,P"], "`P` need a camera"),
        (["--focal-length", "35"], "need depth in scene units"),
        (["--depth-mode", "depth", "--focal-length", "35", "--fov", "40"], "not both"),
        (["--depth-mode", "depth", "--passes", "P,N", "--fov", "40"], "Z always"),
        (["--depth-mode", "depth", "--fov", "40", "--points", "../p.usd"], "file name"),
        (["--depth-mode", "depth", "--film-back", "36", "24"], "needs `--focal-length`"),
    ],
)
def test_pass_settings_refused_in_one_line(tmp_path, capsys, extra, message):
    plate = make_image_sequence(tmp_path / "plate", len(NUMBERS), PLATE[1], PLATE[0])
    args = ["run", plate, "-o", str(tmp_path / "out"), "--checkpoint", str(tmp_path / "none"),
            "--device", "cpu", *extra]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_points_may_not_overwrite_the_camera_file(tmp_path, capsys):
    plate = make_image_sequence(tmp_path / "plate", len(NUMBERS), PLATE[1], PLATE[0])
    (tmp_path / "out").mkdir()
    camera = write_usd(tmp_path / "out" / "shot.usda")
    args = ["run", plate, "-o", str(tmp_path / "out"), "--checkpoint", str(tmp_path / "none"),
            "--device", "cpu", "--depth-mode", "depth", "--camera", camera, "--points",
            "shot.usda"]  # fmt: skip
    assert main(args) == 1
    assert "would overwrite the camera file" in capsys.readouterr().err
    assert load_camera(CameraRequest(file=camera), NUMBERS, PLATE).prim == "/rig/cam"


# The CLI with USD made unimportable, as on a machine without the `3d` extra.
WITHOUT_USD = "import sys; sys.modules['pxr'] = None; from rollingdepth_core.cli import main; " \
    "sys.exit(main(sys.argv[1:]))"  # fmt: skip


@pytest.mark.parametrize(
    "extra, what",
    [
        (["--camera", "CAMERA"], "`--camera` with a USD file"),
        (["--fov", "40", "--points", "shot.usda"], "`--points`"),
    ],
)
def test_without_usd_the_run_says_what_to_install_before_the_model(tmp_path, extra, what):
    """The checkpoint does not exist: the missing USD is said first, in one line naming the
    extra to install (`--points` was only refused once every frame had been computed)."""
    import subprocess
    import sys

    plate = make_image_sequence(tmp_path / "plate", len(NUMBERS), PLATE[1], PLATE[0])
    camera = write_usd(tmp_path / "cam.usda")
    args = ["run", plate, "-o", str(tmp_path / "out"), "--checkpoint", str(tmp_path / "none"),
            "--device", "cpu", "--dtype", "fp32", "--depth-mode", "depth",
            *[camera if a == "CAMERA" else a for a in extra]]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", WITHOUT_USD, *args], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    err = done.stderr.strip()
    assert done.returncode == 1, err
    assert len(err.splitlines()) == 1, err
    assert f"{what} needs USD" in err and "pip install 'rollingdepth[3d]'" in err, err
    assert not (tmp_path / "out" / "depth.1001.exr").exists()
