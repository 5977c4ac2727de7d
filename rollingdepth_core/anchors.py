"""Depth in scene units: the relative inverse depth anchored to measured points.

After co-alignment the clip's inverse depth ``d`` (larger = nearer) is right up to one unknown
scale and shift. Points of known depth (a camera solve's bundles, survey points, lidar) pin
them down: this module finds the map ``1/Z = a d + b`` that best explains them.

Conventions
    * Anchors file: CSV with the header ``frame,x,y,depth`` (any order) and optional ``weight``
      and ``track`` columns; ``#`` lines are comments and ``# units: m`` names the unit. The
      JSON form is a list of objects with the same keys, or ``{"units": ..., "anchors": [...]}``.
    * ``frame`` is the plate's own frame number. ``x, y`` are plate pixels from the top-left
      corner; pixel (i, j) covers [i, i+1) x [j, j+1), so its centre is (i + 0.5, j + 0.5).
    * ``depth`` is the planar distance from the camera along its view axis (Blender's Z pass),
      in scene units.
    * Depth maps are at processing size (h, w), anchors in plate pixels (H, W): a plate point
      (x, y) is read at processing coordinates ``u = x w / W - 0.5``, ``v = y h / H - 0.5``
      (pixel index units) with bilinear weights and edge clamping, exactly what an
      ``align_corners=False`` bilinear upsampling to plate size would show at that point.

The fit (:func:`fit_anchors`)
    Residuals are relative errors in inverse depth, ``r = Z (a d + b) - 1``: to first order the
    relative depth error (with the opposite sign), and linear in (a, b), so every reweighted
    step is one small least-squares solve.

    * Start: least median of squares over pairs of anchors (each pair fixes an (a, b); the one
      with the smallest median |r| wins), so up to half of the anchors may be wrong.
    * Then iteratively reweighted least squares with Tukey's biweight (redescending: an anchor
      beyond the cutoff has no say at all). Cutoff ``c = max(threshold * sigma, min_cutoff)``
      with ``sigma = 1.4826 median |r|`` (re-estimated every pass), ``threshold = 4.685``
      (Tukey's constant: 95 % efficiency on Gaussian errors) and ``min_cutoff = 0.01`` (1 %:
      anchors that agree this well are never rejected, so a near-perfect fit does not start
      rejecting good points because sigma collapses). Anchors with |r| >= c are "rejected".
    * ``mode="smooth"``: (a, b) per frame, ``a_t = a0 (1 + alpha_t)``, ``b_t = b0 + a0 beta_t``
      around the global fit, so alpha and beta are corrections in units of d. Penalty:
      ``lam (|D2 alpha|^2 + |D2 beta|^2)`` (second differences over frames), with ``lam`` set so
      that a variation with a period of ``smooth_frames`` frames is followed at half amplitude
      (a Whittaker smoother's gain ``1 / (1 + (lam / rho) (2 sin(pi / period))^4)`` is 1/2
      there; rho the mean over frames of the harmonic mean of a frame's two data curvatures,
      measured: gain 0.47-0.49 at that period); slower drift is followed, faster wiggles are
      not. Weights: Huber passes first (convex: the global fit's residuals, which hold the
      drift, cannot lock anchors out), then Tukey passes as above. A tiny ridge towards
      the global fit keeps frames far from any anchor determined (they keep the trend).
      A linear drift of a and b over the clip costs nothing, so ramps are followed without
      lag; on a short clip with unevenly reliable anchors (a camera solve's far tracks) that
      freedom can fit their errors: keep ``"global"`` there (the benchmark shows it).

Refusals (:class:`AnchorFitError`): fewer than 2 usable anchors, anchors all at one depth or
all on one value of d, a fit in which nearer-looking (larger d) points come out farther
(``a <= 0``), and a fit that puts some d of the clip at infinity or behind the camera.
"""

from __future__ import annotations

import csv
import io
import json
import math
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .atomic import open_atomic
from .errors import ConfigError, InputError, RollingDepthError

ANCHOR_COLUMNS = ("frame", "x", "y", "depth")
OPTIONAL_COLUMNS = ("weight", "track")
FIT_MODES = ("global", "smooth")
TUKEY_C = 4.685  # Tukey's biweight constant: 95 % efficiency on Gaussian errors
MIN_CUTOFF = 0.01  # relative error below which no anchor is ever rejected
MAD_TO_SIGMA = 1.4826
HUBER_C = 1.345  # Huber's constant: 95 % efficiency on Gaussian errors
LMEDS_PAIRS = 2000  # candidate pairs for the robust start (all pairs when fewer)
LMEDS_SCORE_ANCHORS = 20_000  # anchors a candidate's median residual is taken over, at most
MIN_SPREAD = 0.01  # anchors must span 1 % of the depth (and of the clip's d range)
# An anchors file is read into arrays (~100 bytes an anchor through the fit and the sidecar):
# the cap bounds a run's memory whatever the file holds. A JSON file is parsed whole into
# Python objects (~1 KB an anchor), so it is capped by size: large point sets go as CSV.
MAX_ANCHORS = 2_000_000
MAX_JSON_BYTES = 32 * 2**20
MAX_FRAME_NUMBER = 10**9  # beyond any plate's numbering; larger ones are typos


class AnchorFileError(InputError):
    """The anchors file cannot be read: missing, bad header, bad values."""


class AnchorFitError(RollingDepthError):
    """The anchors do not determine a usable depth scale."""


# ------------------------------------------------------------------------------ anchors file
@dataclass(frozen=True)
class Anchors:
    """Measured points: ``[K]`` arrays, one entry per anchor, in file order."""

    frame: np.ndarray  # [K] int64, plate frame numbers
    x: np.ndarray  # [K] float64, plate pixels from the left edge
    y: np.ndarray  # [K] float64, plate pixels from the top edge
    depth: np.ndarray  # [K] float64, planar distance in scene units
    weight: np.ndarray  # [K] float64 > 0
    track: tuple[str, ...]  # [K] labels ("" when the file has none)
    units: str = "scene units"
    source: str = ""

    def __len__(self) -> int:
        return int(self.frame.shape[0])


def load_anchors(path: str | Path) -> Anchors:
    """Read an anchors CSV or JSON file (by suffix; JSON if the text starts with ``[``/``{``).

    A CSV is streamed line by line into typed arrays, so a tracker's export of a million
    points takes tens of MB, not GBs."""
    path = Path(path)
    try:
        handle = open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise AnchorFileError(f"cannot read anchors file {str(path)!r}: {exc.strerror}") from exc
    units: list[str] = []
    frame, x, y = array("q"), array("d"), array("d")
    depth, weight, track = array("d"), array("d"), []
    tracks: dict[str, str] = {}  # one string per track name, however many points it has
    with handle:
        try:
            head = handle.read(4096)
            handle.seek(0)
            is_json = path.suffix.lower() == ".json" or head.lstrip()[:1] in ("[", "{")
            if is_json:
                size = path.stat().st_size
                if size > MAX_JSON_BYTES:
                    raise AnchorFileError(
                        f"anchors file {path.name}: {size / 2**20:.0f} MB of JSON, over the "
                        f"{MAX_JSON_BYTES // 2**20} MB a JSON anchors file may have: write "
                        "large point sets as CSV (frame,x,y,depth)"
                    )
                rows, text_units = _json_rows(handle.read(), path)
                units.append(text_units)
            else:
                rows = _csv_rows(handle, path, units)
            for where, row in rows:
                if len(frame) == MAX_ANCHORS:
                    raise AnchorFileError(
                        f"anchors file {path.name}: more than {MAX_ANCHORS:,} anchors; "
                        "thin the points (a few hundred a frame are plenty for the fit)"
                    )
                frame.append(_frame_number(row["frame"], where))
                x.append(_number(row, "x", where))
                y.append(_number(row, "y", where))
                z = _number(row, "depth", where)
                if not z > 0:
                    raise AnchorFileError(f"{where}: `depth` is {z:g}; it must be > 0")
                depth.append(z)
                given = row.get("weight", "")
                w = _number(row, "weight", where) if given not in ("", None) else 1.0
                if not w > 0:
                    raise AnchorFileError(f"{where}: `weight` is {w:g}; it must be > 0")
                weight.append(w)
                name = str(row.get("track") or "")
                track.append(tracks.setdefault(name, name))
        except (OSError, UnicodeDecodeError) as exc:
            raise AnchorFileError(f"cannot read anchors file {str(path)!r}: {exc}") from exc
    if not frame:
        raise AnchorFileError(f"anchors file {path.name}: no anchors in it")
    return Anchors(
        frame=np.frombuffer(frame, np.int64).copy(),
        x=np.frombuffer(x, np.float64).copy(),
        y=np.frombuffer(y, np.float64).copy(),
        depth=np.frombuffer(depth, np.float64).copy(),
        weight=np.frombuffer(weight, np.float64).copy(),
        track=tuple(track),
        units=next((u for u in reversed(units) if u), "") or "scene units",
        source=str(path),
    )


def _csv_rows(lines, path: Path, units: list[str]) -> Iterator[tuple[str, dict]]:
    """The data rows of a CSV streamed from ``lines``; ``# units: m`` comments go to
    ``units``."""

    def content():
        for number, line in enumerate(lines, 1):
            stripped = line.strip()
            if stripped.startswith("#"):
                key, _, value = stripped[1:].partition(":")
                if key.strip().lower() == "units" and value.strip():
                    units.append(value.strip())
            elif stripped:
                yield number, line

    numbered = content()
    first = next(numbered, None)
    if first is None:
        raise AnchorFileError(
            f"anchors file {path.name}: empty (expected the header frame,x,y,depth)"
        )
    header = [h.strip().lower() for h in next(csv.reader([first[1]]))]
    _check_delimiter(header, path)
    _check_columns(header, f"anchors file {path.name}, header")
    width = len(header)
    for number, line in numbered:
        values = next(csv.reader([line]))
        where = f"{path.name} line {number}"
        if len(values) != width:
            raise AnchorFileError(f"{where}: {len(values)} values for {width} columns")
        yield where, dict(zip(header, (v.strip() for v in values), strict=True))


def _check_delimiter(header: list[str], path: Path) -> None:
    """A header read as one column that other separators would split (a spreadsheet's
    ``;`` export, tabs): say so, rather than list every column as missing."""
    if len(header) != 1:
        return
    for delimiter, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "bars")):
        if delimiter in header[0]:
            raise AnchorFileError(
                f"anchors file {path.name}: the header {header[0]!r} is separated by {name}; "
                "anchors files are comma-separated (frame,x,y,depth with `.` decimals): "
                "export the CSV with commas"
            )


def _json_rows(text: str, path: Path) -> tuple[list[tuple[str, dict]], str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnchorFileError(f"anchors file {path.name}: not valid JSON ({exc})") from exc
    units = ""
    if isinstance(data, dict):
        units = str(data.get("units") or "")
        data = data.get("anchors")
    if not isinstance(data, list):
        raise AnchorFileError(
            f"anchors file {path.name}: expected a list of anchors or "
            '{"units": ..., "anchors": [...]}'
        )
    rows = []
    for i, item in enumerate(data):
        where = f"{path.name} anchor {i}"
        if not isinstance(item, dict):
            raise AnchorFileError(f"{where}: expected an object with keys frame, x, y, depth")
        _check_columns([str(k).lower() for k in item], where)
        rows.append((where, {str(k).lower(): v for k, v in item.items()}))
    return rows, units


def _check_columns(names: Sequence[str], where: str) -> None:
    missing = [c for c in ANCHOR_COLUMNS if c not in names]
    unknown = [c for c in names if c not in ANCHOR_COLUMNS + OPTIONAL_COLUMNS]
    if missing or unknown or len(set(names)) != len(names):
        problem = (
            f"missing {', '.join(missing)}"
            if missing
            else f"unknown {', '.join(unknown)}"
            if unknown
            else "a repeated column"
        )
        raise AnchorFileError(
            f"{where}: {problem}; expected frame,x,y,depth and optionally weight, track"
        )


def _number(row: dict, key: str, where: str) -> float:
    value = row[key]
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):  # an integer too large for a float
        raise AnchorFileError(f"{where}: `{key}` is {value!r}, not a number") from None
    if not math.isfinite(out):
        raise AnchorFileError(f"{where}: `{key}` is {value!r}; it must be finite")
    return out


def _frame_number(value, where: str) -> int:
    out = _number({"frame": value}, "frame", where)
    if not out.is_integer():
        raise AnchorFileError(f"{where}: `frame` is {value!r}; it must be a whole frame number")
    if abs(out) > MAX_FRAME_NUMBER:
        raise AnchorFileError(
            f"{where}: `frame` is {value!r}; frame numbers go up to {MAX_FRAME_NUMBER:,}"
        )
    return int(out)


# ------------------------------------------------------------------------------ sampling
def sample_frame(
    depth_hw: np.ndarray, x: np.ndarray, y: np.ndarray, plate_size: tuple[int, int]
) -> np.ndarray:
    """Bilinear values ``[k]`` of a processing-size map ``[h,w]`` at plate points ``(x, y)``.

    ``plate_size`` is (H, W). Points must lie in the plate, [0, W) x [0, H). Matches an
    ``align_corners=False`` bilinear resize to the plate size at those points (edges clamped).
    """
    depth_hw = np.asarray(depth_hw)
    if depth_hw.ndim != 2:
        raise ConfigError(f"`depth_hw` must be [h,w], got shape {tuple(depth_hw.shape)}")
    h, w = depth_hw.shape
    big_h, big_w = plate_size
    u = np.clip(np.asarray(x, np.float64) * (w / big_w) - 0.5, 0.0, w - 1)
    v = np.clip(np.asarray(y, np.float64) * (h / big_h) - 0.5, 0.0, h - 1)
    i0 = np.floor(u).astype(np.int64)
    j0 = np.floor(v).astype(np.int64)
    i1 = np.minimum(i0 + 1, w - 1)
    j1 = np.minimum(j0 + 1, h - 1)
    fu, fv = u - i0, v - j0
    m = depth_hw.astype(np.float64, copy=False)
    top = m[j0, i0] * (1 - fu) + m[j0, i1] * fu
    bottom = m[j1, i0] * (1 - fu) + m[j1, i1] * fu
    return top * (1 - fv) + bottom * fv


@dataclass
class AnchorSamples:
    """Anchors read off the depth maps, ready for :func:`fit_anchors`.

    ``index`` refers to the anchors file (its rows), ``frame_index`` to the processed frames.
    """

    anchors: Anchors
    frame_numbers: tuple[int, ...]  # the processed frames, in order
    index: np.ndarray  # [S] int64, anchor rows that were sampled
    frame_index: np.ndarray  # [S] int64, 0 .. N-1
    d: np.ndarray  # [S] float64, relative inverse depth at the anchor
    frame_min: np.ndarray  # [N] float64, each frame's smallest d (nan when not fed)
    frame_max: np.ndarray  # [N] float64
    outside: np.ndarray  # [*] int64, anchor rows outside the plate
    unprocessed: np.ndarray  # [*] int64, anchor rows on frames that were not processed

    @property
    def n_frames(self) -> int:
        return len(self.frame_numbers)

    @property
    def d_range(self) -> tuple[float, float]:
        return float(np.nanmin(self.frame_min)), float(np.nanmax(self.frame_max))


class AnchorSampler:
    """Reads the anchors off a clip that arrives one frame at a time.

    ``frame_numbers``: the plate frame numbers of the processed frames, in order;
    ``plate_size``: (H, W) of the plate the anchors' pixels refer to. Feed every frame with
    :meth:`add` (any order), then take :meth:`samples`. Each frame's min/max d are recorded
    too, so the fit can check the whole clip without a second pass.
    """

    def __init__(self, anchors: Anchors, frame_numbers: Sequence[int], plate_size: tuple[int, int]):
        self.anchors = anchors
        self.frame_numbers = tuple(int(f) for f in frame_numbers)
        self.plate_size = (int(plate_size[0]), int(plate_size[1]))
        big_h, big_w = self.plate_size
        numbers = np.asarray(self.frame_numbers, np.int64)
        order = np.argsort(numbers, kind="stable")
        inside = (anchors.x >= 0) & (anchors.x < big_w) & (anchors.y >= 0) & (anchors.y < big_h)
        # each anchor's position among the processed frames, by a search in the sorted numbers
        ascending = numbers[order]
        found = np.searchsorted(ascending, anchors.frame).clip(0, max(len(numbers) - 1, 0))
        processed = (ascending[found] == anchors.frame) if len(numbers) else np.zeros_like(inside)
        self.outside = np.flatnonzero(processed & ~inside)
        self.unprocessed = np.flatnonzero(~processed)
        usable = np.flatnonzero(processed & inside)
        self._rows_of: dict[int, np.ndarray] = {}
        frame_index = order[found[usable]].astype(np.int64)
        by_frame = np.argsort(frame_index, kind="stable")  # file order kept within a frame
        sorted_index = frame_index[by_frame]
        bounds = np.flatnonzero(np.diff(sorted_index)) + 1
        for start, rows in zip(np.r_[0, bounds], np.split(usable[by_frame], bounds), strict=True):
            if rows.size:
                self._rows_of[int(sorted_index[start])] = rows
        n = len(self.frame_numbers)
        self._min = np.full(n, np.nan)
        self._max = np.full(n, np.nan)
        self._d: dict[int, np.ndarray] = {}

    def add(self, frame_index: int, depth_hw: np.ndarray) -> None:
        """Sample processed frame ``frame_index`` (0-based), a ``[h,w]`` map."""
        depth_hw = np.asarray(depth_hw)
        if not 0 <= frame_index < len(self.frame_numbers):
            raise ConfigError(
                f"`frame_index` {frame_index} outside 0..{len(self.frame_numbers) - 1}"
            )
        self._min[frame_index] = float(depth_hw.min())
        self._max[frame_index] = float(depth_hw.max())
        rows = self._rows_of.get(int(frame_index))
        if rows is not None:
            a = self.anchors
            self._d[int(frame_index)] = sample_frame(
                depth_hw, a.x[rows], a.y[rows], self.plate_size
            )

    def samples(self) -> AnchorSamples:
        missing = sorted(set(self._rows_of) - set(self._d))
        if missing:
            raise ConfigError(
                f"frames with anchors were never sampled: {[self.frame_numbers[k] for k in missing]}"
            )
        keys = sorted(self._d)
        index = np.concatenate([self._rows_of[k] for k in keys]) if keys else np.zeros(0, np.int64)
        frame_index = (
            np.concatenate([np.full(len(self._rows_of[k]), k, np.int64) for k in keys])
            if keys
            else np.zeros(0, np.int64)
        )
        d = np.concatenate([self._d[k] for k in keys]) if keys else np.zeros(0)
        return AnchorSamples(
            anchors=self.anchors,
            frame_numbers=self.frame_numbers,
            index=index,
            frame_index=frame_index,
            d=d,
            frame_min=self._min.copy(),
            frame_max=self._max.copy(),
            outside=self.outside,
            unprocessed=self.unprocessed,
        )


def sample_video(
    depth: np.ndarray,
    anchors: Anchors,
    frame_numbers: Sequence[int],
    plate_size: tuple[int, int],
) -> AnchorSamples:
    """:class:`AnchorSampler` over a whole ``[N,h,w]`` clip held in memory."""
    sampler = AnchorSampler(anchors, frame_numbers, plate_size)
    for k, frame in enumerate(depth):
        sampler.add(k, frame)
    return sampler.samples()


# ------------------------------------------------------------------------------ the fit
@dataclass
class AnchorFit:
    """The map ``1/Z = a_t d + b_t`` for every processed frame t, and how well it fits."""

    mode: str
    a: np.ndarray  # [N] float64 (all equal in global mode)
    b: np.ndarray  # [N] float64
    frame_numbers: tuple[int, ...]
    units: str
    cutoff: float  # relative residual at and beyond which an anchor is rejected
    n_used: int
    n_rejected: int
    n_outside: int
    n_unprocessed: int
    residual_median: float  # |Z_pred / Z - 1| at the used anchors
    residual_p90: float
    # per sampled anchor, as arrays (a million anchors are tens of MB, not GBs of dicts)
    anchors: Anchors = field(repr=False)
    rows: np.ndarray = field(repr=False)  # [S] int64, rows of the anchors file
    predicted: np.ndarray = field(repr=False)  # [S] float64 depth (inf: behind the camera)
    residual: np.ndarray = field(repr=False)  # [S] float64 relative error, predicted / Z - 1
    used: np.ndarray = field(repr=False)  # [S] bool
    outside: np.ndarray = field(repr=False)  # [*] int64 rows outside the plate
    unprocessed: np.ndarray = field(repr=False)  # [*] int64 rows on unprocessed frames
    source: str = ""

    def iter_records(self, selected: np.ndarray | None = None) -> Iterator[dict]:
        """One dict per sampled anchor (``selected``: positions among them), made on demand."""
        a = self.anchors
        positions = range(len(self.rows)) if selected is None else selected.tolist()
        for k in positions:
            i = int(self.rows[k])
            p, r = float(self.predicted[k]), float(self.residual[k])
            yield {
                "row": i,
                "frame": int(a.frame[i]),
                "x": float(a.x[i]),
                "y": float(a.y[i]),
                "depth": float(a.depth[i]),
                "predicted": p if math.isfinite(p) else None,
                "residual": r if math.isfinite(r) else None,
                "used": bool(self.used[k]),
                **({"track": a.track[i]} if a.track[i] else {}),
            }

    def iter_skipped(self) -> Iterator[dict]:
        a = self.anchors
        for reason, rows in (("outside", self.outside), ("unprocessed", self.unprocessed)):
            for i in rows.tolist():
                yield {
                    "row": i,
                    "frame": int(a.frame[i]),
                    "x": float(a.x[i]),
                    "y": float(a.y[i]),
                    "reason": reason,
                }

    @property
    def records(self) -> list[dict]:
        """Every sampled anchor as a dict (:meth:`iter_records`, in a list)."""
        return list(self.iter_records())

    @property
    def skipped(self) -> list[dict]:
        """The anchors outside the plate or on unprocessed frames, as dicts."""
        return list(self.iter_skipped())

    def frame_records(self, frame_number: int) -> list[dict]:
        """The records of the anchors on plate frame ``frame_number``."""
        on_frame = np.flatnonzero(self.anchors.frame[self.rows] == frame_number)
        return list(self.iter_records(on_frame))

    def apply(self, frame_index: int, d: np.ndarray) -> np.ndarray:
        """Inverse depth ``1/Z`` (scene units^-1) of processed frame ``frame_index``, float32."""
        d = np.asarray(d, np.float32)
        return d * np.float32(self.a[frame_index]) + np.float32(self.b[frame_index])

    def depth(self, frame_index: int, d: np.ndarray) -> np.ndarray:
        """Planar depth ``Z`` in scene units of processed frame ``frame_index``, float32."""
        return np.float32(1.0) / self.apply(frame_index, d)

    def header(self, frame_index: int | None = None) -> dict[str, str | int | float]:
        """EXR header fields (``anchors.*``); with ``frame_index``, that frame's exact a, b."""
        out: dict[str, str | int | float] = {
            "anchors.units": self.units,
            "anchors.mode": self.mode,
            "anchors.used": self.n_used,
            "anchors.rejected": self.n_rejected,
            "anchors.skipped": self.n_outside + self.n_unprocessed,
            "anchors.residual_median": self.residual_median,
            "anchors.residual_p90": self.residual_p90,
            "anchors.relation": "1/depth = a * inverse + b",
        }
        if self.mode == "global":
            out["anchors.a"], out["anchors.b"] = float(self.a[0]), float(self.b[0])
        else:
            out["anchors.a_range"] = f"{self.a.min():.9g} {self.a.max():.9g}"
            out["anchors.b_range"] = f"{self.b.min():.9g} {self.b.max():.9g}"
            if frame_index is not None:
                out["anchors.a"] = float(self.a[frame_index])
                out["anchors.b"] = float(self.b[frame_index])
        return out

    def to_dict(self) -> dict:
        """The sidecar's content in memory; :meth:`write_json` streams it instead."""
        return {
            **self._summary(),
            "anchors": self.records,
            "skipped": self.skipped,
        }

    def _summary(self) -> dict:
        return {
            "source": self.source,
            "units": self.units,
            "mode": self.mode,
            "relation": "1/depth = a * inverse + b",
            "cutoff": self.cutoff,
            "used": self.n_used,
            "rejected": self.n_rejected,
            "outside": self.n_outside,
            "unprocessed": self.n_unprocessed,
            "residual_median": self.residual_median,
            "residual_p90": self.residual_p90,
            "frame_numbers": list(self.frame_numbers),
            "a": self.a.tolist(),
            "b": self.b.tolist(),
        }

    def to_json(self) -> str:
        """The sidecar: the fit, every anchor's prediction and residual, the skipped ones."""
        out = io.StringIO()
        self.write_json(out)
        return out.getvalue()

    def write_json(self, out: TextIO, indent: str = "") -> None:
        """The sidecar (:meth:`to_json`) streamed to ``out``, one anchor a line: its memory
        does not grow with the number of anchors."""
        out.write("{")
        for name, value in self._summary().items():
            out.write(f"\n{indent} {json.dumps(name)}: {json.dumps(value, allow_nan=False)},")
        for name, items in (("anchors", self.iter_records()), ("skipped", self.iter_skipped())):
            out.write(f"\n{indent} {json.dumps(name)}: [")
            for k, item in enumerate(items):
                out.write(("," if k else "") + f"\n{indent}  " + json.dumps(item, allow_nan=False))
            out.write(f"\n{indent} ]" + ("," if name == "anchors" else ""))
        out.write(f"\n{indent}}}")


def write_fits_json(path: Path, fits: Sequence[AnchorFit]) -> None:
    """The anchors sidecar of a run: one fit's JSON, or ``{"shots": [...]}`` with one per
    shot; streamed to a temporary name, flushed and renamed over ``path``."""
    with open_atomic(path) as out:
        if len(fits) == 1:
            fits[0].write_json(out)
        else:
            out.write('{"shots": [')
            for k, fit in enumerate(fits):
                out.write(("," if k else "") + "\n ")
                fit.write_json(out, indent=" ")
            out.write("\n]}")


def fit_anchors(
    samples: AnchorSamples,
    mode: str = "global",
    *,
    d_range: tuple[float, float] | None = None,
    smooth_frames: float = 48.0,
    threshold: float = TUKEY_C,
    min_cutoff: float = MIN_CUTOFF,
    seed: int = 0,
) -> AnchorFit:
    """Fit ``1/Z = a d + b`` (per frame in ``"smooth"`` mode) robustly to the sampled anchors.

    ``d_range``: the clip's (min, max) d, in which the fit must give a positive, finite depth;
    by default every frame's own extremes as sampled. ``smooth_frames``: the period (frames)
    of the drift that smooth mode still follows at half amplitude. ``threshold``/
    ``min_cutoff``: the rejection cutoff ``max(threshold * sigma, min_cutoff)`` in relative
    error (module docstring). Deterministic for a given ``seed``.
    """
    if mode not in FIT_MODES:
        raise ConfigError(f"`mode` must be one of {FIT_MODES}, got {mode!r}")
    if not (smooth_frames > 0 and threshold > 0 and min_cutoff >= 0):
        raise ConfigError("`smooth_frames` and `threshold` must be > 0, `min_cutoff` >= 0")
    anchors = samples.anchors
    z = anchors.depth[samples.index]
    w = anchors.weight[samples.index]
    d = samples.d
    t = samples.frame_index
    n = samples.n_frames
    where = _skipped_text(samples)
    if d.shape[0] < 2:
        raise AnchorFitError(f"{d.shape[0]} usable anchor(s); at least 2 are needed{where}")
    if not np.all(np.isfinite(d)):
        raise AnchorFitError("the depth maps are not finite at some anchors")
    lo, hi = d_range if d_range is not None else samples.d_range
    _check_spread(d, z, np.ones(d.shape, bool), (lo, hi), "the anchors")

    # 1. one (a, b) for the clip: robust start, then Tukey IRLS
    a0, b0 = _lmeds(d, z, seed)
    a0, b0, keep, cutoff = _irls_global(d, z, w, a0, b0, threshold, min_cutoff)
    a = np.full(n, a0)
    b = np.full(n, b0)
    # 2. smooth mode: per-frame corrections around it, with the same robust weights
    if mode == "smooth":
        a, b, keep, cutoff = _irls_smooth(
            d, z, w, t, n, a0, b0, smooth_frames, threshold, min_cutoff
        )

    if keep.sum() < 2:
        raise AnchorFitError(f"only {int(keep.sum())} anchor(s) agree with the fit; need 2")
    _check_spread(d, z, keep, (lo, hi), "the anchors that agree with the fit")
    _check_positive(a, b, samples, d_range, mode)

    inv = a[t] * d + b[t]
    predicted = np.where(inv > 0, 1.0 / np.where(inv > 0, inv, 1.0), np.inf)
    rel = predicted / z - 1.0
    used_err = np.abs(rel[keep])
    return AnchorFit(
        mode=mode,
        a=a,
        b=b,
        frame_numbers=samples.frame_numbers,
        units=anchors.units,
        cutoff=float(cutoff),
        n_used=int(keep.sum()),
        n_rejected=int((~keep).sum()),
        n_outside=int(samples.outside.size),
        n_unprocessed=int(samples.unprocessed.size),
        residual_median=float(np.median(used_err)),
        residual_p90=float(np.percentile(used_err, 90)),
        anchors=anchors,
        rows=samples.index,
        predicted=predicted,
        residual=rel,
        used=np.asarray(keep, bool),
        outside=samples.outside,
        unprocessed=samples.unprocessed,
        source=anchors.source,
    )


def join_fits(fits: Sequence[AnchorFit]) -> AnchorFit:
    """The fits of an edit's shots (in clip order, each on its own frames, as a run fits them)
    as one fit over the whole clip, for a viewer: frame ``t`` of the clip keeps its shot's
    ``a_t, b_t``; the counts and residuals are over every shot's anchors; an anchor is skipped
    when every shot skipped it (outside the plate, or on no shot's frames)."""
    if len(fits) == 1:
        return fits[0]
    first = fits[0]
    if any(fit.anchors is not first.anchors for fit in fits):
        raise ValueError("join_fits: the shots' fits must share one anchors file")
    rows = np.concatenate([fit.rows for fit in fits])
    predicted = np.concatenate([fit.predicted for fit in fits])
    residual = np.concatenate([fit.residual for fit in fits])
    used = np.concatenate([fit.used for fit in fits])
    # a row is skipped only where no shot fitted it; each skipped row once, first reason kept
    skipped = np.concatenate([np.concatenate([f.outside, f.unprocessed]) for f in fits])
    is_outside = np.concatenate(
        [np.r_[np.ones(len(f.outside), bool), np.zeros(len(f.unprocessed), bool)] for f in fits]
    )
    keep = ~np.isin(skipped, rows)
    skipped, is_outside = skipped[keep], is_outside[keep]
    skipped, first_seen = np.unique(skipped, return_index=True)
    is_outside = is_outside[first_seen]
    used_err = np.abs(residual[used & np.isfinite(residual)])
    return AnchorFit(
        mode=first.mode,
        a=np.concatenate([fit.a for fit in fits]),
        b=np.concatenate([fit.b for fit in fits]),
        frame_numbers=tuple(n for fit in fits for n in fit.frame_numbers),
        units=first.units,
        cutoff=max(fit.cutoff for fit in fits),
        n_used=sum(fit.n_used for fit in fits),
        n_rejected=sum(fit.n_rejected for fit in fits),
        n_outside=int(is_outside.sum()),
        n_unprocessed=int((~is_outside).sum()),
        residual_median=float(np.median(used_err)) if used_err.size else float("nan"),
        residual_p90=float(np.percentile(used_err, 90)) if used_err.size else float("nan"),
        anchors=first.anchors,
        rows=rows,
        predicted=predicted,
        residual=residual,
        used=used,
        outside=skipped[is_outside],
        unprocessed=skipped[~is_outside],
        source=first.source,
    )


# What makes a fit worth a warning (it still writes): anchors that the fit rejected, and the
# 90th percentile of the relative depth error at the anchors it used.
WARN_REJECTED_SHARE = 0.2
WARN_RESIDUAL_P90 = 0.10
# |correlation| of the used anchors' residuals (signed, or their size) with time from which
# they count as drifting: a scale that changes over the clip, which `smooth` follows.
DRIFT_CORRELATION = 0.5


def fit_warnings(fit: AnchorFit, plate_size: tuple[int, int]) -> list[str]:
    """One line per thing a user should know about a fit that went through: anchors outside
    the plate, many rejected, a large residual (with ``--anchor-fit smooth`` suggested when it
    drifts over the clip)."""
    lines = []
    if fit.n_outside:
        height, width = plate_size
        lines.append(
            f"{fit.n_outside} anchor(s) lie outside the {width}x{height} plate and were "
            "skipped: their x, y must be plate pixels from the top-left corner"
        )
    total = fit.n_used + fit.n_rejected
    if total and fit.n_rejected / total >= WARN_REJECTED_SHARE:
        lines.append(
            f"{fit.n_rejected} of {total} anchors ({fit.n_rejected / total:.0%}) disagree with "
            f"the fit (relative error over {fit.cutoff:.1%}) and were rejected"
        )
    if fit.residual_p90 > WARN_RESIDUAL_P90:
        line = f"the fit misses 10 % of its anchors by more than {fit.residual_p90:.1%} in depth"
        if fit.mode == "global" and _drifts(fit):
            line += (
                "; the error drifts over the clip (a scale that changes with time): "
                "try `--anchor-fit smooth`"
            )
        lines.append(line)
    return [f"warning: anchors ({fit.source or 'file'}): {line}" for line in lines]


def _drifts(fit: AnchorFit) -> bool:
    """Whether the used anchors' residuals follow time (signed or in size)."""
    used = fit.used & np.isfinite(fit.residual)
    frames = fit.anchors.frame[fit.rows[used]].astype(float)
    residual = fit.residual[used]
    if frames.size < 4 or np.ptp(frames) == 0:
        return False
    for values in (residual, np.abs(residual)):
        if np.ptp(values) > 0 and abs(np.corrcoef(frames, values)[0, 1]) >= DRIFT_CORRELATION:
            return True
    return False


def warn_about_fits(
    fits: Sequence[AnchorFit | None],
    plate_size: tuple[int, int],
    message: Callable[[str], None] | None,
) -> None:
    """`fit_warnings` of every shot's fit through ``message`` (the runner's stderr line)."""
    if message is None:
        return
    for index, fit in enumerate(fits):
        if fit is None:
            continue
        for line in fit_warnings(fit, plate_size):
            message(
                line if len(fits) == 1 else line.replace("warning:", f"warning: shot {index}:", 1)
            )


def _skipped_text(samples: AnchorSamples) -> str:
    parts = []
    if samples.outside.size:
        parts.append(f"{samples.outside.size} outside the plate")
    if samples.unprocessed.size:
        parts.append(f"{samples.unprocessed.size} on frames not processed")
    return f" ({', '.join(parts)})" if parts else ""


def _check_spread(d, z, keep, d_range, who: str) -> None:
    zk, dk = z[keep], d[keep]
    if zk.max() < zk.min() * (1 + MIN_SPREAD):
        raise AnchorFitError(
            f"{who} are all at one depth ({zk.min():.6g} to {zk.max():.6g}); "
            "anchors at different distances are needed"
        )
    lo, hi = d_range
    if dk.max() - dk.min() < MIN_SPREAD * max(hi - lo, 1e-12):
        raise AnchorFitError(
            f"{who} all sit on one value of the relative depth ({dk.min():.6g} to "
            f"{dk.max():.6g} of {lo:.6g} to {hi:.6g}); anchors nearer and farther are needed"
        )


def _check_positive(a, b, samples: AnchorSamples, d_range, mode: str) -> None:
    if np.any(a <= 0):
        where = hint = ""
        if mode == "smooth":
            where = f" on frame {samples.frame_numbers[int(np.argmax(a <= 0))]}"
            hint = ", or fit in global mode or with a larger smooth_frames"
        raise AnchorFitError(
            f"the anchors contradict the depth order{where} (the fit makes nearer-looking "
            f"points farther); check the anchors' frames, positions and depths{hint}"
        )
    if d_range is not None:
        lo = np.full(a.shape, float(d_range[0]))
    else:
        lo = np.where(
            np.isfinite(samples.frame_min), samples.frame_min, np.nanmin(samples.frame_min)
        )
    inv = a * lo + b  # a > 0: the smallest d gives the smallest 1/Z
    bad = np.flatnonzero(~(inv > 0) | ~np.isfinite(1.0 / np.where(inv > 0, inv, 1.0)))
    if bad.size:
        k = int(bad[0])
        raise AnchorFitError(
            f"the fit puts the farthest parts of frame {samples.frame_numbers[k]} at infinity or "
            f"behind the camera (1/depth = {inv[k]:.3g} at d = {lo[k]:.4g}); "
            "add anchors on the far background"
        )


def _residuals(d, z, a, b):
    return z * (a * d + b) - 1.0


def _lmeds(d, z, seed: int) -> tuple[float, float]:
    """The (a, b) through a pair of anchors with the smallest median |r| over all anchors."""
    k = d.shape[0]
    if k * (k - 1) // 2 <= LMEDS_PAIRS:
        i, j = np.triu_indices(k, 1)
    else:
        rng = np.random.default_rng(seed)
        i = rng.integers(0, k, LMEDS_PAIRS)
        j = rng.integers(0, k, LMEDS_PAIRS)
    dd = d[i] - d[j]
    ok = np.abs(dd) > 1e-9 * max(float(np.ptp(d)), 1e-12)
    i, j, dd = i[ok], j[ok], dd[ok]
    if i.size == 0:
        raise AnchorFitError("the anchors all sit on one value of the relative depth")
    a = (1.0 / z[i] - 1.0 / z[j]) / dd
    b = 1.0 / z[i] - a * d[i]
    if k > LMEDS_SCORE_ANCHORS:
        # each candidate's median |r| over a fixed random subset: as good an estimate of the
        # median, and memory and time that do not grow with the anchor count
        rng = np.random.default_rng(seed)
        subset = np.sort(rng.choice(k, LMEDS_SCORE_ANCHORS, replace=False))
        d, z = d[subset], z[subset]
    best, best_score = 0, np.inf
    for start in range(0, a.size, 64):  # [64, K] residuals at a time (K <= 20,000)
        r = z[None, :] * (a[start : start + 64, None] * d[None, :] + b[start : start + 64, None])
        score = np.median(np.abs(r - 1.0), axis=1)
        m = int(np.argmin(score))
        if score[m] < best_score:
            best, best_score = start + m, float(score[m])
    return float(a[best]), float(b[best])


def _tukey(r, threshold, min_cutoff):
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(r)))
    cutoff = max(threshold * sigma, min_cutoff)
    u = r / cutoff
    return np.where(np.abs(u) < 1, (1 - u * u) ** 2, 0.0), cutoff


def _irls_global(d, z, w, a, b, threshold, min_cutoff, iterations: int = 50):
    for _ in range(iterations):
        rw, cutoff = _tukey(_residuals(d, z, a, b), threshold, min_cutoff)
        weight = w * rw
        rows = np.stack([z * d, z], axis=1) * np.sqrt(weight)[:, None]
        if np.count_nonzero(weight) < 2:
            break
        (a_new, b_new), *_ = np.linalg.lstsq(rows, np.sqrt(weight), rcond=None)
        done = abs(a_new - a) <= 1e-10 * abs(a) + 1e-15 and abs(b_new - b) <= 1e-10 * (
            abs(a) + abs(b)
        )
        a, b = float(a_new), float(b_new)
        if done:
            break
    r = _residuals(d, z, a, b)
    _, cutoff = _tukey(r, threshold, min_cutoff)
    return a, b, np.abs(r) < cutoff, cutoff


def _second_difference(n: int) -> sp.csr_matrix:
    if n < 3:
        return sp.csr_matrix((0, n))
    return sp.diags([1.0, -2.0, 1.0], [0, 1, 2], shape=(n - 2, n), format="csr")


def _irls_smooth(d, z, w, t, n, a0, b0, smooth_frames, threshold, min_cutoff, iterations=30):
    """Per-frame ``a_t = a0 (1 + alpha_t)``, ``b_t = b0 + a0 beta_t`` by penalised IRLS."""
    g = z * a0  # dr / d(alpha d + beta)
    r0 = _residuals(d, z, a0, b0)
    # the design: r = r0 + g (alpha_t d + beta_t); unknowns [alpha_0..N-1, beta_0..N-1]
    cols = np.concatenate([t, t + n])
    rows = np.concatenate([np.arange(d.size)] * 2)
    design = sp.csr_matrix((np.concatenate([g * d, g]), (rows, cols)), shape=(d.size, 2 * n))
    d2 = _second_difference(n)
    penalty = sp.block_diag([d2.T @ d2, d2.T @ d2], format="csr")
    x = np.zeros(2 * n)
    r = r0
    # Huber passes first (convex, so the global fit's residuals, which hold the drift, cannot
    # lock anchors out at the start), then Tukey passes from there
    for kind in ("huber", "tukey"):
        x, r = _smooth_passes(
            kind, design, penalty, r0, w, x, r, n, smooth_frames, threshold, min_cutoff, iterations
        )
    _, cutoff = _tukey(r, threshold, min_cutoff)
    a = a0 * (1.0 + x[:n])
    b = b0 + a0 * x[n:]
    return a, b, np.abs(r) < cutoff, cutoff


def _smooth_passes(
    kind, design, penalty, r0, w, x, r, n, smooth_frames, threshold, min_cutoff, iterations
):
    for _ in range(iterations):
        rw = _huber(r, min_cutoff) if kind == "huber" else _tukey(r, threshold, min_cutoff)[0]
        weight = w * rw
        data = (design.T @ sp.diags(weight) @ design).tocsc()
        rho = _data_weight(data, n)
        lam = rho * (smooth_frames / (2 * math.pi)) ** 4
        system = data + lam * penalty + 1e-6 * rho * sp.identity(2 * n, format="csc")
        x_new = spla.spsolve(system.tocsc(), -(design.T @ (weight * r0)))
        step = float(np.max(np.abs(x_new - x)))
        x = x_new
        r = r0 + design @ x
        if step < 1e-9:
            break
    return x, r


def _data_weight(data: sp.csc_matrix, n: int) -> float:
    """Mean over frames of 2 det / trace of the frame's 2x2 data block in (alpha, beta): the
    harmonic mean of its two curvatures, which (unlike the trace) counts how well a frame's
    anchors pin the drift when alpha and beta trade off against each other (anchors spanning a
    short stretch of d)."""
    a_a = data.diagonal()[:n]
    b_b = data.diagonal()[n:]
    a_b = np.asarray(data[np.arange(n), np.arange(n) + n]).ravel()
    trace = a_a + b_b
    det = a_a * b_b - a_b * a_b
    per_frame = np.where(trace > 0, 2 * det / np.where(trace > 0, trace, 1.0), 0.0)
    return max(float(per_frame.mean()), 1e-12)


def _huber(r, min_cutoff):
    """Huber weights at 1.345 sigma (95 % efficiency), sigma floored like Tukey's cutoff."""
    sigma = max(MAD_TO_SIGMA * float(np.median(np.abs(r))), min_cutoff / TUKEY_C)
    return np.minimum(1.0, HUBER_C * sigma / np.maximum(np.abs(r), 1e-300))
