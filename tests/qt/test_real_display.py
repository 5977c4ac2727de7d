"""The panel on a real X display (Xvfb, Qt's xcb platform plugin), in its own process.

The offscreen platform the other tests use needs none of the X libraries; this is the check
that a fresh Linux desktop has what the xcb plugin loads (scripts/setup_env.sh installs them,
and Xvfb for this test).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QSize
from PySide6.QtGui import QImage

from qt_panel.main_window import default_size

SCREEN = (1920, 1080)
pytestmark = pytest.mark.skipif(
    shutil.which("xvfb-run") is None or shutil.which("Xvfb") is None,
    reason="Xvfb is not installed (scripts/setup_env.sh installs xvfb and xauth)",
)


def test_starts_on_a_real_display(tmp_path, clip, screenshot_dir):
    shot = tmp_path / "xcb.png"
    env = {
        **os.environ,
        "QT_QPA_PLATFORM": "xcb",
        # on failure the plugin loader says which library is missing
        "QT_DEBUG_PLUGINS": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        # the panel's QSettings go here, not to the user's configuration
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    env.pop("DISPLAY", None)
    command = [
        "xvfb-run",
        "--auto-servernum",
        "--server-args",
        f"-screen 0 {SCREEN[0]}x{SCREEN[1]}x24",
        sys.executable,
        "-m",
        "qt_panel.app",
        str(clip),
        "--device",
        "cpu",
        "--screenshot",
        str(shot),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    missing = [line for line in done.stderr.splitlines() if "cannot load" in line.lower()]
    plain = [
        line for line in done.stderr.splitlines() if not line.startswith(("qt.", " ", "{", "}"))
    ]
    assert done.returncode == 0, (
        f"the panel did not start on X: {missing or plain[-40:]}; stdout: {done.stdout[-2000:]}"
    )
    assert "platform xcb" in done.stdout, done.stdout

    image = QImage(str(shot))
    assert not image.isNull()
    # read back from the X server: the window's own size, fitted to the screen
    assert image.size() == default_size(QSize(*SCREEN))
    values = np.array(
        [
            image.pixelColor(x, y).value()
            for x in range(0, image.width(), 16)
            for y in range(0, image.height(), 16)
        ]
    )
    assert values.std() > 20  # the plate's frame and the widgets, not a blank window
    assert (tmp_path / "config" / "RollingDepth" / "Panel.conf").exists()
    shutil.copy(shot, screenshot_dir / "qt_panel_xcb.png")
