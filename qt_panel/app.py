"""`rollingdepth-panel [PLATE]`: the Qt panel's entry point."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from rollingdepth_core import __version__
from rollingdepth_core.config import DEVICES

ORGANISATION = "RollingDepth"
APPLICATION = "Panel"
# How long `--screenshot` lets the window settle (map, lay out, paint) before grabbing it.
SCREENSHOT_DELAY_MS = 1500


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rollingdepth-panel",
        description="Tune RollingDepth on a plate: view frames and depth, re-align, export EXRs.",
    )
    parser.add_argument("plate", nargs="?", help="video file, image sequence pattern or folder")
    parser.add_argument("--checkpoint", help="hub id or local checkpoint folder (remembered)")
    parser.add_argument("--device", choices=DEVICES, help="device to run on (remembered)")
    parser.add_argument(
        "--screenshot",
        metavar="PNG",
        help="grab the window as the display shows it into PNG, print the platform, and quit "
        "(checks that the panel starts on this desktop)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser.parse_args(argv)


def create_window(args: argparse.Namespace):
    """The main window for ``args``, shown, with the plate opened; needs a QApplication."""
    from PySide6.QtWidgets import QApplication

    from .main_window import MainWindow

    app = QApplication.instance()
    app.setOrganizationName(ORGANISATION)
    app.setApplicationName(APPLICATION)
    window = MainWindow()
    overrides = {
        key: value
        for key, value in (("checkpoint", args.checkpoint), ("device", args.device))
        if value is not None
    }
    if overrides:
        window.settings_panel.set_values(**overrides)
    window.show()
    if args.plate:
        window.open_plate(args.plate)
    return window


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Qt is imported here so that `--help` works without a display.
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([sys.argv[0]])
    window = create_window(args)
    if args.screenshot:
        from PySide6.QtCore import QTimer

        outcome = {}

        def shoot() -> None:
            # one callback: the window closes only once the screenshot is taken, however
            # late a loaded machine runs the timer
            outcome["ok"] = screenshot(window, args.screenshot)
            window.close()

        QTimer.singleShot(SCREENSHOT_DELAY_MS, shoot)
        app.exec()
        return 0 if outcome.get("ok") else 1
    return app.exec()


def screenshot(window, path: str) -> bool:
    """Save what the screen shows of ``window`` (read back from the display server, not
    re-rendered) to ``path``; prints the platform and the window's size."""
    from PySide6.QtWidgets import QApplication

    screen = window.screen()
    image = screen.grabWindow(window.winId())
    if image.isNull():
        image = window.grab()  # platforms that cannot read the screen back (offscreen)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    saved = image.save(path)
    print(
        f"platform {QApplication.platformName()}, screen "
        f"{screen.availableGeometry().width()}x{screen.availableGeometry().height()}, "
        f"window {window.width()}x{window.height()}, screenshot {path}"
        + ("" if saved else " NOT SAVED"),
        flush=True,
    )
    return saved


if __name__ == "__main__":
    sys.exit(main())
