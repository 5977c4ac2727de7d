"""Reading plates: videos and image sequences generated on the fly, read back through open_plate."""

from __future__ import annotations

import dataclasses
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import OpenImageIO as oiio
import pytest

from rollingdepth_core.colorspace import STUDIO_CONFIG, ColorRequest
from rollingdepth_core.errors import ConfigError, InputError
from rollingdepth_core.plate import Plate, open_plate

from .plate_fixtures import (
    make_image_sequence,
    make_mixed_resolution_sequence,
    make_video,
    plate_frame,
    srgb_to_linear,
    write_image,
)

W, H, N = 64, 48, 8
NTSC_FILM = Fraction(24000, 1001)
# Mean absolute error against the source pixels, per how lossy the format is.
VIDEO_TOLERANCE = {"libx264": 0.03, "prores_ks": 0.01, "ffv1": 0.005}
SEQUENCE_TOLERANCE = {"png": 0.003, "exr": 0.002, "tif": 1e-4, "jpg": 0.02, "dpx": 0.002}
SRGB, LINEAR = "sRGB Encoded Rec.709 (sRGB)", "Linear Rec.709 (sRGB)"
ACES_VIEW = "ACES 2.0 - SDR 100 nits (Rec.709)"


def studio_display(pixels: np.ndarray, space: str) -> np.ndarray:
    """OpenImageIO's own display transform of ``pixels``: the studio config's default view."""
    buf = oiio.ImageBufAlgo.ociodisplay(
        oiio.ImageBuf(np.ascontiguousarray(pixels, dtype=np.float32)),
        "sRGB - Display",
        ACES_VIEW,
        space,
        colorconfig=STUDIO_CONFIG,
    )
    return np.clip(buf.get_pixels(oiio.FLOAT), 0.0, 1.0)


@pytest.fixture(scope="module")
def plates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("plates")


@pytest.fixture(scope="module")
def h264(plates: Path) -> Path:
    return make_video(plates / "clip.mp4", N, W, H)


@pytest.fixture(scope="module")
def png_sequence(plates: Path) -> str:
    return make_image_sequence(plates / "png", N, W, H)


def _read_all(plate: Plate) -> tuple[list[int], list[np.ndarray]]:
    numbers, images = [], []
    for number, rgb in plate.frames():
        numbers.append(number)
        images.append(rgb)
    return numbers, images


# ---------------------------------------------------------------------------------------------
# Video


@pytest.mark.parametrize(
    ("codec", "suffix", "codec_name"),
    [("libx264", ".mp4", "h264"), ("prores_ks", ".mov", "prores"), ("ffv1", ".mkv", "ffv1")],
)
def test_video_reads_back(plates: Path, codec: str, suffix: str, codec_name: str) -> None:
    path = make_video(plates / f"{codec}{suffix}", N, W, H, codec=codec)
    plate = open_plate(path)

    info = plate.info
    assert (info.kind, info.source, info.codec) == ("video", str(path), codec_name)
    assert (info.width, info.height) == (W, H)
    assert info.fps == NTSC_FILM and isinstance(info.fps, Fraction)
    assert info.frame_numbers == tuple(range(N)) and len(plate) == N
    assert info.missing_frames == () and info.color.input_space == SRGB
    assert info.color.passthrough

    numbers, images = _read_all(plate)
    assert numbers == list(range(N))
    for index, rgb in enumerate(images):
        assert rgb.shape == (H, W, 3) and rgb.dtype == np.float32
        assert rgb.min() >= 0.0 and rgb.max() <= 1.0
        error = np.abs(rgb - plate_frame(index, W, H)).mean()
        assert error < VIDEO_TOLERANCE[codec], (index, error)


def test_video_counts_frames_by_decoding_when_the_container_does_not_say(plates: Path) -> None:
    path = make_video(plates / "count.mkv", 5, W, H, codec="ffv1")
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # Matroska keeps no frame count
    assert len(open_plate(path)) == 5


@pytest.mark.parametrize("fps", [Fraction(25), Fraction(30000, 1001)])
def test_video_frame_rate_stays_exact(plates: Path, fps: Fraction) -> None:
    path = make_video(plates / f"rate{fps.numerator}.mov", 3, W, H, fps=fps, codec="prores_ks")
    assert open_plate(path).info.fps == fps


# every frame one 24th of a second apart, except where frames were dropped (12 frames over
# 17/24 s): FFmpeg's average rate is 288/17 (16.9 fps), the stream's nominal rate 24
VFR_PTS = [0, 1, 2, 4, 5, 7, 8, 10, 11, 14, 15, 17]


def test_variable_frame_rate_video_is_detected_and_carries_its_nominal_rate(plates: Path) -> None:
    """A variable-rate video was taken without a word, its EXRs stamped with the average rate
    (240/17 in the report); now it says so and carries the nominal rate."""
    path = make_video(plates / "vfr.mp4", 12, W, H, fps=Fraction(24), pts=VFR_PTS)
    with av.open(str(path)) as container:
        assert container.streams.video[0].average_rate == Fraction(288, 17)
    info = open_plate(path).info
    assert info.fps == 24 and info.variable_rate == Fraction(288, 17)
    assert len(info.frame_numbers) == 12  # every frame kept, numbered one after another
    # constant rates are not flagged, Matroska's millisecond rounding (41/42 ms) included
    for name, codec in (("cfr.mp4", "libx264"), ("cfr.mkv", "ffv1"), ("cfr.mov", "prores_ks")):
        info = open_plate(make_video(plates / name, 6, W, H, codec=codec)).info
        assert info.variable_rate is None and info.fps == Fraction(24000, 1001), name


def test_video_random_access_matches_streaming(plates: Path) -> None:
    # Short keyframe interval and enough frames that `read` seeks instead of decoding on.
    path = make_video(plates / "seek.mp4", 60, 32, 24, gop=5)
    plate = open_plate(path)
    _, streamed = _read_all(plate)
    for index in (50, 3, 4, 40, 59, 0, 30, 31, 12, 59):
        assert np.array_equal(plate.read(index), streamed[index]), index
    plate.close()
    with pytest.raises(IndexError):
        plate.read(60)


def test_video_frame_range(plates: Path) -> None:
    path = make_video(plates / "range.mp4", 40, 32, 24, gop=5)
    _, streamed = _read_all(open_plate(path))
    plate = open_plate(path, frames=(30, 35))
    assert plate.info.frame_numbers == (30, 31, 32, 33, 34, 35)
    numbers, images = _read_all(plate)
    assert numbers == [30, 31, 32, 33, 34, 35]
    for number, rgb in zip(numbers, images, strict=True):
        assert np.array_equal(rgb, streamed[number])
    assert np.array_equal(plate.read(0), streamed[30])

    # frames past the end are not there: skipped and said (`frames_outside`), as a sequence's
    beyond = open_plate(path, frames=(35, 45)).info
    assert beyond.frame_numbers == (35, 36, 37, 38, 39)
    assert (beyond.frames_outside, beyond.plate_span) == ("40-45", (0, 39))
    with pytest.raises(InputError, match=r"frames '45-50' hold 0 frame\(s\) of the plate \(its "
                                         r"frame range is 0-39\); RollingDepth needs at least 2"):  # fmt: skip
        open_plate(path, frames="45-50")


# ---------------------------------------------------------------------------------------------
# Image sequences


@pytest.mark.parametrize("ext", ["png", "exr", "tif", "jpg", "dpx"])
def test_sequence_reads_back(plates: Path, ext: str) -> None:
    pattern = make_image_sequence(plates / f"seq_{ext}", 4, W, H, ext=ext)
    assert pattern.endswith(f"plate.####.{ext}")
    plate = open_plate(pattern)

    info = plate.info
    assert (info.kind, info.fps, info.missing_frames) == ("sequence", None, ())
    assert info.frame_numbers == (1001, 1002, 1003, 1004)
    assert (info.width, info.height) == (W, H)
    assert info.color.input_space == (LINEAR if ext == "exr" else SRGB)
    assert info.color.passthrough == (ext != "exr")

    numbers, images = _read_all(plate)
    assert numbers == [1001, 1002, 1003, 1004]
    for index, rgb in enumerate(images):
        assert rgb.shape == (H, W, 3) and rgb.dtype == np.float32
        assert rgb.min() >= 0.0 and rgb.max() <= 1.0
        expected = plate_frame(index, W, H)
        if ext == "exr":  # linear, shown through the ACES view
            expected = studio_display(srgb_to_linear(expected), LINEAR)
        error = np.abs(rgb - expected).mean()
        assert error < SEQUENCE_TOLERANCE[ext], (index, error)
    assert np.array_equal(plate.read(2), images[2])


def test_sequence_path_forms_agree(png_sequence: str) -> None:
    folder = Path(png_sequence).parent
    forms = [
        png_sequence,
        str(folder / "plate.%04d.png"),
        str(folder / "plate.@@@@.png"),
        str(folder),
        str(folder / "plate.1003.png"),
    ]
    for form in forms:
        plate = open_plate(form)
        assert plate.info.source == form
        assert plate.info.frame_numbers == tuple(range(1001, 1001 + N)), form


def test_sequence_padding_must_match(plates: Path) -> None:
    pattern = make_image_sequence(plates / "pad6", 3, 16, 16, start=7, pad=6)
    assert pattern.endswith("plate.######.png")
    assert open_plate(pattern).info.frame_numbers == (7, 8, 9)
    assert open_plate(pattern.replace("######", "%06d")).info.frame_numbers == (7, 8, 9)
    with pytest.raises(InputError, match="no files match"):
        open_plate(pattern.replace("######", "####"))


def test_unpadded_numbers_run_past_the_padding(plates: Path) -> None:
    folder = plates / "unpadded"
    make_image_sequence(folder, 3, 16, 16, start=998, pad=1)  # 998, 999, 1000
    assert open_plate(folder / "plate.#.png").info.frame_numbers == (998, 999, 1000)
    assert open_plate(folder).info.frame_numbers == (998, 999, 1000)


def test_sequence_gaps_are_reported(plates: Path) -> None:
    pattern = make_image_sequence(plates / "gaps", 8, W, H, skip=(1003, 1004, 1007))
    plate = open_plate(pattern)
    assert plate.info.frame_numbers == (1001, 1002, 1005, 1006, 1008)
    assert plate.info.missing_frames == (1003, 1004, 1007)
    assert [n for n, _ in plate.frames()] == [1001, 1002, 1005, 1006, 1008]

    selected = open_plate(pattern, frames=(1002, 1006))
    assert selected.info.frame_numbers == (1002, 1005, 1006)
    assert selected.info.missing_frames == (1003, 1004)


def test_frames_written_out_of_order_are_read_in_order(plates: Path) -> None:
    pattern = make_image_sequence(plates / "order", 6, W, H)
    plate = open_plate(pattern, frames="1005-1006,1001-1002")
    assert plate.info.frame_numbers == (1001, 1002, 1005, 1006)
    assert [n for n, _ in plate.frames()] == [1001, 1002, 1005, 1006]
    assert np.array_equal(plate.read(2), open_plate(pattern, frames="1005-1006").read(0))
    # the Python API's forms agree
    assert open_plate(pattern, frames=[1006, 1001, 1005, 1002]).info.frame_numbers == (
        1001, 1002, 1005, 1006)  # fmt: skip


def test_sequence_frame_range(png_sequence: str) -> None:
    plate = open_plate(png_sequence, frames=(1003, 1005))
    assert plate.info.frame_numbers == (1003, 1004, 1005)
    assert len(plate) == 3
    assert np.abs(plate.read(0) - plate_frame(2, W, H)).mean() < 0.003

    assert open_plate(png_sequence, frames=(990, 1003)).info.frames_outside == "990-1000"
    assert open_plate(png_sequence, frames=(1005, 1100)).info.frames_outside == "1009-1100"
    with pytest.raises(InputError, match=r"'1008-1100' hold 1 frame\(s\) .* range is 1001-1008"):
        open_plate(png_sequence, frames=(1008, 1100))
    with pytest.raises(InputError, match="at least 2 frames; got 1"):
        open_plate(png_sequence, frames=(1004, 1004))
    with pytest.raises(ConfigError):
        open_plate(png_sequence, frames=(1005, 1003))


def test_frames_streams_lazily(png_sequence: str) -> None:
    stream = open_plate(png_sequence).frames()
    number, rgb = next(stream)
    assert number == 1001 and rgb.shape == (H, W, 3)
    stream.close()


def test_plate_info_is_frozen(png_sequence: str) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        open_plate(png_sequence).info.width = 1  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Colour and channels


def test_linear_exr_goes_through_the_view(plates: Path) -> None:
    folder = plates / "grey18"
    folder.mkdir()
    for number in (1, 2):
        write_image(folder / f"grey.{number:04d}.exr", np.full((8, 8, 3), 0.18), "half")
    plate = open_plate(folder)
    assert plate.info.color.input_space == LINEAR and plate.info.color.view == ACES_VIEW
    # HALF stores 0.18 to ~1e-4; mid grey is tone mapped, not just encoded (0.4613).
    grey = studio_display(np.full((1, 1, 3), 0.18), LINEAR)[0, 0]
    assert abs(grey[0] - 0.4613) > 0.01
    np.testing.assert_allclose(plate.read(0), np.broadcast_to(grey, (8, 8, 3)), atol=1e-3)

    as_srgb = open_plate(folder, input_colorspace="srgb")
    assert as_srgb.info.color.input_space == SRGB and as_srgb.info.color.passthrough
    np.testing.assert_allclose(as_srgb.read(0), 0.18, atol=1e-3)


def test_out_of_range_values_end_in_unit_range(plates: Path) -> None:
    folder = plates / "hdr"
    folder.mkdir()
    pixels = np.zeros((4, 4, 3), np.float32)
    pixels[0, 0] = (-0.5, 4.0, np.nan)
    pixels[1, 1] = (1.0, 0.0, np.inf)
    for number in (1, 2):
        write_image(folder / f"hdr.{number}.exr", pixels, "float")
    rgb = open_plate(folder).read(0)
    assert np.isfinite(rgb).all() and rgb.min() >= 0.0 and rgb.max() <= 1.0
    # Passed through (already display-encoded), they are clipped; NaN -> 0, inf -> 1.
    rgb = open_plate(folder, input_colorspace="srgb").read(0)
    np.testing.assert_array_equal(rgb[0, 0], (0.0, 1.0, 0.0))
    np.testing.assert_array_equal(rgb[1, 1], (1.0, 0.0, 1.0))


def test_integer_images_can_be_declared_linear(png_sequence: str) -> None:
    plate = open_plate(png_sequence, input_colorspace="linear")
    assert plate.info.color.input_space == LINEAR
    expected = studio_display(np.round(plate_frame(0, W, H) * 255) / 255, LINEAR)
    np.testing.assert_allclose(plate.read(0), expected, atol=1e-5)


def test_unknown_input_colorspace_is_a_config_error(png_sequence: str) -> None:
    with pytest.raises(ConfigError, match="rollingdepth colorspaces"):
        open_plate(png_sequence, input_colorspace="not-a-colour-space")


def test_grey_and_alpha_channels(plates: Path) -> None:
    grey, rgba = plates / "grey", plates / "rgba"
    grey.mkdir()
    rgba.mkdir()
    for number in (1, 2):
        write_image(grey / f"g.{number}.exr", np.full((4, 6), 0.18), "float", channel_names=["Y"])
        pixels = np.concatenate([np.full((4, 6, 3), 0.5), np.full((4, 6, 1), 0.25)], axis=-1)
        write_image(rgba / f"a.{number}.png", pixels, "uint8", {"oiio:UnassociatedAlpha": 1})
    grey_rgb = open_plate(grey).read(1)
    assert grey_rgb.shape == (4, 6, 3)
    grey = studio_display(np.full((1, 1, 3), 0.18), LINEAR)[0, 0]
    np.testing.assert_allclose(grey_rgb, np.broadcast_to(grey, (4, 6, 3)), atol=1e-6)
    rgba_rgb = open_plate(rgba).read(0)
    assert rgba_rgb.shape == (4, 6, 3)
    # Colour as stored, not premultiplied by the alpha that is dropped.
    np.testing.assert_allclose(rgba_rgb, 128 / 255, atol=1e-6)


@pytest.mark.parametrize(
    ("origin", "size", "inside"),
    [
        ((2, 1), (4, 2), (slice(1, 3), slice(2, 6))),  # data window inside: black around it
        ((-2, -1), (12, 6), (slice(0, 4), slice(0, 8))),  # overscan: cropped
    ],
)
def test_exr_data_window_is_placed_in_display_window(
    tmp_path: Path, origin: tuple[int, int], size: tuple[int, int], inside: tuple[slice, slice]
) -> None:
    for number in (1, 2):
        spec = oiio.ImageSpec(size[0], size[1], 3, "float")
        spec.x, spec.y = origin
        spec.full_x, spec.full_y, spec.full_width, spec.full_height = 0, 0, 8, 4
        path = str(tmp_path / f"w.{number}.exr")
        out = oiio.ImageOutput.create(path)
        assert out.open(path, spec)
        assert out.write_image(np.ones((size[1], size[0], 3), np.float32))
        assert out.close()
    plate = open_plate(tmp_path, input_colorspace="srgb")  # geometry only: keep values
    assert (plate.info.width, plate.info.height) == (8, 4)
    rgb = plate.read(0)
    assert rgb.shape == (4, 8, 3)
    assert rgb[inside].min() == 1.0
    assert rgb.sum() == rgb[inside].sum()


# ---------------------------------------------------------------------------------------------
# Bad input


def test_missing_paths(plates: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        open_plate(plates / "nowhere.mp4")
    with pytest.raises(InputError, match="does not exist"):
        open_plate(plates / "no_folder" / "plate.####.exr")
    (plates / "empty").mkdir()
    with pytest.raises(InputError, match="no image sequence"):
        open_plate(plates / "empty")


def test_garbage_video_is_an_input_error(plates: Path) -> None:
    path = plates / "garbage.mp4"
    path.write_bytes(b"this is not a video at all" * 100)
    with pytest.raises(InputError, match="garbage.mp4"):
        open_plate(path)


def test_garbage_image_is_an_input_error(plates: Path) -> None:
    folder = plates / "bad_png"
    make_image_sequence(folder, 3, 16, 16)
    (folder / "plate.1002.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"plate\.1002\.png"):
        open_plate(folder)


def test_file_without_video_stream(plates: Path) -> None:
    path = plates / "sound.wav"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with pytest.raises(InputError, match="no video stream"):
        open_plate(path)


def test_too_few_frames(plates: Path) -> None:
    with pytest.raises(InputError, match="at least 2 frames; got 1"):
        open_plate(make_video(plates / "one.mp4", 1, W, H))
    lonely = Path(make_image_sequence(plates / "lonely", 1, 16, 16)).parent
    with pytest.raises(InputError, match="at least 2 frames; got 1"):
        open_plate(lonely / "plate.1001.png")
    with pytest.raises(InputError, match="at least 2 frames; got 1"):
        open_plate(lonely / "plate.####.png")


def test_mixed_resolutions(plates: Path) -> None:
    pattern = make_mixed_resolution_sequence(plates / "mixed")
    with pytest.raises(InputError, match=r"frame 1003 is 96x48 but frame 1001 is 64x48"):
        open_plate(pattern)
    # Outside the mixed frame the plate is fine.
    assert len(open_plate(pattern, frames=(1001, 1002))) == 2


def test_folder_with_two_sequences(plates: Path, png_sequence: str) -> None:
    folder = plates / "two"
    shutil.copytree(Path(png_sequence).parent, folder)
    make_image_sequence(folder, 2, 16, 16, name="other", ext="jpg")
    with pytest.raises(InputError, match="2 image sequences") as caught:
        open_plate(folder)
    message = str(caught.value)
    assert "plate.####.png (8 frames)" in message and "other.####.jpg (2 frames)" in message
    assert "\n" not in message
    # Naming one of them still works.
    assert len(open_plate(folder / "other.####.jpg")) == 2


# ---------------------------------------------------------------------------------------------
# Geometry: rotation, windows, pixel aspect


def _rotated_video(path: Path, degrees: int) -> Path:
    """An h264 clip of `plate_frame` stored W x H whose display matrix turns it by degrees."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.set_display_rotation(degrees)
        for index in range(4):
            frame = av.VideoFrame.from_ndarray(
                np.rint(plate_frame(index, W, H) * 255).astype(np.uint8), format="rgb24"
            )
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotated_video_comes_out_as_players_show_it(plates: Path, degrees: int) -> None:
    plate = open_plate(_rotated_video(plates / f"phone{degrees}.mp4", degrees))
    info = plate.info
    assert info.rotation == degrees
    assert (info.width, info.height) == ((H, W) if degrees % 180 else (W, H))
    assert plate.info.header_metadata()["source_rotation"] == degrees
    numbers, images = _read_all(plate)
    for index, rgb in zip(numbers, images, strict=True):
        # players turn the stored frame counter-clockwise by the display matrix's angle
        shown = np.rot90(plate_frame(index, W, H), k=degrees // 90)
        assert rgb.shape == (info.height, info.width, 3)
        assert np.abs(rgb - shown).mean() < VIDEO_TOLERANCE["libx264"]
    np.testing.assert_array_equal(plate.read(2), images[2])


def _windowed_exr(path: Path, display: tuple, data: tuple, aspect: float) -> None:
    spec = oiio.ImageSpec(data[2], data[3], 3, "half")
    spec.x, spec.y = data[:2]
    spec.full_x, spec.full_y, spec.full_width, spec.full_height = display
    spec.attribute("PixelAspectRatio", aspect)
    out = oiio.ImageOutput.create(str(path))
    assert out.open(str(path), spec)
    assert out.write_image(np.full((data[3], data[2], 3), 0.18, np.float32))
    assert out.close()


def test_exr_plate_windows_and_pixel_aspect_reach_the_output(tmp_path: Path) -> None:
    from rollingdepth_core.exr import read_exr, write_depth_exr

    display, data = (100, 50, 40, 24), (96, 48, 48, 27)  # offset origin, overscan
    for number in (1001, 1002):
        _windowed_exr(tmp_path / f"plate.{number}.exr", display, data, 2.0)
    plate = open_plate(tmp_path / "plate.####.exr")
    info = plate.info
    assert (info.width, info.height) == (40, 24)
    assert info.exr_windows() == {
        "display_window": display,
        "data_window": data,
        "pixel_aspect": 2.0,
    }
    assert info.header_metadata()["source_data_window"] == "96 48 48 27"
    # an output at plate resolution lines up over the plate
    depth = np.linspace(1, 2, 40 * 24, dtype=np.float32).reshape(24, 40)
    write_depth_exr(tmp_path / "depth.1001.exr", depth, **info.exr_windows())
    _, header = read_exr(tmp_path / "depth.1001.exr")
    assert header["display_window"] == display and header["data_window"] == data
    assert header["PixelAspectRatio"] == pytest.approx(2.0)


def test_data_windows_that_change_per_frame_are_not_kept(tmp_path: Path) -> None:
    _windowed_exr(tmp_path / "plate.1.exr", (0, 0, 16, 8), (0, 0, 16, 8), 1.0)
    _windowed_exr(tmp_path / "plate.2.exr", (0, 0, 16, 8), (2, 1, 10, 5), 1.0)
    windows = open_plate(tmp_path).info.exr_windows()
    assert windows["data_window"] == windows["display_window"] == (0, 0, 16, 8)


# ---------------------------------------------------------------------------------------------
# Memory: resize while streaming, refuse what cannot fit


def test_large_frames_are_read_in_strips_and_match_a_whole_read(tmp_path: Path) -> None:
    from rollingdepth_core.plate import resize_rgb

    for number, ext in ((1, "png"), (2, "png")):
        write_image(tmp_path / f"big.{number}.{ext}", plate_frame(number, 900, 600), "uint8")
    whole = open_plate(tmp_path / "big.#.png")
    # 900x600 float RGB is 6.2 MiB: over a 1 MiB limit, so the reader goes strip by strip
    strips = open_plate(tmp_path / "big.#.png", max_frame_gib=1 / 1024)
    fit = (40, 60)
    expected = [resize_rgb(rgb, fit) for _, rgb in whole.frames()]
    got = [rgb for _, rgb in strips.frames(fit)]
    for a, b in zip(got, expected, strict=True):
        assert a.shape == (40, 60, 3)
        np.testing.assert_allclose(a, b, atol=2e-6)
    with pytest.raises(InputError, match=r"needs 6\.18 MiB, over the limit of 1\.00 MiB.*--max-"):
        strips.read(0)


def test_windowed_exr_read_in_strips_matches_a_whole_read(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    for number in (1, 2):
        spec = oiio.ImageSpec(300, 200, 4, "float")
        spec.x, spec.y = -10, 20  # overscan left, black rows on top
        spec.full_x, spec.full_y, spec.full_width, spec.full_height = 0, 0, 280, 240
        path = str(tmp_path / f"w.{number}.exr")
        out = oiio.ImageOutput.create(path)
        assert out.open(path, spec)
        assert out.write_image(rng.uniform(0, 2, (200, 300, 4)).astype(np.float32))
        assert out.close()
    # both resize in the input space, then convert the resized frame (exact OCIO)
    exact = ColorRequest("auto", exact=True)
    expected = list(open_plate(tmp_path, input_colorspace=exact).frames((24, 28)))[1][1]
    plate = open_plate(tmp_path, max_frame_gib=0.1 / 1024, input_colorspace=exact)
    got = list(plate.frames((24, 28)))[1][1]
    np.testing.assert_allclose(got, expected, atol=2e-6)


def test_what_cannot_fit_is_refused_with_the_limit_and_the_flag(plates: Path, h264: Path):
    video = open_plate(h264, max_frame_gib=1 / 2**20)  # 1 KiB
    with pytest.raises(
        InputError, match=r"64x48 frame whole needs 36\.00 KiB, over the limit of 1\.00 KiB"
    ):
        next(video.frames((8, 8)))  # video frames are decoded whole
    sequence = open_plate(make_image_sequence(plates / "fit", 2, 64, 48), max_frame_gib=1 / 2**20)
    with pytest.raises(InputError, match="lower `--res`"):
        sequence.check_memory((48, 64))  # the result itself is over the limit
    sequence.check_memory((8, 10))
    with pytest.raises(ConfigError, match="`--max-frame-memory` is in GiB"):
        open_plate(h264, max_frame_gib=0)
    with pytest.raises(ConfigError, match="`--max-frame-memory` is in GiB"):
        open_plate(h264, max_frame_gib=1e-12)  # under a byte


_HUGE_PLATE = """
import resource, sys
import numpy as np
import OpenImageIO as oiio
from rollingdepth_core.plate import open_plate

size = int(sys.argv[2])
for number in (1, 2):
    path = f"{sys.argv[1]}/huge.{number}.png"
    out = oiio.ImageOutput.create(path)
    out.open(path, oiio.ImageSpec(size, size, 3, "uint8"))
    row = (np.arange(size * 3, dtype=np.uint32).reshape(size, 3) % 251).astype(np.uint8)
    for y in range(size):
        out.write_scanline(y, 0, row)
    out.close()
plate = open_plate(f"{sys.argv[1]}/huge.#.png", max_frame_gib=0.25)
try:
    next(plate.frames())
except Exception as exc:
    print("REFUSED", exc)
import torch  # noqa: F401  (loaded before the baseline, as in a run)

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

before = peak()
shapes = [rgb.shape for _, rgb in plate.frames((64, 64))]
print("SHAPES", shapes)
print("GROWTH", peak() - before)
"""


def test_huge_frames_stay_within_a_memory_limit(tmp_path: Path) -> None:
    import subprocess
    import sys

    # two 6144x6144 PNGs (432 MiB each as float RGB) with a 0.25 GiB limit and --res 64
    proc = subprocess.run(
        [sys.executable, "-c", _HUGE_PLATE, str(tmp_path), "6144"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert "6144x6144 frame whole needs 432.00 MiB" in lines["REFUSED"]
    assert "--max-frame-memory" in lines["REFUSED"]
    assert lines["SHAPES"] == "[(64, 64, 3), (64, 64, 3)]"
    assert int(lines["GROWTH"]) < 128 * 2**20  # a whole decode grows by 2.2 GiB here
