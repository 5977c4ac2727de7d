"""The cost book: what a run will take on this machine, from what earlier runs measured."""

from __future__ import annotations

import json

import pytest

from rollingdepth_core import costs, protocol
from rollingdepth_core.cli import main
from rollingdepth_core.config import preset_config
from rollingdepth_core.costs import (
    CostBook,
    RunShape,
    estimate_run,
    estimate_text,
    model_parameters,
    run_shape,
)
from rollingdepth_core.model import DepthModel
from rollingdepth_core.plate import open_plate
from rollingdepth_core.sample import write_sample_video
from rollingdepth_core.session import DepthSession

FAST = ["--res", "64", "--dilations", "1", "3", "--dtype", "fp32", "--device", "cpu"]


def shape(pixels=(48, 64), snippets=20, frames=12) -> RunShape:
    return RunShape(frames=frames, snippets=snippets, processing=pixels, output=pixels)


def test_the_work_counted_is_the_model_passes_a_session_runs(tiny_checkpoint, tmp_path):
    """Capped dilations sharing their passes (1 10 25 -> 1 7 7 on 24 frames) and shots
    counted alike: the estimate's passes are the ones Run announces."""
    clip = write_sample_video(tmp_path / "c.mp4", n_frames=24, height=48, width=64)
    model = DepthModel.from_pretrained(str(tiny_checkpoint), device="cpu", dtype="fp32")
    for cuts, shots in (("none", [24]), ([10], [10, 14])):
        session = DepthSession(model, open_plate(clip), cuts=cuts)
        config = preset_config("fast", dilations=(1, 10, 25), processing_res=64, dtype="fp32")
        counted = run_shape(shots, (48, 64), (48, 64), config.dilations, config.snippet_len)
        assert counted.snippets == session.pending_snippets(config)


def test_one_earlier_run_is_the_cost_of_a_run_like_it(tmp_path):
    book = CostBook.load(tmp_path / "costs.json")
    book.record("k", shape(), {"snippets": 10.0, "encode": 2.0, "write": 1.0})
    again = CostBook.load(tmp_path / "costs.json")  # kept on disk
    estimate = again.estimate("k", shape())
    assert estimate.measured and estimate.seconds == pytest.approx(13.0)
    twice = again.estimate("k", shape(snippets=40, frames=24))  # per unit of work
    assert twice.stages["snippets"] == pytest.approx(20.0)
    assert twice.stages["encode"] == pytest.approx(4.0)


def test_two_sizes_give_a_fixed_part_and_a_per_pixel_part(tmp_path):
    book = CostBook.load(tmp_path / "costs.json")
    # 1 s of overhead plus 1 s per megapixel of passes x frames
    for pixels in ((100, 100), (400, 400)):
        s = shape(pixels)
        book.record("k", s, {"snippets": 1.0 + s.work("snippets")})
    middle = shape((200, 200))
    assert book.estimate("k", middle).seconds == pytest.approx(1.0 + middle.work("snippets"))


def test_an_unreadable_book_starts_afresh(tmp_path):
    path = tmp_path / "costs.json"
    path.write_text("{not json")
    assert CostBook.load(path).observations == {}


def test_the_clock_follows_the_stage_and_scales_the_rest():
    clock = protocol.RemainingClock({"encode": 10.0, "snippets": 100.0, "write": 10.0}, start=0)
    assert clock.update("encode", 0, 10, now=0) == pytest.approx(120.0)
    # encoding runs twice as slow as estimated (2 s a frame, reported every frame): once
    # two reports followed the first, its rate and the stages to come are scaled by it
    for done in range(1, 5):
        clock.update("encode", done, 10, now=2 * done)
    assert clock.update("encode", 5, 10, now=10) == pytest.approx(10 + 2 * 110)
    left = clock.update("snippets", 0, 50, now=20)
    assert left == pytest.approx(2 * 100 + 2 * 10)


def test_a_run_teaches_the_estimate(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("ROLLINGDEPTH_CONFIG_DIR", str(tmp_path / "config"))
    clip = write_sample_video(tmp_path / "c.mp4", n_frames=12, height=48, width=64)
    args = ["estimate", "--plate-size", "64x48", "--shots", "12", "--checkpoint",
            str(tiny_checkpoint), *FAST, "--json"]  # fmt: skip
    first = json.loads(_stdout(args))
    assert first["measured"] is False and first["frames"] == 12
    assert main(["run", str(clip), "-o", str(tmp_path / "out"), "--checkpoint",
                 str(tiny_checkpoint), *FAST]) == 0  # fmt: skip
    book = json.loads((tmp_path / "config" / "costs.json").read_text())
    (key,) = book["observations"]
    assert key.startswith("cpu|fp32|unet ") and key.endswith("|run")
    second = json.loads(_stdout(args))
    assert second["measured"] is True
    seconds = book["observations"][key][0]["seconds"]
    # a run inside this test's process started no process: its start-up stays the first guess
    assert "start" not in seconds and second["stages"]["start"] == costs.START_SECONDS
    expected = sum(seconds.values()) + costs.START_SECONDS
    assert second["seconds"] == pytest.approx(expected, rel=0.05, abs=0.2)


def test_a_processing_size_larger_than_the_plate_offers_the_plate_size(tmp_path):
    config = preset_config("fast", processing_res=768, dtype="fp32")
    book = CostBook.load(tmp_path / "costs.json")
    report = estimate_run([24], (48, 64), config, "cpu", "fp32", None, book=book)
    assert report["larger_than_plate"] and report["processing_size"] == [576, 768]
    faster = report["at_plate_size"]
    assert faster["processing_size"] == [48, 64] and faster["seconds"] < report["seconds"] / 10
    text = estimate_text(report)
    assert "larger than the plate (64x48)" in text and "rough" in text


def test_model_parameters_come_from_the_headers(tiny_checkpoint):
    found = model_parameters(tiny_checkpoint)
    assert found["unet"] > 0 and found["vae"] > 0
    assert model_parameters(None) == {}


def _stdout(args) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    return out.getvalue().strip().splitlines()[-1]


def test_a_cached_run_teaches_the_estimate_only_when_it_did_the_whole_work(
    tiny_checkpoint, tmp_path, monkeypatch
):
    """The Blender add-on runs every strip with a cache (its kept predictions): a cold cache
    is a whole run's work (the model loads on first use, inside the encode stage: recorded as
    the load); a rerun that reused the cache ran no model and must not teach the book that
    predicting is free."""
    monkeypatch.setenv("ROLLINGDEPTH_CONFIG_DIR", str(tmp_path / "config"))
    clip = write_sample_video(tmp_path / "c.mp4", n_frames=12, height=48, width=64)
    run = ["run", str(clip), "--checkpoint", str(tiny_checkpoint), "--cache",
           str(tmp_path / "cache"), *FAST]  # fmt: skip
    assert main([*run, "-o", str(tmp_path / "a")]) == 0
    book = json.loads((tmp_path / "config" / "costs.json").read_text())
    ((key, (entry,)),) = book["observations"].items()
    assert entry["seconds"]["load"] > 0 and entry["work"]["load"] > 0
    assert entry["work"]["snippets"] > 0
    assert main([*run, "-o", str(tmp_path / "b"), "--depth-mode", "normalized"]) == 0
    again = json.loads((tmp_path / "config" / "costs.json").read_text())
    assert again["observations"] == book["observations"]


def test_a_rerun_whose_model_work_is_kept_is_estimated_as_a_re_alignment(
    tiny_checkpoint, tmp_path, monkeypatch
):
    """`estimate --kept` (the add-on's rerun with the strip's kept predictions): no model
    passes and no model to load; before, such a rerun was priced as the first run."""
    monkeypatch.setenv("ROLLINGDEPTH_CONFIG_DIR", str(tmp_path / "config"))
    args = ["estimate", "--plate-size", "64x48", "--shots", "12", "--checkpoint",
            str(tiny_checkpoint), *FAST, "--json"]  # fmt: skip
    full = json.loads(_stdout(args))
    kept = json.loads(_stdout([*args[:-1], "--kept", "--json"]))
    assert {"load", "snippets"} <= set(full["stages"])
    assert not {"load", "snippets"} & set(kept["stages"]), kept["stages"]
    assert kept["seconds"] < full["seconds"]


def _steady_run(warm_up=6.0, per_batch=3.0, batches=32):
    """A run's progress reports (elapsed, stage, done, total): load 2 s, encode 1 s, 32
    batches of snippets (the first with its warm-up), write 2 s; and when it ended."""
    events, t = [(2.0, "load", 0, 1), (4.0, "load", 1, 1)], 4.0
    for done in range(1, 5):
        events.append((t + 0.25 * done, "encode", done, 4))
    t += 1.0
    for done in range(1, batches + 1):
        t += warm_up if done == 1 else per_batch
        events.append((t, "snippets", done, batches))
    for done in range(1, 5):
        events.append((t + 0.5 * done, "write", done, 4))
    return events, t + 2.0


def test_time_left_follows_the_measured_rate_after_a_few_reports():
    """A first estimate 10x too high (the rough one): from the third report of the long
    stage on, the time left is the measured pace's (within 25 %), not the estimate's."""
    events, end = _steady_run()
    rough = {"start": 20.0, "load": 20.0, "encode": 10.0, "snippets": 1000.0, "write": 20.0}
    left = protocol.remaining_times(rough, events)
    snippets = [i for i, e in enumerate(events) if e[1] == "snippets"]
    for i in snippets[2:]:
        truth = end - events[i][0]
        assert left[i] == pytest.approx(truth, rel=0.25), (events[i], left[i], truth)
    # an estimate that was right stays right from the start
    right = {"start": 2.0, "load": 2.0, "encode": 1.0, "snippets": 99.0, "write": 2.0}
    left = protocol.remaining_times(right, events)
    for i in snippets:
        assert left[i] == pytest.approx(end - events[i][0], rel=0.25)


def test_a_rough_first_guess_gives_way_to_the_stages_own_pace_at_once():
    """A first guess wrong by a different factor per stage (as the panel's first run of a tiny
    model at 768 px: load guessed low, the model passes 10x high): a clock told the guess is
    rough says, at the long stage's first report, its pace with the warm-up (under 2.5x the
    truth) and from its second on the measured pace's time (within 25 %). Trusting the guess
    there said 26x the truth (the walkthrough's panel: 'about 16 min left' with under 2 min
    to go)."""
    events, end = _steady_run()
    guess = {"start": 0.5, "load": 0.5, "encode": 1.0, "snippets": 1000.0, "write": 2.0}
    snippets = [i for i, e in enumerate(events) if e[1] == "snippets"]
    first = snippets[0]
    truth = end - events[first][0]
    left = protocol.remaining_times(guess, events, rough=True)
    assert truth < left[first] < 2.5 * truth
    for i in snippets[1:]:
        if end - events[i][0] > 10:  # the stage's bulk (the guess still scales what follows)
            assert left[i] == pytest.approx(end - events[i][0], rel=0.25), (events[i], left[i])
    measured = protocol.remaining_times(guess, events)  # a measured estimate: trusted longer
    assert measured[first] > 10 * truth


@pytest.mark.parametrize("rough", [True, False])
def test_a_finished_step_asked_again_counts_down(rough):
    """A status line asks the clock again with the same report as time passes: after a
    step's last unit, the waiting is the next step's, so the time left goes down (Blender's
    walkthrough, 'reading the plate 24/24' asked every 10 s: about 41 min, 1 h 23 min,
    2 h 4 min left, the finished step's growing time scaling the model passes to come)."""
    guess = {"load": 2.0, "encode": 1.0, "snippets": 100.0, "write": 2.0}
    clock = protocol.RemainingClock(guess, start=0.0, rough=rough)
    clock.update("load", 1, 1, now=2.0)
    clock.update("encode", 12, 24, now=4.0)
    said = [clock.update("encode", 24, 24, now=t) for t in (6.0, 16.0, 26.0, 36.0)]
    assert all(b < a for a, b in zip(said, said[1:], strict=False)), said
    assert said[0] <= 2 * 102.0 * (1 if rough else 20), said


def test_time_left_from_a_real_run_and_its_start_up_learned(tiny_checkpoint, tmp_path):
    """One run through the command line, in its own process as a front-end starts it: the
    book learns the process's start-up (Python, torch) besides the model's load, and its
    progress reports, replayed against an estimate 20x too high, give a time left that
    follows the run: within 3x the truth plus 2 s, where the 20x estimate alone would say 20x.
    (A machine whose load changes mid-run changes the pace no clock can foresee: with a bpy
    run starting beside it, 8.1 s were left by the first half's pace when 2.5 s remained.)"""
    import os
    import subprocess
    import sys
    import time

    clip = write_sample_video(tmp_path / "c.mp4", n_frames=12, height=48, width=64)
    env = {**os.environ, "ROLLINGDEPTH_CONFIG_DIR": str(tmp_path / "config")}
    clock = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "rollingdepth_core.cli", "run", str(clip), "-o",
         str(tmp_path / "out"), "--checkpoint", str(tiny_checkpoint), *FAST, "--progress",
         "json"], capture_output=True, text=True, env=env, check=True, timeout=600,
    )  # fmt: skip
    wall = time.perf_counter() - clock
    book = json.loads((tmp_path / "config" / "costs.json").read_text())
    ((key, (entry,)),) = book["observations"].items()
    assert 0 < entry["seconds"]["start"] < wall and entry["seconds"]["load"] > 0
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    events = [(e["elapsed"], e["stage"], e["done"], e["total"]) for e in lines
              if e["event"] == protocol.EVENT_PROGRESS]  # fmt: skip
    end = events[-1][0]
    pessimistic = {k: 20 * v for k, v in entry["seconds"].items() if k != "start"}
    left = protocol.remaining_times(pessimistic, events)
    after_load = [i for i, e in enumerate(events) if e[1] not in ("load",)]
    for i in after_load:
        truth = end - events[i][0]
        assert left[i] <= 3 * truth + 2.0, (events[i], left[i], truth)


def test_fixed_costs_stay_and_passes_grow_as_the_model_does(tiny_checkpoint, tmp_path):
    """One earlier run at 64x48: the process's start-up and the model's load are the same
    at any size; a tiny model's passes are much overhead (4x the pixels: under 4x
    the time), a full-size model's grow with the pixels and faster (its attention)."""
    tiny = model_parameters(tiny_checkpoint)
    book = CostBook.load(tmp_path / "costs.json")
    small = run_shape([12], (48, 64), (48, 64), (1, 3), parameters=tiny)
    book.record("k", small, {"start": 2.0, "load": 4.0, "snippets": 0.3, "write": 0.1})
    large = run_shape([12], (96, 128), (96, 128), (1, 3), parameters=tiny)
    estimate = book.estimate("k", large)
    assert estimate.stages["start"] == 2.0 and estimate.stages["load"] == 4.0
    assert 0.3 < estimate.stages["snippets"] < 0.3 * 3.5
    assert 0.1 < estimate.stages["write"] <= 0.1 * 4
    full = {}  # SD2's sizes
    small, large = (run_shape([12], (h, w), (h, w), (1, 3), parameters=full)
                    for h, w in ((384, 512), (768, 1024)))  # fmt: skip
    assert large.work("snippets") > 4 * small.work("snippets")


def test_a_book_of_other_units_starts_afresh(tmp_path):
    path = tmp_path / "costs.json"
    path.write_text(json.dumps({"observations": {"k": [{"work": {"snippets": 1.0},
                                                        "seconds": {"snippets": 5.0}}]}}))  # fmt: skip
    assert CostBook.load(path).observations == {}
    book = CostBook.load(path)
    book.record("k", shape(), {"snippets": 1.0})
    assert CostBook.load(path).observations["k"][0]["seconds"] == {"snippets": 1.0}


def test_the_first_guess_runs_at_this_devices_measured_pace():
    """The networks' pace is timed here (a matmul), not a table's: a device twice as fast
    halves the networks' stages and nothing else."""
    flops = costs.device_flops("cpu")
    assert 1e8 < flops < 1e14
    s = run_shape([12], (48, 64), (384, 512), (1, 3))
    slow, fast = costs.first_guess(s, "cpu", flops), costs.first_guess(s, "cpu", 2 * flops)
    assert fast.stages["snippets"] < 0.55 * slow.stages["snippets"]
    assert fast.stages["load"] == slow.stages["load"]


# A full-size (SD2-sized random weights) CPU run, as the add-on sees it: 8 frames of a
# 128x96 plate at 128 px, 6 model passes reported in 3 batches; seconds since the process
# was started (align, merge and write: their first and last reports). It ended at 87.0 s.
FULL_SIZE_RUN = [
    (2.03, "load", 0, 1), (12.96, "load", 1, 1), (17.8, "encode", 4, 8),
    (22.07, "encode", 8, 8), (39.63, "snippets", 2, 6), (64.49, "snippets", 4, 6),
    (85.62, "snippets", 6, 6), (85.64, "align", 1, 50), (85.67, "align", 50, 50),
    (85.67, "merge", 1, 8), (85.67, "merge", 8, 8), (85.73, "write", 1, 8),
    (85.82, "write", 8, 8), (85.9, "publish", 0, 1), (85.95, "publish", 1, 1),
]  # fmt: skip
FULL_SIZE_GUESS = {"start": 3.0, "load": 9.83, "encode": 8.28, "snippets": 55.35,
                   "align": 0.01, "merge": 0.01, "write": 0.04, "publish": 0.05}  # fmt: skip


@pytest.mark.parametrize("off", [1, 10])
def test_time_left_of_a_recorded_full_size_run(off):
    """The recorded run, its first guess right and 10x too high: from the end of the encode
    stage on, the time left is within 25 % of the truth (the old clock, from the right guess,
    said 89 s with 65 left and 115 s with 47 left: it trusted a stage's estimate until a
    quarter of it was done, and ignored the start-up's and the stage in progress's pace)."""
    guess = {k: off * v for k, v in FULL_SIZE_GUESS.items()}
    left = protocol.remaining_times(guess, FULL_SIZE_RUN)
    for (t, stage, done, _), said in list(zip(FULL_SIZE_RUN, left, strict=True))[3:6]:
        assert said == pytest.approx(87.0 - t, rel=0.25), (t, stage, done, said)
    assert all(said < 3.0 for said in left[6:])
