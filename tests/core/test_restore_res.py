"""`--restore-res` at any plate size against the processing size: down as well as up, known
before the model runs; plates too thin to process refused in one line before it."""

import numpy as np
import pytest
from PIL import Image

from rollingdepth_core.cli import main
from rollingdepth_core.errors import ConfigError
from rollingdepth_core.exr import read_exr
from rollingdepth_core.model import check_processing_size
from rollingdepth_core.output import resize_map
from rollingdepth_core.sample import sample_frame
from rollingdepth_core.upsample import restore_method, upsample_depth


def png_plate(folder, height, width, n_frames=6):
    folder.mkdir()
    for i in range(n_frames):
        rgb = sample_frame(i, n_frames, max(height, 8), max(width, 8))[:height, :width]
        Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).save(folder / f"p.{1 + i:04d}.png")
    return folder / "p.####.png"


@pytest.mark.parametrize(
    ("plate", "depth", "method", "used"),
    [
        ((96, 128), (48, 64), "edge", "edge"),  # up
        ((96, 128), (576, 768), "edge", "bilinear"),  # down: a plate below the processing size
        ((1, 96), (8, 768), "edge", "bilinear"),
        ((96, 1), (768, 8), "edge", "bilinear"),
        ((10, 400), (2, 64), "edge", "bilinear"),  # thinner than the guided filter's window
        ((96, 128), (48, 64), "bilinear", "bilinear"),
    ],
)
def test_restore_method_for_every_size(plate, depth, method, used):
    assert restore_method(plate, depth, method) == used


def test_a_guide_smaller_than_the_depth_gets_the_antialiased_resize():
    depth = np.random.default_rng(0).random((576, 768)).astype(np.float32)
    guide = np.random.default_rng(1).random((96, 128, 3)).astype(np.float32)
    depth_out, (conf_out,) = upsample_depth(depth, guide, "edge", extra=[depth * 0.5])
    np.testing.assert_array_equal(depth_out, resize_map(depth, (96, 128)))
    np.testing.assert_array_equal(conf_out, resize_map(depth * 0.5, (96, 128)))
    assert 0.45 < depth_out.mean() < 0.55 and depth_out.std() < 0.05  # averaged, not sampled


def test_restore_method_refuses_empty_sizes():
    with pytest.raises(ConfigError, match="at least 1 px"):
        restore_method((0, 96), (8, 768), "edge")


def test_small_plate_restores_down_to_its_size(tmp_path, tiny_checkpoint, capsys):
    """A 64x48 plate processed at 160x120 (the default 768 px on a 128x96 plate, scaled
    down for speed): the files come at the plate's size, the fallback said before the model."""
    plate = png_plate(tmp_path / "plate", 48, 64)
    out = tmp_path / "out"
    args = ["run", plate, "-o", out, "--checkpoint", tiny_checkpoint, "--res", "160",
            "--dilations", "1", "2", "--device", "cpu", "--restore-res", "--confidence"]  # fmt: skip
    assert main([str(a) for a in args]) == 0
    channels, meta = read_exr(out / "depth.0001.exr")
    assert channels["Z"].shape == channels["confidence"].shape == (48, 64)
    assert np.isfinite(channels["Z"]).all()
    err = capsys.readouterr().err
    said = "writing at plate size: the plate (64x48) is smaller than the processing size (160x120)"
    assert said in err


@pytest.mark.parametrize(("height", "width"), [(1, 96), (96, 1)])
def test_thin_plate_with_restore_res_is_refused_before_the_model(tmp_path, height, width, capsys):
    plate = png_plate(tmp_path / "plate", height, width)
    # no checkpoint there: the plate's error comes before the model is even looked for
    args = ["run", plate, "-o", tmp_path / "out", "--checkpoint", tmp_path / "no-model",
            "--res", "64", "--device", "cpu", "--dtype", "fp32", "--restore-res"]  # fmt: skip
    assert main([str(a) for a in args]) == 1
    err = capsys.readouterr().err
    assert f"a {width}x{height} plate at `--res 64` is processed at" in err
    assert "use `--res 480` or more" in err


def test_thin_plate_is_one_line_from_the_command(tmp_path):
    import subprocess
    import sys

    plate = png_plate(tmp_path / "plate", 96, 1)
    proc = subprocess.run(
        [sys.executable, "-m", "rollingdepth_core.cli", "run", str(plate), "-o",
         str(tmp_path / "out"), "--checkpoint", str(tmp_path / "no-model"), "--res", "64",
         "--device", "cpu", "--dtype", "fp32", "--restore-res"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr


def test_thin_plate_runs_at_the_res_the_message_names(tmp_path, tiny_checkpoint):
    plate = png_plate(tmp_path / "plate", 1, 96)
    args = ["run", plate, "-o", tmp_path / "out", "--checkpoint", tiny_checkpoint, "--res",
            "480", "--dilations", "1", "2", "--device", "cpu", "--restore-res"]  # fmt: skip
    assert main([str(a) for a in args]) == 0
    channels, _ = read_exr(tmp_path / "out" / "depth.0001.exr")
    assert channels["Z"].shape == (1, 96) and np.isfinite(channels["Z"]).all()


def test_check_processing_size():
    assert check_processing_size(96, 128, 768) == (576, 768)
    assert check_processing_size(5, 96, 96) == (5, 96)
    with pytest.raises(ConfigError, match=r"processed at 64x1; .* `--res 480` or more"):
        check_processing_size(1, 96, 64)
