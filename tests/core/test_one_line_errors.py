"""Input that used to end in a traceback: one line, before the model where the input says it."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from rollingdepth_core.alignment import coalign
from rollingdepth_core.cli import main
from rollingdepth_core.errors import ConfigError, InputError
from rollingdepth_core.mattes import MatteSource

from .plate_fixtures import make_image_sequence, write_image

NUMBERS = list(range(1001, 1007))


@pytest.fixture
def plate(tmp_path):
    return make_image_sequence(tmp_path / "plate", len(NUMBERS), 64, 48)


def write_matte_sequence(folder, values):
    """One grey PNG matte per plate frame, ``values[k]`` everywhere (or an array)."""
    folder.mkdir()
    for number, value in zip(NUMBERS, values, strict=True):
        write_image(folder / f"m.{number}.exr", np.broadcast_to(value, (24, 32)), "half")
    return str(folder / "m.####.exr")


def run_args(plate, out, checkpoint, *extra):
    return [str(a) for a in ["run", plate, "-o", out, "--checkpoint", checkpoint, "--res", "48",
                             "--dilations", "1", "2", "--device", "cpu", "--dtype", "fp32",
                             *extra]]  # fmt: skip


def test_an_all_white_holdout_is_refused_before_the_model(plate, tmp_path, capsys):
    mattes = write_matte_sequence(tmp_path / "white", [1.0] * len(NUMBERS))
    # no checkpoint there: the matte's error comes before the model is even looked for
    args = run_args(plate, tmp_path / "out", tmp_path / "no-model", "--holdout", mattes)
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "white (1) on every pixel of every frame, so nothing is left to align on" in err


def test_a_holdout_white_but_for_one_frame_is_accepted(tmp_path):
    values = [1.0] * len(NUMBERS)
    values[-1] = 0.5
    source = MatteSource(write_matte_sequence(tmp_path / "m", values), NUMBERS, (48, 64))
    assert len(list(source.frames())) == len(NUMBERS)


def test_holdout_leaving_no_sampled_pixel_is_a_config_error_not_singular():
    rng = np.random.default_rng(0)
    indices = np.array([[i, i + 1, i + 2] for i in range(6)])
    snippets = rng.random((6, 3, 48, 64)).astype(np.float32)
    held = np.ones((8, 48, 64), np.float32)
    held[:, :2] = 0  # only the border the solver crops is kept
    with pytest.raises(ConfigError, match="leave no pixel for the alignment"):
        coalign([snippets], [indices], "robust", holdout=held)


def test_a_nan_matte_names_its_file_and_frame(plate, tmp_path, capsys):
    values = [np.zeros((24, 32), np.float32) for _ in NUMBERS]
    values[0][3, 4] = np.nan
    mattes = write_matte_sequence(tmp_path / "nan", values)
    assert main(run_args(plate, tmp_path / "out", tmp_path / "no-model", "--holdout", mattes)) == 1
    err = capsys.readouterr().err
    assert "m.1001.exr: the holdout matte of frame 1001 holds 1 NaN or infinite pixels" in err
    # a later frame's NaN is named when that frame is read
    values = [np.zeros((24, 32), np.float32) for _ in NUMBERS]
    values[3][:, :] = np.inf
    source = MatteSource(write_matte_sequence(tmp_path / "inf", values), NUMBERS, (48, 64))
    with pytest.raises(InputError, match=r"m\.1004\.exr: the holdout matte of frame 1004"):
        list(source.frames())


def _can_mount_read_only() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return probe.returncode == 0


def on_read_only_mount(cache, mount, args):
    """``rollingdepth ARGS`` with ``cache`` bind-mounted read-only at ``mount`` (proved so:
    no file can be made there), in a user and mount namespace of its own."""
    mount.mkdir()
    cli = " ".join([sys.executable, "-m", "rollingdepth_core.cli", *map(str, args)])
    script = (
        f"mount --bind {cache} {mount} && mount -o remount,bind,ro {mount} && "
        f"! touch {mount}/x 2>/dev/null && {cli}"
    )
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


READ_ONLY = pytest.mark.skipif(
    not _can_mount_read_only(), reason="needs `unshare -rm` for a read-only mount"
)


@READ_ONLY
@pytest.mark.parametrize("command", ["run", "finalize"])
def test_a_filled_cache_on_a_read_only_mount_is_read(plate, tmp_path, tiny_checkpoint, command):
    cache, mount = tmp_path / "cache", tmp_path / "ro"
    assert main(run_args(plate, tmp_path / "first", tiny_checkpoint, "--cache", cache)) == 0
    args = run_args(plate, tmp_path / "again", tiny_checkpoint, "--cache", mount)
    args[0] = command
    proc = on_read_only_mount(cache, mount, args)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    first = sorted(p.name for p in (tmp_path / "first").glob("depth.*.exr"))
    again = sorted(p.name for p in (tmp_path / "again").glob("depth.*.exr"))
    assert again == first and len(first) == len(NUMBERS)


@READ_ONLY
def test_infer_into_a_read_only_cache_is_one_line_before_the_model(
    plate, tmp_path, tiny_checkpoint
):
    cache = tmp_path / "cache"
    (cache / "blocks").mkdir(parents=True)
    (cache / "latents").mkdir()
    args = run_args(plate, tmp_path / "unused", tiny_checkpoint, "--cache", tmp_path / "ro")
    args = ["infer", *[a for a in args[1:] if a not in ("-o", str(tmp_path / "unused"))]]
    proc = on_read_only_mount(cache, tmp_path / "ro", [*args, "--progress", "json"])
    assert proc.returncode == 1
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert not [e for e in events if e.get("stage") == "load"]  # the model never loaded
    (error,) = [e for e in events if e.get("event") == "error"]
    assert (
        "takes no files" in error["message"] and "`rollingdepth infer` stores" in error["message"]
    )
