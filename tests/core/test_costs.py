"""The cost book: what a run will take on this machine, from what earlier runs measured."""

from __future__ import annotations

import json

import pytest

from rollingdepth_core import protocol
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
    # encoding runs twice as slow as estimated: the stages to come are scaled alike
    assert clock.update("encode", 5, 10, now=10) == pytest.approx(10 + 110)
    left = clock.update("snippets", 0, 50, now=20)
    assert left == pytest.approx(2 * 100 + 2 * 10)
    assert clock.update("snippets", 25, 50, now=70) == pytest.approx(50 + 20)


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
    assert second["seconds"] == pytest.approx(sum(seconds.values()), rel=0.05, abs=0.2)


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


def test_a_stage_just_begun_leans_on_its_estimate():
    """One batch of 32 done fast (warm-up, decoding deferred to later batches): the rate alone
    would say 31 s; a quarter-trusted rate keeps most of the 100 s estimated."""
    clock = protocol.RemainingClock({"snippets": 100.0}, start=0)
    clock.update("snippets", 0, 32, now=0)
    left = clock.update("snippets", 1, 32, now=1)
    trust = protocol.RATE_TRUST / 32
    assert left == pytest.approx(trust * 31 + (1 - trust) * 99)
    assert clock.update("snippets", 16, 32, now=50) == pytest.approx(50)  # rate alone now


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
    assert entry["seconds"]["load"] > 0 and entry["work"]["load"] == 1.0
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
