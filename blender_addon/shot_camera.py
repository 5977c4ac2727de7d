"""The scene's camera for a run: Blender's camera, per frame of a strip, as a small USD
stage (``.usda`` text, one time-sampled ``UsdGeomCamera``) that the engine reads as it reads
any ``--camera``, so that a run writes position and normal passes (and points) in the scene's
own space.

Why a ``.usda`` written as text: it exports only the one camera (Blender's USD export writes
the whole scene), needs no USD library in Blender's Python, and carries what a ``.chan``
cannot: the up axis (Z, Blender's) and the unit, which the points stage takes over from it, so
that Blender's USD importer puts the points and camera back where the scene has them (a
``.chan`` is read as Y up, and the importer turns a Y-up stage onto Z).

Conventions
    * Frames: the strip shows plate frame ``n`` at one or more scene frames
      (``FramePlan.timeline``); the camera of plate frame ``n`` is the camera at the first
      scene frame showing it. Time codes are the plate's numbers, as the engine names frames.
    * Placement: the camera's world matrix without its scale (a camera's scale does not change
      what it sees; Set Scale of a camera solve puts the scene scale there). USD matrices act
      on row vectors: the transpose of Blender's.
    * Lens: Blender fits the sensor to the render frame (Sensor Fit: Auto takes the sensor
      width along the longer side; Horizontal the width across; Vertical the height up). The
      film back is that sensor over the scene's render aspect (pixel aspect included); lens
      values are written in USD's units (mm / (100 metres per unit)), per frame (zooms).
    * Refused, in words: no such camera, a camera that is not perspective, lens shift (the
      engine's pinhole has its principal point at the centre), a render frame whose aspect
      is not the plate's (the camera would not see what the plate shows).

Only bpy, mathutils and the standard library: this runs inside Blender's own Python.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from dataclasses import dataclass

from . import protocol

NONE, SCENE_CAMERA = "NONE", "SCENE"
ASPECT_TOLERANCE = 0.01  # as the engine's check (rounded sensor sizes)
# P and N add six float32 channels per pixel (written uncompressed, README), and the depth's
# half-float R, G, B copy that Blender's Sequencer shows beside them (protocol.DISPLAY_CHANNELS)
PASS_BYTES_PER_PIXEL = 6 * 4 + protocol.DISPLAY_BYTES_PER_PIXEL


class ShotCameraError(Exception):
    """Why the camera cannot go with the run, in words an artist reads."""


@dataclass(frozen=True)
class ShotCamera:
    """A camera ready for the engine: its ``.usda`` text."""

    name: str
    usda: str


def camera_object(scene, choice: str):
    """The camera the dialog's choice names (``SCENE``: the scene's active camera), or None
    for ``NONE``."""
    if choice == NONE:
        return None
    if choice == SCENE_CAMERA:
        if scene.camera is None or scene.camera.type != "CAMERA":
            raise ShotCameraError(
                f"Scene {scene.name!r} has no active camera: set one (Scene Properties ▸ "
                "Camera), or choose a camera by name."
            )
        return scene.camera
    camera = scene.objects.get(choice)
    if camera is None or camera.type != "CAMERA":
        raise ShotCameraError(f"There is no camera {choice!r} in scene {scene.name!r}.")
    return camera


def render_aspect(render) -> float:
    """Width over height of the scene's render frame, pixel aspect included."""
    return (render.resolution_x * render.pixel_aspect_x) / (
        render.resolution_y * render.pixel_aspect_y
    )


def film_back(data, render) -> tuple[float, float]:
    """Blender's sensor as it covers the render frame (width, height in mm)."""
    aspect = render_aspect(render)
    fit = data.sensor_fit
    if fit == "AUTO":  # the sensor width goes along the longer side of the frame
        size, fit = data.sensor_width, ("HORIZONTAL" if aspect >= 1.0 else "VERTICAL")
    else:
        size = data.sensor_width if fit == "HORIZONTAL" else data.sensor_height
    if fit == "HORIZONTAL":
        return float(size), float(size / aspect)
    return float(size * aspect), float(size)


def shot_camera(scene, camera, timeline, plate_size) -> ShotCamera:
    """``camera`` over the strip's ``timeline`` ((scene frame, plate number) pairs), checked
    against the plate's ``plate_size`` (width, height; None when Blender has not read it)."""
    data = camera.data
    if data.type != "PERSP":
        raise ShotCameraError(
            f"Camera {camera.name!r} is not a perspective camera: depth in 3D needs a "
            "perspective lens (Camera ▸ Lens ▸ Type)."
        )
    aspect = render_aspect(scene.render)
    if plate_size:
        plate_aspect = plate_size[0] / plate_size[1]
        if abs(aspect / plate_aspect - 1.0) > ASPECT_TOLERANCE:
            raise ShotCameraError(
                f"The scene's frame ({scene.render.resolution_x} x "
                f"{scene.render.resolution_y}) is not shaped like the plate ({plate_size[0]} x "
                f"{plate_size[1]}): camera {camera.name!r} would not see what the plate shows. "
                "Set the scene's resolution to the plate's (Output Properties ▸ Format)."
            )
    first_frame: dict[int, int] = {}
    for frame, number in timeline:
        first_frame.setdefault(number, frame)
    units = scene.unit_settings
    meters = float(units.scale_length) if units.system != "NONE" else 1.0
    lens_unit = 1.0 / (100.0 * meters)  # mm -> USD's lens unit, as the engine reads it
    current = scene.frame_current, scene.frame_subframe
    samples: dict[str, list[str]] = {"focal": [], "width": [], "height": [], "matrix": []}
    try:
        for number in sorted(first_frame):
            scene.frame_set(first_frame[number])
            if abs(data.shift_x) > 1e-9 or abs(data.shift_y) > 1e-9:
                raise ShotCameraError(
                    f"Camera {camera.name!r} has lens shift at frame {first_frame[number]}: "
                    "depth in 3D needs a centred lens (set Shift X and Y to 0)."
                )
            width, height = film_back(data, scene.render)
            location, rotation, _ = camera.matrix_world.decompose()
            axes = rotation.to_matrix()
            # rows of the USD matrix: the camera's axes, then its position (Blender's columns)
            rows = [(*axes.col[i], 0.0) for i in range(3)] + [(*location, 1.0)]
            values = [data.lens, width, height, *(v for row in rows for v in row)]
            if not all(math.isfinite(v) for v in values):
                raise ShotCameraError(
                    f"Camera {camera.name!r} has no usable placement at frame "
                    f"{first_frame[number]} (its animation gives no number)."
                )
            samples["focal"].append(f"{number}: {data.lens * lens_unit!r}")
            samples["width"].append(f"{number}: {width * lens_unit!r}")
            samples["height"].append(f"{number}: {height * lens_unit!r}")
            matrix = ", ".join("(" + ", ".join(repr(float(v)) for v in row) + ")" for row in rows)
            samples["matrix"].append(f"{number}: ({matrix})")
    finally:
        scene.frame_set(current[0], subframe=current[1])
    numbers = sorted(first_frame)

    def timed(kind: str) -> str:
        return "{\n            " + ",\n            ".join(samples[kind]) + ",\n        }"

    usda = f"""#usda 1.0
(
    doc = "camera {_quoted(camera.name)} of scene {_quoted(scene.name)} (Blender)"
    defaultPrim = "camera"
    metersPerUnit = {meters!r}
    upAxis = "Z"
    startTimeCode = {numbers[0]}
    endTimeCode = {numbers[-1]}
)

def Camera "camera"
{{
    float focalLength.timeSamples = {timed("focal")}
    float horizontalAperture.timeSamples = {timed("width")}
    float verticalAperture.timeSamples = {timed("height")}
    token projection = "perspective"
    matrix4d xformOp:transform.timeSamples = {timed("matrix")}
    uniform token[] xformOpOrder = ["xformOp:transform"]
}}
"""
    return ShotCamera(camera.name, usda)


def _quoted(text: str) -> str:
    """``text`` inside a USD string: no quote or backslash breaks it."""
    return text.replace("\\", "/").replace('"', "'")


def write_camera(folder_stem: str, shot: ShotCamera) -> str:
    """Write ``shot`` as ``<folder_stem>.camera-<hash>.usda`` (beside the strip's kept
    predictions) and return its path. The name carries the content's hash, so the camera a
    run recorded stays as it was when a later run of the strip uses another one."""
    digest = hashlib.sha256(shot.usda.encode("utf-8")).hexdigest()[:12]
    path = f"{folder_stem}.camera-{digest}.usda"
    if os.path.isfile(path):
        return path
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".camera.", suffix=".usda", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(shot.usda)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def passes_size_text(plate_size, frames: int) -> str:
    """What position and normal passes add to the strip's files, in words."""
    from .folders import size_text

    width, height = plate_size
    per_frame = width * height * PASS_BYTES_PER_PIXEL
    return (
        f"Position and Normal add {size_text(per_frame)} per frame "
        f"({size_text(per_frame * frames)} for {frames} frames)"
    )


def camera_items(scene) -> list[tuple[str, str, str]]:
    """The dialog's camera choices: none, the scene's camera, each camera of the scene."""
    items = [
        (NONE, "None", "Depth only: no position or normal passes"),
        (
            SCENE_CAMERA,
            "Scene Camera",
            "The scene's active camera, per frame of the strip (a camera solved from a "
            "Movie Clip, with its Camera Solver constraint, included)",
        ),
    ]
    if scene is not None:
        items += [
            (ob.name, ob.name, f"Camera {ob.name!r}, per frame of the strip")
            for ob in sorted(scene.objects, key=lambda ob: ob.name)
            if ob.type == "CAMERA"
        ]
    return items
