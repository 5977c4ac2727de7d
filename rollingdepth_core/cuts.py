"""Shot cuts: a plate that is really an edit is split into shots, each processed on its own.

RollingDepth aligns every snippet of a clip into one depth scale; across a hard cut that
alignment mixes two unrelated scenes. `detect_cuts` finds where new shots start (a PySceneDetect
detector fed frame by frame), `parse_cuts` reads a hand-made list, and `shots_from_cuts` turns
either into `Shot` ranges of clip positions. Hard cuts only: a dissolve or fade may give one
cut somewhere inside it, or none.

Minimum shot length: a shot needs at least ``MIN_SHOT_FRAMES`` (2) frames, like a clip. Cuts
that the user lists are checked and refused with a `ConfigError` when they would leave a shorter
shot (the user decides which cut goes). Detected cuts never do: the detector keeps
``min_shot_frames`` (>= 2, `--min-shot-frames`, default 4) between cuts, and a cut on the very
last frame, which would leave a one-frame shot (most often a flash or the first frame of a
tail), is dropped so that frame stays with the shot before it. Shots shorter than the
dilations are left to the engine's capping, as for short clips.

Flashes: a short shot may now be 4 frames, so what tells a flash (muzzle flash, lightning, a
photographer's strobe) from a shot is that the picture comes back. A detected cut is dropped
when the frames either side of fewer than ``min_shot_frames`` odd frames around it are alike
(their change is under `RETURN_FRACTION` of the change at the cut). An edit that returns to
the same picture after a shot of ``min_shot_frames`` or more keeps both cuts.
`benchmarks/cut_bench.py` measures short shots, flashes, grain and whip pans.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .config import DEFAULT_MIN_SHOT_FRAMES
from .editorial import is_edit_file, read_edit_cuts
from .errors import ConfigError, InputError

CUTS_MODES = ("auto", "none")
MIN_SHOT_FRAMES = 2
# PySceneDetect's detectors and their default thresholds, tuned on real footage. "content": the
# mean change (0..255) of the scored HSV channels between neighbouring frames. "adaptive": that
# change over its mean on the 2 frames either side (and at least 15), so a one- or two-frame
# flash, which scores high on its way in and out, and grain, which raises every frame's change,
# weigh less; it cannot see a cut in the last 2 frames. Adaptive is PySceneDetect's own default,
# and ours: on the tests' edits it finds the same cuts, ignores flashes that make "content" cut,
# and keeps finding them under grain where "content" misses one (tests/core/test_cuts.py).
CUT_METHODS = {"content": 27.0, "adaptive": 3.0}
DEFAULT_CUT_METHOD = "adaptive"
# Hue, saturation and brightness are all scored unless `luma_only`. Hue is undefined on neutral
# pixels, so on a black-and-white plate with grain it is noise (grey edit, grain std 0.01: full
# HSV misses both cuts, brightness alone finds them). But brightness alone scores camera motion
# high against a cut (panning sample shot: 22 a frame, a cut 42-50, where full HSV gives 8 and
# 59-63), and the adaptive detector then misses cuts between moving shots: so only for
# black-and-white or desaturated plates.
DEFAULT_LUMA_ONLY = False
# The shortest shot the detector reports, DEFAULT_MIN_SHOT_FRAMES (config.py): 4 frames.
# PySceneDetect's default, 15, merged quick shots of an edit into their neighbours; 4 finds
# them (benchmarks/cut_bench.py), and the flash check below keeps flashes from becoming shots.
# A detected cut is a flash when the pictures either side of the odd frames differ by less than
# this share of the change at the cut (mean HSV change, as PySceneDetect scores): a 1-3 frame
# flash in the moving shots of benchmarks/cut_bench.py returns to 0.16-0.26, a cut between two
# shots stays over 0.96.
RETURN_FRACTION = 0.5
# PySceneDetect scores frames downscaled to this width (its SceneManager's default); the score
# and its threshold are averages, so they do not depend on the size, and the detector runs at a
# cost independent of the plate's resolution.
DETECTION_WIDTH = 256
# The detector wants a frame rate for its timecodes; every length we give it is in frames, so
# any rate gives the same cuts.
_TIMECODE_RATE = Fraction(24)


@dataclass(frozen=True)
class Shot:
    """One shot of a plate: clip positions ``start`` .. ``stop - 1`` (``stop`` exclusive),
    plate frame numbers ``first_frame`` .. ``last_frame`` (inclusive; gaps in a sequence stay
    gaps)."""

    index: int
    start: int
    stop: int
    first_frame: int
    last_frame: int

    @property
    def n_frames(self) -> int:
        return self.stop - self.start


class CutDetector:
    """A PySceneDetect detector fed one frame at a time, for a caller that already streams the
    plate: `push` each frame in order, then `finish`. Holds two small frames at most.

    Parameters
    ----------
    method : str
        ``"content"`` (`ContentDetector`) or ``"adaptive"`` (`AdaptiveDetector`): see
        `CUT_METHODS`.
    threshold : float, optional
        What makes a cut; lower finds more. ``"content"``: mean change (0..255) of the scored
        channels between neighbouring frames. ``"adaptive"``: that change over its mean on the
        neighbouring frames. None takes `CUT_METHODS`' default.
    min_shot_frames : int
        Shortest shot reported (frames, >= 2): a flash or fast action that crosses the
        threshold twice within this many frames gives one cut, not two.
    luma_only : bool
        Score brightness changes only (for black-and-white or desaturated plates); by default
        hue and saturation count too.
    flash_frames : int, optional
        Longest flash (frames) that the flash check drops a cut for (see the module
        docstring); None: ``min_shot_frames - 1``, 0 turns the check off.
    """

    def __init__(
        self,
        method: str = DEFAULT_CUT_METHOD,
        threshold: float | None = None,
        min_shot_frames: int = DEFAULT_MIN_SHOT_FRAMES,
        luma_only: bool = DEFAULT_LUMA_ONLY,
        flash_frames: int | None = None,
    ) -> None:
        if method not in CUT_METHODS:
            raise ConfigError(f"`method` must be one of {tuple(CUT_METHODS)}; got {method!r}")
        if threshold is None:
            threshold = CUT_METHODS[method]
        if not threshold > 0:
            raise ConfigError(f"`threshold` must be > 0; got {threshold}")
        if min_shot_frames < MIN_SHOT_FRAMES:
            raise ConfigError(
                f"`min_shot_frames` must be >= {MIN_SHOT_FRAMES} (a shot needs 2 frames); "
                f"got {min_shot_frames}"
            )
        try:
            from scenedetect import FrameTimecode
            from scenedetect.detectors import AdaptiveDetector, ContentDetector
        except ImportError as exc:
            raise ConfigError(
                "`cuts=auto` needs PySceneDetect, a dependency of rollingdepth that is "
                f"missing here: pip install scenedetect-headless ({exc})"
            ) from exc
        self._timecode = FrameTimecode
        if method == "content":
            self._detector = ContentDetector(
                threshold=threshold, min_scene_len=min_shot_frames, luma_only=luma_only
            )
        else:
            self._detector = AdaptiveDetector(
                adaptive_threshold=threshold, min_scene_len=min_shot_frames, luma_only=luma_only
            )
        if flash_frames is None:
            flash_frames = min_shot_frames - 1
        if flash_frames < 0:
            raise ConfigError(f"`flash_frames` must be >= 0; got {flash_frames}")
        self._flash_frames = flash_frames
        self._size: tuple[int, int] | None = None  # (width, height) of the first frame
        self._count = 0
        self._cuts: list[int] = []
        # The flash check's frames: the odd ones either side of a cut, and the detector's lag
        # (the adaptive one reports a cut 2 frames late). (position, HSV int16 [h,w,3])
        self._recent: deque[tuple[int, np.ndarray]] = deque(maxlen=2 * flash_frames + 5)
        self._pending: list[int] = []  # cuts reported, waiting for the frames after them

    def push(self, rgb: np.ndarray) -> None:
        """Score the next frame: float32 RGB ``[H,W,3]`` in [0,1], display-referred."""
        import cv2

        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise InputError(f"cut detection expects frames [H,W,3]; got {tuple(rgb.shape)}")
        height, width = rgb.shape[:2]
        if self._size is None:
            self._size = (width, height)
        elif self._size != (width, height):
            raise InputError(
                f"frame {self._count} is {width}x{height}; the first frame was "
                f"{self._size[0]}x{self._size[1]}"
            )
        if width > DETECTION_WIDTH:
            # Shrinking the float frame first makes the uint8 conversion cheap. Area averaging
            # rather than PySceneDetect's bilinear: at 1/7.5 scale bilinear samples a few source
            # pixels per output pixel, so moving fine texture flickers into the score (fine grain
            # panning at 1080p scores 11.2 bilinear, 3.9 area; benchmarks/cuts_bench.py).
            size = (DETECTION_WIDTH, max(1, round(height * DETECTION_WIDTH / width)))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        bgr = np.ascontiguousarray(
            (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)[..., ::-1]
        )
        timecode = self._timecode(self._count, fps=_TIMECODE_RATE)
        if self._flash_frames:
            hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV).astype(np.int16)
            self._recent.append((self._count, hsv))
        self._pending.extend(cut.frame_num for cut in self._detector.process_frame(timecode, bgr))
        self._count += 1
        self._settle(self._count - 1 - self._flash_frames)

    def finish(self) -> list[int]:
        """Clip positions where a new shot starts (sorted; never 0)."""
        end = self._timecode(max(self._count - 1, 0), fps=_TIMECODE_RATE)
        self._pending.extend(cut.frame_num for cut in self._detector.post_process(end))
        self._settle(self._count)
        # A cut on the last frame would leave a one-frame shot: see the module docstring.
        return [cut for cut in sorted(set(self._cuts)) if 0 < cut < self._count - 1]

    def _settle(self, up_to: int) -> None:
        """Keep or drop (a flash) every pending cut at a position <= ``up_to``."""
        ready = [cut for cut in self._pending if cut <= up_to]
        self._pending = [cut for cut in self._pending if cut > up_to]
        self._cuts.extend(cut for cut in ready if not self._is_flash(cut))

    def _is_flash(self, cut: int) -> bool:
        """Whether the picture before ``cut`` comes back within ``flash_frames`` frames."""
        if not self._flash_frames:
            return False
        frames = dict(self._recent)
        if cut - 1 not in frames or cut not in frames:
            return False
        jump = _change(frames[cut - 1], frames[cut])
        longest = self._flash_frames
        for before in range(cut - 1, cut - 2 - longest, -1):
            for after in range(cut, before + longest + 2):
                odd = after - before - 1  # frames between the two compared
                if odd < 1 or before not in frames or after not in frames:
                    continue
                if _change(frames[before], frames[after]) < RETURN_FRACTION * jump:
                    return True
        return False


def _change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute change of hue, saturation and value between two HSV frames."""
    return float(np.abs(a - b).mean())


def detect_cuts(
    frames: Iterable[np.ndarray],
    method: str = DEFAULT_CUT_METHOD,
    threshold: float | None = None,
    min_shot_frames: int = DEFAULT_MIN_SHOT_FRAMES,
    luma_only: bool = DEFAULT_LUMA_ONLY,
    flash_frames: int | None = None,
) -> list[int]:
    """Clip positions (0-based) where a new shot starts, from frames streamed once.

    Parameters
    ----------
    frames : iterable of np.ndarray
        The clip in order, float32 RGB ``[H,W,3]`` in [0,1] as `Plate.frames` decodes them
        (``rgb for _, rgb in plate.frames()``); none is kept.
    method, threshold, min_shot_frames, luma_only, flash_frames
        See `CutDetector`.

    Returns
    -------
    list of int
        Sorted positions ``p`` (``0 < p < n - 1``); shot ``k`` runs up to the ``k``-th cut.
    """
    detector = CutDetector(method, threshold, min_shot_frames, luma_only, flash_frames)
    for rgb in frames:
        detector.push(rgb)
    return detector.finish()


def parse_cuts(
    text: str, frame_numbers: Sequence[int], frames: str | None = None, plate=None
) -> list[int] | None:
    """Read ``--cuts``: ``auto``, ``none``, a list of plate frame numbers that start a shot, or
    an edit file (``.otio``, ``.edl``, ``.xml``: `.editorial.read_edit_cuts`, which matches its
    clips to ``plate``, the `PlateInfo`, by timecode).

    Parameters
    ----------
    text : str
        ``"auto"`` (detect them: returns None), ``"none"`` (one shot: returns ``[]``) or frame
        numbers separated by commas and/or spaces, e.g. ``"1040, 1097"``.
    frame_numbers : sequence of int
        The plate's frame numbers in clip order (`PlateInfo.frame_numbers`).
    frames : str, optional
        The ``--frames`` range ``frame_numbers`` was picked with: a cut outside it is named
        as outside ``--frames`` (it may well be in the plate).

    Returns
    -------
    list of int or None
        Sorted clip positions of the listed frames; None for ``auto``.

    Raises
    ------
    ConfigError
        Not a list of whole numbers, a number twice, a frame outside the plate or in a gap,
        the plate's first frame (it starts a shot already), or a shot shorter than 2 frames.
    """
    mode = text.strip().lower()
    if mode == "auto":
        return None
    if mode == "none":
        return []
    if is_edit_file(text):
        cuts = read_edit_cuts(text, frame_numbers, plate)
        shots_from_cuts(frame_numbers, cuts)  # refuses shots shorter than 2 frames
        return cuts
    tokens = [token for token in re.split(r"[\s,]+", text.strip()) if token]
    if not tokens or not all(re.fullmatch(r"\d+", token) for token in tokens):
        raise ConfigError(
            f"`cuts` must be `auto`, `none` or frame numbers like `1040,1097`; got {text!r}"
        )
    numbers = [int(token) for token in tokens]
    repeated = sorted(number for number, count in Counter(numbers).items() if count > 1)
    if repeated:
        raise ConfigError(f"`cuts` lists frame {repeated[0]} more than once")
    position_of = {number: position for position, number in enumerate(frame_numbers)}
    outside = [n for n in numbers if n not in position_of]
    if outside:
        first, last = frame_numbers[0], frame_numbers[-1]
        if frames is not None and not first <= outside[0] <= last:
            raise ConfigError(
                f"`--cuts` frame {outside[0]} is outside `--frames {frames}` "
                f"(frames {first}-{last} are processed): list cuts within that range"
            )
        gaps = ", with gaps" if last - first + 1 != len(frame_numbers) else ""
        raise ConfigError(
            f"`cuts` frame {outside[0]} is not in the plate (frames {first}-{last}{gaps})"
        )
    if frame_numbers[0] in numbers:
        raise ConfigError(
            f"`cuts` frame {frame_numbers[0]} is the plate's first frame, which starts the first "
            "shot already; list only frames where a new shot starts"
        )
    cuts = sorted(position_of[n] for n in numbers)
    shots_from_cuts(frame_numbers, cuts)  # refuses shots shorter than 2 frames, in frame numbers
    return cuts


def shots_from_cuts(frame_numbers: Sequence[int], cuts: Sequence[int]) -> list[Shot]:
    """Split the clip at ``cuts`` (clip positions where a new shot starts) into shots.

    Parameters
    ----------
    frame_numbers : sequence of int
        The plate's frame numbers in clip order; its length is the clip's.
    cuts : sequence of int
        Clip positions from `detect_cuts` or `parse_cuts`, each in ``1 .. n-1``, increasing.

    Raises
    ------
    ConfigError
        A cut out of range or out of order, or a shot shorter than ``MIN_SHOT_FRAMES``.
    """
    n_frames = len(frame_numbers)
    bounds = [0, *cuts, n_frames]
    for cut in cuts:
        if not 0 < cut < n_frames:
            raise ConfigError(f"cut position {cut} is outside 1..{n_frames - 1}")
    shots = []
    for index, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        if stop <= start:
            raise ConfigError(f"cut positions must increase; got {list(cuts)}")
        if stop - start < MIN_SHOT_FRAMES:
            raise ConfigError(
                f"the cuts leave shot {index + 1} (frame {frame_numbers[start]}) with "
                f"{stop - start} frame; a shot needs at least {MIN_SHOT_FRAMES}: remove a cut"
            )
        shots.append(Shot(index, start, stop, frame_numbers[start], frame_numbers[stop - 1]))
    return shots
