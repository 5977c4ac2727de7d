"""One depth job: a strip in, an engine run, a depth strip out.

The modal operator (interactive) and the blocking path (scripts, background mode) share this
class: both call `DepthJob.step` until it reports an end state; the modal operator from a
timer, the blocking path in a loop.

The engine writes into a hidden work folder inside the output folder; only a finished run's
files are moved into the output folder. A cancelled, failed or killed run therefore never
leaves partial EXRs, nor a mix of new and old frames, nor the folders it created.

Everything the add-on needs to know about the files comes from the engine's ``result``
message (protocol.RESULT_KEYS): ``files``, ``frame_numbers``, ``output_size``,
``value_range``, ``depth_mode``, ``near``, ``far``, ``alignment``, ``preview``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass

import bpy

from . import protocol, sequencer
from .compositing import remove_defocus_scenes, setup_defocus
from .engine import EngineError, EngineProcess, RunOptions, error_text, run_argv
from .frames import FramePlan, StripError

RUNNING, FINISHED, FAILED, CANCELLED = "RUNNING", "FINISHED", "FAILED", "CANCELLED"
# The `result` keys this add-on reads (all in protocol.RESULT_KEYS).
RESULT_NEEDS = ("files", "frame_numbers", "output_size", "value_range", "depth_mode", "near", "far")
WORK_PREFIX = ".rollingdepth-run-"


@dataclass(frozen=True)
class JobSettings:
    engine_path: str
    options: RunOptions
    output_dir: str  # absolute
    defocus: bool = False
    replace: bool = True  # remove the source's previous depth strip (and files) when done


class DepthJob:
    """Started with `start`, advanced with `step`, stopped with `cancel`."""

    def __init__(self, scene, strip, settings: JobSettings) -> None:
        self.scene_name = scene.name
        self.strip_name = strip.name
        self.settings = settings
        self.state = RUNNING
        self.error: str | None = None
        self.notes: list[str] = []
        self.depth_strip_name: str | None = None
        self.defocus_scene_name: str | None = None
        self.plan: FramePlan | None = None
        self.process: EngineProcess | None = None
        self.work_dir: str | None = None
        self.files: list[str] = []
        self.created_dirs: list[str] = []  # output folders this job made, deepest first
        self.replaced: list[str] = []  # names of the depth strips this job replaced
        self.sidecars: list[str] = []  # the run's alignment and preview files, moved out

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> DepthJob:
        """Plan the frames and launch the engine; raises EngineError/StripError before any
        process starts when the inputs are wrong."""
        scene = bpy.data.scenes[self.scene_name]
        strip = sequencer.find_strip(scene, self.strip_name)
        output_dir = self.settings.output_dir
        self.created_dirs = _missing_folders(output_dir)
        try:
            os.makedirs(output_dir, exist_ok=True)
            self.work_dir = tempfile.mkdtemp(prefix=WORK_PREFIX, dir=output_dir)
        except OSError as exc:
            self._remove_work_dir()
            raise EngineError(
                f"Cannot write to the output folder {output_dir!r} ({exc.strerror}): choose "
                "another folder.",
                "OutputError",
            ) from exc
        try:
            staging = os.path.join(self.work_dir, "plate")
            self.plan = sequencer.plan_for_strip(strip, staging)
            sequencer.stage_plate(self.plan, staging)
            argv = run_argv(
                self.settings.engine_path,
                self.plan.plate,
                os.path.join(self.work_dir, "out"),
                self.plan.frames,
                self.settings.options,
            )
            self.process = EngineProcess(argv).start()
        except BaseException:
            self._remove_work_dir()
            raise
        return self

    @property
    def done(self) -> bool:
        return self.state != RUNNING

    def step(self) -> str:
        """Handle the engine's news; never blocks. Returns RUNNING or the end state."""
        if self.done or self.process is None:
            return self.state
        self.process.poll()
        if not self.process.finished:
            return RUNNING
        run = self.process.state
        self.notes.extend(m for m in run.messages if m not in self.notes)
        if run.result is not None and run.result.get("ok", True):
            self._finish(run.result)
        elif self.process.cancelled or (run.error or {}).get("kind") == protocol.KIND_CANCELLED:
            self.state = CANCELLED
            self._remove_work_dir()
        else:
            # the report carries one line; the console gets the engine's own log, if it wrote one
            log = self.process.log_tail
            if log:
                print(f"RollingDepth engine log:\n{log}", file=sys.stderr)
            self._fail(error_text(run.error or {}))
        return self.state

    def run_blocking(self, timeout: float | None = None, interval: float = 0.05) -> str:
        """Step until the end (scripts and background mode, where no timer fires)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.step() == RUNNING:
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                self.error = f"The engine did not finish within {timeout:.0f} s; it was stopped."
                self.state = FAILED
                break
            time.sleep(interval)
        return self.state

    def cancel(self) -> None:
        """Stop the engine (terminate, then kill) and remove everything this run wrote."""
        if self.done:
            return
        if self.process is not None:
            self.process.cancel()
        self.state = CANCELLED
        self._remove_work_dir()

    # ---------------------------------------------------------------- for the UI
    @property
    def progress(self) -> float:
        if self.state == FINISHED:
            return 1.0
        return self.process.state.fraction if self.process else 0.0

    @property
    def status_text(self) -> str:
        if self.process is None:
            return "starting"
        run = self.process.state
        if run.total and self.state == RUNNING:
            return f"{run.message} {run.done}/{run.total}"
        return run.message

    # ---------------------------------------------------------------- endings
    def _finish(self, result: dict) -> None:
        assert self.plan is not None and self.work_dir is not None
        try:
            files_by_number = self._move_outputs(result)
            scene = bpy.data.scenes.get(self.scene_name)
            source = sequencer.find_strip(scene, self.strip_name) if scene else None
            if source is None:
                raise StripError(
                    f"The strip {self.strip_name!r} was removed during the run; the depth EXRs "
                    f"are in {self.settings.output_dir}."
                )
            previous = sequencer.depth_strips_of(scene, source) if self.settings.replace else []
            height, width = result["output_size"]
            depth = sequencer.add_depth_strip(
                scene,
                source,
                self.plan,
                files_by_number,
                f"{source.name} depth",
                (width, height),
            )
            depth[sequencer.SIDECARS_KEY] = self.sidecars
            # only now that the new depth is in place do the replaced strips and files go
            if previous:
                old_files = [path for strip in previous for path in sequencer.strip_files(strip)]
                self.replaced = [strip.name for strip in previous]
                channel = min(strip.channel for strip in previous)
                for strip in previous:
                    sequencer.remove_strip(scene, strip)
                depth.channel = min(depth.channel, channel)
                depth.name = f"{source.name} depth"  # the replaced strip's name is free now
                kept = {os.path.normpath(p) for p in [*self.files, *self.sidecars]}
                _remove_files({os.path.normpath(p) for p in old_files} - kept)
            self.depth_strip_name = depth.name
            if self.settings.defocus:
                if self.settings.replace:
                    remove_defocus_scenes(scene, source)
                self._build_defocus(scene, source, result, (width, height))
        except (StripError, EngineError, OSError, RuntimeError) as exc:
            self._fail(str(exc))
            return
        self.state = FINISHED

    def _build_defocus(self, scene, source, result: dict, depth_size) -> None:
        # An Image node steps one file number per frame: it cannot follow holds, skips,
        # reverse playback, or files without one numbering (those are staged under new names).
        if not self.plan.plays_in_order or self.plan.staging:
            self.notes.append(
                "no Defocus setup: the strip does not play one numbered sequence in order, "
                "which the compositor's Image nodes cannot follow (the depth strip is right)"
            )
            return
        defocus = setup_defocus(
            scene,
            source,
            self.plan,
            self.files,
            result["depth_mode"],
            float(result["near"]),
            float(result["far"]),
            tuple(result["value_range"]),
            sequencer.plate_size(source) or depth_size,
        )
        self.defocus_scene_name = defocus.name

    def _move_outputs(self, result: dict) -> dict[int, str]:
        """Move the finished run's files from the work folder into the output folder."""
        assert self.work_dir is not None
        output_dir = self.settings.output_dir
        missing = [key for key in RESULT_NEEDS if key not in result]
        if missing:
            raise EngineError(
                f"The engine's result lacks {', '.join(missing)}: install the engine version "
                "that matches this add-on.",
                "EngineError",
            )
        numbers = [int(n) for n in result.get("frame_numbers", [])]
        produced = [str(p) for p in result.get("files", [])]
        if not produced or len(numbers) != len(produced):
            raise EngineError(
                "The engine reported success but listed no matching files; see the console.",
                "EngineCrash",
            )
        files_by_number = {}
        for number, path in zip(numbers, produced, strict=True):
            target = os.path.join(output_dir, os.path.basename(path))
            os.replace(path, target)
            files_by_number[number] = target
        for key in ("alignment", "preview"):
            extra = result.get(key)
            if extra and os.path.isfile(extra):
                target = os.path.join(output_dir, os.path.basename(extra))
                os.replace(extra, target)
                self.sidecars.append(target)
        self.files = [files_by_number[n] for n in numbers]
        self._remove_work_dir()
        return files_by_number

    def _fail(self, message: str) -> None:
        self.error = message
        self.state = FAILED
        self._remove_work_dir()

    def _remove_work_dir(self) -> None:
        """Remove the work folder and, unless the run finished, the folders it created."""
        if self.work_dir and os.path.isdir(self.work_dir):
            shutil.rmtree(self.work_dir, ignore_errors=True)
        if self.state == FINISHED:
            return
        for folder in self.created_dirs:  # deepest first; a folder with files in it stays
            try:
                os.rmdir(folder)
            except OSError:
                break


def _missing_folders(folder: str) -> list[str]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    folder = os.path.abspath(folder)
    while folder and not os.path.exists(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return missing


def _remove_files(paths) -> None:
    """Delete replaced depth frames, then their folders if that left them empty."""
    folders = set()
    for path in paths:
        try:
            os.remove(path)
            folders.add(os.path.dirname(path))
        except OSError:
            pass
    for folder in folders:
        with contextlib.suppress(OSError):  # still holds other files: it stays
            os.rmdir(folder)


def summary(job: DepthJob) -> str:
    """One line for the user about a finished job."""
    plan = job.plan
    numbers = plan.source_numbers if plan else []
    text = (
        f"Depth strip {job.depth_strip_name!r} added: {len(job.files)} EXRs "
        f"(source frames {numbers[0]}-{numbers[-1]}) in {job.settings.output_dir}"
        if numbers
        else f"Depth strip {job.depth_strip_name!r} added"
    )
    if job.replaced:
        text += f", replacing {', '.join(repr(n) for n in job.replaced)}"
    if job.defocus_scene_name:
        text += f"; Defocus compositing in scene {job.defocus_scene_name!r}"
    return text


# ---------------------------------------------------------------------------- the one live job
_current: DepthJob | None = None
_last_outcome = ""


def current_job() -> DepthJob | None:
    return _current


def set_current(job: DepthJob | None) -> None:
    global _current
    _current = job


def finished(job: DepthJob) -> None:
    """Forget ``job`` as the live one and keep a line about how it ended for the sidebar."""
    global _current, _last_outcome
    if _current is job:
        _current = None
    if job.state == FINISHED:
        _last_outcome = summary(job)
    elif job.state == CANCELLED:
        _last_outcome = "Cancelled; no depth files were written."
    else:
        _last_outcome = job.error or "Failed."


def last_outcome() -> str:
    return _last_outcome


def cancel_current() -> None:
    if _current is not None:
        _current.cancel()


def default_output_dir(strip_name: str) -> str:
    return f"//depth/{bpy.path.clean_name(strip_name)}/"


def resolve_output_dir(text: str, strip_name: str) -> tuple[str, str | None]:
    """Absolute output folder for ``text`` and, when it had to change, a note saying why.

    A ``//`` path is relative to the .blend; with an unsaved .blend it goes to a temporary
    folder instead (the note says so, so the user can save and run again).
    """
    text = text.strip() or default_output_dir(strip_name)
    if text.startswith("//") and not bpy.data.filepath:
        folder = os.path.join(
            tempfile.gettempdir(), "rollingdepth", bpy.path.clean_name(strip_name)
        )
        return folder, (
            f"The .blend is not saved, so the depth EXRs go to a temporary folder: {folder}. "
            "Save the .blend to keep them next to it."
        )
    return os.path.normpath(bpy.path.abspath(text)), None
