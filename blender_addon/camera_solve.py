"""Depth anchors from a Movie Clip's camera solve, for the engine's anchored (scene-unit) depth.

Every track with a bundle gives one anchor on every frame where its marker is enabled and the
solve has a camera: the marker's position in plate pixels and the bundle's planar distance from
that frame's solved camera. The rows go to the engine's anchors CSV (``frame,x,y,depth``;
see ``rollingdepth_core/anchors.py``).

Conventions
    * Position: ``marker.co`` (plus the track's ``offset``, as the solver reads it) is
      normalised with the origin at the bottom-left corner of the frame; the anchors file wants
      pixels from the top-left corner, the frame spanning [0, W) x [0, H):
      ``x = co.x W``, ``y = (1 - co.y) H`` with (W, H) = ``clip.size``.
    * Frame: markers live on clip frames (1 = the clip's first image). The plate's own number
      is ``first + clip_frame - 1 + clip.frame_offset`` where ``first`` is the number in the
      clip's first file name for an image sequence and 0 for a movie (the engine numbers a
      movie's frames from 0).
    * Depth: ``reconstruction.cameras`` hold camera-to-solve-space matrices (the camera looks
      down its -Z axis); a bundle at ``p`` lies at depth ``-(M^-1 p).z`` in solve units. Solve
      units become scene units through three scales: the tracking object's ``scale`` (object
      solves), the scale of the scene camera driven by this clip's Camera Solver constraint
      (where Blender's *Set Scale* puts the scene scale) and, when the scene uses a unit system,
      ``unit_settings.scale_length`` (the result is then in metres; otherwise in Blender units,
      the unit of a Z pass). A solve nobody scaled is in arbitrary units, whatever the scene's
      unit system: ``units`` says "scene units (solve not scaled)" then.

    * Weight: a bundle's depth is as good as its triangulation. Its relative depth error is
      about ``sigma / (f parallax)`` (``sigma`` the track's reprojection error, at least
      ``MIN_TRACK_ERROR`` px; ``f`` the focal length in px; ``parallax`` the widest angle
      between the rays from the solved cameras that saw it), so the weight is the track's own
      ``weight`` times ``(f parallax / sigma)^2``, divided by the largest over the tracks: far
      points seen over a short baseline count little (they vary by several per cent).
    * Positions stay on the plate as shot (lens distortion included): the depth maps are of
      the plate too.

Only bpy, mathutils and the standard library: this runs inside Blender's own Python.
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
from dataclasses import dataclass, field

import bpy

CSV_COLUMNS = ("frame", "x", "y", "depth", "weight", "track")
MIN_TRACK_ERROR = 0.1  # px: what a tracker promises at best, whatever the solve reports
MIN_WEIGHT = 1e-3  # of the best track's, so that every anchor stays in the file
UNSCALED_UNITS = "scene units (solve not scaled)"
SCALE_TOLERANCE = 1e-6  # a solve scale this close to 1 was never set


class CameraSolveError(Exception):
    """The clip has no usable camera solve; the message says what to do."""


@dataclass
class SolveAnchors:
    """Anchor rows ``(frame, x, y, depth, weight, track)`` and what was left out, and why."""

    rows: list[tuple[int, float, float, float, float, str]]
    units: str
    clip: str
    scale: float  # solve units -> scene units
    skipped: dict[str, int] = field(default_factory=dict)


def solve_anchors(clip, scene=None, tracking_object=None) -> SolveAnchors:
    """Anchors from ``clip``'s solve (``tracking_object`` defaults to the active one)."""
    scene = scene or bpy.context.scene
    tracking = clip.tracking
    tracking_object = tracking_object or tracking.objects.active
    reconstruction = tracking_object.reconstruction
    if not reconstruction.is_valid:
        raise CameraSolveError(
            f"Movie Clip {clip.name!r} has no valid camera solve for {tracking_object.name!r}: "
            "track features and run Solve Camera Motion first."
        )
    if tracking.settings.use_tripod_solver:
        raise CameraSolveError(
            f"Movie Clip {clip.name!r} has a tripod solve: it has no depth (every bundle sits "
            "on one sphere). Solve with camera translation, or give measured points instead."
        )
    width, height = (int(v) for v in clip.size)
    if width <= 0 or height <= 0:
        raise CameraSolveError(f"Movie Clip {clip.name!r} has no frames (file not found?).")
    scale, units = _scene_scale(clip, scene, tracking_object)
    first = _first_number(clip)
    focal = float(tracking.camera.focal_length_pixels)
    cameras = {}  # clip frame -> (inverse camera matrix, camera centre), in solve space
    for camera in reconstruction.cameras:
        cameras[camera.frame] = (camera.matrix.inverted(), camera.matrix.translation.copy())

    rows = []
    skipped = {"no bundle": 0, "no camera": 0, "behind camera": 0, "zero weight": 0}
    for track in tracking_object.tracks:
        markers = [m for m in track.markers if not m.mute]
        if not track.has_bundle:
            skipped["no bundle"] += len(markers)
            continue
        if track.weight <= 0:
            skipped["zero weight"] += len(markers)
            continue
        bundle = track.bundle.to_4d()
        track_rows, rays = [], []
        for marker in markers:
            solved = cameras.get(marker.frame)
            if solved is None:
                skipped["no camera"] += 1
                continue
            inverse, centre = solved
            depth = -(inverse @ bundle).z * scale
            if not depth > 0:
                skipped["behind camera"] += 1
                continue
            rays.append((track.bundle - centre).normalized())
            u = marker.co[0] + track.offset[0]
            v = marker.co[1] + track.offset[1]
            frame = first + marker.frame - 1 + clip.frame_offset
            track_rows.append([frame, u * width, (1.0 - v) * height, depth, 0.0, track.name])
        if not track_rows:
            continue
        sigma = max(float(track.average_error), MIN_TRACK_ERROR)
        precision = (focal * _parallax(rays) / sigma) ** 2
        for row in track_rows:
            row[4] = float(track.weight) * precision
        rows.extend(track_rows)
    best = max((row[4] for row in rows), default=0.0)
    for row in rows:
        row[4] = max(row[4] / best, MIN_WEIGHT) if best > 0 else 1.0
    rows = [tuple(row) for row in rows]
    rows.sort(key=lambda row: (row[0], row[5]))
    return SolveAnchors(rows, units, clip.name, scale, {k: v for k, v in skipped.items() if v})


def write_anchors_csv(path: str, anchors: SolveAnchors) -> str:
    """Write the rows as the engine's anchors CSV (atomically); return the path."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".anchors.", suffix=".csv", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(f"# units: {anchors.units}\n")
            fh.write(f"# source: camera solve of Movie Clip {anchors.clip!r}\n")
            writer = csv.writer(fh)
            writer.writerow(CSV_COLUMNS)
            for frame, x, y, depth, weight, track in anchors.rows:
                writer.writerow(
                    (frame, repr(float(x)), repr(float(y)), repr(float(depth)), repr(weight), track)
                )
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def usable_solve_anchors(clip, scene=None, tracking_object=None) -> SolveAnchors:
    """:func:`solve_anchors`; refuses a solve that gives no anchor."""
    anchors = solve_anchors(clip, scene, tracking_object)
    if not anchors.rows:
        raise CameraSolveError(
            f"Movie Clip {clip.name!r}: no track has both a bundle and an enabled marker "
            "on a solved frame."
        )
    return anchors


def export_solve_anchors(clip, path: str, scene=None, tracking_object=None) -> SolveAnchors:
    """:func:`usable_solve_anchors` written to ``path``."""
    anchors = usable_solve_anchors(clip, scene, tracking_object)
    write_anchors_csv(path, anchors)
    return anchors


def _parallax(rays) -> float:
    """The widest angle (radians) between two of the unit rays: from the ray farthest from
    their mean direction to the ray farthest from that one."""
    if len(rays) < 2:
        return 0.0
    mean = sum(rays[1:], rays[0].copy()).normalized()
    start = max(rays, key=lambda ray: ray.angle(mean, 0.0))
    return max(ray.angle(start, 0.0) for ray in rays)


def _first_number(clip) -> int:
    """The frame number in the first file name of an image sequence; 0 for a movie."""
    if clip.source != "SEQUENCE":
        return 0
    digits = re.findall(r"\d+", os.path.basename(bpy.path.abspath(clip.filepath)))
    return int(digits[-1]) if digits else 1


def _scene_scale(clip, scene, tracking_object) -> tuple[float, str]:
    """Solve units -> scene units, and the unit's name.

    A solve is right up to one scale, which the user gives with Set Scale (the solver
    camera's scale; an object solve's ``scale``). Until then its units are arbitrary, whatever
    unit system the scene uses: they are named so, and no unit scale is applied to them."""
    scale = float(tracking_object.scale)
    camera = _solver_camera(clip, scene)
    if camera is not None:
        matrix = camera.evaluated_get(bpy.context.evaluated_depsgraph_get()).matrix_world
        scale *= sum(matrix.to_scale()) / 3.0
    if abs(scale - 1.0) <= SCALE_TOLERANCE:
        return scale, UNSCALED_UNITS
    units = scene.unit_settings
    if units.system == "NONE":
        return scale, "blender units"
    return scale * float(units.scale_length), "m"


def _solver_camera(clip, scene):
    """The scene camera (or else any camera) that a Camera Solver constraint ties to ``clip``."""
    candidates = [scene.camera] if scene.camera is not None else []
    candidates += [ob for ob in scene.objects if ob.type == "CAMERA" and ob is not scene.camera]
    for ob in candidates:
        for constraint in ob.constraints:
            if constraint.type != "CAMERA_SOLVER" or not constraint.enabled:
                continue
            used = scene.active_clip if constraint.use_active_clip else constraint.clip
            if used == clip:
                return ob
    return None


def solved_clip_for(media: str):
    """The Movie Clip with a valid camera solve of the same footage as a strip's ``media`` (a
    movie file, or an image sequence's pattern); None when there is none."""
    target = os.path.normpath(media)
    for clip in bpy.data.movieclips:
        if not clip.tracking.reconstruction.is_valid:
            continue
        path = os.path.normpath(bpy.path.abspath(clip.filepath, library=clip.library))
        if clip.source == "MOVIE" and path == target:
            return clip
        if clip.source == "SEQUENCE" and os.path.dirname(path) == os.path.dirname(target):
            return clip
    return None
