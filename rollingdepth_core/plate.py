"""Reading plates: video files (PyAV) and image sequences (OpenImageIO) as display sRGB frames.

Colour: each plate resolves its input colour space once (`colorspace.resolve_color`) and
converts every frame through the same OCIO processor (see `PlateInfo.color`). Frames asked
for at a smaller size (``fit``, the model's processing size) are resized in the input space
and converted after, on the few pixels the model sees: the conversion then costs a fraction
of the decode (``benchmarks/colorspace_bench.py``).
"""

from __future__ import annotations

import bisect
import functools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import fileseq
import numpy as np
import OpenImageIO as oiio

from .colorspace import (
    ColorHint,
    ColorRequest,
    DisplayTransform,
    PlateColor,
    display_transform,
    image_color_hints,
    resolve_color,
    video_color_hints,
)
from .config import DEFAULT_MAX_FRAME_GIB
from .errors import ConfigError, InputError
from .exr import Window, oiio_error
from .framesets import FrameSet, frame_set_of, parse_frames
from .timecode import (
    Timecodes,
    header_rate,
    header_timecode,
    plate_timecodes,
    stream_start_timecode,
    video_timecodes,
)

IMAGE_EXTENSIONS = (".exr", ".dpx", ".tif", ".tiff", ".png", ".jpg", ".jpeg")
MIN_FRAMES = 2

# Sequence patterns are fileseq's: `####` and `@@@@` (one digit of padding per character, as
# Nuke counts them, not fileseq's default of four per `#`), printf `%04d`, Houdini `$F4`.
PAD_STYLE = fileseq.PAD_STYLE_HASH1
# A video's frames are numbered 0.. and written with this padding.
VIDEO_PADDING = 4
_VIDEO_ERRORS = (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError)
# Decoding forward beats a seek for short hops, and keeps the scrubber's next-frame fast.
_SEEK_MIN_DISTANCE = 24
# Scanlines decoded at once when a frame is read in strips.
_STRIP_BYTES = 8 * 2**20
_GIB = 2**30


@dataclass(frozen=True)
class PlateInfo:
    """What was opened, in the plate's own terms."""

    source: str
    kind: str  # "video" | "sequence"
    frame_numbers: tuple[int, ...]
    width: int
    height: int
    fps: Fraction | None
    missing_frames: tuple[int, ...]  # in the plate's span, asked for and not on disk
    color: PlateColor  # input colour space, OCIO config, display and view, and why
    codec: str | None
    # Geometry, as a player or compositor shows the plate. width/height above are the
    # display window's (after rotation for video).
    rotation: int = 0  # degrees counter-clockwise applied to the stored video frames
    display_window: Window | None = None  # (x, y, w, h); None: (0, 0, width, height)
    data_window: Window | None = None  # EXR pixels stored, shared by all frames; None: display
    pixel_aspect: float = 1.0
    # Digits of a frame number in the sequence's file names (a video's: VIDEO_PADDING); the
    # depth sequence is named with the same.
    padding: int = VIDEO_PADDING
    # Each frame's timecode and the rate (None: the plate states neither; no frames in
    # `by_frame`: a rate without timecode, which the depth still carries).
    timecodes: Timecodes | None = None
    # A video whose frames are not evenly spaced in time: its average rate (frames over
    # duration); `fps` is then the stream's nominal rate, which the depth carries.
    variable_rate: Fraction | None = None
    # The parts of the asked frame set before the plate's first frame or after its last, as
    # a frame-set label ("1-1000,1013-9999"); they are skipped like missing frames.
    frames_outside: str = ""
    plate_span: tuple[int, int] = (0, 0)  # the first and last frame on disk, all of them

    def exr_windows(self) -> dict[str, Window | float]:
        """`write_depth_exr` keywords for an output at plate resolution, lined up over it."""
        display = self.display_window or (0, 0, self.width, self.height)
        return {
            "display_window": display,
            "data_window": self.data_window or display,
            "pixel_aspect": self.pixel_aspect,
        }

    def header_metadata(self) -> dict[str, str | int | float]:
        """Header attributes (``rollingdepth/<key>``) recording the plate's geometry."""
        windows = self.exr_windows()
        return {
            "source_rotation": self.rotation,
            "source_display_window": " ".join(map(str, windows["display_window"])),
            "source_data_window": " ".join(map(str, windows["data_window"])),
            "source_pixel_aspect": float(self.pixel_aspect),
        }


def _bytes_text(size: float) -> str:
    """``size`` bytes in the largest binary unit that keeps it at 1 or more: 2.00 GiB, 3.0 KiB."""
    for unit, scale in (("GiB", _GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{int(size)} bytes"


class Plate:
    """A plate opened for streaming: see `open_plate`."""

    info: PlateInfo
    source_files: tuple[Path, ...]  # the files frames are read from (for the output guard)
    max_frame_bytes: int = int(DEFAULT_MAX_FRAME_GIB * _GIB)

    def __len__(self) -> int:
        return len(self.info.frame_numbers)

    def frames(self, fit: tuple[int, int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(frame_number, rgb)`` in order; rgb is float32 [H,W,3] display sRGB in [0,1].

        ``fit`` ``(h, w)``: frames come resized to exactly that size (antialiased bilinear,
        the pipeline's resize) in the plate's input space, then converted to display (a
        resize in scene-linear light, and the OCIO transform on the resized pixels only);
        image frames too large to decode whole within the memory limit are read in strips
        and resized on the way, so memory follows ``fit``, not the plate. Without it frames
        come at the plate's size. `check_memory` says beforehand whether either works.
        """
        self.check_memory(fit)
        for number, pixels in self._frames(fit):
            if fit is None:
                yield number, self._to_display(pixels)
            else:
                yield number, self._to_display(resize_rgb(_finite(pixels), fit))

    def read(self, index: int) -> np.ndarray:
        """Return the frame at position ``index`` (0..len-1) as float32 [H,W,3] in [0,1]."""
        self._check_index(index)
        self.check_memory()
        return self._to_display(self._read(index))

    def check_memory(self, fit: tuple[int, int] | None = None) -> None:
        """InputError unless frames can be read (at ``fit``, if given) within the memory limit.

        The message gives the need, the limit and the flag that raises it.
        """
        limit = self.max_frame_bytes
        whole = self._decode_bytes()
        if fit is not None and fit[0] * fit[1] * 3 * 4 > limit:
            need = fit[0] * fit[1] * 3 * 4
            what, hint = f"processing at {fit[1]}x{fit[0]}", " or lower `--res`"
        elif whole > limit and (fit is None or not self._streams_strips()):
            need, hint = whole, ""
            what = f"decoding a {self.info.width}x{self.info.height} frame whole"
        else:
            return
        raise InputError(
            f"{self.info.source}: {what} needs {_bytes_text(need)}, over the limit of "
            f"{_bytes_text(limit)} per frame; raise it with `--max-frame-memory GIB`{hint}"
        )

    def _decode_bytes(self) -> int:
        """Memory that decoding one whole frame takes (float RGB at the display size)."""
        return self.info.width * self.info.height * 3 * 4

    def _streams_strips(self) -> bool:
        """Whether frames larger than the limit can be read in strips when resized."""
        return False

    def _frames(self, fit: tuple[int, int] | None) -> Iterator[tuple[int, np.ndarray]]:
        """``(number, pixels)``: float32 [H,W,3] in the input space, not yet converted."""
        raise NotImplementedError

    def _read(self, index: int) -> np.ndarray:
        """The frame at ``index``: float32 [H,W,3] in the input space, not yet converted."""
        raise NotImplementedError

    def _to_display(self, pixels: np.ndarray) -> np.ndarray:
        """The plate's colour transform, in place on float32 pixels the reader owns."""
        return self._transform.in_place(pixels)

    @functools.cached_property
    def _transform(self) -> DisplayTransform:
        # held by the plate: the shared cache may drop it while the plate is still read
        return display_transform(self.info.color)

    def close(self) -> None:
        """Release open files; the plate may still be read afterwards (files are reopened)."""

    def __enter__(self) -> Plate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_index(self, index: int) -> None:
        if not 0 <= index < len(self):
            raise IndexError(f"frame index {index} out of range 0..{len(self) - 1}")


def open_plate(
    path: str | os.PathLike[str],
    frames: str | tuple[int, int] | Iterable[int] | None = None,
    input_colorspace: str | ColorRequest = "auto",
    max_frame_gib: float = DEFAULT_MAX_FRAME_GIB,
) -> Plate:
    """Open a video file, an image sequence or a folder holding one sequence.

    Parameters
    ----------
    path : str or os.PathLike
        A video file (anything FFmpeg decodes); a sequence pattern
        (``plate.####.exr``, ``plate.@@@@.exr``, ``plate.%04d.exr``, ``plate.$F4.exr``); one
        file of a numbered sequence (``plate.1001.exr``, which stands for its siblings); or a
        folder holding exactly one image sequence.
    frames : str, tuple of int or iterable of int, optional
        Which frames, in the plate's own numbering (video: 0-based): a frame set
        (``"1001-1100"``, ``"1001-1100x2"``, ``"1001-1020,1050-1100"``, see `parse_frames`),
        an inclusive ``(first, last)`` tuple, or the frame numbers themselves. The plate is
        the chosen frames in order, processed as one clip: frames the set leaves out are
        skipped as a sequence's missing frames are (the output keeps the plate's numbers).
    input_colorspace : str or ColorRequest
        A colour space of the active OCIO config (``"srgb"`` and ``"linear"`` are short for
        its sRGB-encoded and linear Rec.709 spaces), or ``"auto"``: decided from the EXR/DPX
        header or the video's colour tags, else float images are linear Rec.709 and integer
        images and untagged video sRGB. A `ColorRequest` also chooses the config and view.
    max_frame_gib : float
        Memory one decoded frame (float RGB) may take; see `Plate.check_memory`.

    Raises
    ------
    InputError
        Missing or undecodable input, fewer than 2 frames, mixed resolutions, a range
        outside the plate, a folder with no or several sequences.
    ConfigError
        Bad ``frames``, an unknown colour space or view, an unreadable OCIO config.
    """
    if isinstance(frames, str):
        frames = parse_frames(frames)
    elif isinstance(frames, tuple) and len(frames) == 2:
        if frames[0] > frames[1]:
            raise ConfigError(f"`frames` must be (first, last) with first <= last; got {frames}")
        first, last = int(frames[0]), int(frames[1])
        frames = FrameSet(f"{first}-{last}", (range(first, last + 1),))
    elif frames is not None and not isinstance(frames, FrameSet):
        frames = frame_set_of(int(n) for n in frames)
        if frames is None:
            raise ConfigError("`frames` names no frame")
    if not max_frame_gib * _GIB >= 1:  # also refuses NaN
        raise ConfigError(
            f"`--max-frame-memory` is in GiB and must allow at least a byte; got {max_frame_gib}"
        )
    plate = _open(os.fspath(path), frames, input_colorspace)
    plate.max_frame_bytes = int(max_frame_gib * _GIB)
    return plate


def _open(source: str, frames: FrameSet | None, input_colorspace: str) -> Plate:
    """The plate reader for ``source`` (see `open_plate`)."""
    found = _find_sequence(source)
    if found is None:
        return _VideoPlate(source, frames, input_colorspace)
    padding, files = found
    return _SequencePlate(source, files, padding, frames, input_colorspace)


@dataclass(frozen=True)
class _Selection:
    numbers: list[int]  # the frames on disk the set asks for, in increasing order
    missing: tuple[int, ...]  # in the plate's span, asked for and not on disk
    outside: str  # the set's parts outside the plate's span (`FrameSet.outside`)
    span: tuple[int, int]  # the plate's first and last frame


def _select(source: str, available: list[int], frames: FrameSet | None) -> _Selection:
    """Pick the frames ``frames`` asks for from sorted ``available`` (all without ``frames``).

    Time and memory follow the plate, not the set: ``1-999999999`` is answered from its
    ranges. Frames the set asks for that are not on disk are skipped: those inside the
    plate's span are its missing frames, the parts beyond it are told as ``outside``.
    """
    lo, hi = available[0], available[-1]
    if frames is None:
        wanted = [range(lo, hi + 1)]
        outside = ""
    else:
        wanted = frames.within(lo, hi)
        outside = frames.outside(lo, hi)
    present = set(available)
    picked = set()
    for r in wanted:
        if r:
            start, stop = bisect.bisect_left(available, r[0]), bisect.bisect_right(available, r[-1])
            picked.update(n for n in available[start:stop] if n in r)
    selected = [n for n in available if n in picked]  # the plate's order, not the set's
    missing = tuple(sorted({n for r in wanted for n in r if n not in present}))
    if len(selected) < MIN_FRAMES and outside:
        raise InputError(
            f"{source}: frames {frames.text!r} hold {len(selected)} frame(s) of the plate (its "
            f"frame range is {lo}-{hi}); RollingDepth needs at least {MIN_FRAMES}"
        )
    if len(selected) < MIN_FRAMES:
        raise InputError(
            f"{source}: RollingDepth needs at least {MIN_FRAMES} frames; got {len(selected)}"
        )
    return _Selection(selected, missing, outside, (lo, hi))


# ---------------------------------------------------------------------------------------------
# Image sequences


def _find_sequence(source: str) -> tuple[int, dict[int, Path]] | None:
    """The padding and the numbered files of the image sequence ``source`` names (a pattern,
    one of its files or its folder); None when ``source`` is some other file (a video)."""
    target = Path(source)
    if target.is_dir():
        return _the_sequence_in(target, source)
    pattern = None if target.is_file() else _token_pattern(target.name)
    if pattern is not None:
        if not target.parent.is_dir():
            raise InputError(f"{source}: folder {target.parent} does not exist")
        files = _scan(target.parent, pattern)
        if not files:
            raise InputError(f"{source}: no files match this pattern")
        return pattern.zfill(), files
    if not target.exists():
        raise InputError(f"{source}: no such file or folder")
    if target.suffix.lower() not in IMAGE_EXTENSIONS:
        return None
    numbered = _numbered_name(target.name)
    files = _scan(target.parent, numbered) if numbered is not None else {}
    if len(files) < MIN_FRAMES:
        raise InputError(
            f"{source}: RollingDepth needs at least {MIN_FRAMES} frames; got 1 "
            "(a single image with no numbered siblings)"
        )
    return numbered.zfill(), files


def _parse_name(name: str) -> fileseq.FileSequence | None:
    # the file name alone: fileseq cannot parse a `#` in a folder's name
    try:
        return fileseq.FileSequence(name, pad_style=PAD_STYLE)
    except fileseq.ParseException:
        return None


def _token_pattern(name: str) -> fileseq.FileSequence | None:
    """``name`` as a sequence pattern, if it holds a frame token (``####``, ``%04d``...)."""
    parsed = _parse_name(name)
    if parsed is None or not parsed.padding() or parsed.frameSet() is not None:
        return None
    return None if "." in parsed.padding() else parsed  # `##.##`: fileseq's subframes


def _numbered_name(name: str) -> fileseq.FileSequence | None:
    """``plate.1001.exr`` as the pattern of its sequence (the number fixes the padding)."""
    parsed = _parse_name(name)
    frame_set = None if parsed is None else parsed.frameSet()
    return parsed if frame_set is not None and len(frame_set) == 1 else None


def _scan(folder: Path, pattern: fileseq.FileSequence) -> dict[int, Path]:
    """The files in ``folder`` that ``pattern`` names, by frame number: each file's name is
    the pattern's for its number (`%04d` writes 1001 as "1001" and 10000 as "10000", never
    "01001")."""
    files: dict[int, Path] = {}
    for found in fileseq.findSequencesOnDisk(str(folder), pad_style=PAD_STYLE):
        if (found.basename(), found.extension()) != (pattern.basename(), pattern.extension()):
            continue
        for number in found.frameSet() or ():
            path = Path(found.frame(number))
            if path.name == pattern.frame(number) and path.is_file():
                files[int(number)] = path
    return files


def _the_sequence_in(folder: Path, source: str) -> tuple[int, dict[int, Path]]:
    """Find the one image sequence in ``folder``; hidden and unnumbered files are ignored.
    Names padded differently (e.g. `1` next to `0001`) are two sequences sharing a name."""
    sequences: list[tuple[str, int, dict[int, Path]]] = []
    for found in fileseq.findSequencesOnDisk(str(folder), pad_style=PAD_STYLE):
        if not found.frameSet() or found.extension().lower() not in IMAGE_EXTENSIONS:
            continue
        files = {int(n): Path(found.frame(n)) for n in found.frameSet()}
        files = {n: path for n, path in files.items() if path.is_file()}
        if files:
            display = f"{found.basename()}{'#' * found.zfill()}{found.extension()}"
            sequences.append((str(folder / display), found.zfill(), files))
    if not sequences:
        raise InputError(
            f"{source}: no image sequence in this folder (looked for numbered "
            f"{', '.join(IMAGE_EXTENSIONS)} files)"
        )
    if len(sequences) > 1:
        listing = "; ".join(f"{name} ({len(files)} frames)" for name, _, files in sequences)
        raise InputError(
            f"{source}: the folder holds {len(sequences)} image sequences, pass one of them: "
            f"{listing}"
        )
    return sequences[0][1:]


@dataclass(frozen=True)
class _ImageHeader:
    width: int
    height: int
    format_name: str
    color_hints: tuple[ColorHint, ...]
    display_window: Window
    data_window: Window
    pixel_aspect: float
    channels: int
    timecode: str | None
    rate: Fraction | None


def _read_header(path: Path) -> _ImageHeader:
    inp = oiio.ImageInput.open(str(path))
    if inp is None:
        raise InputError(f"{path}: cannot read image: {oiio_error()}")
    try:
        spec = inp.spec()
        return _ImageHeader(
            width=spec.full_width,
            height=spec.full_height,
            format_name=inp.format_name(),
            color_hints=image_color_hints(spec, inp.format_name()),
            display_window=(spec.full_x, spec.full_y, spec.full_width, spec.full_height),
            data_window=(spec.x, spec.y, spec.width, spec.height),
            pixel_aspect=spec.get_float_attribute("PixelAspectRatio", 1.0) or 1.0,
            channels=spec.nchannels,
            timecode=header_timecode(spec),
            rate=header_rate(spec),
        )
    finally:
        inp.close()


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Antialiased bilinear resize of float32 [H,W,3] to ``size`` (h, w), as the pipeline's."""
    if rgb.shape[:2] == tuple(size):
        return rgb
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    shrinking = size[0] < rgb.shape[0] or size[1] < rgb.shape[1]
    x = F.interpolate(
        x, size=tuple(size), mode="bilinear", align_corners=False, antialias=shrinking
    )
    return x[0].permute(1, 2, 0).contiguous().numpy()


def _finite(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` with NaN and infinite values (render errors) set to 0, in place, before a
    resize spreads them to their neighbours; the colour transform would make them 0 too."""
    if not np.isfinite(pixels).all():
        np.nan_to_num(pixels, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    return pixels


def _read_image_fitted(path: Path, fit: tuple[int, int]) -> np.ndarray:
    """`_read_image` resized to ``fit`` (h, w), not converted, decoded a strip of scanlines
    at a time.

    Each strip is shrunk to the output width at once, so memory follows the
    output size and the plate's width, never a whole frame. The antialiased bilinear resize
    is separable: rows first, strip by strip (the height is kept, which is exact), then the
    columns of the narrow frame.
    """
    inp = _open_image(path)
    try:
        spec = inp.spec()
        indices = _rgb_channel_indices(list(spec.channelnames))
        full_x, full_y, full_w, full_h = spec.full_x, spec.full_y, spec.full_width, spec.full_height
        narrow = np.zeros((full_h, fit[1], 3), dtype=np.float32)  # gaps stay black
        top, bottom = max(spec.y, full_y), min(spec.y + spec.height, full_y + full_h)
        left, right = max(spec.x, full_x), min(spec.x + spec.width, full_x + full_w)
        step = max(1, _STRIP_BYTES // (spec.width * spec.nchannels * 4))
        for y in range(top, bottom if right > left else top, step):
            end = min(y + step, bottom)
            pixels = inp.read_scanlines(0, 0, y, end, 0, 0, spec.nchannels, _decode_type(spec))
            if pixels is None:
                raise InputError(f"{path}: cannot read pixels: {oiio_error(inp)}")
            pixels = _unit_float(np.asarray(pixels), spec).reshape(
                end - y, spec.width, spec.nchannels
            )
            rows = np.zeros((end - y, full_w, 3), dtype=np.float32)
            rows[:, left - full_x : right - full_x] = pixels[:, left - spec.x : right - spec.x][
                ..., indices
            ]
            narrow[y - full_y : end - full_y] = resize_rgb(_finite(rows), (end - y, fit[1]))
    finally:
        inp.close()
    return resize_rgb(narrow, fit)


def _open_image(path: Path) -> oiio.ImageInput:
    """An image opened for its colour: alpha is dropped, so keep colour as stored (PNG/TIFF
    alpha is unassociated and OpenImageIO would otherwise premultiply it: black wherever
    alpha is 0)."""
    config = oiio.ImageSpec()
    config.attribute("oiio:UnassociatedAlpha", 1)
    inp = oiio.ImageInput.open(str(path), config)
    if inp is None:
        raise InputError(f"{path}: cannot read image: {oiio_error()}")
    return inp


# Integer pixel types read as they are stored: OpenImageIO's own conversion to float is not
# k / 255 for 126 of the 256 8-bit values, and the reference's Adam solver amplifies that
# 1.5e-5 into a 5.7e-4 difference in the final map.
_INTEGER_TYPES = {oiio.UINT8: np.uint8, oiio.UINT16: np.uint16, oiio.UINT32: np.uint32}


def _decode_type(spec: oiio.ImageSpec) -> str | oiio.TypeDesc:
    """The type to decode in: an unsigned integer file's own type, else float."""
    if spec.format.basetype in _INTEGER_TYPES and not spec.channelformats:
        return spec.format
    return "float"


def _unit_float(pixels: np.ndarray, spec: oiio.ImageSpec) -> np.ndarray:
    """Decoded pixels as float32: integer code values ``k`` of an ``n``-bit file become
    exactly ``float32(k) / float32(2**n - 1)``, as the reference divides 8-bit frames.

    Files with fewer significant bits than their type (10-bit DPX, 12-bit TIFF, read as
    uint16 with the value shifted up, bit-replicated or not) are shifted back down first.
    """
    if pixels.dtype == np.float32:
        return pixels
    type_bits = pixels.dtype.itemsize * 8
    bits = spec.get_int_attribute("oiio:BitsPerSample", type_bits)
    if 0 < bits < type_bits:
        pixels = pixels >> (type_bits - bits)
    else:
        bits = type_bits
    return pixels.astype(np.float32) / np.float32(2**bits - 1)


def _read_image(path: Path) -> np.ndarray:
    """Read one image as float32 [H,W,3] in its input space, framed by its display window."""
    inp = _open_image(path)
    try:
        spec = inp.spec()
        pixels = inp.read_image(_decode_type(spec))
        if pixels is None:
            raise InputError(f"{path}: cannot read pixels: {oiio_error(inp)}")
    finally:
        inp.close()
    pixels = _unit_float(np.asarray(pixels), spec).reshape(
        spec.height, spec.width, spec.nchannels
    )  # [h,w,C]
    rgb = pixels[..., _rgb_channel_indices(list(spec.channelnames))]  # [h,w,3]
    return np.ascontiguousarray(_frame_in_display_window(rgb, spec))  # [H,W,3]


def _rgb_channel_indices(names: list[str]) -> list[int]:
    """Indices of R, G, B (also layered, e.g. ``beauty.R``); grey repeats channel 0."""
    found = []
    for channel in "RGB":
        candidates = [i for i, n in enumerate(names) if n.upper() == channel]
        candidates += [i for i, n in enumerate(names) if n.upper().endswith("." + channel)]
        found.append(candidates[0] if candidates else None)
    if None not in found:
        return found
    if len(names) >= 3:
        return [0, 1, 2]
    return [0, 0, 0]


def _frame_in_display_window(rgb: np.ndarray, spec: oiio.ImageSpec) -> np.ndarray:
    """Place the data window inside the display window: overscan cropped, gaps black."""
    full_w, full_h = spec.full_width, spec.full_height
    if (spec.x, spec.y, spec.width, spec.height) == (spec.full_x, spec.full_y, full_w, full_h):
        return rgb
    canvas = np.zeros((full_h, full_w, 3), dtype=np.float32)
    x0, y0 = spec.x - spec.full_x, spec.y - spec.full_y
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + spec.width, full_w), min(y0 + spec.height, full_h)
    if cx1 > cx0 and cy1 > cy0:
        canvas[cy0:cy1, cx0:cx1] = rgb[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    return canvas


class _SequencePlate(Plate):
    def __init__(
        self,
        source: str,
        files: dict[int, Path],
        padding: int,
        frames: FrameSet | None,
        input_colorspace: str | ColorRequest,
    ) -> None:
        picked = _select(source, sorted(files), frames)
        numbers = picked.numbers
        self._paths = [files[n] for n in numbers]
        self.source_files = tuple(self._paths)
        # Headers only: catches unreadable files and mixed sizes before any model work.
        first = _read_header(self._paths[0])
        shared_data_window = True
        self._largest_data = first.data_window[2] * first.data_window[3] * first.channels
        timecodes = {numbers[0]: first.timecode}
        for number, path in zip(numbers[1:], self._paths[1:], strict=True):
            header = _read_header(path)
            timecodes[number] = header.timecode
            if (header.width, header.height) != (first.width, first.height):
                raise InputError(
                    f"{source}: mixed resolutions: frame {number} is "
                    f"{header.width}x{header.height} but frame {numbers[0]} is "
                    f"{first.width}x{first.height}"
                )
            shared_data_window &= header.data_window == first.data_window
            window = header.data_window
            self._largest_data = max(self._largest_data, window[2] * window[3] * header.channels)
        self.info = PlateInfo(
            source=source,
            kind="sequence",
            frame_numbers=tuple(numbers),
            width=first.width,
            height=first.height,
            fps=first.rate,
            missing_frames=picked.missing,
            frames_outside=picked.outside,
            plate_span=picked.span,
            color=resolve_color(input_colorspace, first.color_hints),
            codec=first.format_name,
            display_window=first.display_window,
            # a data window that changes from frame to frame (autocrop) has no one value
            data_window=first.data_window if shared_data_window else None,
            pixel_aspect=first.pixel_aspect,
            padding=padding,
            # each file's own; a sequence where some frames lack one has none (its rate stays)
            timecodes=plate_timecodes(first.rate, timecodes if all(timecodes.values()) else {}),
        )

    def _decode_bytes(self) -> int:
        # the decoded data window (all channels) and the framed RGB copy
        return max(super()._decode_bytes(), self._largest_data * 4)

    def _streams_strips(self) -> bool:
        return True

    def _frames(self, fit: tuple[int, int] | None) -> Iterator[tuple[int, np.ndarray]]:
        strips = fit is not None and self._decode_bytes() > self.max_frame_bytes
        for number, path in zip(self.info.frame_numbers, self._paths, strict=True):
            if strips:
                yield number, _read_image_fitted(path, fit)
            else:
                yield number, self._load(path)

    def _read(self, index: int) -> np.ndarray:
        return self._load(self._paths[index])

    def _load(self, path: Path) -> np.ndarray:
        rgb = _read_image(path)
        if rgb.shape[:2] != (self.info.height, self.info.width):
            # The file changed on disk since the plate was opened.
            raise InputError(
                f"{path}: frame is {rgb.shape[1]}x{rgb.shape[0]}, plate is "
                f"{self.info.width}x{self.info.height}"
            )
        return rgb


# ---------------------------------------------------------------------------------------------
# Video


def _rational(value: object) -> Fraction | None:
    if not value:
        return None
    return Fraction(value.numerator, value.denominator)


# A frame's duration may stray this far from the nominal one (container time bases round
# it: 41/42 ms for 24 fps in Matroska) before the video counts as variable-rate.
_VFR_TOLERANCE = 0.1


def _variable_rate(source: str, stream: av.VideoStream) -> tuple[Fraction, Fraction] | None:
    """(nominal rate, average rate) when the frames are not evenly spaced in time (a phone's
    or a screen recording's variable frame rate, frames dropped); None for a constant rate.

    The stream's nominal rate (FFmpeg's ``r_frame_rate``) and its average (frames over
    duration) agree for a constant rate; only when they differ are the packets' timestamps
    read (demuxed, not decoded) to tell rounding from frames that really are unevenly spaced.
    """
    nominal = _rational(stream.base_rate) or _rational(stream.guessed_rate)
    average = _rational(stream.average_rate)
    if not nominal or not average or nominal == average or stream.time_base is None:
        return None
    try:
        with av.open(source) as container:
            video = container.streams.video[0]
            pts = sorted(p.pts for p in container.demux(video) if p.pts is not None and p.size)
    except _VIDEO_ERRORS:
        return None
    if len(pts) < 3:
        return None
    step = 1 / (nominal * Fraction(stream.time_base))  # a frame's duration in time-base ticks
    allowed = max(float(step) * _VFR_TOLERANCE, 1.0)
    deltas = np.diff(np.asarray(pts, np.int64))
    if np.all(np.abs(deltas - float(step)) <= allowed):
        return None
    return nominal, average


def _video_frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """float32 [H,W,3] code values in [0,1]; sources deeper than 8 bits keep their precision.

    YUV becomes RGB with the frame's own matrix and range; the code values then go through
    the plate's colour transform (PQ and HLG are tone mapped there, not here).
    """
    bits = max(component.bits for component in frame.format.components)
    if bits > 8:
        rgb = frame.to_ndarray(format="rgb48le", src_color_range=frame.color_range)
        rgb = rgb.astype(np.float32) / 65535.0
    else:
        rgb = frame.to_ndarray(format="rgb24", src_color_range=frame.color_range)
        rgb = rgb.astype(np.float32) / 255.0
    return rgb


def _display_rotation(source: str, frame: av.VideoFrame) -> int:
    """The display matrix's counter-clockwise rotation in 0, 90, 180, 270 degrees."""
    degrees = frame.rotation
    if degrees % 90:
        raise InputError(
            f"{source}: the video's display matrix turns it by {degrees} degrees; only "
            "multiples of 90 are supported"
        )
    return int(degrees) % 360


class _VideoDecoder:
    """Frames of one video stream by 0-based index, seeking where timestamps allow it."""

    def __init__(self, path: str, count: int) -> None:
        self._path = path
        self._count = count
        self._pts_index: dict[int, int] | None = None
        self._pts_by_frame: list[int] | None = None

    def _open(self) -> tuple[av.container.InputContainer, av.VideoStream]:
        container = av.open(self._path)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return container, stream

    def _build_pts_index(self) -> None:
        """Map presentation timestamps to frame indices by demuxing (no decoding)."""
        container, stream = self._open()
        try:
            pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None and p.size)
        finally:
            container.close()
        if len(pts) == self._count and len(set(pts)) == len(pts):
            self._pts_by_frame = pts
            self._pts_index = {p: i for i, p in enumerate(pts)}
        else:
            self._pts_by_frame, self._pts_index = [], {}

    def iter_from(self, start: int) -> Iterator[tuple[int, av.VideoFrame]]:
        """Yield ``(index, frame)`` for ``start`` and every later frame."""
        if start >= _SEEK_MIN_DISTANCE:
            if self._pts_index is None:
                self._build_pts_index()
            if self._pts_index:
                seeked = self._iter_seeking(start)
                try:
                    first = next(seeked, None)
                    if first is not None:
                        yield first
                        yield from seeked
                        return
                finally:
                    seeked.close()
        yield from self._iter_decoding(start)

    def _iter_decoding(self, start: int) -> Iterator[tuple[int, av.VideoFrame]]:
        container, stream = self._open()
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index >= start:
                    yield index, frame
        finally:
            container.close()

    def _iter_seeking(self, start: int) -> Iterator[tuple[int, av.VideoFrame]]:
        """Seek to the keyframe before ``start``; yields nothing if timestamps disagree."""
        container, stream = self._open()
        try:
            container.seek(self._pts_by_frame[start], stream=stream, backward=True)
            index = None
            for frame in container.decode(stream):
                if index is None:
                    index = self._pts_index.get(frame.pts)
                    if index is None or index > start:
                        return  # landed somewhere unknown: the caller decodes from 0
                else:
                    index += 1
                if index >= start:
                    yield index, frame
        finally:
            container.close()


def _video_error_text(source: str, exc: Exception) -> str:
    """Why FFmpeg could not open ``source``, in plain words (not "[Errno 1094995529]")."""
    try:
        if os.path.getsize(source) == 0:
            return "the file is empty (0 bytes)"
    except OSError:
        pass
    if isinstance(exc, av.error.InvalidDataError):
        return "not a video (nor an image sequence): FFmpeg does not recognise what the file holds"
    return f"cannot open as video: {_reason(exc)}"


def _reason(exc: Exception) -> str:
    """An FFmpeg or OS error's own words, without its error number and file name."""
    return getattr(exc, "strerror", None) or str(exc)


class _VideoPlate(Plate):
    def __init__(
        self,
        source: str,
        frames: FrameSet | None,
        input_colorspace: str | ColorRequest,
    ) -> None:
        try:
            container = av.open(source)
        except _VIDEO_ERRORS as exc:
            raise InputError(f"{source}: {_video_error_text(source, exc)}") from exc
        try:
            if not container.streams.video:
                raise InputError(f"{source}: no video stream in this file")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            fps = _rational(stream.average_rate) or _rational(stream.guessed_rate)
            variable = _variable_rate(source, stream)
            if variable is not None:
                fps = variable[0]  # the nominal rate: frames are numbered one after another
            start_timecode = stream_start_timecode(container, stream)
            codec = stream.codec_context.name
            count = stream.frames
            # Decoding the first frame proves the stream is decodable; when the container
            # does not say how many frames it holds (mkv), decode them all to count.
            decoded = 0
            color_hints: tuple[ColorHint, ...] = ()
            rotation = 0
            try:
                for frame in container.decode(stream):
                    if decoded == 0:
                        rotation = _display_rotation(source, frame)
                        color_hints = video_color_hints(frame.color_primaries, frame.color_trc)
                    decoded += 1
                    if count > 0:
                        break
            except _VIDEO_ERRORS as exc:
                raise InputError(f"{source}: cannot decode video: {_reason(exc)}") from exc
            if decoded == 0:
                raise InputError(f"{source}: the video stream holds no decodable frames")
            width, height = stream.codec_context.width, stream.codec_context.height
            aspect = _rational(stream.sample_aspect_ratio) or _rational(
                stream.codec_context.sample_aspect_ratio
            )
            pixel_aspect = float(aspect) if aspect else 1.0
        finally:
            container.close()
        if count <= 0:
            count = decoded
        if rotation % 180:
            # what players show: the frame turned on its side, pixels' aspect with it
            width, height, pixel_aspect = height, width, 1.0 / pixel_aspect

        picked = _select(source, list(range(count)), frames)
        numbers = picked.numbers
        by_frame = {}
        if start_timecode and fps:
            by_frame = video_timecodes(source, start_timecode, fps, numbers)
        self.info = PlateInfo(
            source=source,
            kind="video",
            frame_numbers=tuple(numbers),
            width=width,
            height=height,
            fps=fps,
            missing_frames=(),
            frames_outside=picked.outside,
            plate_span=picked.span,
            color=resolve_color(input_colorspace, color_hints),
            codec=codec,
            rotation=rotation,
            pixel_aspect=pixel_aspect,
            timecodes=plate_timecodes(fps, by_frame),
            variable_rate=None if variable is None else variable[1],
        )
        self.source_files = (Path(source),)
        self._decoder = _VideoDecoder(source, count)
        self._cursor: Iterator[tuple[int, av.VideoFrame]] | None = None
        self._cursor_next = 0  # index the cursor yields next

    def _rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """The frame as players show it: decoded, then turned by the display rotation (not
        converted)."""
        rgb = _video_frame_to_rgb(frame)
        if self.info.rotation:
            rgb = np.ascontiguousarray(np.rot90(rgb, k=self.info.rotation // 90))
        return rgb

    def _frames(self, fit: tuple[int, int] | None) -> Iterator[tuple[int, np.ndarray]]:
        first, last = self.info.frame_numbers[0], self.info.frame_numbers[-1]
        expected = first
        decoded = self._decoder.iter_from(first)
        try:
            for index, frame in decoded:
                yield index, self._rgb(frame)
                expected = index + 1
                if index >= last:
                    return
        except _VIDEO_ERRORS as exc:
            raise InputError(
                f"{self.info.source}: cannot decode frame {expected}: {_reason(exc)}"
            ) from exc
        finally:
            decoded.close()  # closes the container now, not whenever the generator is collected
        raise InputError(
            f"{self.info.source}: the video ended after frame {expected - 1}; "
            f"its header promised frames up to {last}"
        )

    def _read(self, index: int) -> np.ndarray:
        target = self.info.frame_numbers[index]
        ahead = target - self._cursor_next
        if self._cursor is None or not 0 <= ahead < _SEEK_MIN_DISTANCE:
            self.close()
            self._cursor = self._decoder.iter_from(target)
        try:
            for number, frame in self._cursor:
                self._cursor_next = number + 1
                if number == target:
                    return self._rgb(frame)
        except _VIDEO_ERRORS as exc:
            self.close()
            raise InputError(
                f"{self.info.source}: cannot decode frame {target}: {_reason(exc)}"
            ) from exc
        self.close()
        raise InputError(f"{self.info.source}: the video ended before frame {target}")

    def close(self) -> None:
        if self._cursor is not None:
            self._cursor.close()
        self._cursor = None
        self._cursor_next = 0


def sequence_files(path: str | os.PathLike[str]) -> dict[int, Path] | None:
    """The numbered files of the image sequence ``path`` names (a pattern, one of its files or
    its folder), by frame number; None when ``path`` is a video file. A single image stands
    for frame 0."""
    source = os.fspath(path)
    target = Path(source)
    if target.is_file() and target.suffix.lower() in IMAGE_EXTENSIONS:
        numbered = _numbered_name(target.name)
        return _scan(target.parent, numbered) if numbered is not None else {0: target}
    if target.is_dir() or not target.is_file() and _token_pattern(target.name):
        found = _find_sequence(source)
        return None if found is None else found[1]
    if not target.exists():
        raise InputError(f"{source}: no such file or folder")
    return None
