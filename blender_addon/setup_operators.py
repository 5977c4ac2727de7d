"""Set Up Engine and the selftest Check Engine runs: background work from the preferences.

Both run as a background process polled from a timer (modal, with the status bar's progress
and Esc to cancel) in a Blender with windows, and to the end in background mode. One task at
a time; its last outcome stays in the preferences for the artist to read.
"""

from __future__ import annotations

import platform
import time

import bpy

from . import engine_setup
from .engine import EngineProcess, engine_command, error_text

TIMER_INTERVAL_S = 0.25
SELFTEST_TIMEOUT_S = 600.0

_current = None  # the task running now: an EngineSetup or a SelftestRun


def current_task():
    return _current


def cancel_current_task() -> None:
    """The add-on is disabled or Blender quits: no set-up goes on without it."""
    global _current
    if _current is not None:
        _current.cancel()
        _current = None


def user_folder() -> str:
    """Blender's extension user folder for this add-on (kept across add-on updates)."""
    return bpy.utils.extension_path_user(__package__, create=True)


class SelftestRun:
    """The engine's ``selftest`` (a tiny random model through every stage) in its process."""

    def __init__(self, engine_path: str) -> None:
        argv = [*engine_command(engine_path), "selftest", "--progress", "json"]
        self.process = EngineProcess(argv)
        self.started = 0.0
        self.state = engine_setup.RUNNING
        self.error = ""
        self.result: dict = {}

    def start(self) -> SelftestRun:
        self.started = time.monotonic()
        self.process.start()
        return self

    @property
    def done(self) -> bool:
        return self.state != engine_setup.RUNNING

    def step(self) -> str:
        if self.done:
            return self.state
        self.process.poll()
        if self.process.finished:
            run = self.process.state
            if run.result is not None and run.result.get("selftest") == "passed":
                self.state, self.result = engine_setup.FINISHED, run.result
            elif self.process.cancelled:
                self.state, self.error = engine_setup.CANCELLED, "Check Engine was cancelled."
            else:
                self.state = engine_setup.FAILED
                self.error = "The engine's selftest failed: " + error_text(run.error or {})
        elif time.monotonic() - self.started > SELFTEST_TIMEOUT_S:
            self.process.cancel()
            self.state = engine_setup.FAILED
            self.error = f"The engine's selftest did not finish within {SELFTEST_TIMEOUT_S:.0f} s."
        return self.state

    def cancel(self) -> None:
        if not self.done:
            self.process.cancel()
            self.step()
            self.state = engine_setup.CANCELLED
            self.error = "Check Engine was cancelled."

    def run_blocking(self) -> str:
        while self.step() == engine_setup.RUNNING:
            time.sleep(0.1)
        return self.state

    @property
    def fraction(self) -> float:
        return self.process.state.fraction

    @property
    def status_text(self) -> str:
        return f"Engine selftest: {self.process.state.message} ({int(self.fraction * 100)}%)"


def _fraction(task) -> float:
    return task.state.fraction if isinstance(task, engine_setup.EngineSetup) else task.fraction


def _redraw_all(context) -> None:
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            area.tag_redraw()


class _BackgroundTaskOperator:
    """A task polled by a timer: the status bar shows it, Esc or Cancel stops it."""

    _timer = None
    _task = None

    def run(self, context, task):
        global _current
        _current = task
        if bpy.app.background or context.window is None:
            try:
                task.run_blocking()
                return self._end(context, task)
            finally:
                _current = None
        self._task = task
        wm = context.window_manager
        self._timer = wm.event_timer_add(TIMER_INTERVAL_S, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, 100)
        self._show(context, task)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        task = self._task
        if task is None:
            return {"CANCELLED"}
        if event.type == "ESC" and event.value == "PRESS":
            task.cancel()
        if event.type == "TIMER" or task.done:
            if task.step() != engine_setup.RUNNING:
                self._cleanup(context)
                return self._end(context, task)
            self._show(context, task)
        return {"PASS_THROUGH"}

    def cancel(self, context):
        if self._task is not None:
            self._task.cancel()
            self._cleanup(context)

    def _show(self, context, task) -> None:
        context.window_manager.progress_update(int(_fraction(task) * 100))
        if context.workspace is not None:
            context.workspace.status_text_set(f"RollingDepth: {task.status_text}  Esc to cancel")
        _redraw_all(context)

    def _cleanup(self, context) -> None:
        global _current
        wm = context.window_manager
        if self._timer is not None:
            wm.event_timer_remove(self._timer)
            self._timer = None
        wm.progress_end()
        if context.workspace is not None:
            context.workspace.status_text_set(None)
        self._task = None
        _current = None
        _redraw_all(context)


class ROLLINGDEPTH_OT_setup_engine(_BackgroundTaskOperator, bpy.types.Operator):
    """Make an engine environment in the add-on's user folder: a Python 3.10-3.12, PyTorch
    for this machine and the RollingDepth engine (a download of several hundred MB or more)"""

    bl_idname = "rollingdepth.setup_engine"
    bl_label = "Set Up Engine"
    bl_options = {"INTERNAL"}

    def execute(self, context):
        from .preferences import preferences

        if _current is not None and not _current.done:
            self.report({"ERROR"}, "A RollingDepth set-up or check is running: cancel it or wait.")
            return {"CANCELLED"}
        prefs = preferences(context)
        try:
            python = engine_setup.find_python(bpy.path.abspath(prefs.setup_python))
            plan = engine_setup.plan_torch(
                platform.system(),
                platform.machine(),
                engine_setup.nvidia_driver(),
                prefs.torch_source,
            )
            package = engine_setup.engine_package(bpy.path.abspath(prefs.engine_package))
            request = engine_setup.SetupRequest(
                user_dir=user_folder(), python=python, engine=package, torch=plan
            )
            task = engine_setup.EngineSetup(request).start()
        except engine_setup.SetupError as exc:
            return self._refuse(prefs, str(exc))
        prefs.setup_status = f"Setting up: {plan.note}"
        self.report({"INFO"}, f"RollingDepth: setting up the engine with Python "
                    f"{'.'.join(map(str, python.version))}: {plan.note}")  # fmt: skip
        return self.run(context, task)

    def _refuse(self, prefs, message: str):
        prefs.setup_status = message
        self.report({"ERROR"}, message)
        return {"CANCELLED"}

    def _end(self, context, task):
        from .preferences import preferences

        global _current
        _current = None
        prefs = preferences(context)
        prefs.setup_status = task.summary
        if task.state.state == engine_setup.FINISHED:
            prefs.engine_path = task.state.python
            self.report({"INFO"}, f"RollingDepth: {task.summary}")
            return {"FINISHED"}
        self.report(
            {"ERROR" if task.state.state == engine_setup.FAILED else "WARNING"}, task.summary
        )
        return {"CANCELLED"}


class ROLLINGDEPTH_OT_cancel_setup(bpy.types.Operator):
    """Stop the set-up or check that is running (nothing half-made is kept)"""

    bl_idname = "rollingdepth.cancel_setup"
    bl_label = "Cancel"
    bl_options = {"INTERNAL"}

    @classmethod
    def poll(cls, context):
        return _current is not None and not _current.done

    def execute(self, context):
        _current.cancel()
        return {"FINISHED"}


def selftest_outcome(task: SelftestRun, verdict: tuple[str, str]) -> tuple[str, str]:
    """Check Engine's report: the check's (level, line) once the selftest passed."""
    if task.state != engine_setup.FINISHED:
        return "ERROR", task.error
    level, line = verdict
    seconds = time.monotonic() - task.started
    return level, f"{line.rstrip('.')}. Selftest passed in {seconds:.0f} s."
