import json
import os
import tempfile
from pathlib import Path

# Before anything imports Qt: no display is needed or used. The offscreen screen is 800x800
# unless told otherwise; a common desktop size makes the default-size checks meaningful.
SCREEN = {"width": 1920, "height": 1080}
_screen_config = Path(tempfile.mkdtemp(prefix="rd-qt-screen-")) / "screen.json"
_screen_config.write_text(
    json.dumps(
        {"screens": [{"name": "test", "x": 0, "y": 0, **SCREEN, "logicalDpi": 96, "dpr": 1}]}
    )
)
os.environ["QT_QPA_PLATFORM"] = f"offscreen:configfile={_screen_config}"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PySide6.QtCore import QSettings  # noqa: E402

# Hang guards, not measures: a wait ends when its event comes; these only stop a test that
# would wait forever. Generous, so that a machine under load does not fail a correct panel.
EVENT_TIMEOUT_MS = 60_000  # a GUI event or a small job, milliseconds on an idle machine
RUN_TIMEOUT_MS = 600_000  # a model run, a minute or two under load

N_FRAMES, HEIGHT, WIDTH = 12, 64, 96
# Small and fast: 42x64 processing size; with 12 frames dilations cap at 3.
PANEL_SETTINGS = dict(preset="fast", dilations="1 3", processing_res=64, device="cpu")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    from rollingdepth_core.random_checkpoint import make_random_checkpoint

    return make_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", size="tiny")


@pytest.fixture(scope="session")
def clip(tmp_path_factory):
    from rollingdepth_core.sample import write_sample_video

    folder = tmp_path_factory.mktemp("clip")
    return write_sample_video(folder / "clip.mp4", n_frames=N_FRAMES, height=HEIGHT, width=WIDTH)


@pytest.fixture(scope="session")
def sequence(tmp_path_factory):
    """A PNG sequence numbered 1001-1012."""
    import OpenImageIO as oiio

    from rollingdepth_core.sample import sample_frame

    folder = tmp_path_factory.mktemp("sequence")
    for i in range(N_FRAMES):
        rgb = (sample_frame(i, N_FRAMES, HEIGHT, WIDTH) * 255 + 0.5).astype(np.uint8)
        out = oiio.ImageOutput.create("png")
        assert out.open(
            str(folder / f"plate.{1001 + i}.png"), oiio.ImageSpec(WIDTH, HEIGHT, 3, "uint8")
        )
        assert out.write_image(rgb)
        out.close()
    return folder / "plate.####.png"


@pytest.fixture(autouse=True)
def isolated_settings(qapp, tmp_path):
    """QSettings in a temporary folder under a test organisation, never the user's."""
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "qs"))
    qapp.setOrganizationName("RollingDepthTest")
    qapp.setApplicationName("PanelTest")
    return tmp_path / "qs"


@pytest.fixture
def window(qtbot, tiny_checkpoint):
    from qt_panel.main_window import MainWindow

    win = MainWindow()
    qtbot.addWidget(win)
    win.resize(1280, 820)
    win.settings_panel.set_values(checkpoint=str(tiny_checkpoint), **PANEL_SETTINGS)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.controller.shutdown()


@pytest.fixture
def screenshot_dir(tmp_path_factory):
    """Where screenshots go: $RD_SCREENSHOT_DIR if set, else a temporary folder."""
    target = os.environ.get("RD_SCREENSHOT_DIR")
    folder = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def synthetic_prediction():
    """A co-aligned prediction from made-up snippets of 40 frames; frames 20-23 are corrupted
    in every snippet that covers them."""
    from rollingdepth_core.alignment import coalign, normalize_depth
    from rollingdepth_core.config import InferenceConfig
    from rollingdepth_core.session import DepthPrediction
    from rollingdepth_core.snippets import snippet_indices

    rng = np.random.default_rng(0)
    n, height, width = 40, 24, 32
    base = rng.random((n, height, width), dtype=np.float32) + 0.5
    dilations = [1, 5]
    snippets, indices = [], []
    for d in dilations:
        idx = snippet_indices(n, 3, d)
        scales = rng.uniform(0.7, 1.3, len(idx)).astype(np.float32)[:, None, None, None]
        maps = base[idx] * scales
        maps += 0.01 * rng.standard_normal(maps.shape).astype(np.float32)
        bad = (idx >= 20) & (idx < 24)
        maps[bad] += 0.5 * rng.standard_normal((int(bad.sum()), height, width)).astype(np.float32)
        snippets.append(maps)
        indices.append(idx)
    alignment = coalign(snippets, indices, subsample=2)
    aligned = normalize_depth(alignment.depth)
    return DepthPrediction(
        depth=aligned,
        aligned=aligned,
        alignment=alignment,
        dilations=dilations,
        indices=indices,
        snippets=snippets,
        processing_size=(height, width),
        config=InferenceConfig(dilations=(1, 5), processing_res=0),
    )
