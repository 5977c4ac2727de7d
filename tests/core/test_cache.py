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
FAST_ARGS = ["--res", "64", "--dilations", "1", "3", "--device", "cpu", "--seed", "3"]


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


# ------------------------------------------------------------------------------ verification
def _set_last_values(path, values=(0.5, 0.5)):
    """The last float32 values of an array file set to ``values``: the file stays readable
    and plausible, as a bit flip on a disk or a bad copy would leave it."""
    data = bytearray(path.read_bytes())
    data[-4 * len(values) :] = np.array(values, np.float32).tobytes()
    path.write_bytes(bytes(data))


def test_damaged_latents_are_encoded_again_not_trusted(video, tmp_path, tiny_checkpoint):
    """Two values set to 0.5 in half of the latents, the other half overwritten with 0x7f,
    the blocks deleted: the rerun encodes every damaged latent again and writes the depth of a
    sound cache (it once predicted from the damaged latents: off by up to 0.24)."""
    import shutil

    first = run(video, tmp_path, tiny_checkpoint)
    cache = tmp_path / "cache"
    latents = sorted(p for p in (cache / "latents").iterdir() if not p.name.startswith("."))
    assert len(latents) == 12
    for k, path in enumerate(latents):
        if k % 2:
            path.write_bytes(b"\x7f" * path.stat().st_size)
        else:
            _set_last_values(path)
    shutil.rmtree(cache / "blocks")

    again = run(video, tmp_path, tiny_checkpoint, out="again")
    assert again["cache_stats"]["latents_computed"] == 12
    assert again["cache_stats"]["latents_reused"] == 0
    for a, b in zip(read_all(first), read_all(again), strict=True):
        np.testing.assert_array_equal(a["Z"], b["Z"])
    assert len(list((cache / "latents").glob(".damaged-*"))) == 12  # kept aside, not deleted


def test_a_latent_is_checked_against_its_digest_and_its_key(tmp_path):
    from rollingdepth_core.cache import CacheDamaged

    cache = SnippetCache(tmp_path)
    a, b = "a" * 40, "b" * 40
    cache.save_latent(a, np.zeros((4, 6, 8), np.float32))
    cache.save_latent(b, np.ones((4, 6, 8), np.float32))
    np.testing.assert_array_equal(cache.load_latent(b), 1)

    # two latents swapped by name: each is whole, but neither is the frame its name says
    pa, pb = cache.latent_path(a), cache.latent_path(b)
    pa.rename(tmp_path / "swap")
    pb.rename(pa)
    (tmp_path / "swap").rename(pb)
    with pytest.raises(CacheDamaged) as caught:
        cache.load_latent(a)
    message = str(caught.value)
    assert message.startswith(f"the cache entry {pa} does not match its digest; moved aside")
    assert message.endswith("Run the same command again to recompute it")
    assert "dtype" not in message and "\n" not in message
    assert not cache.has_latent(a) and not cache.latent_ok(b)

    # bytes 0x7f (NaN when read as floats): named as the cache's fault, not the model's
    cache.save_latent(a, np.zeros((4, 6, 8), np.float32))
    pa.write_bytes(b"\x7f" * pa.stat().st_size)
    with pytest.raises(CacheDamaged, match="Run the same command again"):
        cache.load_latent(a)


def test_blocks_swapped_by_name_are_caught(video, tmp_path, tiny_checkpoint, small_blocks, capsys):
    """Two whole blocks of one shape renamed to each other's keys: finalize stops naming one,
    moves it aside, and infer + finalize then give the first run's depth (a block's meta once
    did not tie it to its key, so such a swap went unnoticed)."""
    import json

    from rollingdepth_core.cli import main

    def cli(*args):
        return main([*map(str, args), "--checkpoint", str(tiny_checkpoint), *FAST_ARGS])

    cache = tmp_path / "cache"
    assert cli("run", video, "-o", tmp_path / "one", "--cache", cache) == 0
    store = SnippetCache(cache)
    shapes = {}
    for key in store.block_keys():
        shapes.setdefault(tuple(store.block_meta(key)["shape"]), []).append(key)
    a, b = next(keys for keys in shapes.values() if len(keys) >= 2)[:2]
    meta = json.loads((cache / "blocks" / a / "meta.json").read_text())
    assert (
        meta["key"] == a
        and meta["settings"]["seed"] == 3
        and len(meta["indices"]) == meta["shape"][0]
    )
    blocks = cache / "blocks"
    (blocks / a).rename(blocks / "swap")
    (blocks / b).rename(blocks / a)
    (blocks / "swap").rename(blocks / b)
    capsys.readouterr()

    assert cli("finalize", video, "-o", tmp_path / "two", "--cache", cache) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"rollingdepth: error: the cache entry {blocks}")
    assert "holds another block" in err and "dtype" not in err
    assert err.endswith("Run the same command again to recompute it")

    # infer checks the meta of every block it would reuse: the other one is caught there
    assert cli("infer", video, "--cache", cache) == 0
    assert "(2 computed, 3 cached)" in capsys.readouterr().err
    assert cli("finalize", video, "-o", tmp_path / "two", "--cache", cache) == 0
    for x, y in zip(
        sorted((tmp_path / "one").glob("*.exr")),
        sorted((tmp_path / "two").glob("*.exr")),
        strict=True,
    ):
        np.testing.assert_array_equal(read_exr(x)[0]["Z"], read_exr(y)[0]["Z"])


def test_a_block_meta_is_checked_against_its_own_digest(video, tmp_path, tiny_checkpoint):
    import json

    from rollingdepth_core.cache import CacheDamaged

    run(video, tmp_path, tiny_checkpoint)
    cache = SnippetCache(tmp_path / "cache")
    key = cache.block_keys()[0]
    path = cache.block_dir(key) / "meta.json"
    meta = json.loads(path.read_text())
    meta["min"] = meta["min"] + 0.5  # the offset every snippet is aligned from
    path.write_text(json.dumps(meta))
    with pytest.raises(CacheDamaged, match="meta.json that does not match its digest"):
        cache.block_meta(key)
