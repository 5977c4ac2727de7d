"""Progress reporting: one callback (stage, done, total) that may also cancel the run."""

from __future__ import annotations

from collections.abc import Callable

from . import protocol
from .errors import Cancelled

ProgressCallback = Callable[[str, int, int], None]

STAGES = protocol.STAGES


def report(progress: ProgressCallback | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total)


class CancelToken:
    """A flag another thread (a GUI's Cancel button) sets; the next progress report raises."""

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def check(self) -> None:
        if self.cancelled:
            raise Cancelled("cancelled by the user")
