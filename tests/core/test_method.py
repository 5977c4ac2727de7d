"""The stage sequence over both stores: shapes, planning, and the two stores agreeing."""

import numpy as np
import pytest

from rollingdepth_core.alignment import covering_order
from rollingdepth_core.config import preset_config
from rollingdepth_core.errors import InputError
from rollingdepth_core.executors import LocalExecutor
from rollingdepth_core.method import make_plan, run_method
from rollingdepth_core.model import DepthModel
from rollingdepth_core.sample import sample_frame
from rollingdepth_core.stores import DiskStore, MemoryStore

# A disk store keeps snippets in float16 (relative precision 2**-11 ~ 4.9e-4 of values in
# [-1, 1]); after co-alignment, the merge and renormalisation the clip differs from the
# in-memory float32 run by about one such step: measured 5.7e-4 (no refinement) and 3.7e-5
# (2 refinement steps) on this test's clip; the bound leaves room for other CPUs' rounding.
FLOAT16_CLIP_TOLERANCE = 5e-3


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return DepthModel.from_pretrained(str(tiny_checkpoint), device="cpu", dtype="fp32")


def run_in(store, model, frames, config):
    (result,) = run_method(
        lambda: iter(frames), range(len(frames)), config, store, LocalExecutor(), lambda: model
    )
    try:
        return result, result.to_array()
    finally:
        store.close()


def test_odd_sizes_are_padded_and_cropped_back(model):
    frames = [sample_frame(i, 5, 37, 51) for i in range(5)]
    config = preset_config("fast", dilations=(1,), processing_res=0, dtype="fp32")
    result, depth = run_in(MemoryStore(), model, frames, config)
    assert depth.shape == (5, 37, 51)
    assert result.size == (37, 51)
    assert np.isfinite(depth).all()
    assert depth.min() == -1.0 and depth.max() <= 1 + 1e-6
    assert result.value_range == (float(depth.min()), float(depth.max()))


def test_duplicate_dilations_are_predicted_once(model, monkeypatch):
    calls = []
    original = model.predict_snippets

    def counting(latents, noise, indices, *args, **kwargs):
        calls.append(indices.shape)
        return original(latents, noise, indices, *args, **kwargs)

    monkeypatch.setattr(model, "predict_snippets", counting)
    frames = [sample_frame(i, 8, 32, 32) for i in range(8)]
    config = preset_config("fast", dilations=(1, 10, 25), processing_res=32, dtype="fp32")
    result, _ = run_in(MemoryStore(), model, frames, config)
    assert result.plan.dilations == [1, 1, 1]  # 8 frames: int(8/3)-1 = 1
    assert len(calls) == 1 and calls[0] == (6, 3)
    assert len(result.plan.blocks) == 1


def test_plan_blocks_cover_every_snippet_once():
    config = preset_config("fast", dilations=(1, 3), dtype="fp32")
    plan = make_plan(40, config, block_snippets=16)
    assert [len(b.indices) for b in plan.blocks] == [16, 16, 6, 16, 16, 2]
    cover = covering_order(plan.indices, plan.n_frames)
    for f in (0, 7, 39):
        for i, n, j in cover[f].tolist():
            assert plan.indices[i][n, j] == f
            block, row = plan.block_of(plan.dilations[i], n)
            assert block.indices[row, j] == f
    whole = make_plan(40, config, block_snippets=None)
    assert [len(b.indices) for b in whole.blocks] == [38, 34]


def test_mixed_frame_sizes_are_refused(model):
    frames = [sample_frame(0, 3, 32, 32), sample_frame(1, 3, 32, 40), sample_frame(2, 3, 32, 32)]
    with pytest.raises(InputError, match="one size"):
        run_in(MemoryStore(), model, frames, preset_config("fast", processing_res=32,
                                                            dtype="fp32"))  # fmt: skip


@pytest.mark.parametrize("refine_steps", [0, 2])
def test_disk_store_equals_memory_store_within_float16(model, tmp_path, refine_steps):
    frames = [sample_frame(i, 20, 48, 64) for i in range(20)]
    config = preset_config(
        "fast", dilations=(1, 4), processing_res=64, dtype="fp32", batch_size=4,
        refine_steps=refine_steps, confidence=True,
    )  # fmt: skip
    mem_result, mem = run_in(MemoryStore(), model, frames, config)
    disk_result, disk = run_in(DiskStore(tmp_path / "cache", "tiny"), model, frames, config)
    assert disk.shape == mem.shape == (20, 48, 64)
    assert np.abs(disk - mem).max() <= FLOAT16_CLIP_TOLERANCE
    assert disk_result.plan.dilations == mem_result.plan.dilations
    np.testing.assert_allclose(
        np.concatenate(disk_result.alignment.scales),
        np.concatenate(mem_result.alignment.scales),
        rtol=FLOAT16_CLIP_TOLERANCE,
    )


@pytest.mark.parametrize("store_kind", ["memory", "disk"])
def test_reading_the_plate_is_said_before_its_first_group_is_encoded(model, tmp_path, store_kind):
    """A progress line names the stage under way: at a large size the first group of frames
    takes a minute, during which the line showed the model's finished loading at 100 %."""
    events = []
    encoding = []
    original = model.encode

    def encode(*args, **kwargs):
        encoding.append(len(events))  # how many reports the artist had seen by then
        return original(*args, **kwargs)

    store = MemoryStore() if store_kind == "memory" else DiskStore(tmp_path / "cache", "tiny")
    frames = [sample_frame(i, 6, 32, 32) for i in range(6)]
    config = preset_config("fast", dilations=(1,), processing_res=32, dtype="fp32")
    try:
        model.encode = encode
        run_method(lambda: iter(frames), range(6), config, store, LocalExecutor(), lambda: model,
                   progress=lambda stage, done, total: events.append((stage, done, total)))  # fmt: skip
    finally:
        del model.encode
        store.close()
    stage = "encode" if store_kind == "memory" else "scan"
    assert events[0] == (stage, 0, 6), events[:3]
    assert encoding and encoding[0] == 1  # said before the first group went to the model
