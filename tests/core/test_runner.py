"""The run driver end to end: anchored depth in scene units, the typed result."""

import json

import numpy as np
import pytest

from rollingdepth_core.cli import main
from rollingdepth_core.exr import read_exr
from rollingdepth_core.sample import write_sample_video

# processing at the plate's size (--res 0), so anchor pixels are depth-map pixels
SETTINGS = ["--res", "0", "--dilations", "1", "3", "--device", "cpu", "--seed", "3"]
A, B = 2.0, 3.0  # the known map 1/Z = A d + B the anchors are made with


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("anchored")
    video = write_sample_video(root / "plate.mp4", n_frames=12, height=40, width=64)
    args = ["run", video, "-o", root / "relative", "--checkpoint", tiny_checkpoint, *SETTINGS]
    assert main([str(a) for a in args]) == 0
    return root, video


def make_anchors(root, rng):
    """~20 anchors per frame at pixel centres, from the first run's own inverse depth."""
    rows, truth = ["frame,x,y,depth"], {}
    for path in sorted((root / "relative").glob("depth.*.exr")):
        channels, meta = read_exr(path)
        d = channels["Z"]
        frame = int(meta["rollingdepth/source_frame"])
        for _ in range(20):
            j, i = int(rng.integers(0, d.shape[0])), int(rng.integers(0, d.shape[1]))
            z = 1.0 / (A * float(d[j, i]) + B)
            rows.append(f"{frame},{i + 0.5},{j + 0.5},{z!r}")
            truth[(frame, i, j)] = z
    path = root / "anchors.csv"
    path.write_text("\n".join(rows) + "\n")
    return path, truth, len(rows) - 1


def test_anchored_run_reproduces_known_depths(first_run, tiny_checkpoint):
    root, video = first_run
    anchors, truth, n_anchors = make_anchors(root, np.random.default_rng(0))
    out = root / "metric"
    args = ["run", video, "-o", out, "--checkpoint", tiny_checkpoint, *SETTINGS,
            "--anchors", anchors, "--depth-mode", "depth", "--progress", "json"]  # fmt: skip
    assert main([str(a) for a in args]) == 0
    errors = []
    for (frame, i, j), z in truth.items():
        channels, meta = read_exr(out / f"depth.{frame:04d}.exr")
        errors.append(abs(float(channels["Z"][j, i]) / z - 1))
    assert np.median(errors) < 0.005  # the target: 0.5 % median
    assert np.max(errors) < 1e-4  # same plate, same seed: the fit is exact
    assert meta["rollingdepth/anchors.used"] == n_anchors
    assert meta["rollingdepth/anchors.a"] == pytest.approx(A, rel=1e-4)
    assert meta["rollingdepth/anchors.b"] == pytest.approx(B, rel=1e-4)
    values = np.concatenate([read_exr(p)[0]["Z"].ravel() for p in sorted(out.glob("depth.*.exr"))])
    # the header describes what is in the file: the clip's Z range
    assert meta["rollingdepth/value_min"] == pytest.approx(values.min(), rel=1e-5)
    assert meta["rollingdepth/value_max"] == pytest.approx(values.max(), rel=1e-5)
    sidecar = json.loads((out / "depth_anchors.json").read_text())
    assert sidecar["used"] == n_anchors and len(sidecar["anchors"]) == n_anchors


def test_anchors_with_normalized_output_are_refused(first_run, tiny_checkpoint, capsys):
    root, video = first_run
    anchors = root / "two.csv"
    anchors.write_text("frame,x,y,depth\n0,1,1,2\n1,2,2,3\n")
    args = ["run", video, "-o", root / "refused", "--checkpoint", tiny_checkpoint, *SETTINGS,
            "--anchors", anchors, "--depth-mode", "normalized"]  # fmt: skip
    assert main([str(a) for a in args]) == 1
    assert "scene units" in capsys.readouterr().err
    assert not list((root / "refused").glob("*.exr"))


def test_restore_res_upsamples_edge_aware_by_default(first_run, tiny_checkpoint):
    root, video = first_run
    small = ["--res", "32", "--dilations", "1", "3", "--device", "cpu", "--seed", "3"]
    outputs = {}
    for method in ("edge", "bilinear"):
        out = root / f"up-{method}"
        args = ["run", video, "-o", out, "--checkpoint", tiny_checkpoint, *small,
                "--restore-res", "--confidence", "--upsample", method]  # fmt: skip
        assert main([str(a) for a in args]) == 0
        channels, meta = read_exr(out / "depth.0005.exr")
        assert channels["Z"].shape == channels["confidence"].shape == (40, 64)  # the plate's
        assert meta["rollingdepth/upsample"] == method
        outputs[method] = channels["Z"]
    assert not np.array_equal(outputs["edge"], outputs["bilinear"])
    # the clip is normalised to [-1, 1] at processing size; edge-aware values stay within the
    # local range of the low-resolution map, so the plate-size values overshoot nothing
    for values in outputs.values():
        assert values.min() >= -1 - 1e-6 and values.max() <= 1 + 1e-6


def test_an_edit_is_split_at_its_cuts_and_each_shot_equals_a_run_alone(tmp_path, tiny_checkpoint):
    from .test_cuts import write_edit

    video = write_edit(tmp_path / "edit.mp4", (16, 18), 72, 128)
    common = [video, "--checkpoint", tiny_checkpoint, "--res", "48", "--dilations", "1", "3",
              "--device", "cpu", "--seed", "3"]  # fmt: skip
    assert main([str(a) for a in ["run", *common, "-o", tmp_path / "edit"]]) == 0  # cuts: auto
    alone = {}
    for name, frames in (("a", "0-15"), ("b", "16-33")):
        args = ["run", *common, "-o", tmp_path / name, "--frames", frames, "--cuts", "none"]
        assert main([str(a) for a in args]) == 0
        alone.update({p.name: p for p in (tmp_path / name).glob("depth.*.exr")})
    edit = sorted((tmp_path / "edit").glob("depth.*.exr"))
    assert len(edit) == len(alone) == 34
    for path in edit:
        channels, meta = read_exr(path)
        number = int(meta["rollingdepth/source_frame"])
        assert meta["rollingdepth/shot"] == (0 if number < 16 else 1)
        # the same frames, snippets and arithmetic: each shot is bit-identical to its own run
        np.testing.assert_array_equal(channels["Z"], read_exr(alone[path.name])[0]["Z"])
    sidecar = json.loads((tmp_path / "edit" / "depth_alignment.json").read_text())
    assert [(s["first_frame"], s["last_frame"]) for s in sidecar["shots"]] == [(0, 15), (16, 33)]


def test_a_variable_frame_rate_video_is_said_and_written_at_its_nominal_rate(
    tmp_path, tiny_checkpoint, capsys
):
    """Frames dropped from a 24 fps recording (12 frames over 17/24 s): one warning line, and
    the EXRs and the result carry 24 fps (they carried the average, 288/17)."""
    from fractions import Fraction

    from .plate_fixtures import make_video
    from .test_plate import VFR_PTS

    video = make_video(tmp_path / "vfr.mp4", 12, 64, 40, fps=Fraction(24), pts=VFR_PTS)
    out = tmp_path / "out"
    args = ["run", video, "-o", out, "--checkpoint", tiny_checkpoint, *SETTINGS, "--cuts", "none"]
    assert main([str(a) for a in args]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "variable frame rate" in line]
    assert warnings == [
        f"warning: {video} has a variable frame rate (frames unevenly spaced in time, 16.94 fps "
        "on average): its frames are taken one after another, and the EXRs carry its nominal "
        "rate, 24 fps"
    ]
    files = sorted(out.glob("depth.*.exr"))
    assert len(files) == 12
    assert {read_exr(f)[1].get("framesPerSecond") for f in files} == {(24, 1)}
