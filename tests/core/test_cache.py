"""The on-disk snippet cache: streaming alignment, resume after an interruption, reuse."""

import numpy as np
import pytest

from rollingdepth_core.alignment import coalign, merge_frame, reduce_maps, solve_reduced
from rollingdepth_core.cache import SnippetCache, frame_hash, model_fingerprint
from rollingdepth_core.config import OutputConfig, preset_config
from rollingdepth_core.errors import Cancelled
from rollingdepth_core.exr import read_exr
from rollingdepth_core.model import DepthModel
from rollingdepth_core.runner import run_plate
from rollingdepth_core.sample import write_sample_video
from rollingdepth_core.snippets import snippet_indices
from rollingdepth_core.stores import DiskStore

SETTINGS = dict(dilations=(1, 3), processing_res=64, seed=3, dtype="fp32")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_sample_video(
        tmp_path_factory.mktemp("plate") / "plate.mp4", n_frames=12, height=48, width=80
    )


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(DiskStore, "block_snippets", 4)  # 12 frames, dilations 1 3: 5 blocks


@pytest.fixture
def snippet_counter(monkeypatch):
    """Counts the snippets the UNet denoises (rows passed to predict_snippets)."""
    counted = []
    original = DepthModel.predict_snippets

    def counting(self, latents, noise, indices, *args, **kwargs):
        counted.append(len(indices))
        return original(self, latents, noise, indices, *args, **kwargs)

    monkeypatch.setattr(DepthModel, "predict_snippets", counting)
    return counted


def run(video, tmp_path, checkpoint, out="out", cache="cache", progress=None, **settings):
    config = preset_config("fast", **{**SETTINGS, **settings.pop("config", {})})
    return run_plate(
        str(video),
        str(tmp_path / out),
        config,
        OutputConfig(**settings),
        str(checkpoint),
        cache_dir=str(tmp_path / cache),
        device="cpu",
        progress=progress,
    ).to_message()


def read_all(result):
    return [read_exr(p)[0] for p in result["files"]]


def test_streaming_solve_and_merge_equal_coalign():
    rng = np.random.default_rng(0)
    n_frames, size = 14, (24, 36)
    indices = [snippet_indices(n_frames, 3, d) for d in (1, 4, 4)]
    base = rng.uniform(0.2, 1.0, (n_frames, *size)).astype(np.float32)
    unique = {}
    snippets = []
    for d, idx in zip((1, 4, 4), indices, strict=True):
        if d not in unique:
            noisy = base[idx] * rng.uniform(0.5, 2, (len(idx), 1, 1, 1))
            unique[d] = (noisy + rng.normal(0, 0.01, noisy.shape)).astype(np.float16)
        snippets.append(unique[d])
    for method in ("robust", "adam"):
        options = {"iterations": 50} if method == "adam" else {}
        full = coalign(snippets, indices, method, confidence=True, **options)
        offset = min(float(s.min()) for s in snippets)
        result = solve_reduced(
            [reduce_maps(s) for s in snippets], indices, offset, method, **options
        )
        assert result.depth is None
        for f in range(n_frames):
            maps, sc, sh, w = [], [], [], []
            for i, idx in enumerate(indices):
                for n, j in zip(*np.nonzero(idx == f), strict=True):
                    maps.append(snippets[i][n, j])
                    sc.append(result.scales[i][n])
                    sh.append(result.shifts[i][n])
                    if result.merge_weights is not None:
                        w.append(result.merge_weights[i][n])
            depth, conf = merge_frame(maps, sc, sh, offset, w or None, float(result.frame_sigma[f]))
            np.testing.assert_array_equal(depth, full.depth[f])
            np.testing.assert_array_equal(conf, full.confidence[f])


def test_keys_follow_pixels_and_model(tiny_checkpoint, tmp_path):
    frame = np.zeros((4, 5, 3), np.float32)
    other = frame.copy()
    other[0, 0, 0] = 1e-6
    assert frame_hash(frame) == frame_hash(frame.copy()) != frame_hash(other)
    assert model_fingerprint(tiny_checkpoint) == model_fingerprint(tiny_checkpoint)


def test_cached_run_writes_what_it_promises(video, tmp_path, tiny_checkpoint):
    result = run(video, tmp_path, tiny_checkpoint)
    assert len(result["files"]) == 12
    assert result["cache_stats"]["blocks_computed"] == 2  # 10 + 6 snippets, 16 a block
    assert not list((tmp_path / "cache" / "scratch").glob("*"))  # scratch removed
    assert not list((tmp_path / "cache").rglob(".*.tmp"))
    z = read_all(result)[0]["Z"]
    assert z.shape == (38, 64) and np.isfinite(z).all()


def test_resume_after_interruption_recomputes_no_cached_snippet(
    video, tmp_path, tiny_checkpoint, small_blocks, snippet_counter
):
    def stop_after_two_blocks(stage, done, total):
        if stage == "snippets" and done >= 8:
            raise Cancelled("stopped by the test")

    with pytest.raises(Cancelled):
        run(video, tmp_path, tiny_checkpoint, progress=stop_after_two_blocks)
    first = sum(snippet_counter)
    assert first == 8  # two blocks of 4 finished and stored
    snippet_counter.clear()

    resumed = run(video, tmp_path, tiny_checkpoint)
    stats = resumed["cache_stats"]
    assert stats["blocks_reused"] == 2 and stats["snippets_reused"] == 8
    assert sum(snippet_counter) == stats["snippets_computed"] == 16 - 8

    fresh = run(video, tmp_path, tiny_checkpoint, out="fresh", cache="fresh_cache")
    for a, b in zip(read_all(resumed), read_all(fresh), strict=True):
        np.testing.assert_array_equal(a["Z"], b["Z"])


def test_alignment_and_output_changes_run_no_model(
    video, tmp_path, tiny_checkpoint, snippet_counter, monkeypatch
):
    run(video, tmp_path, tiny_checkpoint)
    snippet_counter.clear()

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(DepthModel, "from_pretrained", no_model)
    again = run(
        video,
        tmp_path,
        tiny_checkpoint,
        out="again",
        config={"aligner": "adam", "confidence": True},
        depth_mode="normalized",
        half=True,
    )
    assert snippet_counter == []
    assert again["model_loaded"] is False
    assert again["cache_stats"]["snippets_computed"] == 0
    assert again["cache_stats"]["latents_computed"] == 0
    first = read_all(again)[0]
    assert set(first) == {"Z", "confidence"} and first["Z"].min() >= 0


def test_model_settings_invalidate_snippets(video, tmp_path, tiny_checkpoint):
    run(video, tmp_path, tiny_checkpoint)
    other = run(video, tmp_path, tiny_checkpoint, out="seed", config={"seed": 4})
    stats = other["cache_stats"]
    assert stats["snippets_reused"] == 0 and stats["latents_reused"] == 12


def test_cache_layout_is_half_precision(video, tmp_path, tiny_checkpoint):
    run(video, tmp_path, tiny_checkpoint)
    cache = SnippetCache(tmp_path / "cache")
    keys = cache.block_keys()
    assert keys
    key = keys[0]
    assert cache.open_block(key).dtype == np.float16
    assert cache.load_reduced(key).dtype == np.float16
