"""Colour management against OpenColorIO itself: files and videos written here, read back."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import OpenImageIO as oiio
import pytest

from rollingdepth_core.cli import main
from rollingdepth_core.colorspace import (
    STUDIO_CONFIG,
    ColorRequest,
    describe_config,
    display_transform,
    resolve_color,
    to_display,
)
from rollingdepth_core.errors import ConfigError
from rollingdepth_core.exr import read_exr
from rollingdepth_core.plate import open_plate, resize_rgb

from .cli_in_process import run_in_process as run_cli
from .plate_fixtures import plate_frame, write_image
from .test_cli import FAST

SRGB_DISPLAY = "sRGB - Display"
ACES_VIEW = "ACES 2.0 - SDR 100 nits (Rec.709)"
W, H = 40, 24
# FFmpeg tag numbers: primaries, transfer, matrix.
BT2020, PQ, HLG, BT2020_NCL = 9, 16, 18, 9


def scene_pixels(width: int, height: int, seed: int = 0) -> np.ndarray:
    """float32 [H,W,3]: dark to bright, saturated and neutral, as camera plates hold."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    tint = rng.uniform(0.2, 1.0, size=(height, 1, 3)).astype(np.float32)
    return np.ascontiguousarray(np.broadcast_to(ramp * tint, (height, width, 3)))


def ocio_display(pixels: np.ndarray, space: str, config: str = STUDIO_CONFIG, **kw) -> np.ndarray:
    """OpenImageIO's own `ociodisplay` of ``pixels``, clipped to the model's [0, 1]."""
    display = kw.get("display", SRGB_DISPLAY)
    view = kw.get("view", ACES_VIEW)
    buf = oiio.ImageBufAlgo.ociodisplay(
        oiio.ImageBuf(np.ascontiguousarray(pixels, dtype=np.float32)),
        display,
        view,
        space,
        colorconfig=config,
    )
    assert not buf.has_error, buf.geterror()
    return np.clip(buf.get_pixels(oiio.FLOAT), 0.0, 1.0)


def read_float(path: Path) -> np.ndarray:
    """The file's RGB as the model should get it: float as stored, integer code values k of an
    n-bit file (10-bit DPX: the top bits of uint16) as exactly k / (2**n - 1)."""
    inp = oiio.ImageInput.open(str(path))
    spec = inp.spec()
    pixels = np.asarray(inp.read_image(oiio.UNKNOWN))  # the file's own type
    inp.close()
    if pixels.dtype.kind == "u":
        stored = pixels.dtype.itemsize * 8
        bits = spec.get_int_attribute("oiio:BitsPerSample", stored)
        pixels = (pixels >> (stored - bits)).astype(np.float32) / np.float32(2**bits - 1)
    return pixels.astype(np.float32)[..., :3]


def write_pair(folder: Path, ext: str, pixels: np.ndarray, pixel_type: str, **attributes):
    folder.mkdir(parents=True, exist_ok=True)
    for number in (1001, 1002):
        write_image(folder / f"p.{number}.{ext}", pixels, pixel_type, attributes)
    return folder


def write_tagged_video(
    path: Path, n_frames: int, transfer: int, width: int = W, height: int = H
) -> Path:
    """10-bit ProRes tagged Rec.2020 with ``transfer``: `plate_frame` as code values."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("prores_ks", rate=Fraction(24))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv422p10le"
        context = stream.codec_context
        context.color_primaries, context.color_trc = BT2020, transfer
        context.colorspace, context.color_range = BT2020_NCL, 1
        for index in range(n_frames):
            rgb = np.rint(plate_frame(index, width, height) * 65535).astype(np.uint16)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb48le")
            # Tagged before the YUV conversion: asking swscale to change the tags instead
            # makes it build a colour pipeline (10 s a frame) that this test does not want.
            frame.color_trc, frame.color_primaries = transfer, BT2020
            frame = frame.reformat(
                format="yuv422p10le", dst_colorspace=BT2020_NCL, dst_color_range=1
            )
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def decoded_video_frame(path: Path, index: int) -> np.ndarray:
    """The code values of frame ``index`` decoded the way the plate reader decodes them."""
    with av.open(str(path)) as container:
        for number, frame in enumerate(container.decode(video=0)):
            if number == index:
                rgb = frame.to_ndarray(format="rgb48le", src_color_range=frame.color_range)
                return rgb.astype(np.float32) / 65535.0
    raise AssertionError(f"{path} has no frame {index}")


# ---------------------------------------------------------------------------------------------
# The model input is OCIO's display transform, bit for bit


@pytest.mark.parametrize(
    "space",
    [
        "ACEScg",
        "ACES2065-1",
        "ARRI LogC4",
        "S-Log3 S-Gamut3.Cine",
        "Log3G10 REDWideGamutRGB",
        "Camera Rec.709",
    ],
)
def test_model_input_is_ociodisplay(tmp_path: Path, space: str) -> None:
    pixels = scene_pixels(W, H) * (4.0 if space.startswith("ACES") else 1.0)
    folder = write_pair(tmp_path / "p", "exr", pixels, "float")
    plate = open_plate(folder, input_colorspace=ColorRequest(space, exact=True))
    color = plate.info.color
    assert (color.config, color.input_space, color.display, color.view) == (
        STUDIO_CONFIG,
        space,
        SRGB_DISPLAY,
        ACES_VIEW,
    )
    assert color.decided_by == "requested" and not color.passthrough and color.exact
    model_input = plate.read(0)
    assert np.array_equal(model_input, ocio_display(read_float(folder / "p.1001.exr"), space))
    # A tone map, not the identity: the plate does not reach the model as stored.
    assert np.abs(model_input - np.clip(pixels, 0, 1)).max() > 0.05


def test_large_frames_are_converted_in_bands_bit_for_bit(tmp_path: Path) -> None:
    pixels = scene_pixels(331, 257, seed=2) * 3.0  # odd sizes, > 65536 pixels: split in bands
    folder = write_pair(tmp_path / "big", "exr", pixels, "float")
    plate = open_plate(folder, input_colorspace=ColorRequest("ACEScg", exact=True))
    assert np.array_equal(plate.read(1), ocio_display(pixels, "ACEScg"))
    assert np.array_equal(to_display(pixels, plate.info.color), plate.read(1))


def realistic_pixels(width: int, height: int, seed: int = 0) -> np.ndarray:
    """float32 [H,W,3] scene-linear: blotchy texture over 12 stops, mild tints, hot highlights."""
    rng = np.random.default_rng(seed)
    blotches = np.kron(rng.normal(0.0, 1.0, (height // 8 + 1, width // 8 + 1)), np.ones((8, 8)))
    stops = np.clip(2.5 * blotches[:height, :width], -8, 4) + rng.normal(0, 0.1, (height, width))
    tint = np.kron(
        rng.uniform(0.6, 1.4, (height // 32 + 1, width // 32 + 1, 3)), np.ones((32, 32, 1))
    )
    pixels = 0.18 * 2.0 ** stops[..., None] * tint[:height, :width]
    pixels[: height // 16, : width // 16] *= 50.0  # a light source
    return np.ascontiguousarray(pixels, dtype=np.float32)


@pytest.mark.parametrize("space", ["ACEScg", "ARRI LogC4"])
def test_baked_lut_stays_within_a_code_value_of_ocio(tmp_path: Path, space: str) -> None:
    pixels = realistic_pixels(320, 240)  # > 65536 pixels: the baked LUT
    if space == "ARRI LogC4":  # the same scene as the camera encodes it
        convert = oiio.ImageBufAlgo.colorconvert(
            oiio.ImageBuf(pixels), "ACEScg", space, colorconfig=STUDIO_CONFIG
        )
        pixels = np.ascontiguousarray(convert.get_pixels(oiio.FLOAT))
    folder = write_pair(tmp_path / "big", "exr", pixels, "float")
    plate = open_plate(folder, input_colorspace=space)
    color = plate.info.color
    assert not color.exact and color.header()["ocio.exact"].startswith("no (")
    assert display_transform(color).baked().worthwhile
    fast = plate.read(0)
    exact = ocio_display(read_float(folder / "p.1001.exr"), space)
    assert display_transform(color).baked().marked_fraction < 0.05
    error = np.abs(fast - exact)
    # Measured 0.0033 / 0.0041 max, 0.0025 / 0.0027 at the 99.9th percentile.
    assert error.max() < 1.5 / 255 and np.quantile(error, 0.999) < 1.0 / 255
    assert 0 < error.mean() < 0.25 / 255  # the LUT, not the exact processor
    assert fast.min() >= 0.0 and fast.max() <= 1.0


def test_baked_lut_hands_what_it_cannot_do_to_the_exact_processor() -> None:
    transform = display_transform(resolve_color(ColorRequest("ACEScg"), ()))
    hard = np.array(
        [
            [np.nan, 0.2, 0.2],
            [np.inf, 1.0, 1.0],
            [-np.inf, 0.1, 0.1],
            [5000.0, 20.0, 1.0],  # above the shaper's 2^10
            [-1.0, 0.5, 0.5],  # below its linear toe
            [4.344, 4.107, 0.1233],  # bright saturated yellow: a marked cell
        ],
        dtype=np.float32,
    )
    frame = realistic_pixels(300, 240, seed=3)  # > 65536 pixels: the baked LUT
    frame[100, 50:56] = hard
    fast = transform(frame)
    exact = np.clip(ocio_display(frame, "ACEScg"), 0.0, 1.0)
    assert np.array_equal(fast[100, 50:56], exact[100, 50:56])
    assert np.isfinite(fast).all() and fast.max() <= 1.0 and fast.min() >= 0.0


@pytest.mark.parametrize(
    ("transfer", "space", "tag"),
    [(HLG, "Rec.2100-HLG - Display", "arib-std-b67"), (PQ, "Rec.2100-PQ - Display", "smpte2084")],
)
def test_hdr_video_is_tone_mapped_by_ocio(tmp_path: Path, transfer: int, space: str, tag: str):
    path = write_tagged_video(tmp_path / "hdr.mov", 3, transfer)
    plate = open_plate(path, input_colorspace=ColorRequest(exact=True))
    color = plate.info.color
    assert color.input_space == space and not color.passthrough
    assert color.decided_by == f"video transfer {tag}, primaries bt2020"
    code_values = decoded_video_frame(path, 1)
    model_input = plate.read(1)
    assert np.array_equal(model_input, ocio_display(code_values, space))
    assert np.abs(model_input - code_values).mean() > 0.02  # tone mapped, not passed through


def test_rec709_video_and_8bit_srgb_pass_through_unchanged(tmp_path: Path) -> None:
    from .plate_fixtures import make_video

    video = make_video(tmp_path / "sdr.mp4", 3, W, H)
    color = open_plate(video).info.color
    assert color.input_space == "sRGB Encoded Rec.709 (sRGB)" and color.passthrough
    assert color.decided_by.startswith("video transfer bt709") or "unspecified" in color.decided_by

    pixels = np.rint(plate_frame(0, W, H) * 255) / 255
    folder = write_pair(tmp_path / "png", "png", pixels, "uint8")
    plate = open_plate(folder)
    assert plate.info.color.passthrough
    assert "unchanged" in plate.info.color.summary
    # Bit-identical to the file's code values over 255: sRGB plates reach the model unchanged.
    assert np.array_equal(plate.read(0), read_float(folder / "p.1001.png"))


# ---------------------------------------------------------------------------------------------
# auto: what the metadata says


@pytest.mark.parametrize(
    ("ext", "pixel_type", "attributes", "space", "decided_by"),
    [
        ("exr", "half", {"oiio:ColorSpace": "ACEScg"}, "ACEScg", "EXR oiio:ColorSpace"),
        (
            "exr",
            "half",
            {"colorInteropID": "ocio:arrilogc4_awg4_scene"},
            "ARRI LogC4",
            "EXR oiio:ColorSpace 'ocio:arrilogc4_awg4_scene'",
        ),
        (
            "exr",
            "half",
            {"acesImageContainerFlag": 1, "compression": "none"},
            "ACES2065-1",
            "EXR oiio:ColorSpace 'lin_ap0_scene'",  # OIIO reads the ACES container flag
        ),
        ("exr", "float", {}, "Linear Rec.709 (sRGB)", "floating-point pixels"),
        ("dpx", "uint16", {"dpx:Transfer": "Logarithmic"}, "ADX10", "DPX transfer"),
        ("dpx", "uint16", {"dpx:Transfer": "Linear"}, "Linear Rec.709 (sRGB)", "oiio:ColorSpace"),
        ("dpx", "uint16", {}, "sRGB Encoded Rec.709 (sRGB)", "integer pixels"),
        ("tif", "uint16", {}, "sRGB Encoded Rec.709 (sRGB)", "integer pixels"),
    ],
)
def test_auto_reads_the_header(tmp_path, ext, pixel_type, attributes, space, decided_by) -> None:
    folder = write_pair(tmp_path / "a", ext, scene_pixels(W, H), pixel_type, **attributes)
    color = open_plate(folder).info.color
    assert color.input_space == space
    assert decided_by in color.decided_by
    assert space in color.summary and color.decided_by in color.summary


@pytest.mark.parametrize(
    ("primaries", "space"),
    [
        ((0.7347, 0.2653, 0.0, 1.0, 0.0001, -0.077, 0.32168, 0.33767), "ACES2065-1"),
        ((0.713, 0.293, 0.165, 0.830, 0.128, 0.044, 0.32168, 0.33767), "ACEScg"),
        ((0.708, 0.292, 0.170, 0.797, 0.131, 0.046, 0.3127, 0.3290), "Linear Rec.2020"),
    ],
)
def test_auto_reads_exr_chromaticities(tmp_path: Path, primaries, space: str) -> None:
    folder = tmp_path / "c"
    folder.mkdir()
    for number in (1, 2):
        spec = oiio.ImageSpec(W, H, 3, "half")
        spec.attribute("chromaticities", oiio.TypeDesc("float[8]"), primaries)
        path = str(folder / f"c.{number}.exr")
        out = oiio.ImageOutput.create(path)
        assert out.open(path, spec) and out.write_image(scene_pixels(W, H)) and out.close()
    color = open_plate(folder).info.color
    assert color.input_space == space and "chromaticities" in color.decided_by


def test_requested_space_overrides_metadata(tmp_path: Path) -> None:
    folder = write_pair(
        tmp_path / "o", "exr", scene_pixels(W, H), "half", **{"oiio:ColorSpace": "ACEScg"}
    )
    assert open_plate(folder, input_colorspace="linear").info.color.input_space == (
        "Linear Rec.709 (sRGB)"
    )


# ---------------------------------------------------------------------------------------------
# Names, views, configs


def test_unknown_space_and_view_say_where_to_look(tmp_path: Path) -> None:
    folder = write_pair(tmp_path / "u", "png", plate_frame(0, W, H), "uint8")
    with pytest.raises(ConfigError, match="rollingdepth colorspaces") as error:
        open_plate(folder, input_colorspace="LogC5 please")
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="Un-tone-mapped"):
        open_plate(folder, input_colorspace=ColorRequest("ACEScg", view="No Such View"))


def test_view_can_be_chosen(tmp_path: Path) -> None:
    pixels = scene_pixels(W, H) * 2.0
    folder = write_pair(tmp_path / "v", "exr", pixels, "float")
    request = ColorRequest("ACEScg", view="Un-tone-mapped", exact=True)
    plate = open_plate(folder, input_colorspace=request)
    assert plate.info.color.view == "Un-tone-mapped"
    assert np.array_equal(plate.read(0), ocio_display(pixels, "ACEScg", view="Un-tone-mapped"))


TINY_CONFIG = """\
ocio_profile_version: 2
roles:
  default: shot_linear
  scene_linear: shot_linear
file_rules:
  - !<Rule> {name: Default, colorspace: default}
displays:
  Studio sRGB:
    - !<View> {name: Film, colorspace: film_out}
    - !<View> {name: Plain, colorspace: srgb_out}
active_displays: []
active_views: []
colorspaces:
  - !<ColorSpace>
    name: shot_linear
  - !<ColorSpace>
    name: shot_log
    to_scene_reference: !<LogAffineTransform>
      {base: 2, log_side_slope: 0.1, log_side_offset: 0.6, direction: inverse}
  - !<ColorSpace>
    name: srgb_out
    aliases: [srgb_rec709_scene]
    from_scene_reference: !<ExponentWithLinearTransform>
      {gamma: 2.4, offset: 0.055, direction: inverse}
  - !<ColorSpace>
    name: film_out
    from_scene_reference: !<GroupTransform>
      children:
        - !<ExponentTransform> {value: 0.6, direction: forward}
        - !<ExponentWithLinearTransform> {gamma: 2.4, offset: 0.055, direction: inverse}
"""


@pytest.fixture
def tiny_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = tmp_path / "facility.ocio"
    path.write_text(TINY_CONFIG)
    monkeypatch.setenv("OCIO", str(path))
    return str(path)


def test_ocio_environment_config_is_used(tmp_path: Path, tiny_config: str) -> None:
    pixels = scene_pixels(W, H)
    folder = write_pair(tmp_path / "f", "exr", pixels, "float")
    plate = open_plate(folder, input_colorspace="shot_log")
    color = plate.info.color
    assert (color.config, color.input_space, color.display, color.view) == (
        tiny_config,
        "shot_log",
        "Studio sRGB",
        "Film",
    )
    expected = ocio_display(pixels, "shot_log", tiny_config, display="Studio sRGB", view="Film")
    assert np.array_equal(plate.read(0), expected)
    assert color.header() == {
        "ocio.config": tiny_config,
        "ocio.input_colorspace": "shot_log",
        "ocio.display": "Studio sRGB",
        "ocio.view": "Film",
        "ocio.decided_by": "requested",
        "ocio.exact": "no (large frames through a baked 3D LUT where faster)",
    }
    # `srgb` is the config's space aliased srgb_rec709_scene: the display's own encoding.
    as_srgb = open_plate(folder, input_colorspace="srgb").info.color
    assert as_srgb.input_space == "srgb_out" and as_srgb.passthrough
    # `linear` has no counterpart in this config: the error names the way out.
    with pytest.raises(ConfigError, match="rollingdepth colorspaces"):
        open_plate(folder, input_colorspace="linear")


def test_colorspaces_command_lists_the_active_config(tiny_config: str, capsys) -> None:
    assert main(["colorspaces"]) == 0
    listing = capsys.readouterr().out
    assert (
        tiny_config in listing and "shot_log" in listing and "Studio sRGB: Film, Plain" in listing
    )
    assert describe_config(STUDIO_CONFIG).count("\n") > 50
    assert main(["colorspaces", "--ocio-config", "/no/such/config.ocio"]) == 1
    assert "cannot load OCIO config" in capsys.readouterr().err


def test_one_processor_per_plate(tmp_path: Path) -> None:
    folder = write_pair(tmp_path / "once", "exr", scene_pixels(W, H), "float")
    first = open_plate(folder, input_colorspace="ACEScg")
    again = open_plate(folder, input_colorspace="ACEScg")
    assert display_transform(first.info.color) is display_transform(again.info.color)


def test_non_finite_pixels_do_not_spread_in_the_resize(tmp_path: Path) -> None:
    """A NaN or infinite pixel (a render error) counts as 0 before the resize, so it does not
    black out its neighbourhood at the processing size."""
    pixels = realistic_pixels(300, 200, seed=5)
    clean = pixels.copy()
    clean[50, 60], clean[120, 200, 1], clean[10, 10, 2] = 0.0, 0.0, 0.0
    pixels[50, 60], pixels[120, 200, 1], pixels[10, 10, 2] = np.nan, np.inf, -np.inf
    fit = (40, 60)
    read = []
    for name, values in (("bad", pixels), ("clean", clean)):
        folder = write_pair(tmp_path / name, "exr", values, "float")
        for limit in (None, 0.05 / 1024):  # whole frames, and strips of scanlines
            plate = open_plate(folder, input_colorspace=ColorRequest("ACEScg", exact=True))
            if limit is not None:
                plate.max_frame_bytes = int(limit * 2**30)
            read.append(next(plate.frames(fit))[1])
    assert all(np.isfinite(r).all() for r in read)
    np.testing.assert_array_equal(read[0], read[2])
    np.testing.assert_allclose(read[1], read[3], atol=1e-6)


@pytest.mark.parametrize("space", ["ACEScg", "ARRI LogC4"])
def test_model_input_is_resized_then_converted(tmp_path: Path, space: str) -> None:
    """At the processing size the plate is resized in its input space and OCIO converts
    only the resized pixels: the model input is ociodisplay of the resized frame."""
    pixels = realistic_pixels(301, 203, seed=4)
    folder = write_pair(tmp_path / "fit", "exr", pixels, "float")
    plate = open_plate(folder, input_colorspace=ColorRequest(space, exact=True))
    fit = (101, 150)
    (_, small), _ = list(plate.frames(fit))
    raw = resize_rgb(read_float(folder / "p.1001.exr"), fit)
    assert small.shape == (*fit, 3)
    assert np.array_equal(small, ocio_display(raw, space))
    # the full-size frames are converted whole, as before
    (_, full), _ = list(plate.frames())
    assert np.array_equal(full, plate.read(0))


# ---------------------------------------------------------------------------------------------
# End to end through the CLI


def test_logc4_dpx_sequence_through_the_cli(tmp_path: Path, tiny_checkpoint) -> None:
    folder = tmp_path / "logc4"
    folder.mkdir()
    for index in range(6):
        code_values = 0.1 + 0.8 * plate_frame(index, 64, 48)
        write_image(
            folder / f"shot.{1001 + index}.dpx", code_values, "uint16", {"oiio:BitsPerSample": 10}
        )
    plate = open_plate(folder, input_colorspace="ARRI LogC4")
    assert np.array_equal(
        plate.read(0), ocio_display(read_float(folder / "shot.1001.dpx"), "ARRI LogC4")
    )

    out = tmp_path / "depth"
    proc = run_cli(
        "run", folder, "-o", out, "--checkpoint", tiny_checkpoint, *FAST,
        "--input-colorspace", "ARRI LogC4",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    files = sorted(out.glob("depth.*.exr"))
    assert [f.name for f in files] == [f"depth.{n}.exr" for n in range(1001, 1007)]
    assert all(np.isfinite(read_exr(f)[0]["Z"]).all() for f in files)


def test_hlg_video_through_the_cli(tmp_path: Path, tiny_checkpoint) -> None:
    video = write_tagged_video(tmp_path / "hlg.mov", 6, HLG, 64, 48)
    out = tmp_path / "depth"
    proc = run_cli("run", video, "-o", out, "--checkpoint", tiny_checkpoint, *FAST)
    assert proc.returncode == 0, proc.stderr
    assert len(sorted(out.glob("depth.*.exr"))) == 6

    bad = run_cli(
        "run", video, "-o", tmp_path / "x", "--checkpoint", tiny_checkpoint, *FAST,
        "--ocio-view", "Sepia",
    )  # fmt: skip
    assert bad.returncode == 1
    assert bad.stderr.strip().count("\n") == 0 and "ACES 2.0 - SDR 100 nits" in bad.stderr
