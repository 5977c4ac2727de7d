"""Farm splitting (`infer --chunk K/N` + `finalize`) and the Ray executor: same EXRs as one run."""

import importlib.util

import numpy as np
import pytest

from rollingdepth_core.cli import main
from rollingdepth_core.exr import read_exr
from rollingdepth_core.sample import write_sample_video

FAST = ["--res", "64", "--dilations", "1", "3", "--device", "cpu", "--seed", "3"]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_sample_video(
        tmp_path_factory.mktemp("plate") / "plate.mp4", n_frames=12, height=48, width=80
    )


@pytest.fixture(scope="module")
def plain(video, tmp_path_factory, tiny_checkpoint):
    """The single-machine cached run everything else must reproduce."""
    root = tmp_path_factory.mktemp("plain")
    args = ["run", video, "-o", root / "out", "--cache", root / "cache", "--confidence"]
    assert main([*map(str, args), "--checkpoint", str(tiny_checkpoint), *FAST]) == 0
    return sorted((root / "out").glob("depth.*.exr"))


def assert_same_exrs(expected, folder):
    got = sorted(folder.glob("depth.*.exr"))
    assert [p.name for p in got] == [p.name for p in expected]
    for a, b in zip(expected, got, strict=True):
        pa, ma = read_exr(a)
        pb, mb = read_exr(b)
        assert set(pa) == set(pb)
        for channel in pa:
            np.testing.assert_array_equal(pa[channel], pb[channel])
        assert ma["rollingdepth/value_min"] == mb["rollingdepth/value_min"]
        assert ma["rollingdepth/value_max"] == mb["rollingdepth/value_max"]
        assert a.read_bytes() == b.read_bytes()  # the whole file, headers included


def cli(*args, checkpoint):
    return main([*map(str, args), "--checkpoint", str(checkpoint), *FAST])


def test_chunks_then_finalize_equal_one_run(video, plain, tmp_path, tiny_checkpoint, capsys):
    cache = tmp_path / "shared"
    assert cli("infer", video, "--cache", cache, "--chunk", "2/2", checkpoint=tiny_checkpoint) == 0
    capsys.readouterr()

    # finalize before every chunk is done: one line naming the missing blocks, exit 1
    out = tmp_path / "early"
    code = cli("finalize", video, "-o", out, "--cache", cache, checkpoint=tiny_checkpoint)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("rollingdepth: error: the cache")
    assert "lacks 1 of 2 snippet blocks (blocks 0;" in err[-1]
    assert not list(out.glob("*.exr"))

    assert cli("infer", video, "--cache", cache, "--chunk", "1/2", checkpoint=tiny_checkpoint) == 0
    out = tmp_path / "final"
    args = ("finalize", video, "-o", out, "--cache", cache, "--confidence")
    assert cli(*args, checkpoint=tiny_checkpoint) == 0
    assert_same_exrs(plain, out)


def test_chunk_argument_is_checked(video, tmp_path, tiny_checkpoint, capsys):
    code = cli("infer", video, "--cache", tmp_path, "--chunk", "3/2", checkpoint=tiny_checkpoint)
    assert code == 1
    assert "`--chunk` K/N needs 1 <= K <= N" in capsys.readouterr().err


def test_finalize_needs_a_cache(video, tmp_path, tiny_checkpoint, capsys):
    with pytest.raises(SystemExit):
        cli("finalize", video, "-o", tmp_path / "o", checkpoint=tiny_checkpoint)
    assert "--cache" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
def test_ray_executor_equals_one_run(video, plain, tmp_path, tiny_checkpoint):
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "ray"
        args = ("run", video, "-o", out, "--cache", tmp_path / "cache", "--confidence")
        assert cli(*args, "--executor", "ray", checkpoint=tiny_checkpoint) == 0
    finally:
        ray.shutdown()
    assert_same_exrs(plain, out)


def test_reference_refuses_the_cache(video, tmp_path, tiny_checkpoint, capsys):
    args = ("run", video, "-o", tmp_path / "o", "--cache", tmp_path / "c", "--reference")
    code = cli(*args, checkpoint=tiny_checkpoint)
    assert code == 1
    assert "`--reference` runs in memory" in capsys.readouterr().err
