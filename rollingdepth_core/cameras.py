"""The run's camera: read per frame from a USD stage or a Nuke/Houdini ``.chan`` file, or a
fixed pinhole at the origin; checked against the plate before the model loads.

* **USD** (``.usd``, ``.usda``, ``.usdc``, ``.usdz``; ``usd-core``): the stage's first
  ``UsdGeomCamera`` in traversal order, evaluated at time code = frame number (Blender, Houdini
  and Maya write frames as time codes). Its world transform (the composed transforms of its
  ancestors included), focal length and apertures (the film back) come from the stage; the
  world is the stage's own (its up axis as it says); lens values are read in USD's tenths of
  a scene unit and turned into mm with the stage's metres per unit. A camera with time samples must have one
  on every plate frame (a solve writes every frame; USD would silently hold or interpolate).
  Aperture offsets (lens shift) and orthographic cameras are refused.
* **.chan** (Nuke's Camera export, Houdini's chan): one line per frame, 8 columns: ``frame tx
  ty tz rx ry rz vfov``, rotations and the vertical field of view in degrees. Rotations apply
  in ``rotation_order`` (default ``ZXY``, Nuke's camera default; the first letter first), after
  which the camera is translated. The film back is ``film_back`` when given (its aspect
  checked against the plate), else 24 mm high and as wide as the plate's aspect: only the
  angles matter to P, the millimetres only name the focal length in the header.
* **No file**: one camera at the origin looking down -Z from ``focal_length`` and
  ``film_back`` (mm) or a vertical ``fov`` (degrees); P is then in the camera's space.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .geometry.camera import PinholeCamera, euler_matrix, fov_camera, placement

USD_SUFFIXES = (".usd", ".usda", ".usdc", ".usdz")
CHAN_COLUMNS = ("frame", "tx", "ty", "tz", "rx", "ry", "rz", "vfov")
DEFAULT_ROTATION_ORDER = "ZXY"  # Nuke's Camera default
DEFAULT_FILM_HEIGHT = 24.0  # mm: a full-frame still's, when a .chan or a fov gives none
DEFAULT_FILM_BACK = (36.0, 24.0)
ASPECT_TOLERANCE = 0.01  # film back and plate aspects may differ by 1 % (rounded apertures)


@dataclass(frozen=True)
class CameraRequest:
    """How a run gets its camera (``--camera``, ``--focal-length``, ``--film-back``,
    ``--fov``, ``--rotation-order``); ``None`` everywhere = no camera (no P or N)."""

    file: str | None = None
    focal_length: float | None = None  # mm
    film_back: tuple[float, float] | None = None  # mm, horizontal x vertical
    fov: float | None = None  # vertical, degrees
    rotation_order: str = DEFAULT_ROTATION_ORDER

    @property
    def given(self) -> bool:
        return self.file is not None or self.focal_length is not None or self.fov is not None

    def check(self) -> None:
        """The checks that need no file."""
        if self.focal_length is not None and self.fov is not None:
            raise ConfigError("pass `--focal-length` or `--fov`, not both")
        if self.file is not None and self.focal_length is not None:
            raise ConfigError("`--camera` gives the focal length per frame: drop `--focal-length`")
        if self.file is not None and self.fov is not None:
            raise ConfigError("`--camera` gives the field of view per frame: drop `--fov`")
        if self.film_back is not None and self.file is None and self.focal_length is None:
            raise ConfigError("`--film-back` needs `--focal-length` or `--camera`")
        if self.film_back is not None and (
            len(self.film_back) != 2 or not all(math.isfinite(v) and v > 0 for v in self.film_back)
        ):
            raise ConfigError(
                f"`--film-back` must be two positive sizes in mm; got {self.film_back}"
            )
        if self.focal_length is not None and not (
            math.isfinite(self.focal_length) and self.focal_length > 0
        ):
            raise ConfigError(f"`--focal-length` must be positive mm; got {self.focal_length}")
        if self.fov is not None and not (math.isfinite(self.fov) and 0 < self.fov < 180):
            raise ConfigError(f"`--fov` must be in (0, 180) degrees; got {self.fov}")
        order = self.rotation_order.upper()
        if sorted(order) != ["X", "Y", "Z"]:
            raise ConfigError(
                f"`--rotation-order` must be a permutation of XYZ (e.g. ZXY); got "
                f"{self.rotation_order!r}"
            )
        if self.file is not None:
            suffix = Path(self.file).suffix.lower()
            if suffix not in (*USD_SUFFIXES, ".chan"):
                raise ConfigError(
                    f"`--camera` {Path(self.file).name}: a camera is read from "
                    f"{', '.join(USD_SUFFIXES)} or .chan; got {suffix or 'no suffix'}"
                )


@dataclass(frozen=True)
class CameraTrack:
    """The checked camera of every plate frame."""

    source: str  # the file's absolute path, or "pinhole"
    cameras: dict[int, PinholeCamera]  # by plate frame number
    space: str  # "world" (a file's world) or "camera" (no file: the camera at the origin)
    sha256: str = ""  # of the file's bytes ("" without a file)
    prim: str = ""  # the USD camera's prim path
    description: str = ""
    header_extra: dict = field(default_factory=dict)

    def at(self, frame: int) -> PinholeCamera:
        return self.cameras[int(frame)]

    def header(self, frame: int | None = None) -> dict[str, str | int | float]:
        """EXR header fields (the writer prefixes ``rollingdepth/``): the camera's file, hash
        and, per frame, its focal length and film back."""
        meta: dict[str, str | int | float] = {
            "camera.file": self.source,
            "camera.description": self.description,
        }
        if self.sha256:
            meta["camera.sha256"] = self.sha256
        if self.prim:
            meta["camera.prim"] = self.prim
        if frame is not None:
            cam = self.at(frame)
            meta["camera.frame"] = int(frame)
            meta["camera.focal_length"] = float(cam.focal_length)
            meta["camera.film_back"] = f"{cam.film_back[0]:.6g} {cam.film_back[1]:.6g}"
            meta["camera.to_world"] = " ".join(f"{v:.9g}" for v in np.ravel(cam.to_world))
        return meta


def load_camera(
    request: CameraRequest,
    frame_numbers,
    plate_size: tuple[int, int],
    pixel_aspect: float = 1.0,
) -> CameraTrack:
    """Read and check the camera for ``frame_numbers`` of a plate of ``plate_size`` (H, W).

    Raises
    ------
    ConfigError
        One line naming the file and the frame: unreadable or empty file, no camera, a
        frame not covered, NaN/infinite values, a film back whose aspect is not the plate's.
    """
    request.check()
    height, width = plate_size
    aspect = width * pixel_aspect / height
    frames = [int(f) for f in frame_numbers]
    if request.file is None:
        if request.fov is not None:
            cam = fov_camera(request.fov, aspect)
            what = f"pinhole, vertical field of view {request.fov:g} deg"
        else:
            film = request.film_back or (DEFAULT_FILM_BACK[0], DEFAULT_FILM_BACK[0] / aspect)
            cam = PinholeCamera(float(request.focal_length), tuple(map(float, film)), np.eye(4))
            what = f"pinhole, focal length {request.focal_length:g} mm"
        track = CameraTrack("pinhole", dict.fromkeys(frames, cam), "camera", description=what)
        _check_track(track, "`--focal-length`/`--film-back`", aspect)
        return track
    path = Path(request.file)
    name = path.name
    if not path.is_file():
        raise ConfigError(f"`--camera` {request.file}: no such file")
    if path.suffix.lower() == ".chan":
        cameras, what, prim = _read_chan(path, frames, request, aspect), "Nuke/Houdini .chan", ""
    else:
        cameras, prim = _read_usd(path, frames)
        what = "USD camera"
    track = CameraTrack(
        str(path.resolve()), cameras, "world", sha256=_sha256(path), prim=prim,
        description=f"{what} {prim}".strip(),
    )  # fmt: skip
    _check_track(track, f"`--camera` {name}", aspect)
    return track


def _sha256(path: Path) -> str:
    """The first 16 hex digits of the file's SHA-256 (as the run records its other inputs)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError as exc:
        raise ConfigError(f"`--camera` {path.name}: cannot read: {exc.strerror}") from None


def _check_track(track: CameraTrack, where: str, aspect: float) -> None:
    for frame, cam in track.cameras.items():
        cam.check(f"{where} frame {frame}")
        if abs(cam.film_aspect / aspect - 1.0) > ASPECT_TOLERANCE:
            raise ConfigError(
                f"{where} frame {frame}: film back {cam.film_back[0]:.4g} x "
                f"{cam.film_back[1]:.4g} (aspect {cam.film_aspect:.4f}) does not match the "
                f"plate's aspect {aspect:.4f}; give the film back the plate was shot on"
            )


def _read_chan(path: Path, frames, request: CameraRequest, aspect: float):
    rows: dict[int, np.ndarray] = {}
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"`--camera` {path.name}: cannot read: {exc}") from None
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != len(CHAN_COLUMNS):
            raise ConfigError(
                f"`--camera` {path.name} line {number}: a .chan camera has "
                f"{len(CHAN_COLUMNS)} columns ({' '.join(CHAN_COLUMNS)}); got {len(fields)}"
            )
        try:
            values = np.array([float(v) for v in fields], np.float64)
        except ValueError:
            raise ConfigError(
                f"`--camera` {path.name} line {number}: not a number in {line.strip()!r}"
            ) from None
        frame = values[0]
        if not (math.isfinite(frame) and frame == round(frame)):
            raise ConfigError(
                f"`--camera` {path.name} line {number}: frame {fields[0]} is not whole"
            )
        if not np.isfinite(values).all():
            raise ConfigError(
                f"`--camera` {path.name} frame {int(frame)}: NaN or infinite value in "
                f"{line.strip()!r}"
            )
        rows[int(frame)] = values
    if not rows:
        raise ConfigError(f"`--camera` {path.name}: holds no camera lines")
    _check_frames(path.name, frames, sorted(rows))
    cameras = {}
    for frame in frames:
        _, tx, ty, tz, rx, ry, rz, vfov = rows[frame]
        if not 0 < vfov < 180:
            raise ConfigError(
                f"`--camera` {path.name} frame {frame}: vertical field of view {vfov:g} is "
                "not in (0, 180) degrees"
            )
        matrix = placement((tx, ty, tz), euler_matrix((rx, ry, rz), request.rotation_order))
        film = request.film_back
        if film is None:
            cam = fov_camera(vfov, aspect, matrix, DEFAULT_FILM_HEIGHT)
        else:
            focal = film[1] / (2.0 * math.tan(math.radians(vfov) / 2.0))
            cam = PinholeCamera(focal, tuple(map(float, film)), matrix)
        cameras[frame] = cam
    return cameras


def _check_frames(name: str, frames, available) -> None:
    have = set(available)
    missing = [f for f in frames if f not in have]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ConfigError(
            f"`--camera` {name} frame {missing[0]}{more}: no camera on this plate frame; the "
            f"file covers frames {min(have)}-{max(have)} ({len(have)} frames)"
        )


def require_usd(what: str) -> None:
    """ConfigError in one line saying what to install unless USD (``pxr``, from the
    ``usd-core`` package: the ``3d`` extra) imports; ``what`` names the option that needs it."""
    try:
        import pxr.Usd  # noqa: F401 - only whether it imports
    except ImportError:
        raise ConfigError(
            f"{what} needs USD (the usd-core package), which is not installed: "
            "pip install 'rollingdepth[3d]' (or pip install usd-core)"
        ) from None


def _read_usd(path: Path, frames):
    require_usd("`--camera` with a USD file")
    from pxr import Sdf, Usd, UsdGeom

    try:
        stage = Usd.Stage.Open(str(path))
    except Exception as exc:  # pxr raises Tf.ErrorException with a multi-line text
        first = str(exc).strip().splitlines()
        raise ConfigError(
            f"`--camera` {path.name}: not a readable USD stage ({first[-1] if first else exc})"
        ) from None
    if stage is None:
        raise ConfigError(f"`--camera` {path.name}: not a readable USD stage")
    prim = next((p for p in stage.Traverse() if p.IsA(UsdGeom.Camera)), None)
    if prim is None:
        raise ConfigError(f"`--camera` {path.name}: the stage holds no camera (UsdGeomCamera)")
    camera = UsdGeom.Camera(prim)
    attributes = [
        camera.GetFocalLengthAttr(),
        camera.GetHorizontalApertureAttr(),
        camera.GetVerticalApertureAttr(),
    ]
    ancestor = prim
    while ancestor and ancestor.GetPath() != Sdf.Path.absoluteRootPath:
        if ancestor.IsA(UsdGeom.Xformable):
            attributes.extend(
                op.GetAttr() for op in UsdGeom.Xformable(ancestor).GetOrderedXformOps()
            )
        ancestor = ancestor.GetParent()
    samples = sorted({t for a in attributes for t in a.GetTimeSamples()})
    if samples:
        on_frames = {int(round(t)) for t in samples if abs(t - round(t)) < 1e-6}
        _check_frames(path.name, frames, on_frames)
    if camera.GetProjectionAttr().Get() not in (None, UsdGeom.Tokens.perspective):
        raise ConfigError(f"`--camera` {path.name} {prim.GetPath()}: not a perspective camera")
    # lens values are in tenths of a scene unit (USD's convention): mm = value * 100 * metres/unit
    to_mm = 100.0 * UsdGeom.GetStageMetersPerUnit(stage)
    cache = UsdGeom.XformCache()
    cameras = {}
    for frame in frames:
        time = Usd.TimeCode(frame)
        lens = camera.GetCamera(time)
        shift = (lens.horizontalApertureOffset, lens.verticalApertureOffset)
        if any(abs(s) > 1e-9 for s in shift):
            raise ConfigError(
                f"`--camera` {path.name} frame {frame}: aperture offsets (lens shift) "
                f"{shift[0]:g}, {shift[1]:g} are not supported; the principal point must be centred"
            )
        cache.SetTime(time)
        # USD matrices act on row vectors (translation in the last row): transpose
        matrix = np.array(cache.GetLocalToWorldTransform(prim), np.float64).T
        cameras[frame] = PinholeCamera(
            float(lens.focalLength) * to_mm,
            (float(lens.horizontalAperture) * to_mm, float(lens.verticalAperture) * to_mm),
            matrix,
        )
    return cameras, str(prim.GetPath())
