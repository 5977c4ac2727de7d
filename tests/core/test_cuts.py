"""Shot cuts: detection on encoded edits decoded through the plate reader, the ``--cuts`` list
and the shot bookkeeping."""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction

import av
import numpy as np
import pytest

from rollingdepth_core.cuts import (
    CutDetector,
    Shot,
    detect_cuts,
    parse_cuts,
    shots_from_cuts,
)
from rollingdepth_core.errors import ConfigError, InputError
from rollingdepth_core.plate import open_plate
from rollingdepth_core.sample import sample_frame, write_sample_video

from .plate_fixtures import plate_frame


def texture_frame(index: int, height: int, width: int) -> np.ndarray:
    """Green-blue foliage-like texture; the camera pans right and pushes in."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    side = min(height, width)
    zoom = 1.0 + 0.01 * index
    u = (x - width / 2) / zoom / side + 0.012 * index
    v = (y - height / 2) / zoom / side
    f = (
        np.sin(u * 11 + np.sin(v * 7) * 1.5) + np.sin(v * 13 - u * 5) + 0.6 * np.sin((u + v) * 23)
    ) / 2.6
    rgb = np.stack([0.2 + 0.15 * f, 0.45 + 0.3 * f, 0.3 + 0.1 * np.sin(u * 3)], axis=-1)
    return np.clip(rgb, 0, 1).astype(np.float32)


def shot_frames(kind: int, n_frames: int, height: int, width: int):
    """Unrelated scenes, each moving: the sample's panning floor and rolling ball, the plate
    fixture's gradient with a disc crossing it fast, a panning and zooming texture."""
    for index in range(n_frames):
        if kind == 0:
            yield sample_frame(index, n_frames, height, width)
        elif kind == 1:
            yield plate_frame(index, width, height)
        else:
            yield texture_frame(index, height, width)


def edit_frames(lengths, height: int, width: int):
    for kind, n_frames in enumerate(lengths):
        yield from shot_frames(kind % 3, n_frames, height, width)


def write_edit(path, lengths, height: int, width: int):
    """The edit as h264 yuv420p, like an offline edit exported for VFX."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(24000, 1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18"}
        for rgb in edit_frames(lengths, height, width):
            pixels = (rgb * 255 + 0.5).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode(None))
    return path


# ---------------------------------------------------------------------------- detection
DETECTORS = pytest.mark.parametrize(
    ("method", "luma_only"),
    [("adaptive", False), ("content", False), ("adaptive", True)],
)


@DETECTORS
def test_detects_the_cuts_of_an_encoded_edit(tmp_path, method, luma_only):
    # 320 px wide: the detector's downscale to 256 px runs too.
    path = write_edit(tmp_path / "edit.mp4", (20, 17, 24), 180, 320)
    with open_plate(path) as plate:
        assert len(plate) == 61
        cuts = detect_cuts((rgb for _, rgb in plate.frames()), method, luma_only=luma_only)
        shots = shots_from_cuts(plate.info.frame_numbers, cuts)
    assert cuts == [20, 37]
    assert [(s.start, s.stop) for s in shots] == [(0, 20), (20, 37), (37, 61)]


@DETECTORS
def test_no_cut_in_one_continuous_shot(tmp_path, method, luma_only):
    path = write_sample_video(tmp_path / "sample.mp4", n_frames=48)
    with open_plate(path) as plate:
        frames = (rgb for _, rgb in plate.frames())
        assert detect_cuts(frames, method, luma_only=luma_only) == []


def test_each_moving_shot_alone_has_no_cut():
    for kind in range(3):
        assert detect_cuts(shot_frames(kind, 30, 144, 256)) == [], kind


def test_a_shot_shorter_than_min_shot_frames_joins_the_next():
    # A 6-frame shot is found at the default 4 frames, not with PySceneDetect's default 15.
    assert detect_cuts(edit_frames((20, 6, 20), 144, 256)) == [20, 26]
    assert detect_cuts(edit_frames((20, 6, 20), 144, 256), min_shot_frames=15) == [20]


def test_cut_on_the_last_frame_is_dropped():
    # Frame 20 starts a new scene but is the last frame: a one-frame shot stays with shot 1.
    assert detect_cuts(edit_frames((20, 1), 144, 256), "content") == []
    assert detect_cuts(edit_frames((20, 2), 144, 256), "content") == [20]
    # The adaptive detector compares a frame with the 2 after it: it sees no cut that late.
    assert detect_cuts(edit_frames((20, 2), 144, 256), "adaptive") == []
    assert detect_cuts(edit_frames((20, 3), 144, 256), "adaptive") == [20]


def test_adaptive_detector_weighs_a_flash_less():
    """A frame twice as bright in a continuous shot (a muzzle flash, lightning): the content
    detector cuts there, the adaptive one sees the change fall back and does not."""

    def flashed(length):
        for index in range(40):
            rgb = sample_frame(index, 40, 144, 256)
            yield np.clip(rgb * 2.0, 0, 1) if 20 <= index < 20 + length else rgb

    for length in (1, 2):
        # the detectors alone (the flash check, which drops it for both, turned off)
        assert detect_cuts(flashed(length), "content", flash_frames=0) == [20]
        assert detect_cuts(flashed(length), flash_frames=0) == []
        assert detect_cuts(flashed(length), "content") == []


def test_quick_shots_of_an_encoded_edit_are_found(tmp_path):
    """Shots of 4 to 6 frames between two long ones, h264 through the plate reader: every cut,
    where PySceneDetect's default shortest shot (15 frames) merged the quick shots."""
    path = write_edit(tmp_path / "quick.mp4", (20, 4, 6, 5, 20), 144, 256)
    with open_plate(path) as plate:
        frames = [rgb for _, rgb in plate.frames()]
    assert detect_cuts(frames) == [20, 24, 30, 35]


def test_a_cut_before_frame_14_of_a_30_frame_edit_is_found(tmp_path):
    path = write_edit(tmp_path / "early.mp4", (13, 17), 144, 256)
    with open_plate(path) as plate:
        assert detect_cuts(rgb for _, rgb in plate.frames()) == [13]


@pytest.mark.parametrize("length", [1, 2, 3])
def test_a_flash_is_not_a_cut(length):
    """A flash of up to 3 frames in a moving shot (it comes back to the same picture) is no
    cut at the default shortest shot of 4; without the flash check 3 frames would cut."""

    def flashed():
        for index in range(40):
            rgb = sample_frame(index, 40, 144, 256)
            yield np.clip(rgb * 2.5 + 0.2, 0, 1) if 20 <= index < 20 + length else rgb

    assert detect_cuts(flashed()) == []
    if length == 3:
        assert detect_cuts(flashed(), flash_frames=0) == [20]


def test_a_flash_inside_a_quick_shot_edit_leaves_the_cuts():
    def frames():
        for index, rgb in enumerate(edit_frames((20, 4, 6, 20), 144, 256)):
            yield np.clip(rgb * 2.5 + 0.2, 0, 1) if index in (40, 41) else rgb

    assert detect_cuts(frames()) == [20, 24, 30]


def test_min_shot_frames_flag_reaches_detection(tmp_path, tiny_checkpoint):
    """`--min-shot-frames` through the CLI: the 13-frame first shot is its own shot by
    default, merged with 15."""
    from rollingdepth_core.cli import main
    from rollingdepth_core.exr import read_exr

    video = write_edit(tmp_path / "edit.mp4", (13, 17), 72, 128)
    common = [video, "--checkpoint", tiny_checkpoint, "--res", "48", "--dilations", "1", "3",
              "--device", "cpu", "--seed", "3"]  # fmt: skip
    for flag, shots in (([], 2), (["--min-shot-frames", "15"], 1)):
        out = tmp_path / f"out{len(flag)}"
        assert main([str(a) for a in ["run", *common, "-o", out, *flag]]) == 0
        _, meta = read_exr(out / "depth.0013.exr")
        assert meta.get("rollingdepth/shot", 0) == (1 if shots == 2 else 0)
        assert meta["rollingdepth/setting.min_shot_frames"] == (4 if not flag else 15)


def test_min_shot_frames_flag_is_checked():
    from rollingdepth_core.config import preset_config

    with pytest.raises(ConfigError, match="`--min-shot-frames` must be >= 2"):
        preset_config("fast", min_shot_frames=1)


def grainy(frames, std: float, grey: bool = False):
    """Fresh grain each frame, on the frames or on their grey (a black-and-white plate)."""
    rng = np.random.default_rng(0)
    for rgb in frames:
        if grey:
            rgb = np.repeat(rgb.mean(axis=-1, keepdims=True), 3, axis=-1)
        yield np.clip(rgb + std * rng.standard_normal(rgb.shape, np.float32), 0, 1)


def test_the_default_detector_finds_the_cuts_under_grain():
    """Grain (std 0.03) raises every frame's change: the content detector misses the first
    cut, the adaptive one (the default) finds both."""
    edit = (20, 17, 24)
    assert detect_cuts(grainy(edit_frames(edit, 144, 256), 0.03)) == [20, 37]
    assert detect_cuts(grainy(edit_frames(edit, 144, 256), 0.03), "content") == [37]


def test_brightness_only_finds_the_cuts_of_a_grey_plate():
    """On neutral pixels hue is noise: with a little grain the full HSV score misses both cuts
    of a black-and-white edit; brightness alone finds them."""
    grey_edit = list(grainy(edit_frames((20, 17, 24), 144, 256), 0.01, grey=True))
    assert detect_cuts(grey_edit, luma_only=True) == [20, 37]
    assert detect_cuts(grey_edit) == []


def test_cut_between_two_moving_shots():
    """The panning sample shot, then the fast-panning texture: full HSV (the default) finds the
    cut; brightness alone scores the motion too high against it, so it is not the default."""

    def frames():
        yield from shot_frames(0, 20, 144, 256)
        for index in range(20):
            yield texture_frame(8 * index, 144, 256)

    assert detect_cuts(frames()) == [20]
    assert detect_cuts(frames(), "content") == [20]
    assert detect_cuts(frames(), luma_only=True) == []


@pytest.mark.parametrize(("method", "too_high"), [("content", 200.0), ("adaptive", 100.0)])
def test_threshold_decides(method, too_high):
    frames = list(edit_frames((16, 16), 144, 256))
    assert detect_cuts(frames, method) == [16]
    assert detect_cuts(frames, method, threshold=too_high) == []


def test_streaming_detector_matches_detect_cuts():
    detector = CutDetector()
    for rgb in edit_frames((16, 16, 16), 144, 256):
        detector.push(rgb)
    assert detector.finish() == detect_cuts(edit_frames((16, 16, 16), 144, 256)) == [16, 32]


def test_detector_refuses_bad_settings_and_frames():
    with pytest.raises(ConfigError, match="min_shot_frames"):
        CutDetector(min_shot_frames=1)
    with pytest.raises(ConfigError, match="threshold"):
        CutDetector(threshold=0)
    with pytest.raises(ConfigError, match=r"`method` must be one of \('content', 'adaptive'\)"):
        CutDetector("histogram")
    detector = CutDetector()
    detector.push(np.zeros((48, 64, 3), np.float32))
    with pytest.raises(InputError, match="64x48"):
        detector.push(np.zeros((48, 80, 3), np.float32))
    with pytest.raises(InputError, match=r"\[H,W,3\]"):
        detector.push(np.zeros((48, 64), np.float32))


def test_scenedetect_and_pyside6_share_a_process():
    """The GUI opencv-python wheel bundles Qt 5 and points QT_QPA_PLATFORM_PLUGIN_PATH at its
    own plugins when cv2 is imported; only the headless build may be installed."""
    pytest.importorskip("PySide6.QtWidgets")
    code = (
        "import os, scenedetect, cv2\n"
        "assert 'QT_QPA_PLATFORM_PLUGIN_PATH' not in os.environ, cv2.__file__\n"
        "from PySide6.QtWidgets import QApplication, QLabel\n"
        "app = QApplication([])\n"
        "label = QLabel('cuts')\n"
        "assert not label.grab().isNull()\n"
        "print(scenedetect.__version__, cv2.__version__)\n"
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("0.7")


# ---------------------------------------------------------------------------- --cuts
SEQUENCE = tuple(range(1001, 1101))  # 100 frames


def test_parse_cuts_modes():
    assert parse_cuts("auto", SEQUENCE) is None
    assert parse_cuts(" Auto ", SEQUENCE) is None
    assert parse_cuts("none", SEQUENCE) == []
    assert parse_cuts("NONE", SEQUENCE) == []


@pytest.mark.parametrize(
    "text", ["1040,1097", "1040 1097", "1040, 1097", " 1097,1040 ", "1040,,1097", "1040\t1097"]
)
def test_parse_cuts_lists_give_sorted_positions(text):
    assert parse_cuts(text, SEQUENCE) == [39, 96]


def test_parse_cuts_uses_the_plate_numbering():
    video = tuple(range(61))  # video frames are numbered from 0
    assert parse_cuts("20 37", video) == [20, 37]
    gapped = (1001, 1002, 1003, 1005, 1006, 1007)  # 1004 missing
    assert parse_cuts("1005", gapped) == [3]
    assert parse_cuts("1003,1099", SEQUENCE) == [2, 98]  # 2-frame first and last shots


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must be `auto`, `none` or frame numbers"),
        ("cut", "must be `auto`, `none` or frame numbers"),
        ("1040-1050", "must be `auto`, `none` or frame numbers"),
        ("-1040", "must be `auto`, `none` or frame numbers"),
        ("1040.5", "must be `auto`, `none` or frame numbers"),
        ("1040,1040", "frame 1040 more than once"),
        ("1200", r"frame 1200 is not in the plate \(frames 1001-1100\)"),
        ("1000", "frame 1000 is not in the plate"),
        ("1001", "first frame"),
        ("1001,1050", "first frame"),
        ("1040,1041", r"shot 2 \(frame 1040\) with 1 frame"),
        ("1100", r"shot 2 \(frame 1100\) with 1 frame"),
    ],
)
def test_parse_cuts_refusals(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_cuts(text, SEQUENCE)


def test_parse_cuts_refuses_a_frame_in_a_gap():
    with pytest.raises(ConfigError, match=r"frame 1004 is not in the plate \(.*with gaps\)"):
        parse_cuts("1004", (1001, 1002, 1003, 1005, 1006, 1007))


# ---------------------------------------------------------------------------- shots
def test_one_shot_without_cuts():
    assert shots_from_cuts(SEQUENCE, []) == [Shot(0, 0, 100, 1001, 1100)]


def test_shots_cover_the_clip_in_order():
    shots = shots_from_cuts(SEQUENCE, [39, 96])
    assert shots == [
        Shot(0, 0, 39, 1001, 1039),
        Shot(1, 39, 96, 1040, 1096),
        Shot(2, 96, 100, 1097, 1100),
    ]
    assert [s.n_frames for s in shots] == [39, 57, 4]
    assert sum(s.n_frames for s in shots) == len(SEQUENCE)


def test_shots_keep_the_plate_numbers_across_gaps():
    gapped = (1001, 1002, 1003, 1005, 1006, 1007)
    assert shots_from_cuts(gapped, [3]) == [Shot(0, 0, 3, 1001, 1003), Shot(1, 3, 6, 1005, 1007)]


def test_two_frame_shots_are_allowed():
    shots = shots_from_cuts(tuple(range(6)), [2, 4])
    assert [(s.first_frame, s.last_frame) for s in shots] == [(0, 1), (2, 3), (4, 5)]


@pytest.mark.parametrize(
    ("cuts", "message"),
    [
        ([0], "outside 1..99"),
        ([100], "outside 1..99"),
        ([-3], "outside 1..99"),
        ([50, 40], "must increase"),
        ([40, 40], "must increase"),
        ([1], r"shot 1 \(frame 1001\) with 1 frame"),
        ([50, 51], r"shot 2 \(frame 1051\) with 1 frame"),
        ([99], r"shot 2 \(frame 1100\) with 1 frame"),
    ],
)
def test_shots_from_cuts_refusals(cuts, message):
    with pytest.raises(ConfigError, match=message):
        shots_from_cuts(SEQUENCE, cuts)
