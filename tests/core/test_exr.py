"""EXR round trips: channels, pixel types, metadata, windows, compression, atomic writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rollingdepth_core.errors import InputError, OutputError
from rollingdepth_core.exr import read_exr, write_depth_exr

H, W = 12, 20


@pytest.fixture
def depth() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0.5, 80.0, size=(H, W)).astype(np.float32)


@pytest.mark.parametrize("compression", ["none", "rle", "zips"])
def test_compression_is_chosen_and_round_trips(tmp_path: Path, depth, compression) -> None:
    path = tmp_path / "depth.1001.exr"
    write_depth_exr(path, depth, extra_channels={"P.X": depth * 2}, compression=compression)
    channels, header = read_exr(path)
    assert header["compression"] == compression
    np.testing.assert_array_equal(channels["P.X"], depth * 2)


def test_float_round_trip_with_metadata(tmp_path: Path, depth: np.ndarray) -> None:
    path = tmp_path / "depth.1001.exr"
    metadata = {"checkpoint": "prs-eth/rollingdepth-v1-0", "frame": 1001, "scale": 0.25}
    write_depth_exr(path, depth, metadata=metadata)

    channels, header = read_exr(path)
    assert list(channels) == ["Z"]
    assert channels["Z"].dtype == np.float32 and channels["Z"].shape == (H, W)
    np.testing.assert_array_equal(channels["Z"], depth)
    assert header["channel_formats"] == {"Z": "float"}
    assert header["compression"] == "zip"
    assert header["z_channel"] == 0
    assert header["data_window"] == header["display_window"] == (0, 0, W, H)
    assert header["rollingdepth/checkpoint"] == "prs-eth/rollingdepth-v1-0"
    assert header["rollingdepth/frame"] == 1001 and isinstance(header["rollingdepth/frame"], int)
    assert header["rollingdepth/scale"] == pytest.approx(0.25)


def test_half_round_trip(tmp_path: Path, depth: np.ndarray) -> None:
    path = tmp_path / "half.exr"
    write_depth_exr(path, depth, half=True)
    write_depth_exr(tmp_path / "float.exr", depth)
    channels, header = read_exr(path)
    assert header["channel_formats"] == {"Z": "half"}
    assert channels["Z"].dtype == np.float32
    np.testing.assert_allclose(channels["Z"], depth, rtol=1e-3)
    assert path.stat().st_size < (tmp_path / "float.exr").stat().st_size


def test_named_depth_channel_and_extra_channels(tmp_path: Path, depth: np.ndarray) -> None:
    path = tmp_path / "layers.exr"
    confidence = np.linspace(0, 1, H * W, dtype=np.float32).reshape(H, W)
    write_depth_exr(path, depth, channel="depth.Z", extra_channels={"confidence": confidence})
    channels, header = read_exr(path)
    assert set(channels) == {"depth.Z", "confidence"}
    np.testing.assert_array_equal(channels["depth.Z"], depth)
    np.testing.assert_array_equal(channels["confidence"], confidence)
    assert header["channel_formats"] == {"depth.Z": "float", "confidence": "float"}
    # The file orders channels by name; `z_channel` points at the depth channel there.
    assert list(channels)[header["z_channel"]] == "depth.Z"


def test_write_leaves_no_temporary_files_and_replaces(tmp_path: Path, depth: np.ndarray) -> None:
    path = tmp_path / "depth.exr"
    write_depth_exr(path, depth)
    write_depth_exr(path, depth * 2)
    assert os.listdir(tmp_path) == ["depth.exr"]
    np.testing.assert_array_equal(read_exr(path)[0]["Z"], depth * 2)


def test_missing_folder_is_an_output_error(tmp_path: Path, depth: np.ndarray) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        write_depth_exr(tmp_path / "nowhere" / "depth.exr", depth)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_failed_write_reports_the_writers_reason(depth: np.ndarray) -> None:
    # /proc refuses new files even to root, so the failure comes from the writer itself.
    with pytest.raises(OutputError, match=r"cannot write the file: .*No such file or directory"):
        write_depth_exr("/proc/depth.exr", depth)


def _as_unprivileged(work) -> None:
    """Run ``work()`` as the user 'nobody' (root ignores permissions, and tests and CI run as
    root here): in a forked child that drops its privileges; AssertionError unless it passed.
    Not as root: here, as the user the tests run as."""
    import pwd
    import traceback

    if os.geteuid() != 0:
        work()
        return
    nobody = pwd.getpwnam("nobody")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            assert os.geteuid() == nobody.pw_uid
            work()
            code = 0
        except BaseException:
            os.write(write, traceback.format_exc().encode())
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        report = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"as 'nobody': {report}"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_unwritable_folder_keeps_existing_file(depth: np.ndarray) -> None:
    """An EXR over one in a folder that takes no files fails and keeps the old one; as root
    (which ignores permissions) the write runs as the unprivileged user 'nobody'."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="rd-unwritable-"))  # not under root's 0700 tmp
    try:
        folder.chmod(0o755)
        path = folder / "depth.exr"
        write_depth_exr(path, depth)  # the writer's first use: imports done before the fork
        before = path.read_bytes()
        if os.geteuid() == 0:
            import pwd

            nobody = pwd.getpwnam("nobody")
            os.chown(folder, nobody.pw_uid, nobody.pw_gid)
            os.chown(path, nobody.pw_uid, nobody.pw_gid)

        def work():
            folder.chmod(0o500)
            try:
                with pytest.raises(OutputError):
                    write_depth_exr(path, depth * 2)
            finally:
                folder.chmod(0o700)

        _as_unprivileged(work)
        assert path.read_bytes() == before
        assert os.listdir(folder) == ["depth.exr"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_rejected_write_keeps_existing_file(tmp_path: Path, depth: np.ndarray) -> None:
    path = tmp_path / "depth.exr"
    write_depth_exr(path, depth)
    before = path.read_bytes()
    bad = depth.copy()
    bad[3, 4] = np.nan
    with pytest.raises(OutputError, match="NaN"):
        write_depth_exr(path, bad)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["depth.exr"]


def test_target_that_is_a_folder(tmp_path: Path, depth: np.ndarray) -> None:
    (tmp_path / "depth.exr").mkdir()
    (tmp_path / "depth.exr" / "keep").write_text("x")
    with pytest.raises(OutputError, match="depth.exr"):
        write_depth_exr(tmp_path / "depth.exr", depth)
    assert sorted(os.listdir(tmp_path)) == ["depth.exr"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"depth": np.zeros((2, 3, 1), np.float32)}, r"\[H,W\]"),
        ({"depth": np.zeros((2, 3), np.int32)}, "must be float"),
        ({"depth": np.full((2, 3), np.inf, np.float32)}, "NaN or infinite"),
        ({"half": True, "depth": np.full((2, 3), 1e6, np.float32)}, "HALF range"),
        ({"extra_channels": {"confidence": np.zeros((3, 3), np.float32)}}, "confidence"),
        ({"channel": ""}, "non-empty"),
        ({"extra_channels": {"Z": np.ones((2, 3), np.float32)}}, "depth channel's name"),
        ({"metadata": {"flag": True}}, "flag"),
        ({"metadata": {"list": [1, 2]}}, "str, int or float"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    arguments = {"depth": np.ones((2, 3), np.float32), **kwargs}
    with pytest.raises(OutputError, match=message):
        write_depth_exr(tmp_path / "bad.exr", **arguments)
    assert os.listdir(tmp_path) == []


def test_read_missing_exr_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="missing.exr"):
        read_exr(tmp_path / "missing.exr")


def test_offset_display_window_and_pixel_aspect(tmp_path: Path, depth: np.ndarray) -> None:
    path = tmp_path / "windowed.exr"
    write_depth_exr(path, depth, display_window=(100, -20, W, H), pixel_aspect=2.0)
    channels, header = read_exr(path)
    assert header["display_window"] == header["data_window"] == (100, -20, W, H)
    assert header["PixelAspectRatio"] == pytest.approx(2.0)
    np.testing.assert_array_equal(channels["Z"], depth)


def test_data_window_overscan_repeats_edges_and_crop_cuts(tmp_path: Path, depth: np.ndarray):
    # overscan: 2 pixels left and 1 above the display window, 3 more on the right
    write_depth_exr(
        tmp_path / "over.exr", depth, display_window=(10, 5, W, H), data_window=(8, 4, W + 5, H + 1)
    )
    channels, header = read_exr(tmp_path / "over.exr")
    assert header["data_window"] == (8, 4, W + 5, H + 1)
    assert header["display_window"] == (10, 5, W, H)
    stored = channels["Z"]
    np.testing.assert_array_equal(stored[1:, 2 : 2 + W], depth)
    np.testing.assert_array_equal(stored[0, 2 : 2 + W], depth[0])
    np.testing.assert_array_equal(stored[1:, 0], depth[:, 0])
    np.testing.assert_array_equal(stored[1:, -1], depth[:, -1])

    write_depth_exr(
        tmp_path / "crop.exr", depth, display_window=(0, 0, W, H), data_window=(3, 2, 5, 4)
    )
    channels, header = read_exr(tmp_path / "crop.exr")
    assert header["data_window"] == (3, 2, 5, 4)
    np.testing.assert_array_equal(channels["Z"], depth[2:6, 3:8])


def test_window_that_does_not_fit_the_maps(tmp_path: Path, depth: np.ndarray) -> None:
    with pytest.raises(OutputError, match="display window"):
        write_depth_exr(tmp_path / "bad.exr", depth, display_window=(0, 0, W + 1, H))
    with pytest.raises(OutputError, match="data window"):
        write_depth_exr(tmp_path / "bad.exr", depth, data_window=(0, 0, 0, H))
    assert os.listdir(tmp_path) == []


def _fill(folder: Path) -> None:
    """Write a filler file until the disk under ``folder`` is full."""
    with open(folder / "filler", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 512)
        except OSError:
            pass


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 256 KiB tmpfs (needs root and a kernel that lets us mount)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_full_disk_never_replaces_a_good_file(small_disk: Path, depth: np.ndarray) -> None:
    # Small files are the dangerous case: OpenImageIO buffers them whole and reports
    # success although the bytes never reach the full disk (a 0-byte file).
    first = small_disk / "depth.1001.exr"
    write_depth_exr(first, depth)
    before = first.read_bytes()
    _fill(small_disk)
    with pytest.raises(OutputError, match=r"depth\.1001\.exr.*does not read back"):
        write_depth_exr(first, depth * 2)
    assert first.read_bytes() == before
    np.testing.assert_array_equal(read_exr(first)[0]["Z"], depth)
    with pytest.raises(OutputError, match=r"depth\.1002\.exr"):
        write_depth_exr(small_disk / "depth.1002.exr", depth)
    assert sorted(os.listdir(small_disk)) == ["depth.1001.exr", "filler"]


_SIZE_LIMITED_WRITE = """
import resource, signal, sys
import numpy as np
from rollingdepth_core.errors import OutputError
from rollingdepth_core.exr import write_depth_exr
depth = np.random.default_rng(1).uniform(0, 1, (16, 16)).astype(np.float32)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (512, 512))
try:
    write_depth_exr(sys.argv[1], depth)
except OutputError as exc:
    print(exc)
    sys.exit(3)
"""


@pytest.mark.skipif(os.name != "posix", reason="needs RLIMIT_FSIZE")
def test_failed_write_of_a_rerun_keeps_the_earlier_file(tmp_path: Path, depth: np.ndarray):
    # The injected failure is the kernel refusing bytes past a file-size limit, a real
    # write error below OpenImageIO, as on a full disk.
    path = tmp_path / "depth.1001.exr"
    write_depth_exr(path, depth)
    before = path.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-c", _SIZE_LIMITED_WRITE, str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert proc.returncode == 3, proc.stderr
    assert "depth.1001.exr" in proc.stdout
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["depth.1001.exr"]
