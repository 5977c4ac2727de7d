"""From a prediction to files: depth conventions, resolution, EXR sequence, preview, sidecar."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict
from fractions import Fraction
from functools import partial
from pathlib import Path

import fileseq
import numpy as np

from . import __version__, protocol
from .anchors import AnchorFit
from .colorspace import PlateColor
from .config import HALF_MAX, InferenceConfig, OutputConfig
from .errors import ConfigError, OutputError
from .exr import write_depth_exr
from .passes import FrameGeometry
from .progress import ProgressCallback, report
from .timecode import Timecodes
from .upsample import resize_map

DEPTH_CONVENTIONS = {mode: spec["description"] for mode, spec in protocol.DEPTH_MODES.items()}
ANCHORED_CONVENTIONS = {
    "inverse": "inverse planar depth 1/Z in 1/{units}, anchored to points of known depth",
    "depth": "planar depth Z in {units} from the camera, anchored to points of known depth",
}


def convert_depth(
    inverse: np.ndarray, mode: str, near: float, far: float, lo: float, hi: float
) -> np.ndarray:
    """Turn the model's relative inverse depth into the requested convention.

    ``lo``/``hi`` are the clip-wide extremes, so every frame maps through the same curve.
    """
    if mode == "inverse":
        return inverse.astype(np.float32)
    unit = (inverse - lo) / max(hi - lo, 1e-12)  # 0 = farthest, 1 = nearest
    unit = np.clip(unit, 0.0, 1.0)
    if mode == "normalized":
        return unit.astype(np.float32)
    inv = 1.0 / far + unit * (1.0 / near - 1.0 / far)
    return (1.0 / inv).astype(np.float32)


def sequence_pattern(folder: str | Path, name: str, padding: int = 4) -> str:
    """``folder/NAME.####.exr`` with ``padding`` digits (the plate's, :attr:`.PlateInfo.
    padding`): a frame number that needs more digits gets them, as printf's ``%04d`` writes
    10000."""
    return str(Path(folder) / f"{name}.{'#' * max(1, padding)}.exr")


def expand_pattern(pattern: str, frame: int) -> str:
    """``depth.####.exr`` with frame 7 -> ``depth.0007.exr``; ``@@@@``, ``%04d`` and
    ``$F4`` work too (fileseq's patterns, one digit per ``#``); -7 -> ``depth.-007.exr``.

    Raises
    ------
    ConfigError
        The file name holds no frame token, or more than one.
    """
    folder, name = Path(pattern).parent, Path(pattern).name
    try:
        # the file name alone: fileseq cannot parse a `#` in a folder's name
        parsed = fileseq.FileSequence(name, pad_style=fileseq.PAD_STYLE_HASH1)
    except fileseq.ParseException:
        parsed = None
    if (
        parsed is None
        or not parsed.padding()
        or parsed.frameSet() is not None
        or "." in parsed.padding()  # fileseq reads `##.##` as one subframe token
        or _TOKEN_CHARS.intersection(parsed.basename())  # a token before the one it read
    ):
        raise ConfigError(
            f"output pattern {pattern!r} must hold exactly one frame token in its file name "
            f"(`####` or `%04d`), e.g. `depth.####.exr`"
        )
    return str(folder / parsed.frame(int(frame)))


_TOKEN_CHARS = frozenset("#@%")


def ensure_writable(folder: str | Path) -> Path:
    """Create the output folder and prove it takes files, before any long computation."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".rollingdepth-probe-"):
            pass
    except OSError as exc:
        raise OutputError(
            not_a_folder(folder) or f"cannot write to output folder {str(folder)!r}: {exc.strerror}"
        ) from exc
    return folder


def not_a_folder(folder: Path) -> str | None:
    """The message when a file stands where ``folder`` or one of its parents should be a
    folder (the OS says "File exists" or "Not a directory"); None when none does."""
    for path in (folder, *folder.parents):
        if path.exists():
            if path.is_dir():
                return None
            where = "" if path == folder else f" (in output folder {str(folder)!r})"
            return f"{str(path)!r} is a file, not a folder{where}"
    return None


# The reproducible-builds convention: a fixed time (seconds since 1970, UTC) that replaces "now"
# wherever a file records when it was made.
SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"


def export_datetime(now: float | None = None) -> tuple[str, float]:
    """The EXRs' ``DateTime`` and its ``utcOffset``: when the depth was written.

    ``DateTime`` (OpenEXR's ``capDate``) is the local time of writing in the EXIF form
    ``YYYY:MM:DD HH:MM:SS``, and ``utcOffset`` says which zone that is (OpenEXR's sign: UTC =
    local time + utcOffset, in seconds). With ``SOURCE_DATE_EPOCH`` set, that time is used
    instead, in UTC (offset 0), so reruns, farm splits and local runs write identical bytes.

    Raises
    ------
    ConfigError
        ``SOURCE_DATE_EPOCH`` is set but not a whole number of seconds.
    """
    pinned = os.environ.get(SOURCE_DATE_EPOCH, "").strip()
    if pinned:
        if not pinned.isdigit():
            raise ConfigError(
                f"{SOURCE_DATE_EPOCH} must be whole seconds since 1970-01-01 UTC; got {pinned!r}"
            )
        return time.strftime("%Y:%m:%d %H:%M:%S", time.gmtime(int(pinned))), 0.0
    local = time.localtime(time.time() if now is None else now)
    return time.strftime("%Y:%m:%d %H:%M:%S", local), -float(local.tm_gmtoff)


def run_metadata(
    checkpoint: str,
    preset: str,
    config: InferenceConfig,
    output: OutputConfig,
    source: str,
    value_range: tuple[float, float],
    dilations_run: Sequence[int],
    anchor_fit: AnchorFit | None = None,
    metric_range: tuple[float, float] | None = None,
    color: PlateColor | None = None,
) -> dict[str, str | int | float]:
    """Header attributes shared by every frame of a run.

    ``color`` (the plate's colour decision) records the OCIO config, input space, display and
    view the model saw the plate through.

    ``value_range`` is the clip's relative inverse depth (min, max); the header records the
    range of the values *in the files* (after the depth convention and any anchoring).
    """
    lo, hi = written_range(value_range, output, metric_range)
    convention = DEPTH_CONVENTIONS[output.depth_mode]
    if anchor_fit is not None:
        convention = ANCHORED_CONVENTIONS[output.depth_mode].format(units=anchor_fit.units)
    meta: dict[str, str | int | float] = {
        "version": __version__,
        "model": checkpoint,
        "preset": preset,
        "source": source,
        "depth_mode": output.depth_mode,
        "depth_convention": convention,
        "value_min": lo,
        "value_max": hi,
        "dilations_run": " ".join(str(d) for d in dilations_run),
    }
    if output.restore_res:
        meta["upsample"] = output.upsample
    if output.depth_mode == "depth" and anchor_fit is None:
        meta["near"] = float(output.near)
        meta["far"] = float(output.far)
    if anchor_fit is not None:
        meta.update(anchor_fit.header())
    if color is not None:
        meta.update(color.header())
    for key, value in asdict(config).items():
        if isinstance(value, tuple):
            value = " ".join(str(v) for v in value)
        if isinstance(value, bool):
            value = int(value)
        meta[f"setting.{key}"] = value
    return meta


def written_range(
    value_range: tuple[float, float],
    output: OutputConfig,
    metric_range: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """The (min, max) of the values in the files: the clip's relative inverse depth range
    through the depth convention, or, anchored, the range of ``1/Z`` (``metric_range``)."""
    if metric_range is not None:
        lo, hi = metric_range
        return (lo, hi) if output.depth_mode == "inverse" else (1.0 / hi, 1.0 / lo)
    lo, hi = value_range
    ends = convert_depth(np.array([lo, hi], np.float32), output.depth_mode, output.near,
                         output.far, lo, hi)  # fmt: skip
    return float(ends.min()), float(ends.max())


def frame_values(
    frame: np.ndarray,
    index: int,
    output: OutputConfig,
    value_range: tuple[float, float],
    size: tuple[int, int],
    anchor_fit: AnchorFit | None = None,
    confidence: np.ndarray | None = None,
    guide: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One frame ``[h,w]`` of relative inverse depth -> the file's values ``[H,W]`` (``size``),
    and its confidence at the same size.

    With ``guide`` (the plate frame ``[H,W,3]``, display RGB 0..1) and ``output.upsample ==
    "edge"`` the maps reach the plate's size edge-aware (:func:`.upsample.upsample_depth`: the
    depth's edges on the plate's edges, the confidence taking the same side), else bilinearly.
    Anchored, the metric inverse depth ``1/Z`` (affine in the relative depth) is resized first
    and the reciprocal taken after, so the resize invents no depth between two surfaces."""
    if anchor_fit is None:
        lo, hi = value_range
        values = convert_depth(frame, output.depth_mode, output.near, output.far, lo, hi)
    else:
        values = anchor_fit.apply(index, frame)
    if guide is not None and output.upsample == "edge" and tuple(size) != values.shape:
        from .upsample import upsample_depth

        if confidence is None:
            values = upsample_depth(values, guide, "edge")
        else:
            values, (confidence,) = upsample_depth(values, guide, "edge", extra=[confidence])
    else:
        values = resize_map(values, size)
        confidence = None if confidence is None else resize_map(confidence, size)
    if anchor_fit is not None and output.depth_mode != "inverse":
        values = np.float32(1.0) / values
    return values, confidence


def write_depth_frames(
    frames: Iterable[np.ndarray],
    value_range: tuple[float, float],
    frame_numbers: Sequence[int],
    pattern: str,
    output: OutputConfig,
    metadata: Mapping[str, str | int | float],
    plate_size: tuple[int, int],
    confidence: Iterable[np.ndarray] | None = None,
    progress: ProgressCallback | None = None,
    select: Sequence[int] | None = None,
    anchor_fit: AnchorFit | None = None,
    guides: Iterable[np.ndarray] | None = None,
    windows: Mapping[str, object] | None = None,
    on_written: Callable[[int], None] | None = None,
    timecodes: Timecodes | None = None,
    geometry: FrameGeometry | None = None,
    colours: Iterable[np.ndarray] | None = None,
) -> list[Path]:
    """The one writer of depth frames: one EXR per frame, named by the plate's own numbers.

    Every path (a CLI run, farm finalize, Ray, the panel's export) writes through here, with
    the same naming (``pattern``, e.g. ``depth.####.exr``), conversion, metadata and
    ``DateTime`` (:func:`export_datetime`: the time of writing, or ``SOURCE_DATE_EPOCH``).
    ``timecodes`` (:attr:`.PlateInfo.timecodes`) gives each frame its plate frame's timecode
    and the frame rate (OpenEXR ``timeCode`` and ``framesPerSecond``). ``frames``
    (and ``confidence``) are ``[H,W]`` maps arriving one at a time; ``value_range`` is the
    clip's (min, max), known beforehand, so no frame is held back. ``select`` (positions in
    the clip) writes only those frames; the conversion still uses the whole clip's range.
    ``anchor_fit`` turns the values into scene units (``1/Z`` or ``Z``, by the depth mode).
    ``guides`` (the plate's frames, display RGB) let ``--restore-res`` upsample edge-aware;
    ``windows`` (the plate's display/data windows and pixel aspect, :meth:`.PlateInfo.
    exr_windows`) line outputs at plate resolution up over the plate. ``geometry`` (a camera
    and the passes, :mod:`.passes`) adds P and N channels computed from the written values
    at the written size, and the frame's camera to the header; it feeds its point cloud the
    plate's colours (``guides``, else ``colours``: the plate's frames at any size). Each
    write is atomic (written, read back, flushed, renamed); ``on_written(frame_number)``
    hears each one, in order, in the caller's thread. Frame k's file is written in a thread
    while frame k+1 is made (:class:`OneAhead`); the writer returns once every file is in
    place, or raises the first failure after the write in flight has ended.
    """
    chosen = set(range(len(frame_numbers))) if select is None else set(select)
    confidences = iter(confidence) if confidence is not None else None
    plates = iter(guides) if guides is not None and output.restore_res else None
    pictures = iter(colours) if colours is not None else None
    stamp, utc_offset = export_datetime()
    written: list[Path] = []

    def write(number, values, conf, header, path, colour) -> None:  # in the writer's thread
        extra = {} if conf is None else {"confidence": conf}
        if geometry is not None:
            extra.update(geometry.channels(number, values, output.depth_mode, conf, colour))
            extra.update(display_channels(values, output.channel, extra))
            header.update(geometry.header(number))
        write_depth_exr(
            path,
            values,
            channel=output.channel,
            half=output.half,
            metadata=header,
            extra_channels=extra or None,
            datetime=stamp,
            utc_offset=utc_offset,
            timecode=None if timecodes is None else timecodes.of(number),
            fps=None if timecodes is None else timecodes.rate,
            **(windows if windows is not None and output.restore_res else {}),
            **({"compression": geometry.compression} if geometry and geometry.compression else {}),
        )

    def done(number, path) -> None:  # back in the caller's thread, once the file is in place
        written.append(path)
        if on_written is not None:
            on_written(int(number))
        report(progress, "write", len(written), len(chosen))

    with OneAhead() as writer:
        for i, (number, frame) in enumerate(zip(frame_numbers, frames, strict=True)):
            conf = next(confidences) if confidences is not None else None
            guide = next(plates) if plates is not None else None
            picture = next(pictures) if pictures is not None else None
            if i not in chosen:
                continue
            size = plate_size if output.restore_res else frame.shape
            values, conf = frame_values(frame, i, output, value_range, size, anchor_fit, conf,
                                        guide)  # fmt: skip
            path = Path(expand_pattern(pattern, number))
            header = {**metadata, "source_frame": int(number)}
            if anchor_fit is not None and anchor_fit.mode != "global":
                header.update(anchor_fit.header(i))  # this frame's a and b
            colour = guide if guide is not None else picture
            writer.submit(partial(write, number, values, conf, header, path, colour),
                          partial(done, number, path))  # fmt: skip
    return written


def display_channels(
    values: np.ndarray, channel: str, extra: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The depth again as plain half-float R, G, B when Blender is to show a frame with layers
    (``protocol.DISPLAY_CHANNELS``: the depth channel is Blender's ``Y`` and a layered channel,
    P or N, sits beside it), else nothing. Values beyond half's range show white anyway."""
    if channel != protocol.BLENDER_CHANNEL or not any("." in name for name in extra):
        return {}
    grey = np.clip(values, -HALF_MAX, HALF_MAX).astype(np.float16)
    return dict.fromkeys(protocol.DISPLAY_CHANNELS, grey)


class OneAhead:
    """Frame k's file is written (its P and N computed, the EXR written, read back, flushed,
    renamed) in one thread of its own while the caller makes frame k+1 (the plate read, the
    upsampling): numpy, torch and OpenImageIO release the GIL, so the two overlap on two
    cores. At most one write is in flight and one frame in the making (memory stays at two
    frames). ``after`` (the publisher's ``wrote``, the progress) runs in the caller's thread
    once its file is in place, in order; a failed write raises its own error there, before
    the next frame is handed over. Leaving the block, on an error or Ctrl-C too, waits for
    the write in flight, so nothing writes into the folder after the writer returns.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollingdepth-write")
        self._pending: tuple[Future, Callable[[], None]] | None = None

    def submit(self, work: Callable[[], None], after: Callable[[], None]) -> None:
        self.finish()
        self._pending = (self._pool.submit(work), after)

    def finish(self) -> None:
        """Wait for the write in flight; its error is raised here, else ``after`` runs."""
        if self._pending is None:
            return
        future, after = self._pending
        future.result()
        self._pending = None
        after()

    def __enter__(self) -> OneAhead:
        return self

    def __exit__(self, kind, error, trace) -> None:
        interrupted = False
        try:
            if kind is None:
                self.finish()
        finally:
            # a write in flight ends (whole, or removed by the EXR writer) before the caller
            # hears of the failure and, say, the publisher removes its staging folder
            while self._pending is not None and not self._pending[0].done():
                try:
                    wait([self._pending[0]])
                except KeyboardInterrupt:
                    interrupted = True
            self._pool.shutdown(wait=True)
        if interrupted and kind is None:
            raise KeyboardInterrupt


def unit_frames(
    frames: Iterable[np.ndarray], value_range: tuple[float, float]
) -> Iterator[np.ndarray]:
    """Frames mapped to 0..1 over ``value_range`` (for a preview)."""
    lo, hi = value_range
    for d in frames:
        yield (d - lo) / max(hi - lo, 1e-12)


def write_preview(
    frames: Iterable[np.ndarray], folder: str | Path, name: str, fps: Fraction | None
) -> Path:
    """A turbo-coloured mp4 next to the EXRs from frames in 0..1 (:func:`unit_frames`)."""
    from .preview import write_preview_video

    path = Path(folder) / f"{name}_preview.mp4"
    write_preview_video(path, frames, fps)
    return path
