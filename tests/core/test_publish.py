"""The publisher on real folders and real EXR files: policy, lock, staging, the whole swap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rollingdepth_core.config import check_name
from rollingdepth_core.errors import Cancelled, ConfigError, OutputError
from rollingdepth_core.exr import read_exr, write_depth_exr
from rollingdepth_core.publish import (
    JOURNAL,
    Publisher,
    check_output,
    frame_ranges,
    header_value_range,
    run_identity,
)

SETTINGS = {"seed": 1, "dilations": "1 10 25"}


def write_run(folder: Path, frames, run_id: str, value: float, overwrite=False) -> Publisher:
    publisher = Publisher(folder, "depth", frames, run_id, overwrite=overwrite, source="plate.mov")
    publisher.check()
    with publisher.writing():
        for n in frames:
            write_depth_exr(publisher.staging_path(n), np.full((4, 6), value, np.float32))
            publisher.wrote(n)
    publisher.publish()
    return publisher


def frames_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("depth.*.exr"))


def values_in(folder: Path) -> set[float]:
    return {float(read_exr(p)[0]["Z"][0, 0]) for p in folder.glob("depth.*.exr")}


def manifest(folder: Path) -> dict:
    return json.loads((folder / "depth_run.json").read_text())


@pytest.mark.parametrize("name", ["", "  ", "../../escaped", "a/b", "..", ".", ".hidden", "x\n"])
def test_names_that_escape_or_hide_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="name"):
        check_name(name)
    with pytest.raises(ConfigError):
        Publisher(tmp_path, name, [1], "id")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "name",
    [
        "a[1]*",
        "shot?",
        "a:b",
        "a\\b",
        "<x>",
        "a|b",
        'say"',
        " lead",
        "d#",
        "$F",
        "NUL",
        "com1.x",
        "x" * 250,
    ],  # fmt: skip
)
def test_names_no_file_system_or_glob_can_hold_are_refused(tmp_path: Path, name: str) -> None:
    """`a[1]*.1001.exr` was written: Windows and SMB shares cannot hold it, a glob reads it as
    a pattern. One line naming the characters; nothing written."""
    with pytest.raises(ConfigError, match="name") as caught:
        check_name(name)
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError):
        Publisher(tmp_path, name, [1], "id")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "name", ["depth", "sh010_depth-v2", "plate.depth", "a+b", "sh010 depth", "Tiefe_ü", "深度"]
)
def test_plain_names_are_taken(name: str) -> None:
    check_name(name)


def test_a_run_never_writes_over_its_input(tmp_path: Path) -> None:
    plate = [tmp_path / f"plate.{n}.exr" for n in (1001, 1002, 1003)]
    for path in plate:
        write_depth_exr(path, np.ones((4, 6), np.float32))
    before = [p.read_bytes() for p in plate]
    publisher = Publisher(tmp_path, "plate", [1001, 1002, 1003], "id", input_paths=plate)
    with pytest.raises(OutputError, match="plate's own files"):
        publisher.check()
    # through another spelling of the same folder, and with --overwrite
    publisher = Publisher(
        tmp_path / "." / "", "plate", [1001, 1002, 1003], "id", input_paths=plate, overwrite=True
    )
    with pytest.raises(OutputError, match="overwrite its input"):
        publisher.check()
    assert [p.read_bytes() for p in plate] == before
    # another name in the plate's folder is fine
    with Publisher(tmp_path, "depth", [1001, 1002, 1003], "id", input_paths=plate) as ok:
        ok.check()


def test_another_runs_frames_are_refused_then_replaced_whole(tmp_path: Path) -> None:
    first = run_identity("a.mov", range(1001, 1021), {**SETTINGS, "seed": 1})
    second = run_identity("b.mov", range(1001, 1013), {**SETTINGS, "seed": 2})
    assert first != second
    write_run(tmp_path, range(1001, 1021), first, 1.0)
    assert len(frames_in(tmp_path)) == 20

    refused = Publisher(tmp_path, "depth", range(1001, 1013), second)
    with pytest.raises(
        OutputError, match=r"holds 20 depth\.\*\.exr frames \(1001-1020\).*--overwrite"
    ):
        refused.check()
    assert len(frames_in(tmp_path)) == 20

    said: list[str] = []
    publisher = Publisher(
        tmp_path, "depth", range(1001, 1013), second, overwrite=True, message=said.append
    )
    publisher.check()
    with publisher.writing():
        for n in range(1001, 1013):
            write_depth_exr(publisher.staging_path(n), np.full((4, 6), 2.0, np.float32))
            publisher.wrote(n)
            # nothing reaches the folder before the swap
            assert values_in(tmp_path) == {1.0} and len(frames_in(tmp_path)) == 20
        (publisher.staging / "depth_alignment.json").write_text("{}")
    removed = publisher.publish(["depth_alignment.json"])
    assert sorted(p.name for p in removed) == [f"depth.{n}.exr" for n in range(1013, 1021)]
    assert frames_in(tmp_path) == [f"depth.{n}.exr" for n in range(1001, 1013)]
    assert values_in(tmp_path) == {2.0}
    assert any("removed 8 frames of the earlier sequence" in s and "1013-1020" in s for s in said)
    record = manifest(tmp_path)
    assert record["run_id"] == second and record["complete"] is True
    assert record["replaced"] == [f"depth.{n}.exr" for n in range(1013, 1021)]
    assert record["files"][-1] == "depth_alignment.json"
    assert not publisher.staging.exists() and not publisher.lock.path.exists()


def test_the_same_run_may_rerun_without_overwrite(tmp_path: Path) -> None:
    run_id = run_identity("a.mov", range(1, 6), SETTINGS)
    write_run(tmp_path, range(1, 6), run_id, 1.0)
    write_run(tmp_path, range(1, 6), run_id, 1.5)
    assert frames_in(tmp_path) == [f"depth.{n:04d}.exr" for n in range(1, 6)]
    assert values_in(tmp_path) == {1.5}
    # a frame no manifest accounts for is another run's
    write_depth_exr(tmp_path / "depth.0099.exr", np.ones((4, 6), np.float32))
    with pytest.raises(OutputError, match=r"1 depth\.\*\.exr frames \(99\)"):
        Publisher(tmp_path, "depth", range(1, 6), run_id).check()


def test_another_frame_range_of_the_same_plate_is_refused_with_the_farm_hint(
    tmp_path: Path,
) -> None:
    write_run(tmp_path, range(1001, 1021), "all", 1.0)
    with pytest.raises(OutputError, match=r"own depth scale.*infer --chunk K/N.*finalize"):
        Publisher(tmp_path, "depth", range(1011, 1021), "part", source="plate.mov").check()


def test_frames_without_a_manifest_are_another_run(tmp_path: Path) -> None:
    for n in (1, 2):
        write_depth_exr(tmp_path / f"depth.{n:04d}.exr", np.ones((4, 6), np.float32))
    with pytest.raises(OutputError, match="no manifest"):
        Publisher(tmp_path, "depth", [1, 2], "id").check()


def test_interrupt_while_writing_keeps_the_earlier_sequence(tmp_path: Path) -> None:
    write_run(tmp_path, range(1001, 1006), "old", 1.0)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    publisher = Publisher(tmp_path, "depth", range(1001, 1006), "new", overwrite=True)
    publisher.check()
    with pytest.raises(Cancelled) as caught, publisher.writing():
        for n in (1001, 1002, 1003):
            write_depth_exr(publisher.staging_path(n), np.ones((4, 6), np.float32))
            publisher.wrote(n)
        raise KeyboardInterrupt
    message = str(caught.value)
    assert "nothing of this run was published (3 of 5 frames were staged)" in message
    assert "keeps its earlier depth sequence (5 frames)" in message
    publisher.release()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    assert not publisher.staging.exists()


def test_interrupt_before_any_frame(tmp_path: Path) -> None:
    publisher = Publisher(tmp_path, "depth", [1, 2], "id")
    with pytest.raises(Cancelled, match="no depth frames were written"), publisher.writing():
        raise KeyboardInterrupt


def test_failed_write_names_the_frame_and_publishes_nothing(tmp_path: Path) -> None:
    publisher = Publisher(tmp_path, "depth", [7, 8], "id")
    publisher.check()
    with pytest.raises(OutputError) as caught, publisher.writing():
        write_depth_exr(publisher.staging_path(7), np.ones((4, 6), np.float32))
        publisher.wrote(7)
        write_depth_exr(publisher.staging_path(8), np.full((4, 6), np.nan, np.float32))
    message = str(caught.value)
    assert "depth.0008.exr" in message and "1 of 2 frames were staged" in message
    assert frames_in(tmp_path) == []


def test_a_missing_frame_publishes_nothing(tmp_path: Path) -> None:
    publisher = Publisher(tmp_path, "depth", [7, 8], "id")
    publisher.check()
    with publisher.writing():
        write_depth_exr(publisher.staging_path(7), np.ones((4, 6), np.float32))
        publisher.wrote(7)
    with pytest.raises(OutputError, match=r"1 frames were not written \(8\)"):
        publisher.publish()
    assert frames_in(tmp_path) == []


def test_a_second_writer_is_refused_naming_the_first(tmp_path: Path) -> None:
    first = Publisher(tmp_path, "depth", [1, 2], "a")
    first.check()
    with pytest.raises(OutputError, match=r"being written by another run \(pid \d+ on"):
        Publisher(tmp_path, "depth", [1, 2], "b").check()
    # another sequence name in the same folder is another lock
    with Publisher(tmp_path, "other", [1, 2], "c") as other:
        other.check()
    first.release()
    with Publisher(tmp_path, "depth", [1, 2], "b") as second:
        second.check()


def test_the_lock_of_a_killed_writer_is_taken_over(tmp_path: Path) -> None:
    # a real process takes the lock and dies by SIGKILL, leaving the lock file behind
    code = (
        "import os, signal, sys\n"
        "from rollingdepth_core.publish import Publisher\n"
        f"p = Publisher({str(tmp_path)!r}, 'depth', [1, 2], 'dead')\n"
        "p.check(); p.begin()\n"
        "open(p.staging_path(1), 'wb').write(b'half a frame')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ}, cwd=tmp_path)
    assert done.returncode == -9
    assert (tmp_path / ".depth.lock").exists() and (tmp_path / ".depth.staging").is_dir()
    said: list[str] = []
    with Publisher(tmp_path, "depth", [1, 2], "next", message=said.append) as publisher:
        publisher.check()
    assert any("removed the staging of an interrupted run" in s for s in said)
    assert not (tmp_path / ".depth.staging").exists()


def test_a_swap_cut_short_is_completed_by_the_next_run_or_check(tmp_path: Path) -> None:
    write_run(tmp_path, range(1, 7), "old", 1.0)
    publisher = Publisher(tmp_path, "depth", range(1, 5), "new", overwrite=True)
    publisher.check()
    with publisher.writing():
        for n in range(1, 5):
            write_depth_exr(publisher.staging_path(n), np.full((4, 6), 2.0, np.float32))
            publisher.wrote(n)
    # the journal written, two files moved, then the process is gone (as after a SIGKILL)
    files = [publisher.frame_name(n) for n in range(1, 5)] + ["depth_run.json"]
    (publisher.staging / "depth_run.json").write_text(
        json.dumps({"run_id": "new", "source": "plate.mov", "frames": [1, 2, 3, 4]})
    )
    (publisher.staging / JOURNAL).write_text(
        json.dumps({"files": files, "remove": ["depth.0005.exr", "depth.0006.exr"]})
    )
    for name in files[:2]:
        os.replace(publisher.staging / name, tmp_path / name)
    os.close(publisher.lock._fd)  # the kernel drops a dead process's lock
    said: list[str] = []
    report = check_output(tmp_path, message=said.append)
    assert any("completed the interrupted publish of depth" in s for s in said)
    assert frames_in(tmp_path) == [f"depth.{n:04d}.exr" for n in range(1, 5)]
    assert values_in(tmp_path) == {2.0}
    assert report == [
        {"name": "depth", "recovered": said[-1], "frames": "1-4", "run_id": "new",
         "source": "plate.mov", "state": "complete"}
    ]  # fmt: skip


def test_check_output_reports_sequences(tmp_path: Path) -> None:
    write_run(tmp_path, range(1, 4), "r1", 1.0)
    (report,) = check_output(tmp_path)
    assert report["state"] == "complete" and report["frames"] == "1-3"
    holder = Publisher(tmp_path, "depth", range(1, 4), "r1")
    holder.check()
    (busy,) = check_output(tmp_path)
    assert busy["state"] == "being written"
    holder.release()


def test_header_value_range_describes_the_written_values() -> None:
    near, far = header_value_range("depth", 2.0, 36.0, -0.8, 0.9)
    assert near == pytest.approx(2.0) and far == pytest.approx(36.0)
    assert header_value_range("normalized", 2.0, 36.0, -0.8, 0.9) == (0.0, 1.0)
    lo, hi = header_value_range("inverse", 2.0, 36.0, -0.8, 0.9)
    assert lo == pytest.approx(-0.8) and hi == pytest.approx(0.9)


def test_frame_ranges() -> None:
    assert frame_ranges([1010, 1001, 1002, 1003, 1007]) == "1001-1003, 1007, 1010"


def test_publisher_for_an_opened_plate(tmp_path: Path) -> None:
    from rollingdepth_core.plate import open_plate

    for n in (1, 2, 3):
        write_depth_exr(tmp_path / f"plate.{n:04d}.exr", np.ones((4, 6), np.float32))
    plate = open_plate(tmp_path / "plate.####.exr")
    publisher = Publisher.for_plate(tmp_path, "plate", plate, {"seed": 1})
    assert publisher.frame_numbers == (1, 2, 3)
    assert publisher.run_id == Publisher.for_plate(tmp_path, "depth", plate, {"seed": 1}).run_id
    assert publisher.run_id != Publisher.for_plate(tmp_path, "depth", plate, {"seed": 2}).run_id
    with pytest.raises(OutputError, match="plate's own files"):
        publisher.check()


# ------------------------------------------------------------------ journals are confined
def cut_short_swap(folder: Path, journal: dict) -> Path:
    """An earlier sequence, then a swap cut short whose journal says ``journal``."""
    write_run(folder, range(1, 5), "old", 1.0)
    staging = folder / ".depth.staging"
    staging.mkdir()
    write_depth_exr(staging / "depth.0001.exr", np.full((4, 6), 2.0, np.float32))
    (staging / JOURNAL).write_text(json.dumps(journal))
    return staging


def listing(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else b""
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize(
    ("journal", "why"),
    [
        ({"files": ["depth.0001.exr"], "remove": ["../victim.txt"]}, "'../victim.txt' is not"),
        ({"files": ["depth.0001.exr"], "remove": ["VICTIM"]}, "is not a file of the depth"),
        ({"files": ["depth.0001.exr", "../victim.txt"], "remove": []}, "is not a file"),
        ({"files": ["depth.0001.exr", "other.0001.exr"], "remove": []}, "is not a file"),
        ({"files": ["depth.0001.exr"]}, "`remove` is missing"),
        ({"remove": []}, "`files` is missing"),
        ({"files": "depth.0001.exr", "remove": []}, "`files` is missing or not a list"),
        ({"files": ["depth.0001.exr"], "remove": ["depth.0001.exr"]}, "both moved in and removed"),
        ([1, 2], "not a journal"),
        ({"files": ["depth.0001.exr", "../points.usda"], "remove": []}, "is not a file"),
        ({"files": ["depth.0001.exr"], "remove": ["points.usda"]}, "is not a file"),
    ],
    ids=[
        "dotdot",
        "absolute",
        "dotdot-in-files",
        "another-sequence",
        "no-remove",
        "no-files",
        "not-a-list",
        "both",
        "not-an-object",
        "points-outside",
        "points-removed",
    ],  # fmt: skip
)
def test_a_journal_naming_anything_but_the_sequences_files_is_left_for_a_person(
    tmp_path: Path, journal, why
) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("not yours")
    if isinstance(journal, dict) and journal.get("remove") == ["VICTIM"]:
        journal["remove"] = [str(victim)]  # an absolute path
    staging = cut_short_swap(folder, journal)
    before = listing(tmp_path)
    said: list[str] = []
    (entry,) = check_output(folder, message=said.append)
    assert entry["state"] == "swap journal refused"
    assert why in entry["detail"] and "left as it is for a person" in entry["detail"]
    assert "\n" not in entry["detail"] and said == []
    # nothing renamed, nothing removed, inside the folder or outside it
    assert listing(tmp_path) == before and victim.read_text() == "not yours"
    assert (staging / JOURNAL).exists()
    # a run of the sequence is refused the same way, before anything
    with pytest.raises(OutputError, match="left as it is for a person"):
        Publisher(folder, "depth", range(1, 5), "new", overwrite=True).check()
    assert listing(tmp_path) == before


def test_a_journal_naming_a_link_is_left_for_a_person(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    victim = tmp_path / "victim.exr"
    victim.write_bytes(b"not yours")
    staging = cut_short_swap(folder, {"files": ["depth.0001.exr"], "remove": ["depth.0009.exr"]})
    (folder / "depth.0009.exr").symlink_to(victim)
    before = listing(tmp_path)
    (entry,) = check_output(folder)
    assert entry["state"] == "swap journal refused" and "not a plain file" in entry["detail"]
    assert listing(tmp_path) == before and (folder / "depth.0009.exr").is_symlink()
    # a staged file that is a link
    (folder / "depth.0009.exr").unlink()
    (staging / "depth.0001.exr").unlink()
    (staging / "depth.0001.exr").symlink_to(victim)
    before = listing(tmp_path)
    (entry,) = check_output(folder)
    assert entry["state"] == "swap journal refused" and "staged 'depth.0001.exr'" in entry["detail"]
    assert listing(tmp_path) == before


def test_a_staging_folder_that_is_a_link_moves_nothing_out_of_its_target(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    write_run(folder, range(1, 3), "old", 1.0)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_depth_exr(elsewhere / "depth.0001.exr", np.full((4, 6), 7.0, np.float32))
    (elsewhere / JOURNAL).write_text(json.dumps({"files": ["depth.0001.exr"], "remove": []}))
    (folder / ".depth.staging").symlink_to(elsewhere)
    before = listing(tmp_path)
    (entry,) = check_output(folder)
    assert entry["state"] == "swap journal refused" and "is a link" in entry["detail"]
    assert listing(tmp_path) == before and values_in(folder) == {1.0}
    with pytest.raises(OutputError, match="is a link"):
        Publisher(folder, "depth", range(1, 3), "new", overwrite=True).check()
    assert listing(tmp_path) == before


def test_a_valid_journal_still_completes_the_swap_with_sidecars(tmp_path: Path) -> None:
    write_run(tmp_path, range(1, 5), "old", 1.0)
    (tmp_path / "depth_preview.mp4").write_bytes(b"old preview")
    publisher = Publisher(tmp_path, "depth", range(1, 3), "new", overwrite=True)
    publisher.check()
    with publisher.writing():
        for n in (1, 2):
            write_depth_exr(publisher.staging_path(n), np.full((4, 6), 2.0, np.float32))
            publisher.wrote(n)
        (publisher.staging / "depth.otio").write_text("{}")
    said: list[str] = []
    publisher.message = said.append
    removed = publisher.publish(["depth.otio"])
    assert sorted(p.name for p in removed) == [
        "depth.0003.exr", "depth.0004.exr", "depth_preview.mp4"
    ]  # fmt: skip
    assert said == [
        f"removed 2 frames and depth_preview.mp4 of the earlier sequence that the new one does "
        f"not have (3-4) from {tmp_path}"
    ]
    assert manifest(tmp_path)["files"] == ["depth.0001.exr", "depth.0002.exr", "depth.otio"]
    assert manifest(tmp_path)["state"] == "complete"
