"""Estimate Depth with an anchors file the artist already has (survey points): the depth is
written as distance in the file's units, the fit's report is kept, and wrong uses are refused
in one line before the engine starts."""

from __future__ import annotations

import bpy
import pytest

from .support import add_image_strip, run_operator, select_only

POINTS = ((8, 8), (56, 8), (8, 40), (56, 40), (32, 24))  # x, y (from the top), pixels


def nearness_at(path, points) -> list[float]:
    """The first channel of an EXR at ``points`` (x, y from the top)."""
    image = bpy.data.images.load(str(path))
    width, height = image.size
    pixels = list(image.pixels)
    bpy.data.images.remove(image)
    return [pixels[((height - 1 - y) * width + x) * 4] for x, y in points]


@pytest.fixture()
def image_strip(scene, media):
    names = [f"plate.{n:04d}.png" for n in range(1001, 1009)]
    strip = add_image_strip(scene, media["sequence_dir"], names, 1, 1)
    select_only(scene, strip)
    return strip


@pytest.fixture()
def survey(prefs, image_strip, tmp_path):
    """Survey points that agree with the depth this model gives the plate (a random model:
    points made up at random would contradict its depth order): Z = 1 / (0.2 + 0.8 n)."""
    reference = tmp_path / "reference"
    assert run_operator(output_dir=str(reference), replace=False) == {"FINISHED"}
    lines = ["frame,x,y,depth"]
    for n in range(1001, 1009):
        values = nearness_at(reference / f"depth.{n:04d}.exr", POINTS)
        lines += [
            f"{n},{x},{y},{1 / (0.2 + 0.8 * v):.6f}"
            for (x, y), v in zip(POINTS, values, strict=True)
        ]
    path = tmp_path / "survey.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_an_anchors_file_gives_depth_in_its_units(prefs, image_strip, survey, tmp_path):
    output = tmp_path / "out"
    assert run_operator(output_dir=str(output), anchors_file=str(survey)) == {"FINISHED"}
    scene = bpy.context.scene
    depth = scene.sequence_editor.strips[f"{image_strip.name} depth"]
    assert depth.frame_final_duration == 8
    # the depth is the survey's distance where the survey measured it (a robust fit to
    # points made from clipped normalized depth: most points, not every one)
    rows = [line.split(",") for line in survey.read_text().splitlines()[1:]]
    errors = []
    for n in (1001, 1004, 1008):
        written = nearness_at(output / f"depth.{n:04d}.exr", POINTS)
        measured = [float(r[3]) for r in rows if int(r[0]) == n]
        errors += [abs(w - m) / m for w, m in zip(written, measured, strict=True)]
    assert sorted(errors)[len(errors) // 2] < 0.1, errors


def test_an_anchors_file_that_is_not_there_is_refused(prefs, image_strip, tmp_path):
    with pytest.raises(RuntimeError, match="Anchors File: there is no file"):
        run_operator(output_dir=str(tmp_path / "out"), anchors_file=str(tmp_path / "no.csv"))
    assert not (tmp_path / "out").exists()


def test_anchors_from_a_file_and_a_solve_at_once_are_refused(prefs, image_strip, tmp_path):
    survey = tmp_path / "s.csv"
    survey.write_text("frame,x,y,depth\n1001,8,8,2.0\n")
    with pytest.raises(RuntimeError, match="use one of them"):
        run_operator(output_dir=str(tmp_path / "o"), anchors_file=str(survey), anchor_solve=True)


def test_an_anchors_file_with_several_strips_is_refused(prefs, scene, media, tmp_path):
    survey = tmp_path / "s.csv"
    survey.write_text("frame,x,y,depth\n1001,8,8,2.0\n")
    names = [f"plate.{n:04d}.png" for n in range(1001, 1005)]
    first = add_image_strip(scene, media["sequence_dir"], names, 1, 1)
    second = add_image_strip(scene, media["sequence_dir"], names, 2, 20)
    select_only(scene, first, second)
    with pytest.raises(RuntimeError, match="belongs to one plate"):
        run_operator(output_dir=str(tmp_path / "o"), anchors_file=str(survey))
