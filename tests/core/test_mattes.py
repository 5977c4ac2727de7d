"""Holdout mattes: read by frame number at any resolution, alpha first; clear refusals."""

import json

import numpy as np
import pytest

from rollingdepth_core.cli import main
from rollingdepth_core.errors import ConfigError, InputError
from rollingdepth_core.mattes import MatteSource

from .plate_fixtures import make_image_sequence, write_image

NUMBERS = [1001, 1002, 1003]


def write_mattes(folder, size=(32, 24), alpha=True, numbers=NUMBERS):
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    for k, number in enumerate(numbers):
        matte = np.zeros((height, width), np.float32)
        matte[:, : width // 2] = 0.25 * (k + 1)  # left half held out, more each frame
        if alpha:
            rgba = np.concatenate([np.full((height, width, 3), 0.9, np.float32),
                                   matte[..., None]], axis=-1)  # fmt: skip
            write_image(folder / f"m.{number}.exr", rgba, "half", channel_names="RGBA")
        else:
            write_image(folder / f"m.{number}.png", matte, "uint8")
    return str(folder / ("m.####.exr" if alpha else "m.####.png"))


def test_alpha_is_read_by_frame_number_at_its_own_resolution(tmp_path):
    source = MatteSource(write_mattes(tmp_path / "m"), NUMBERS[::-1][::-1], (48, 64))
    frames = list(source.frames())
    assert [f.shape for f in frames] == [(24, 32)] * 3  # resized later, by the method
    for k, matte in enumerate(frames):
        np.testing.assert_allclose(matte[:, :16], 0.25 * (k + 1))
        np.testing.assert_allclose(matte[:, 16:], 0.0)


def test_without_alpha_the_first_channel(tmp_path):
    source = MatteSource(write_mattes(tmp_path / "m", alpha=False), NUMBERS, (24, 32))
    first = next(source.frames())
    assert first[0, 0] == pytest.approx(64 / 255) and first[0, -1] == 0.0


def test_refusals(tmp_path):
    pattern = write_mattes(tmp_path / "m", numbers=[1001, 1002])
    with pytest.raises(InputError, match="lacks frames 1003"):
        MatteSource(pattern, NUMBERS, (24, 32))
    with pytest.raises(ConfigError, match="aspects differ"):
        MatteSource(write_mattes(tmp_path / "wide", size=(64, 24)), NUMBERS, (24, 32))
    with pytest.raises(InputError, match="needs an alpha"):
        source = MatteSource(write_mattes(tmp_path / "png", alpha=False), NUMBERS, (24, 32),
                             alpha_only=True)  # fmt: skip
        next(source.frames())


def test_holdout_through_the_cli(tmp_path, tiny_checkpoint, capsys):
    plate = make_image_sequence(tmp_path / "plate", 12, 64, 48)
    numbers = list(range(1001, 1013))
    mattes = write_mattes(tmp_path / "mattes", size=(128, 96), numbers=numbers)
    common = [plate, "--checkpoint", tiny_checkpoint, "--res", "48", "--dilations", "1", "3",
              "--device", "cpu", "--seed", "3"]  # fmt: skip
    assert main([str(a) for a in ["run", *common, "-o", tmp_path / "plain"]]) == 0
    args = ["run", *common, "-o", tmp_path / "held", "--holdout", mattes]
    assert main([str(a) for a in args]) == 0
    plain = json.loads((tmp_path / "plain" / "depth_alignment.json").read_text())
    held = json.loads((tmp_path / "held" / "depth_alignment.json").read_text())
    assert len(list((tmp_path / "held").glob("depth.*.exr"))) == 12
    assert held["scales"] != plain["scales"]  # the matte changed what the solver trusted
    capsys.readouterr()
    missing = write_mattes(tmp_path / "short", numbers=numbers[:-1])
    args = ["run", *common, "-o", tmp_path / "refused", "--holdout", missing]
    assert main([str(a) for a in args]) == 1
    assert "lacks frames 1012" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists() or not list((tmp_path / "refused").iterdir())
