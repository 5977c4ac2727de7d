"""The output-folder policy on real folders and real EXR files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from rollingdepth_core.errors import Cancelled, ConfigError, OutputError
from rollingdepth_core.exr import read_exr, write_depth_exr
from rollingdepth_core.output_guard import (
    OutputGuard,
    check_name,
    frame_ranges,
    header_value_range,
    run_identity,
)

SETTINGS = {"seed": 1, "dilations": "1 10 25"}


def write_run(folder: Path, frames, run_id: str, value: float, overwrite=False) -> OutputGuard:
    guard = OutputGuard(folder, "depth", frames, run_id, overwrite=overwrite, source="plate.mov")
    guard.check()
    with guard.writing():
        for n in frames:
            write_depth_exr(guard.frame_path(n), np.full((4, 6), value, np.float32))
            guard.wrote(n)
    guard.finish()
    return guard


def frames_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("depth.*.exr"))


def manifest(folder: Path) -> dict:
    return json.loads((folder / "depth_run.json").read_text())


@pytest.mark.parametrize("name", ["", "  ", "../../escaped", "a/b", "..", ".", ".hidden", "x\n"])
def test_names_that_escape_or_hide_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="name"):
        check_name(name)
    with pytest.raises(ConfigError):
        OutputGuard(tmp_path, name, [1], "id")
    assert os.listdir(tmp_path) == []


def test_a_run_never_writes_over_its_input(tmp_path: Path) -> None:
    plate = [tmp_path / f"plate.{n}.exr" for n in (1001, 1002, 1003)]
    for path in plate:
        write_depth_exr(path, np.ones((4, 6), np.float32))
    before = [p.read_bytes() for p in plate]
    guard = OutputGuard(tmp_path, "plate", [1001, 1002, 1003], "id", input_paths=plate)
    with pytest.raises(OutputError, match="plate's own files"):
        guard.check()
    # through another spelling of the same folder, and with --overwrite
    guard = OutputGuard(
        tmp_path / "." / "", "plate", [1001, 1002, 1003], "id", input_paths=plate, overwrite=True
    )
    with pytest.raises(OutputError, match="overwrite its input"):
        guard.check()
    assert [p.read_bytes() for p in plate] == before
    # another name in the plate's folder is fine
    OutputGuard(tmp_path, "depth", [1001, 1002, 1003], "id", input_paths=plate).check()


def test_another_runs_frames_are_refused_then_replaced_only_when_complete(tmp_path: Path) -> None:
    first = run_identity("a.mov", range(1001, 1021), {**SETTINGS, "seed": 1})
    second = run_identity("b.mov", range(1001, 1013), {**SETTINGS, "seed": 2})
    assert first != second
    write_run(tmp_path, range(1001, 1021), first, 1.0)
    assert len(frames_in(tmp_path)) == 20

    refused = OutputGuard(tmp_path, "depth", range(1001, 1013), second)
    with pytest.raises(
        OutputError, match=r"holds 20 depth\.\*\.exr frames \(1001-1020\).*--overwrite"
    ):
        refused.check()
    assert len(frames_in(tmp_path)) == 20

    guard = OutputGuard(tmp_path, "depth", range(1001, 1013), second, overwrite=True)
    guard.check()
    with guard.writing():
        for n in range(1001, 1013):
            write_depth_exr(guard.frame_path(n), np.full((4, 6), 2.0, np.float32))
            guard.wrote(n)
        # the old frames outside the new range stay until the sequence is complete
        assert len(frames_in(tmp_path)) == 20
        assert manifest(tmp_path)["complete"] is False
    removed = guard.finish(["depth_alignment.json"])
    assert sorted(p.name for p in removed) == [f"depth.{n}.exr" for n in range(1013, 1021)]
    assert frames_in(tmp_path) == [f"depth.{n}.exr" for n in range(1001, 1013)]
    assert all(read_exr(tmp_path / f)[0]["Z"][0, 0] == 2.0 for f in frames_in(tmp_path))
    record = manifest(tmp_path)
    assert record["run_id"] == second and record["complete"] is True
    assert record["replaces"] == []
    assert record["files"][-1] == "depth_alignment.json"


def test_the_same_run_may_rerun_without_overwrite(tmp_path: Path) -> None:
    run_id = run_identity("a.mov", range(1, 6), SETTINGS)
    write_run(tmp_path, range(1, 6), run_id, 1.0)
    write_run(tmp_path, range(1, 6), run_id, 1.5)
    assert frames_in(tmp_path) == [f"depth.{n:04d}.exr" for n in range(1, 6)]
    # a frame no manifest accounts for is another run's
    write_depth_exr(tmp_path / "depth.0099.exr", np.ones((4, 6), np.float32))
    with pytest.raises(OutputError, match=r"1 depth\.\*\.exr frames \(99\)"):
        OutputGuard(tmp_path, "depth", range(1, 6), run_id).check()


def test_frames_without_a_manifest_are_another_run(tmp_path: Path) -> None:
    for n in (1, 2):
        write_depth_exr(tmp_path / f"depth.{n:04d}.exr", np.ones((4, 6), np.float32))
    with pytest.raises(OutputError, match="no manifest"):
        OutputGuard(tmp_path, "depth", [1, 2], "id").check()


def test_interrupt_while_writing_says_what_is_on_disk(tmp_path: Path) -> None:
    run_id = run_identity("a.mov", range(1001, 1006), SETTINGS)
    guard = OutputGuard(tmp_path, "depth", range(1001, 1006), run_id)
    guard.check()
    with pytest.raises(Cancelled) as caught, guard.writing():
        for n in (1001, 1002, 1003):
            write_depth_exr(guard.frame_path(n), np.ones((4, 6), np.float32))
            guard.wrote(n)
        raise KeyboardInterrupt
    message = str(caught.value)
    assert "3 of 5 frames of this run are in" in message
    assert "depth.1001-1003" in message and "2 are not written" in message
    assert "rerun the same command" in message
    assert manifest(tmp_path)["complete"] is False
    # the same run completes it; another run is refused
    with pytest.raises(OutputError, match="incomplete"):
        OutputGuard(tmp_path, "depth", range(1001, 1006), "other").check()
    write_run(tmp_path, range(1001, 1006), run_id, 1.0)
    assert manifest(tmp_path)["complete"] is True


def test_interrupt_before_any_frame(tmp_path: Path) -> None:
    guard = OutputGuard(tmp_path, "depth", [1, 2], "id")
    with pytest.raises(Cancelled, match="no frame of this run was written"), guard.writing():
        raise KeyboardInterrupt


def test_overwrite_interrupted_then_resumed_still_removes_the_old_frames(tmp_path: Path) -> None:
    write_run(tmp_path, range(1, 11), "old", 1.0)
    guard = OutputGuard(tmp_path, "depth", range(1, 5), "new", overwrite=True)
    guard.check()
    still_there = "10 frames of the earlier run are still there"
    with pytest.raises(Cancelled, match=still_there), guard.writing():
        raise KeyboardInterrupt
    # the rerun of the same command needs no --overwrite: the manifest carries the removal
    write_run(tmp_path, range(1, 5), "new", 2.0)
    assert frames_in(tmp_path) == [f"depth.{n:04d}.exr" for n in range(1, 5)]


def test_failed_write_names_the_frame_and_the_state(tmp_path: Path) -> None:
    guard = OutputGuard(tmp_path, "depth", [7, 8], "id")
    guard.check()
    with pytest.raises(OutputError) as caught, guard.writing():
        write_depth_exr(guard.frame_path(7), np.ones((4, 6), np.float32))
        guard.wrote(7)
        write_depth_exr(guard.frame_path(8), np.full((4, 6), np.nan, np.float32))
    message = str(caught.value)
    assert "depth.0008.exr" in message and "1 of 2 frames" in message
    with pytest.raises(OutputError, match=r"1 frames were not written \(8\)"):
        guard.finish()


def test_header_value_range_describes_the_written_values() -> None:
    near, far = header_value_range("depth", 2.0, 36.0, -0.8, 0.9)
    assert near == pytest.approx(2.0) and far == pytest.approx(36.0)
    assert header_value_range("normalized", 2.0, 36.0, -0.8, 0.9) == (0.0, 1.0)
    lo, hi = header_value_range("inverse", 2.0, 36.0, -0.8, 0.9)
    assert lo == pytest.approx(-0.8) and hi == pytest.approx(0.9)


def test_frame_ranges() -> None:
    assert frame_ranges([1010, 1001, 1002, 1003, 1007]) == "1001-1003, 1007, 1010"


def test_guard_for_an_opened_plate(tmp_path: Path) -> None:
    from rollingdepth_core.plate import open_plate

    for n in (1, 2, 3):
        write_depth_exr(tmp_path / f"plate.{n:04d}.exr", np.ones((4, 6), np.float32))
    plate = open_plate(tmp_path / "plate.####.exr")
    guard = OutputGuard.for_plate(tmp_path, "plate", plate, {"seed": 1})
    assert guard.frame_numbers == (1, 2, 3)
    assert guard.run_id == OutputGuard.for_plate(tmp_path, "depth", plate, {"seed": 1}).run_id
    assert guard.run_id != OutputGuard.for_plate(tmp_path, "depth", plate, {"seed": 2}).run_id
    with pytest.raises(OutputError, match="plate's own files"):
        guard.check()
