"""Background jobs off the GUI thread: one at a time, restarted rather than queued.

A job is a callable ``job(progress) -> result``; ``progress`` is the engine's progress callback
(stage, done, total), which raises `Cancelled` once the job has been cancelled. Results, errors
and cancellations travel back to the GUI thread as signals.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from rollingdepth_core import protocol
from rollingdepth_core.errors import Cancelled, RollingDepthError
from rollingdepth_core.progress import CancelToken

from .messages import error_text

log = logging.getLogger(__name__)

Job = Callable[[Callable[[str, int, int], None]], Any]


@dataclass
class _Ticket:
    name: str
    job: Job
    token: CancelToken


class _Runner(QObject):
    """Lives in the worker thread and runs one ticket per `execute` call."""

    progress = Signal(str, str, int, int)  # job name, stage, done, total
    done = Signal(object, str, object)  # ticket, outcome, result or message

    @Slot(object)
    def execute(self, ticket: _Ticket) -> None:
        def progress(stage: str, done: int, total: int) -> None:
            ticket.token.check()
            self.progress.emit(ticket.name, stage, done, total)

        try:
            ticket.token.check()
            result = ticket.job(progress)
        except Cancelled:
            self.done.emit(ticket, "cancelled", None)
        except RollingDepthError as exc:
            self.done.emit(ticket, "failed", (protocol.error_kind(exc), str(exc)))
        except Exception as exc:
            # Anything else is a bug or an environment problem; the user still gets the
            # cause in a dialog, and the traceback (with the error's class) goes to the log.
            log.exception("job %r failed", ticket.name)
            why = f" ({exc})" if str(exc) else ""
            self.done.emit(
                ticket,
                "failed",
                ("RollingDepthError", f"an unexpected problem{why}; the log has the details"),
            )
        else:
            self.done.emit(ticket, "finished", result)


class Worker(QObject):
    """Runs jobs in one background thread.

    `submit` while a job runs cancels that job and starts the new one once it has stopped;
    of several jobs submitted meanwhile only the latest runs (restart, not queue).
    """

    started = Signal(str)  # job name
    progress = Signal(str, str, int, int)  # job name, stage, done, total
    finished = Signal(str, object)  # job name, result
    failed = Signal(str, str)  # job name, message in the panel's words (messages.error_text)
    cancelled = Signal(str)  # job name
    busy_changed = Signal(bool)

    _execute = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName("rollingdepth-worker")
        self._runner = _Runner()
        self._runner.moveToThread(self._thread)
        self._execute.connect(self._runner.execute)
        self._runner.progress.connect(self.progress)
        self._runner.done.connect(self._on_done)
        self._thread.start()
        self._current: _Ticket | None = None
        self._pending: _Ticket | None = None
        # (kind, the engine's own message) of the last failure, for a dialog's details
        self.last_failure: tuple[str, str] | None = None

    @property
    def busy(self) -> bool:
        return self._current is not None

    @property
    def current_job(self) -> str | None:
        return None if self._current is None else self._current.name

    def submit(self, name: str, job: Job) -> None:
        ticket = _Ticket(name, job, CancelToken())
        if self._current is None:
            self.busy_changed.emit(True)
            self._start(ticket)
            return
        self._current.token.cancel()
        self._pending = ticket

    def cancel(self) -> None:
        """Stop the running job at its next progress report and drop any pending one."""
        self._pending = None
        if self._current is not None:
            self._current.token.cancel()

    def shutdown(self) -> None:
        """Cancel everything and stop the thread (waits for the running job to notice)."""
        self.cancel()
        self._thread.quit()
        self._thread.wait()

    def _start(self, ticket: _Ticket) -> None:
        self._current = ticket
        self.started.emit(ticket.name)
        self._execute.emit(ticket)

    @Slot(object, str, object)
    def _on_done(self, ticket: _Ticket, outcome: str, payload: object) -> None:
        # The pending job is claimed before the outcome is announced, so a handler that
        # submits another job restarts it instead of running beside it.
        pending, self._pending = self._pending, None
        self._current = pending
        if outcome == "finished":
            self.finished.emit(ticket.name, payload)
        elif outcome == "failed":
            kind, message = payload
            self.last_failure = (kind, message)
            self.failed.emit(ticket.name, error_text(kind, message))
        else:
            self.cancelled.emit(ticket.name)
        if pending is not None and self._current is pending:
            self._start(pending)
        elif self._current is None:
            self.busy_changed.emit(False)
