"""Messages that name the flag, the file and the frame, and warnings for fits that pass."""

import re

import numpy as np
import pytest

from rollingdepth_core.anchors import (
    AnchorFileError,
    Anchors,
    fit_anchors,
    fit_warnings,
    load_anchors,
    sample_video,
)
from rollingdepth_core.cli import main

from .plate_fixtures import make_image_sequence

PLATE = (48, 64)  # (H, W)
N_FRAMES = 24


def cli_error(args, capsys) -> str:
    """Run the command; it must fail with exactly one line on stderr, which is returned."""
    assert main([str(a) for a in args]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plate")
    return make_image_sequence(folder, 20, PLATE[1], PLATE[0])  # frames 1001-1020


def run_args(plate, tmp_path, *extra):
    # no checkpoint there: every error below comes before the model is looked for
    return ["run", plate, "-o", tmp_path / "out", "--checkpoint", tmp_path / "no-model",
            "--res", "64", "--device", "cpu", "--dtype", "fp32", *extra]  # fmt: skip


def test_semicolon_anchors_csv_names_the_delimiter(plate, tmp_path, capsys):
    csv = tmp_path / "anchors.csv"
    csv.write_text("frame;x;y;depth\n1001;10;10;2.5\n1002;12;10;2.6\n")
    with pytest.raises(AnchorFileError, match="separated by semicolons"):
        load_anchors(csv)
    line = cli_error(run_args(plate, tmp_path, "--anchors", csv), capsys)
    assert "'frame;x;y;depth' is separated by semicolons" in line
    assert "comma-separated" in line and "missing" not in line
    tabs = tmp_path / "tabs.csv"
    tabs.write_text("frame\tx\ty\tdepth\n1001\t10\t10\t2.5\n")
    with pytest.raises(AnchorFileError, match="separated by tabs"):
        load_anchors(tabs)


def test_a_cut_outside_frames_names_frames(plate, tmp_path, capsys):
    args = run_args(plate, tmp_path, "--cuts", "1003", "--frames", "1005-1020")
    line = cli_error(args, capsys)
    assert "`--cuts` frame 1003 is outside `--frames 1005-1020`" in line
    assert "not in the plate" not in line
    # outside the plate itself, without --frames: as before
    line = cli_error(run_args(plate, tmp_path, "--cuts", "1030"), capsys)
    assert "frame 1030 is not in the plate (frames 1001-1020)" in line


def test_frame_sets_say_what_is_wrong(plate, tmp_path, capsys):
    # a valid set far larger than the plate is not "not a frame set": the run goes on to the
    # next check (here the missing checkpoint), having listed no frame
    line = cli_error(run_args(plate, tmp_path, "--frames", "1-999999999"), capsys)
    assert "frame set" not in line and "no-model' does not exist" in line
    line = cli_error(run_args(plate, tmp_path, "--frames", "1001-1012:3"), capsys)
    assert "staggered order" in line and "write `1001-1012x3`" in line
    for text, says in [("1001-1005.5", "whole numbers; got 1005.5"),
                       ("1001-1004#", "unexpected '#'"), ("1001-1012x0", "got `x0`")]:  # fmt: skip
        assert says in cli_error(run_args(plate, tmp_path, "--frames", text), capsys), text


def test_an_output_path_that_is_a_file_is_named(plate, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for output in (afile, afile / "depth"):
        args = run_args(plate, tmp_path)
        args[args.index("-o") + 1] = output
        line = cli_error(args, capsys)
        assert f"{str(afile)!r} is a file, not a folder" in line, line
        assert "File exists" not in line and "Not a directory" not in line
    assert afile.read_text() == "not a folder"


@pytest.mark.parametrize(
    ("content", "says"),
    [(b"", "the file is empty (0 bytes)"), (b"hello\n", "not a video"),
     (bytes(range(256)) * 20, "not a video")],
)  # fmt: skip
def test_a_file_that_is_not_a_video_says_so(tmp_path, capsys, content, says):
    movie = tmp_path / "plate.mp4"
    movie.write_bytes(content)
    line = cli_error(run_args(movie, tmp_path), capsys)
    assert f"plate.mp4: {says}" in line and "Errno" not in line, line


def test_max_frame_memory_shows_units_that_mean_something(plate, tmp_path, capsys):
    line = cli_error(run_args(plate, tmp_path, "--max-frame-memory", "1e-6"), capsys)
    # 64x48 float RGB is 36 KiB; 1e-6 GiB is 1074 bytes
    assert "processing at 64x48 needs 36.00 KiB, over the limit of 1.05 KiB per frame" in line
    assert "`--max-frame-memory GIB`" in line and "0.00 GiB" not in line
    line = cli_error(run_args(plate, tmp_path, "--max-frame-memory", "0"), capsys)
    assert "`--max-frame-memory` is in GiB" in line and "max_frame_gib" not in line


# ---------------------------------------------------------------------------- anchor warnings
MAP = (24, 32)  # (h, w) of the depth maps


def relative_depth(t, u, v):
    """A slanted floor under a moving camera at map coordinates (u, v): planar, so the
    sampler's bilinear reading of the map is exact inside it."""
    return 0.2 + 0.6 * v / MAP[0] + 0.1 * u / MAP[1] + 0.01 * t


def clip() -> np.ndarray:
    """Relative inverse depth ``[N,h,w]``."""
    v, u = np.mgrid[0 : MAP[0], 0 : MAP[1]].astype(float)
    return np.stack([relative_depth(t, u, v) for t in range(N_FRAMES)])


def anchors_on(depth, scale=lambda t: 2.0, outside=0, wrong=0.0, seed=0) -> Anchors:
    """Anchors on ``depth`` through ``1/Z = scale(t) d + 0.5`` (the truth), with ``outside``
    extra points beyond the plate and a share ``wrong`` of depths off by 2x."""
    rng = np.random.default_rng(seed)
    frame, x, y, z = [], [], [], []
    height, width = PLATE
    for t in range(N_FRAMES):
        for _ in range(10):
            px, py = rng.uniform(2, width - 2), rng.uniform(2, height - 2)
            # plate point -> map coordinates, as the sampler reads them
            d = relative_depth(t, px * MAP[1] / width - 0.5, py * MAP[0] / height - 0.5)
            frame.append(1001 + t)
            x.append(px)
            y.append(py)
            z.append(1.0 / (scale(t) * d + 0.5))
    frame, x, y, z = (np.array(a, float) for a in (frame, x, y, z))
    bad = rng.random(z.size) < wrong
    z[bad] *= 2.0
    frame = np.concatenate([frame, np.full(outside, 1001)])
    x = np.concatenate([x, np.full(outside, width + 10.0)])
    y = np.concatenate([y, np.full(outside, 5.0)])
    z = np.concatenate([z, np.full(outside, 3.0)])
    return Anchors(frame.astype(np.int64), x, y, z, np.ones(z.size), ("",) * z.size,
                   units="m", source="anchors.csv")  # fmt: skip


def warnings_for(anchors, mode="global"):
    samples = sample_video(clip(), anchors, range(1001, 1001 + N_FRAMES), PLATE)
    return fit_warnings(fit_anchors(samples, mode), PLATE)


def test_a_clean_fit_says_nothing():
    assert warnings_for(anchors_on(clip())) == []


def test_anchors_outside_the_plate_are_one_warning():
    (line,) = warnings_for(anchors_on(clip(), outside=3))
    assert line.startswith("warning: anchors (anchors.csv): 3 anchor(s) lie outside the 64x48")


def test_many_rejected_anchors_are_one_warning():
    (line,) = [w for w in warnings_for(anchors_on(clip(), wrong=0.3)) if "rejected" in w]
    assert "disagree with the fit" in line
    assert re.search(r"\((2[5-9]|3\d)%\)", line)  # about 30 %


def test_a_drifting_scale_suggests_the_smooth_fit():
    drifting = anchors_on(clip(), scale=lambda t: 1.0 + 0.1 * t)
    (line,) = warnings_for(drifting)
    assert "the fit misses 10 % of its anchors by more than" in line
    assert "try `--anchor-fit smooth`" in line
    # the smooth fit follows it: no suggestion (and most likely no warning at all)
    assert not any("--anchor-fit smooth" in w for w in warnings_for(drifting, "smooth"))


def test_a_large_residual_without_drift_warns_without_the_suggestion():
    noisy = anchors_on(clip())
    noise = np.random.default_rng(5).uniform(0.8, 1.25, len(noisy))  # +-20 %, no trend
    noisy = Anchors(noisy.frame, noisy.x, noisy.y, noisy.depth * noise, noisy.weight,
                    noisy.track, noisy.units, noisy.source)  # fmt: skip
    lines = [w for w in warnings_for(noisy) if "misses 10 %" in w]
    assert len(lines) == 1 and "--anchor-fit smooth" not in lines[0]


def test_anchor_warnings_reach_stderr_of_a_run_that_passes(
    plate, tmp_path, tiny_checkpoint, capsys
):
    from rollingdepth_core.exr import read_exr

    common = ["--checkpoint", tiny_checkpoint, "--res", "64", "--dilations", "1", "2",
              "--device", "cpu", "--dtype", "fp32", "--frames", "1001-1006"]  # fmt: skip
    assert main([str(a) for a in ["run", plate, "-o", tmp_path / "plain", *common]]) == 0
    # anchors that agree with this run's own inverse depth d (1/Z = d - min d + 1), at pixel
    # centres (plate and maps share their size), and two beyond the plate's right edge
    rows = ["frame,x,y,depth"]
    maps = {n: read_exr(tmp_path / "plain" / f"depth.{n}.exr")[0]["Z"] for n in range(1001, 1007)}
    low = min(float(m.min()) for m in maps.values())
    for number, depth in maps.items():
        for i, j in ((5, 5), (40, 10), (20, 30), (60, 44)):
            rows.append(f"{number},{i + 0.5},{j + 0.5},{1.0 / (float(depth[j, i]) - low + 1.0)!r}")
    rows += ["1001,70.5,10.5,2.0", "1002,99.5,3.5,2.0"]
    (tmp_path / "anchors.csv").write_text("\n".join(rows) + "\n")
    capsys.readouterr()
    args = ["run", plate, "-o", tmp_path / "anchored", *common, "--anchors",
            tmp_path / "anchors.csv", "--depth-mode", "depth"]  # fmt: skip
    assert main([str(a) for a in args]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    assert warnings == [
        f"warning: anchors ({tmp_path / 'anchors.csv'}): 2 anchor(s) lie outside the 64x48 "
        "plate and were skipped: their x, y must be plate pixels from the top-left corner"
    ]
