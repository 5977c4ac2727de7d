"""`infer --chunk K/N` + `finalize` under a render farm's habits: a task run twice at once, a task
killed (SIGKILL) and retried, chunks finishing in any order; and the cache that makes them safe:
concurrent writers of one block never leave a torn block, a damaged block is caught on read."""

import multiprocessing
import signal

import numpy as np
import pytest

from rollingdepth_core.cache import CacheDamaged, SnippetCache
from rollingdepth_core.cli import main

from .test_farm import FAST, assert_same_exrs
from .test_farm_ray import cli, finish, local, plate, wait_for_blocks  # noqa: F401 - fixtures


def result_of(events):
    (result,) = [e for e in events if e["event"] == "result"]
    return result


def test_duplicate_killed_and_reordered_chunks_equal_one_run(
    plate,  # noqa: F811
    local,  # noqa: F811
    tmp_path,
    tiny_checkpoint,
):
    cache = tmp_path / "shared"

    def infer(k):
        return cli(
            "infer", plate, "--cache", cache, "--chunk", f"{k}/2", checkpoint=tiny_checkpoint
        )

    # chunk 2 (blocks 1, 3 and 5) is killed once its first block is in, then retried
    killed = infer(2)
    try:
        wait_for_blocks(cache, killed, 1)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    code, events, err = finish(infer(2))
    assert code == 0, err
    stats = result_of(events)["cache_stats"]
    assert stats["blocks_reused"] >= 1 and stats["blocks_reused"] + stats["blocks_computed"] == 3

    # the first chunk last, started twice at once, as a farm does when a node looks dead but
    # is not
    twins = [infer(1), infer(1)]
    for proc in twins:
        code, events, err = finish(proc)
        assert code == 0, err

    out = tmp_path / "out"
    code, events, err = finish(
        cli("finalize", plate, "-o", out, "--cache", cache, checkpoint=tiny_checkpoint)
    )
    assert code == 0, err
    assert result_of(events)["cache_stats"]["blocks_computed"] == 0
    assert_same_exrs(local, out)

    # every block whole and matching its digests; nothing of the killed writer left behind
    store = SnippetCache(cache)
    assert len(store.block_keys()) == 6
    for key in store.block_keys():
        assert store.open_block(key).shape[0] == store.block_meta(key)["shape"][0]
        store.load_reduced(key)
    assert not list(cache.glob("*/.tmp~*"))


def _write_block(folder, key, writer, barrier):
    cache = SnippetCache(folder)
    maps = np.full((4, 3, 64, 96), writer, np.float16)  # [b,L,H,W]
    reduced = np.full((4, 3, 6, 9), writer, np.float16)  # [b,L,h,w]
    barrier.wait()
    return cache.save_block(key, maps, reduced)


def _writer(folder, keys, writer, barrier, wins):
    for key in keys:
        if _write_block(folder, key, writer, barrier):
            wins.put((key, writer))


def test_concurrent_writers_of_one_block_never_tear_it(tmp_path):
    """Four processes write the same keys at the same instant, each with its own values: every
    block ends as exactly one writer's maps, reduced maps and min, and one writer wins each."""
    ctx = multiprocessing.get_context("fork")
    keys = [f"k{i:02d}" for i in range(12)]
    barrier, wins = ctx.Barrier(4), ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(tmp_path, keys, w, barrier, wins)) for w in range(1, 5)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    winners = {}
    while not wins.empty():
        key, writer = wins.get()
        assert key not in winners, "two writers both placed one block"
        winners[key] = writer
    cache = SnippetCache(tmp_path)
    assert cache.block_keys() == keys
    for key in keys:
        maps, reduced = cache.open_block(key), cache.load_reduced(key)
        writer = float(maps.flat[0])
        assert (maps == writer).all() and (reduced == writer).all()
        assert cache.block_meta(key)["min"] == writer == winners[key]
    assert not list(tmp_path.glob("blocks/.tmp~*"))


@pytest.fixture
def small(tmp_path_factory):
    from rollingdepth_core.sample import write_sample_video

    return write_sample_video(
        tmp_path_factory.mktemp("small") / "plate.mp4", n_frames=12, height=48, width=80
    )


def test_a_damaged_block_is_caught_moved_aside_and_recomputed(
    small, tmp_path, tiny_checkpoint, capsys
):
    def run(*args):
        return main([*map(str, args), "--checkpoint", str(tiny_checkpoint), *FAST])

    cache = tmp_path / "cache"
    assert run("run", small, "-o", tmp_path / "one", "--cache", cache) == 0
    store = SnippetCache(cache)
    key = store.block_keys()[0]
    maps = cache / "blocks" / key / "maps.npy"
    data = bytearray(maps.read_bytes())
    data[-3] ^= 0x40  # one bit of one pixel, as a bad disk or a cut copy would
    maps.write_bytes(bytes(data))
    capsys.readouterr()

    assert run("finalize", small, "-o", tmp_path / "two", "--cache", cache) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"rollingdepth: error: the cache entry {cache / 'blocks' / key}")
    assert "does not match its digest; moved aside to .damaged-" in err[-1]
    assert err[-1].endswith("Run the same command again to recompute it")
    assert not list((tmp_path / "two").glob("*.exr"))
    with pytest.raises(CacheDamaged):
        SnippetCache(cache).open_block(key)  # it is gone: a fresh reader does not trust it

    # the farm retries: infer recomputes just that block, finalize then matches the first run
    assert run("infer", small, "--cache", cache) == 0
    assert run("finalize", small, "-o", tmp_path / "two", "--cache", cache) == 0
    assert_same_exrs(sorted((tmp_path / "one").glob("depth.*.exr")), tmp_path / "two")


# ------------------------------------------------------------------------------ the job list
FARM_LOOP = r"""
set -eu
pids=""
final=""
while IFS= read -r cmd; do
    case "$cmd" in "#"*|"") continue ;; esac
    case "$cmd" in *" finalize "*) final="$cmd"; continue ;; esac
    bash -c "$cmd" > /dev/null 2>&1 &   # every infer job at once, on whatever is free
    pids="$pids $!"
done < "$1"
for pid in $pids; do wait "$pid"; done  # the dependency: finalize after every infer job
bash -c "$final" > /dev/null 2>&1
"""


def test_job_list_run_by_a_shell_loop_equals_one_run(
    plate,  # noqa: F811
    local,  # noqa: F811
    tmp_path,
    tiny_checkpoint,
):
    import json
    import shlex
    import subprocess
    import sys

    from .test_farm_ray import ENV

    program = ["--program", sys.executable, "--program=-m", "--program", "rollingdepth_core.cli"]
    args = ["jobs", plate, "-o", tmp_path / "out", "--cache", tmp_path / "cache", "--chunks", "2"]
    args += ["--checkpoint", tiny_checkpoint, *FAST, *program]
    jobs_cmd = [sys.executable, "-m", "rollingdepth_core.cli", *map(str, args)]
    script = subprocess.run(jobs_cmd, env=ENV, capture_output=True, text=True, check=True).stdout
    subprocess.run(
        [*jobs_cmd, "--json", tmp_path / "jobs.json"], env=ENV, capture_output=True, check=True
    )
    listed = json.loads((tmp_path / "jobs.json").read_text())
    commands = [line for line in script.splitlines() if not line.startswith("#")]
    assert commands == [shlex.join(job["command"]) for job in listed["jobs"]]
    assert [job["name"] for job in listed["jobs"]] == ["infer-1", "infer-2", "finalize"]
    assert listed["jobs"][-1]["depends_on"] == ["infer-1", "infer-2"]

    (tmp_path / "jobs.sh").write_text(script)
    loop = subprocess.run(
        ["bash", "-c", FARM_LOOP, "farm", tmp_path / "jobs.sh"], env=ENV, timeout=600
    )
    assert loop.returncode == 0
    assert_same_exrs(local, tmp_path / "out")


def test_job_list_routes_each_flag_to_the_commands_that_take_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["jobs", "plate.####.exr", "-o", "out", "--cache", "shared/cache", "--chunks", "2"]
    args += ["--executor", "ray", "--ray-address", "head:6379", "--overwrite", "--anchors"]
    args += ["pts.csv", "--no-cap-dilation", "--dilations", "1", "10", "--checkpoint", "org/x"]
    assert main(args + ["--json", "jobs.json"]) == 0
    import json

    jobs = json.loads((tmp_path / "jobs.json").read_text())["jobs"]
    infer, final = jobs[0]["command"], jobs[-1]["command"]
    assert infer[:3] == ["rollingdepth", "infer", str(tmp_path / "plate.####.exr")]
    assert infer[-2:] == ["--chunk", "1/2"] and jobs[1]["command"][-1] == "2/2"
    assert {"--executor", "--ray-address", "--no-cap-dilation"} <= set(infer)
    assert not {"--overwrite", "--anchors", "--output"} & set(infer)
    assert "--chunk" not in final
    assert {"--overwrite", "--anchors", "--output", "--no-cap-dilation"} <= set(final)
    assert "--overwrite" not in infer and "--executor" not in final
    assert final[final.index("--cache") + 1] == str(tmp_path / "shared/cache")
    assert final[final.index("--anchors") + 1] == str(tmp_path / "pts.csv")
    assert final[final.index("--checkpoint") + 1] == "org/x"  # a hub id stays as it is
    assert final[final.index("--dilations") + 1 : final.index("--dilations") + 3] == ["1", "10"]

    capsys.readouterr()
    assert main(["jobs", "p.mp4", "-o", "o", "--cache", "c", "--chunks", "0"]) == 1
    assert capsys.readouterr().err == "rollingdepth: error: `--chunks` must be at least 1; got 0\n"


def test_job_list_makes_the_camera_absolute_and_keeps_the_points_name(tmp_path, monkeypatch):
    """finalize starts in the farm's folder, not the submitter's: `--camera cam.chan` must name
    the submitter's file (it was passed on relative), while `--points` stays a file name in
    the output folder (which is made absolute itself)."""
    import json

    monkeypatch.chdir(tmp_path)
    args = ["jobs", "plate.####.exr", "-o", "out", "--cache", "c", "--chunks", "2"]
    args += ["--depth-mode", "depth", "--camera", "shot/cam.chan", "--points", "shot.usda"]
    assert main([*args, "--json", "jobs.json"]) == 0
    final = json.loads((tmp_path / "jobs.json").read_text())["jobs"][-1]["command"]
    assert final[final.index("--camera") + 1] == str(tmp_path / "shot" / "cam.chan")
    assert final[final.index("--points") + 1] == "shot.usda"
    assert final[final.index("--output") + 1] == str(tmp_path / "out")


def test_job_list_quotes_the_program_as_one_argument(tmp_path, monkeypatch, capsys):
    """A program path with a space stays one argument in the JSON and in the script (it was
    split into '/opt/Rolling' and 'Depth/rd')."""
    import json
    import shlex

    monkeypatch.chdir(tmp_path)
    args = ["jobs", "p.mp4", "-o", "o", "--cache", "c", "--chunks", "2"]
    assert main([*args, "--program", "/opt/Rolling Depth/rd", "--json", "jobs.json"]) == 0
    jobs = json.loads((tmp_path / "jobs.json").read_text())["jobs"]
    assert [job["command"][:2] for job in jobs] == [["/opt/Rolling Depth/rd", "infer"]] * 2 + [
        ["/opt/Rolling Depth/rd", "finalize"]
    ]
    capsys.readouterr()
    assert main([*args, "--program", "/opt/Rolling Depth/rd"]) == 0
    script = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert [shlex.split(line)[0] for line in script] == ["/opt/Rolling Depth/rd"] * 3


def test_job_options_take_no_abbreviations(capsys):
    """`--chunk 1/2` on `jobs` is an unknown option, not `--chunks` (it once failed as
    "invalid int value: '1/2'")."""
    args = ["jobs", "p.mp4", "-o", "o", "--cache", "c", "--chunks", "2", "--chunk", "1/2"]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert "unrecognized arguments: --chunk 1/2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "p.mp4", "-o", "o", "--over"])  # `--overwrite` only by its name
    assert "unrecognized arguments: --over" in capsys.readouterr().err


def test_more_chunks_than_blocks_are_clamped_with_a_warning(small, tmp_path, capsys):
    """12 frames, dilations 1 and 3: 2 snippet blocks, so `--chunks 100000` lists 2 infer jobs
    (it once listed 100,000) and says why."""
    import json

    args = ["jobs", small, "-o", tmp_path / "o", "--cache", tmp_path / "c", *FAST]
    assert main([*map(str, args), "--chunks", "100000", "--json", str(tmp_path / "j.json")]) == 0
    listed = json.loads((tmp_path / "j.json").read_text())
    assert listed["chunks"] == 2
    assert [job["name"] for job in listed["jobs"]] == ["infer-1", "infer-2", "finalize"]
    assert listed["jobs"][1]["command"][-2:] == ["--chunk", "2/2"]
    err = capsys.readouterr().err
    assert err.startswith("warning: `--chunks 100000`: the plate has 2 snippet block(s), so 2 ")
    assert main([*map(str, args), "--chunks", "2", "--json", str(tmp_path / "j.json")]) == 0
    assert "warning" not in capsys.readouterr().err
