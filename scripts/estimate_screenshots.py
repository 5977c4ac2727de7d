"""Screenshots of the panel's cost estimate and of a run in progress, on a real X display.

    xvfb-run --auto-servernum --server-args "-screen 0 1920x1080x24" \
        env QT_QPA_PLATFORM=xcb PYTHONPATH=$PWD .venv/bin/python scripts/estimate_screenshots.py OUT

A 192x108 plate (24 frames) with the panel's defaults (768 px: larger than the plate) and a
tiny random checkpoint (no weights can be downloaded here): OUT/panel_estimate.png before the
run, OUT/panel_run_in_progress.png while the model runs, OUT/panel_after_run.png after it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QApplication


def main(out: str) -> int:
    from qt_panel.main_window import MainWindow
    from rollingdepth_core.random_checkpoint import make_random_checkpoint
    from rollingdepth_core.sample import write_sample_video

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="estimate-shots-"))
    checkpoint = make_random_checkpoint(work / "tiny", "tiny")
    clip = write_sample_video(work / "plate.mp4", 24, 108, 192, 24)
    app = QApplication(sys.argv)
    settings = QSettings(str(work / "panel.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings)
    window.resize(1400, 900)
    window.settings_panel.set_values(checkpoint=str(checkpoint), device="cpu")
    window.show()
    window.open_plate(str(clip))
    taken = {"during": False}

    def shoot(name: str) -> None:
        window.grab().save(str(folder / name))
        print(name, "|", window.settings_panel.estimate_label.text(), "|",
              window.settings_panel.stage_label.text(), flush=True)  # fmt: skip

    def progress(job, stage, done, total) -> None:
        left = window.settings_panel.stage_label.text()
        if not taken["during"] and stage == "snippets" and done > 0 and "left" in left:
            taken["during"] = True
            shoot("panel_run_in_progress.png")

    def before() -> None:
        shoot("panel_estimate.png")
        window.controller.progress.connect(progress)
        window.run()

    def ended(job, outcome, text) -> None:
        if job == "run":
            QTimer.singleShot(500, lambda: (shoot("panel_after_run.png"), app.quit()))

    window.controller.job_ended.connect(ended)
    QTimer.singleShot(8000, before)  # the plate's cuts found, the estimate shown
    app.exec()
    window.controller.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
