"""`rollingdepth-panel [PLATE]`: the Qt panel's entry point."""

from __future__ import annotations

import argparse
import logging
import sys

from rollingdepth_core import __version__
from rollingdepth_core.config import DEVICES

ORGANISATION = "RollingDepth"
APPLICATION = "Panel"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="rollingdepth-panel",
        description="Tune RollingDepth on a plate: view frames and depth, re-align, export EXRs.",
    )
    parser.add_argument("plate", nargs="?", help="video file, image sequence pattern or folder")
    parser.add_argument("--checkpoint", help="hub id or local checkpoint folder (remembered)")
    parser.add_argument("--device", choices=DEVICES, help="device to run on (remembered)")
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
    window = create_window(args)  # noqa: F841 -- kept alive while the event loop runs
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
