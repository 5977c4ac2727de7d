import threading
import time

import pytest

from qt_panel.worker import Worker
from rollingdepth_core.errors import InputError

from .conftest import EVENT_TIMEOUT_MS


@pytest.fixture
def worker(qapp):
    w = Worker()
    yield w
    w.shutdown()


def slow_job(
    seconds: float,
    result: object = "done",
    started: threading.Event | None = None,
    reports: list | None = None,
):
    """A job of ``seconds`` that reports progress every 5 ms (each report appended to
    ``reports``)."""

    def job(progress):
        if started is not None:
            started.set()
        end = time.monotonic() + seconds
        step = 0
        while time.monotonic() < end:
            time.sleep(0.005)
            step += 1
            if reports is not None:
                reports.append(step)
            progress("snippets", step, 0)
        return result

    return job


def test_result_arrives_as_a_signal_off_the_gui_thread(qtbot, worker):
    threads = []

    def job(progress):
        threads.append(threading.current_thread())
        progress("encode", 1, 1)
        return 42

    with qtbot.waitSignal(worker.finished, timeout=EVENT_TIMEOUT_MS) as blocker:
        worker.submit("run", job)
    assert blocker.args == ["run", 42]
    assert threads[0] is not threading.main_thread()
    assert not worker.busy


def test_errors_travel_with_their_cause(qtbot, worker):
    def fails(progress):
        raise InputError("clip.mov: cannot decode frame 7")

    with qtbot.waitSignal(worker.failed, timeout=EVENT_TIMEOUT_MS) as blocker:
        worker.submit("run", fails)
    assert blocker.args == ["run", "clip.mov: cannot decode frame 7"]

    def bug(progress):
        return {}["missing"]

    with qtbot.waitSignal(worker.failed, timeout=EVENT_TIMEOUT_MS) as blocker:
        worker.submit("run", bug)
    assert blocker.args[1].startswith("KeyError")


def test_cancel_stops_at_the_next_progress_report(qtbot, worker):
    started, reports = threading.Event(), []
    with qtbot.waitSignal(worker.cancelled, timeout=EVENT_TIMEOUT_MS) as blocker:
        worker.submit("run", slow_job(30, started=started, reports=reports))
        assert started.wait(EVENT_TIMEOUT_MS / 1000)
        worker.cancel()
        at_cancel = len(reports)
    assert blocker.args == ["run"]
    # the report after the cancel raised (at most one more), however slow the machine
    assert len(reports) <= at_cancel + 1, (at_cancel, len(reports))
    assert not worker.busy


def test_submit_restarts_instead_of_queueing(qtbot, worker):
    finished, cancelled = [], []
    worker.finished.connect(lambda name, result: finished.append(result))
    worker.cancelled.connect(cancelled.append)
    busy = []
    worker.busy_changed.connect(busy.append)
    started = threading.Event()
    worker.submit("align", slow_job(30, "first", started))
    assert started.wait(EVENT_TIMEOUT_MS / 1000)
    worker.submit("align", slow_job(0.01, "second"))
    worker.submit("align", slow_job(0.01, "third"))
    qtbot.waitUntil(lambda: not worker.busy, timeout=EVENT_TIMEOUT_MS)
    assert finished == ["third"]  # "second" was replaced before it started
    assert cancelled == ["align"]
    assert busy == [True, False]
