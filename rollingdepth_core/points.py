"""The plate as a point cloud in the shot's 3D: a time-sampled ``UsdGeomPoints`` and the
camera in one USD stage (``--points FILE.usd``).

Each written frame gives one time sample (time code = plate frame number, the stage's
``timeCodesPerSecond`` the plate's rate): the frame's P on a regular grid of pixels, as many
as fit the per-frame ``budget``, coloured by the plate (``primvars:displayColor`` per point: the
display RGB the model saw, linearised from sRGB as USD's rendering colours are). Every frame
has the same points (one per grid cell, so the count never changes: Blender 5.0.1's renderer
drops a USD point cloud whose count changes after its first frame); the points a compositor
cannot trust are there with width 0 (no renderer draws them) and ``primvars:trusted`` 0
(a per-point flag Houdini, Blender and usdview import as an attribute, to delete them by):
pixels without a normal (at a depth edge, half foreground and half background: the "flying"
points between surfaces) and, with ``--confidence``, below ``min_confidence``. Each trusted
point is as wide as the diagonal of the patch of plate it stands for (its grid cell at its
depth), so through the camera the points cover the plate. The camera is written beside them (``/shot/camera``: its transform and
lens per frame), in the same space: the camera file's world, or camera space without one.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np

from .cameras import CameraTrack, require_usd
from .errors import ConfigError, OutputError

DEFAULT_BUDGET = 50_000  # points per frame
DEFAULT_MIN_CONFIDENCE = 0.5
USD_SUFFIXES = (".usd", ".usda", ".usdc")


def check_points_name(name: str) -> None:
    """ConfigError unless ``name`` is a USD file name (written in the output folder)."""
    path = Path(name)
    if path.name != name or name.startswith("."):
        raise ConfigError(
            f"`--points` is a file name written in the output folder (no folder, not hidden); "
            f"got {name!r}"
        )
    if path.suffix.lower() not in USD_SUFFIXES:
        raise ConfigError(f"`--points` must end in {', '.join(USD_SUFFIXES)}; got {name!r}")


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """Display sRGB (the plate as the model saw it) -> linear, USD's colour for displayColor."""
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4).astype(np.float32)


def grid_stride(size: tuple[int, int], budget: int) -> int:
    """The pixel step of the regular grid that keeps at most ``budget`` of ``size``'s pixels."""
    height, width = size
    return max(1, math.ceil(math.sqrt(height * width / max(1, budget))))


class PointCloud:
    """Collects each frame's points; :meth:`save` writes the stage."""

    def __init__(
        self, budget: int = DEFAULT_BUDGET, min_confidence: float = DEFAULT_MIN_CONFIDENCE
    ):
        if budget < 1:
            raise ConfigError(f"`--points-budget` must be >= 1 point per frame; got {budget}")
        self.budget = budget
        self.min_confidence = min_confidence
        # per frame, n the grid's cells: points [n,3], colours [n,3], widths [n], trusted [n]
        self.frames: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    def add(
        self,
        number: int,
        position: np.ndarray,
        valid: np.ndarray,
        colour: np.ndarray | None = None,
        confidence: np.ndarray | None = None,
        footprint: np.ndarray | None = None,
    ) -> None:
        """One frame: ``position`` ``[H,W,3]``, ``valid`` ``[H,W]`` (the normal exists),
        ``colour`` the plate frame ``[h,w,3]`` at any size, ``confidence`` ``[H,W]``,
        ``footprint`` ``[H,W]`` the width one pixel covers at its depth (scene units): a
        point is as wide as the grid cell it stands for, so seen through the camera the points
        cover the plate."""
        height, width = valid.shape
        step = grid_stride((height, width), self.budget)
        rows = np.arange(step // 2, height, step)
        cols = np.arange(step // 2, width, step)
        keep = valid[rows[:, None], cols[None, :]].copy()  # [r,c] trusted
        if confidence is not None:
            keep &= confidence[rows[:, None], cols[None, :]] >= self.min_confidence
        points = position[rows[:, None], cols[None, :]].reshape(-1, 3)  # [n,3]
        finite = np.isfinite(points).all(-1)
        points = np.where(finite[:, None], points, 0.0)  # an untrusted point, width 0
        keep = keep.reshape(-1) & finite  # [n]
        if colour is None:
            colours = np.full(points.shape, 0.5, np.float32)
        else:
            # the same pixel centres in the colour image's own grid
            ch, cw = colour.shape[:2]
            cy = np.minimum(((rows + 0.5) * ch / height).astype(int), ch - 1)
            cx = np.minimum(((cols + 0.5) * cw / width).astype(int), cw - 1)
            colours = np.asarray(colour, np.float32)[cy[:, None], cx[None, :], :3].reshape(-1, 3)
            colours = srgb_to_linear(np.clip(colours, 0, 1))
        if footprint is None:
            widths = np.full(len(points), 1e-3, np.float32)
        else:
            # the cell's diagonal: a disc that wide covers its whole square cell
            cells = footprint[rows[:, None], cols[None, :]].reshape(-1)
            widths = cells * np.float32(step * math.sqrt(2))
        widths = np.where(keep, widths, 0.0)
        self.frames[int(number)] = (
            points.astype(np.float32),
            colours.astype(np.float32),
            widths.astype(np.float32),
            keep,
        )

    def save(self, path: str | Path, camera: CameraTrack, fps: Fraction | None = None) -> Path:
        """The stage with ``/shot/camera`` and ``/shot/points``, one time sample per frame."""
        require_usd("`--points`")
        from pxr import Gf, Sdf, Usd, UsdGeom, Vt

        path = Path(path)
        frames = sorted(self.frames)
        layer = Sdf.Layer.CreateNew(str(path))
        if layer is None:
            raise OutputError(f"{path}: cannot create a USD layer")
        stage = Usd.Stage.Open(layer)
        up, meters = _stage_units(camera)
        UsdGeom.SetStageUpAxis(stage, up)
        UsdGeom.SetStageMetersPerUnit(stage, meters)
        lens_unit = 1.0 / (100.0 * meters)  # mm -> tenths of a scene unit
        stage.SetStartTimeCode(frames[0])
        stage.SetEndTimeCode(frames[-1])
        if fps is not None:
            stage.SetTimeCodesPerSecond(float(fps))
            stage.SetFramesPerSecond(float(fps))
        root = UsdGeom.Xform.Define(stage, "/shot")
        stage.SetDefaultPrim(root.GetPrim())
        cam = UsdGeom.Camera.Define(stage, "/shot/camera")
        transform = cam.AddTransformOp()
        points = UsdGeom.Points.Define(stage, "/shot/points")
        points.CreateWidthsAttr()
        colour = points.CreateDisplayColorPrimvar(UsdGeom.Tokens.vertex)
        trusted = UsdGeom.PrimvarsAPI(points.GetPrim()).CreatePrimvar(
            "trusted", Sdf.ValueTypeNames.IntArray, UsdGeom.Tokens.vertex
        )
        for frame in frames:
            time = Usd.TimeCode(frame)
            lens = camera.at(frame)
            # USD matrices act on row vectors: the transpose of ours
            transform.Set(Gf.Matrix4d(np.asarray(lens.to_world, np.float64).T.tolist()), time)
            # USD's lens values are in tenths of a scene unit
            cam.GetFocalLengthAttr().Set(float(lens.focal_length) * lens_unit, time)
            cam.GetHorizontalApertureAttr().Set(float(lens.film_back[0]) * lens_unit, time)
            cam.GetVerticalApertureAttr().Set(float(lens.film_back[1]) * lens_unit, time)
            xyz, rgb, widths, keep = self.frames[frame]
            points.GetPointsAttr().Set(Vt.Vec3fArray.FromNumpy(xyz), time)
            colour.Set(Vt.Vec3fArray.FromNumpy(rgb), time)
            points.GetWidthsAttr().Set(Vt.FloatArray.FromNumpy(widths), time)
            trusted.Set(Vt.IntArray.FromNumpy(keep.astype(np.int32)), time)
        points.SetWidthsInterpolation(UsdGeom.Tokens.vertex)
        if not layer.Save():
            raise OutputError(f"{path}: cannot write the USD stage")
        return path


def _stage_units(camera: CameraTrack) -> tuple[str, float]:
    """The up axis and metres per unit of the camera's space: its USD stage's, else Y up
    (a .chan from Nuke or Houdini; camera space) in units of 1 (unknown: left as 1 m)."""
    from pxr import Usd, UsdGeom

    if camera.space == "world" and Path(camera.source).suffix.lower() not in (".chan",):
        source = Usd.Stage.Open(camera.source)
        return UsdGeom.GetStageUpAxis(source), UsdGeom.GetStageMetersPerUnit(source)
    return UsdGeom.Tokens.y, 1.0
