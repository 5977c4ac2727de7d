"""DepthSession: cached latents, noise and snippets; only what a settings change needs runs."""

import json
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
import torch

from rollingdepth_core.cameras import CameraRequest, load_camera
from rollingdepth_core.colorspace import resolve_color
from rollingdepth_core.config import OutputConfig, preset_config
from rollingdepth_core.errors import Cancelled, ConfigError, RollingDepthError
from rollingdepth_core.exr import read_exr
from rollingdepth_core.geometry import depth_to_position
from rollingdepth_core.method import estimate_depth
from rollingdepth_core.model import DepthModel
from rollingdepth_core.plate import PlateInfo, open_plate
from rollingdepth_core.sample import write_sample_video
from rollingdepth_core.session import DepthSession

N_FRAMES = 12


def config(**overrides):
    settings = dict(dilations=(1, 3), processing_res=64, dtype="fp32", seed=3)
    return preset_config("fast", **{**settings, **overrides})


@pytest.fixture(scope="module")
def pipeline(tiny_checkpoint):
    return DepthModel.from_pretrained(str(tiny_checkpoint), device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plate")
    return write_sample_video(folder / "plate.mp4", n_frames=N_FRAMES, height=64, width=96)


@pytest.fixture
def unet_calls(pipeline):
    """Counts real UNet forwards, independently of the session's own counters."""
    calls = []
    handle = pipeline.components.unet.register_forward_hook(lambda *_: calls.append(1))
    yield calls
    handle.remove()


@pytest.fixture
def session(pipeline, video):
    return DepthSession(pipeline, open_plate(video))


def test_run_matches_the_one_shot_pipeline(session, pipeline, video):
    result = session.run(config())
    # the plate read as a run reads it: resized to the processing size, then converted
    frames = (rgb for _, rgb in open_plate(video).frames((42, 64)))
    expected = estimate_depth(pipeline, frames, config())
    assert result.depth.shape == (N_FRAMES, 42, 64)
    assert result.dilations == expected.plan.dilations == [1, 3]
    # the same stages over the same kind of store: bit for bit
    np.testing.assert_array_equal(result.depth, expected.to_array())
    assert session.counters.snippets_predicted == (N_FRAMES - 2) + (N_FRAMES - 6)
    assert session.counters.encode_passes == 1


def test_alignment_change_runs_no_model(session, unet_calls):
    first = session.run(config())
    calls = len(unet_calls)
    predicted = session.counters.snippets_predicted
    assert not session.needs_model(config(aligner="adam"))

    other = session.run(config(aligner="adam"))
    assert len(unet_calls) == calls
    assert session.counters.snippets_predicted == predicted
    assert session.counters.alignments == 2
    assert other.alignment.method == "adam" and first.alignment.method == "robust"

    again = session.run(config())  # back to robust: the alignment itself is cached
    assert session.counters.alignments == 2
    np.testing.assert_array_equal(again.depth, first.depth)


def test_confidence_toggle_merges_again_without_a_solve(session):
    from rollingdepth_core.alignment import coalign, normalize_depth

    plain = session.run(config())
    assert session.counters.solves == 1
    with_confidence = session.run(config(confidence=True))
    assert session.counters.solves == 1  # the kept solve, merged again with confidence
    assert session.counters.alignments == 2
    assert plain.alignment.confidence is None
    confidence = with_confidence.alignment.confidence
    assert confidence.shape == (N_FRAMES, 42, 64)
    assert np.all((confidence > 0) & (confidence <= 1))
    np.testing.assert_array_equal(with_confidence.aligned, plain.aligned)

    # solve once + merge is coalign, bit for bit
    expected = coalign(plain.snippets, plain.indices, confidence=True)
    np.testing.assert_array_equal(confidence, expected.confidence)
    np.testing.assert_array_equal(plain.aligned, normalize_depth(expected.depth))
    for got, want in zip(with_confidence.alignment.scales, expected.scales, strict=True):
        np.testing.assert_array_equal(got, want)


def test_adding_a_dilation_runs_only_its_snippets(session, unet_calls):
    session.run(config(dilations=(1, 3)))
    before = session.counters.snippets_predicted
    wider = config(dilations=(1, 2, 3))
    assert session.pending_snippets(wider) == N_FRAMES - 4
    calls = len(unet_calls)

    session.run(wider)
    assert session.counters.snippets_predicted == before + N_FRAMES - 4
    assert session.counters.predict_calls == 3
    assert session.counters.encode_passes == 1  # the latents were kept
    assert len(unet_calls) > calls
    assert session.pending_snippets(config(dilations=(1, 2))) == 0


def test_capped_dilations_reuse_the_capped_snippets(session):
    session.run(config(dilations=(1, 3)))
    # 12 frames, snippet length 3: every dilation above 3 is capped to 3
    assert session.pending_snippets(config(dilations=(1, 3, 25))) == 0


def test_model_settings_that_change_snippets_run_again(session):
    session.run(config())
    assert session.pending_snippets(config(seed=4)) == 16
    assert session.pending_snippets(config(processing_res=96)) == 16
    assert session.pending_snippets(config(denoise_steps=2)) == 16
    session.run(config(processing_res=96))
    assert session.counters.encode_passes == 2
    # the first size's snippets are still there; aligning them needs no latents
    result = session.run(config())
    assert session.counters.encode_passes == 2
    assert result.depth.shape == (N_FRAMES, 42, 64)


def test_refinement_runs_once_per_alignment(session, unet_calls):
    refined = config(refine_steps=2)
    assert session.needs_model(refined)
    first = session.run(refined)
    assert session.counters.refine_passes == 1
    assert not np.array_equal(first.depth, first.aligned)
    calls = len(unet_calls)

    session.run(refined)
    assert len(unet_calls) == calls and session.counters.refine_passes == 1
    session.run(replace(refined, dilations=(1, 2, 3)))  # new aligned input: refine again
    assert session.counters.refine_passes == 2


def test_align_needs_predicted_snippets(session):
    with pytest.raises(RollingDepthError, match="not predicted yet"):
        session.align(config())


def test_cancel_keeps_the_dilations_already_done(session):
    def cancel_in_second_dilation(stage, done, total):
        if stage == "snippets" and done > N_FRAMES - 2:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        session.predict(config(), cancel_in_second_dilation)
    assert session.pending_snippets(config()) == N_FRAMES - 6
    session.predict(config())
    assert session.counters.snippets_predicted == 2 * (N_FRAMES - 2) + (N_FRAMES - 6) - (
        N_FRAMES - 2
    )


def test_cache_limit_keeps_what_the_settings_use(pipeline, video):
    session = DepthSession(pipeline, open_plate(video), cache_bytes=1)
    session.run(config(dilations=(1, 3)))
    session.run(config(dilations=(1, 2)))
    assert session.pending_snippets(config(dilations=(1, 2))) == 0
    assert session.pending_snippets(config(dilations=(1, 3))) == N_FRAMES - 6


def test_export_writes_the_plate_numbers_in_range(session, tmp_path):
    result = session.run(replace(config(), confidence=True))
    output = OutputConfig(depth_mode="depth", near=2.0, far=50.0, half=True, channel="depth.Z")
    pattern = str(tmp_path / "out" / "depth.####.exr")
    written = session.export(
        result, pattern, output, frame_range=(3, 6), confidence=True, checkpoint="ck"
    )
    assert [p.name for p in written] == [f"depth.{i:04d}.exr" for i in range(3, 7)]
    full = session.export(result, str(tmp_path / "full" / "d.%03d.exr"), output)
    assert len(full) == N_FRAMES and full[0].name == "d.000.exr"
    channels, header = read_exr(written[0])
    assert set(channels) == {"depth.Z", "confidence"}
    assert header["channel_formats"]["depth.Z"] == "half"
    assert header["rollingdepth/source_frame"] == 3
    assert header["rollingdepth/model"] == "ck"
    assert header["rollingdepth/dilations_run"] == "1 3"
    # a partial export maps depth through the whole clip's range, as a full one does
    np.testing.assert_array_equal(channels["depth.Z"], read_exr(full[3])[0]["depth.Z"])
    assert channels["depth.Z"].min() >= 2.0 and channels["depth.Z"].max() <= 50.0


def test_export_with_a_camera_writes_p_and_n_as_a_run_does(session, tmp_path):
    result = session.run(config())
    output = OutputConfig(depth_mode="depth", near=2.0, far=50.0, passes=("Z", "P"))
    chan = tmp_path / "cam.chan"
    info = session.plate.info
    chan.write_text("".join(f"{n} 0 1 {n * 0.1} 0 5 0 40\n" for n in info.frame_numbers))
    written = session.export(result, str(tmp_path / "o" / "depth.####.exr"), output,
                             camera=CameraRequest(file=str(chan)))  # fmt: skip
    channels, header = read_exr(written[2])
    assert set(channels) == {"Z", "P.X", "P.Y", "P.Z"}
    assert header["rollingdepth/camera.file"] == str(chan)
    track = load_camera(
        CameraRequest(file=str(chan)), info.frame_numbers, (info.height, info.width)
    )
    position = depth_to_position(channels["Z"], track.at(info.frame_numbers[2]))
    np.testing.assert_allclose(np.stack([channels[f"P.{a}"] for a in "XYZ"], -1), position,
                               rtol=1e-6, atol=1e-6)  # fmt: skip
    # refused before anything is written, as a run refuses it
    with pytest.raises(ConfigError, match="scene units"):
        session.export(result, str(tmp_path / "n" / "depth.####.exr"),
                       OutputConfig(depth_mode="normalized"), camera=CameraRequest(fov=40.0))  # fmt: skip
    chan.write_text("".join(f"{n} 0 1 0 0 5 0 40\n" for n in info.frame_numbers[:-1]))
    with pytest.raises(ConfigError, match="cam.chan"):
        session.export(result, str(tmp_path / "m" / "depth.####.exr"), output,
                       camera=CameraRequest(file=str(chan)))  # fmt: skip
    assert not (tmp_path / "n").exists() and not (tmp_path / "m").exists()


def test_export_refuses_what_it_cannot_do(session, tmp_path):
    result = session.run(config())
    with pytest.raises(ConfigError, match="confidence"):
        session.export(result, str(tmp_path / "d.####.exr"), OutputConfig(), confidence=True)
    with pytest.raises(ConfigError, match="holds none"):
        session.export(result, str(tmp_path / "d.####.exr"), OutputConfig(), frame_range=(50, 60))


# ---------------------------------------------------------------- without a model
class SyntheticModel:
    """Stands in for the model: random snippets, so alignment can be timed and counted alone."""

    dtype_name = "fp32"

    def __init__(self):
        self.rng = np.random.default_rng(0)

    def preprocess(self, frame, size):
        return torch.zeros(1, 3, 8, 8)

    def encode(self, images):
        return torch.zeros(images.shape[0], 4, 1, 1)

    def auto_batch_size(self, latent_shape, snippet_len):
        return 2

    def shared_noise(self, latent_shape, seed):
        return np.zeros((1, 4, *latent_shape), np.float32)

    def predict_snippets(self, latents, noise, indices, size, config, *args):
        base = self.rng.random((1, 1, *size), dtype=np.float32)
        noise = 0.05 * self.rng.random((*indices.shape, *size), dtype=np.float32)
        return base + noise


class SyntheticPlate:
    def __init__(self, n_frames, height, width):
        numbers = tuple(range(1001, 1001 + n_frames))
        self.info = PlateInfo(
            "synthetic",
            "sequence",
            numbers,
            width,
            height,
            Fraction(24),
            (),
            resolve_color("srgb", ()),
            None,
        )

    def __len__(self):
        return len(self.info.frame_numbers)

    def frames(self, fit=None):
        height, width = fit or (self.info.height, self.info.width)
        blank = np.zeros((height, width, 3), np.float32)
        for number in self.info.frame_numbers:
            yield number, blank


def test_synthetic_session_realigns_without_the_model():
    session = DepthSession(SyntheticModel(), SyntheticPlate(40, 36, 64))
    session.run(config(dilations=(1, 10)))
    predicted = session.counters.snippets_predicted
    result = session.run(config(dilations=(1, 10), confidence=True))
    assert session.counters.snippets_predicted == predicted == 38 + 20
    assert session.counters.alignments == 2
    assert result.depth.shape == (40, 36, 64)
    assert result.alignment.confidence.shape == (40, 36, 64)
    assert result.alignment.frame_residuals.shape == (40,)


def test_export_with_an_anchor_fit_writes_scene_units(session, tmp_path):
    from rollingdepth_core.anchors import load_anchors
    from rollingdepth_core.method import AnchorRequest, anchor

    result = session.run(config())
    numbers = session.plate.info.frame_numbers
    d = result.depth  # [N,42,64] at processing size; the plate is 96x64
    rows = ["frame,x,y,depth"]
    for k in range(len(numbers)):
        for i, j in ((10, 10), (40, 30), (60, 5)):
            # plate pixel centre -> the processing pixel it maps onto exactly (scale 1.5)
            x, y = (i + 0.5) * 96 / 64, (j + 0.5) * 64 / 42
            rows.append(f"{numbers[k]},{x},{y},{1 / (2.0 * float(d[k, j, i]) + 3.0)!r}")
    (tmp_path / "a.csv").write_text("\n".join(rows) + "\n")
    anchors = load_anchors(tmp_path / "a.csv")
    request = AnchorRequest(anchors, numbers)
    fit, metric = anchor(iter(d), request, (64, 96), (float(d.min()), float(d.max())))
    assert fit.a[0] == pytest.approx(2.0, rel=1e-4) and fit.b[0] == pytest.approx(3.0, rel=1e-4)
    # the export fits each shot itself, as a run does: the same fit here (one shot)
    written = session.export(
        result, str(tmp_path / "out" / "z.####.exr"), OutputConfig(depth_mode="depth"),
        anchors=anchors,
    )  # fmt: skip
    channels, meta = read_exr(written[0])
    np.testing.assert_allclose(channels["Z"], 1 / (2.0 * d[0] + 3.0), rtol=1e-4)
    assert meta["rollingdepth/anchors.used"] == 3 * len(numbers)
    assert meta["rollingdepth/value_max"] == pytest.approx(1 / metric[0], rel=1e-6)
    # the fit's report and the run's record published with the frames, as a run's
    report = json.loads((tmp_path / "out" / "z_anchors.json").read_text())
    assert report["used"] == 3 * len(numbers)
    manifest = json.loads((tmp_path / "out" / "z_run.json").read_text())
    assert manifest["settings"]["anchors"] == str(tmp_path / "a.csv")
    assert {"z_anchors.json", "z_alignment.json"} <= set(manifest["files"])


def test_holdout_mattes_realign_without_the_model(session, tmp_path, unet_calls):
    from rollingdepth_core.mattes import MatteSource

    from .plate_fixtures import write_image

    session.run(config())
    calls, solves = len(unet_calls), session.counters.solves
    plain = session.align(config()).alignment.scales
    for number in session.plate.info.frame_numbers:
        matte = np.zeros((32, 48), np.float32)
        matte[:, :24] = 1.0  # the left half held out
        write_image(tmp_path / f"m.{number:04d}.png", matte, "uint8")
    session.set_holdout(MatteSource(str(tmp_path / "m.####.png"), session.plate.info.frame_numbers, (64, 96)))  # fmt: skip
    held = session.align(config())
    assert len(unet_calls) == calls  # no model: the kept snippets are solved again
    assert session.counters.solves == solves + 1
    assert any(not np.array_equal(a, b) for a, b in zip(held.alignment.scales, plain, strict=True))
    session.set_holdout(None)
    again = session.align(config())
    for a, b in zip(again.alignment.scales, plain, strict=True):
        np.testing.assert_array_equal(a, b)  # without the matte: the solve as before


def test_a_scene_linear_plate_reaches_the_model_as_in_a_run(pipeline, tmp_path):
    """An ACEScg EXR plate: the panel's session gives the CLI run's depth (the same reading:
    resized in scene-linear light, then OCIO to the display), bit for bit."""
    from rollingdepth_core.colorspace import ColorRequest
    from rollingdepth_core.sample import sample_frame

    from .plate_fixtures import write_image

    for i in range(8):
        linear = (sample_frame(i, 8, 64, 96) ** 2.2) * 4.0  # scene-linear, above 1 in places
        write_image(tmp_path / f"p.{1001 + i}.exr", linear, "half")
    plate = open_plate(tmp_path / "p.####.exr", input_colorspace=ColorRequest("ACEScg"))
    assert not plate.info.color.passthrough
    settings = config(dilations=(1, 2))
    result = DepthSession(pipeline, plate).run(settings)
    frames = (rgb for _, rgb in plate.frames((42, 64)))
    np.testing.assert_array_equal(
        result.depth, estimate_depth(pipeline, frames, settings).to_array()
    )


def test_progress_counts_the_model_passes_of_every_shot_as_announced(pipeline, video):
    """Run announces `pending_snippets` for the whole plate; the progress counts up to that
    number across shots, not each shot's own count from 0 (42 announced, "8/20" shown)."""
    session = DepthSession(pipeline, open_plate(video), cuts=[6])
    assert len(session.shots) == 2
    announced = session.pending_snippets(config())
    seen = []
    session.run(config(), lambda stage, done, total: seen.append((stage, done, total)))
    counts = [(done, total) for stage, done, total in seen if stage == "snippets"]
    assert {total for _, total in counts} == {announced}
    assert counts[-1] == (announced, announced)
    dones = [done for done, _ in counts]
    assert dones == sorted(dones)


def test_an_edit_is_anchored_shot_by_shot_as_a_run_anchors_it(pipeline, video, tmp_path):
    """Each shot has its own relation to the scene (another lens, another distance): the
    export and the view fit each shot on its own, as `rollingdepth run --anchors` does, so a
    clip whose shots need different (a, b) is anchored exactly in both."""
    from rollingdepth_core.anchors import join_fits, load_anchors
    from rollingdepth_core.session import anchor_shots

    session = DepthSession(pipeline, open_plate(video), cuts=[6])
    result = session.run(config())
    numbers = session.plate.info.frame_numbers
    d = result.depth  # [12,42,64]; two shots of 6 frames
    relation = [(2.0, 3.0)] * 6 + [(0.5, 1.0)] * 6  # 1/Z = a d + b, per shot
    rows = ["frame,x,y,depth"]
    for k, (a, b) in enumerate(relation):
        for i, j in ((10, 10), (40, 30), (60, 5)):
            x, y = (i + 0.5) * 96 / 64, (j + 0.5) * 64 / 42
            rows.append(f"{numbers[k]},{x},{y},{1 / (a * float(d[k, j, i]) + b)!r}")
    (tmp_path / "a.csv").write_text("\n".join(rows) + "\n")
    anchors = load_anchors(tmp_path / "a.csv")
    fits = anchor_shots(result, anchors, "global", numbers, (64, 96))
    view = join_fits([fit for fit, _ in fits])
    assert (view.n_used, view.n_outside + view.n_unprocessed) == (36, 0)
    np.testing.assert_allclose(view.a, [a for a, _ in relation], rtol=1e-4)
    np.testing.assert_allclose(view.b, [b for _, b in relation], rtol=1e-4)
    written = session.export(result, str(tmp_path / "out" / "z.####.exr"),
                             OutputConfig(depth_mode="depth"), anchors=anchors)  # fmt: skip
    for k in (0, 5, 6, 11):
        channels, meta = read_exr(written[k])
        a, b = relation[k]
        np.testing.assert_allclose(channels["Z"], 1 / (a * d[k] + b), rtol=1e-4)
        assert (meta["rollingdepth/anchors.used"], meta["rollingdepth/anchors.skipped"]) == (18, 18)
    report = json.loads((tmp_path / "out" / "z_anchors.json").read_text())
    assert [shot["used"] for shot in report["shots"]] == [18, 18]
