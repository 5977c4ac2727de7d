"""Depth jobs: a strip in, an engine run, a depth strip out; and a batch of them.

`DepthJob` is one strip. `DepthBatch` runs the strips of one Estimate Depth call one after
another (one engine at a time: the machine's memory holds one model), each as its own shot,
with one progress and one Cancel; a single strip is a batch of one. The modal operator
(interactive) and the blocking path (scripts, background mode) share these classes: both
call `step` until it reports an end state; the modal operator from a timer, the blocking
path in a loop.

The engine writes straight into the output folder through its publisher: the new sequence is
staged beside the old one and swapped in whole once complete, under the folder's lock, with
the run's record (``depth_run.json``) and timeline (``depth.otio``) beside the frames. A
cancelled, failed or killed run leaves the folder's earlier depth as it was. The add-on never
moves or deletes a depth file: which folder, and whether the engine may replace what it holds,
is decided before the run (`folders.choose_folder`). Only the engine's inputs the add-on
makes (links to a strip's unnumbered files, the solve's anchors) live in a temporary folder
outside the output folder, removed when the run ends.

Everything the add-on needs to know about the files comes from the engine's ``result``
message (protocol.RESULT_KEYS): ``files``, ``frame_numbers``, ``output_size``,
``value_range``, ``depth_mode``, ``near``, ``far``, and the plate's ``timecodes`` and ``fps``
where it has them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace

import bpy

from . import camera_solve, protocol, sequencer
from .compositing import remove_defocus_scenes, setup_defocus
from .engine import (
    ESTIMATES,
    EngineError,
    EngineProcess,
    RunOptions,
    error_text,
    in_blender_terms,
    kept_key,
    run_argv,
)
from .folders import CACHE_PARTS
from .frames import FramePlan, StripError

RUNNING, FINISHED, FAILED, CANCELLED = "RUNNING", "FINISHED", "FAILED", "CANCELLED"
# The `result` keys this add-on reads (all in protocol.RESULT_KEYS).
RESULT_NEEDS = ("files", "frame_numbers", "output_size", "value_range", "depth_mode", "near", "far")
INPUTS_PREFIX = "rollingdepth-inputs-"  # a temporary folder for what the engine reads
ANCHORS_CSV = "anchors.csv"  # in the inputs folder: removed with it, whatever the ending


@dataclass(frozen=True)
class JobSettings:
    engine_path: str
    options: RunOptions
    output_dir: str  # absolute; `folders.choose_folder` picked it
    defocus: bool = False
    replace: bool = True  # remove the source's previous depth strip when done
    # Anchor to Camera Solve: the solve's anchors (camera_solve.SolveAnchors), written to the
    # run's inputs folder as the engine's `--anchors` CSV, so that it goes with the run
    anchors: object | None = None
    # the engine's estimate of this run (engine.estimate_argv): the time left while it runs
    estimate_argv: tuple[str, ...] = ()


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
        self.inputs_dir: str | None = None  # temporary: links to the plate, the anchors CSV
        self.files: list[str] = []
        self.created_dirs: list[str] = []  # output folders this job made, deepest first
        self.created_cache: list[str] = []  # the kept predictions' folders it made, likewise
        self.cache_used = False  # the engine was given the strip's kept predictions
        self.replaced: list[str] = []  # names of the depth strips this job replaced
        self.started_at = time.monotonic()
        self.estimate: dict | None = None  # the engine's estimate, once it has answered
        self.result: dict | None = None  # the engine's result, once it finished
        self._clock: protocol.RemainingClock | None = None

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
        except OSError as exc:
            self._remove_created()
            raise EngineError(
                f"Cannot write to the output folder {output_dir!r} ({exc.strerror}): choose "
                "another folder.",
                "OutputError",
            ) from exc
        try:
            self.plan = sequencer.plan_for_strip(strip, "")
            if self.plan.staging:  # files without one numbering: links named frame.####
                self.plan = sequencer.plan_for_strip(strip, self._inputs("plate"))
                sequencer.stage_plate(self.plan, self._inputs("plate"))
            options = self._kept(self.settings.options)
            if self.settings.anchors is not None:
                path = self._inputs(ANCHORS_CSV)
                camera_solve.write_anchors_csv(path, self.settings.anchors)
                options = replace(options, anchors=path)
            argv = run_argv(
                self.settings.engine_path,
                self.plan.plate,
                output_dir,
                self.plan.frames,
                options,
            )
            self.process = EngineProcess(argv).start()
            self.started_at = time.monotonic()
            if options.cache:  # the sidebar shows them and offers to remove them
                strip[sequencer.CACHE_KEY] = options.cache
            self.cache_used = bool(options.cache)
            if self.settings.estimate_argv:  # answered in the background, beside the run
                ESTIMATES.get(list(self.settings.estimate_argv))
        except BaseException:
            self._remove_inputs()
            self._remove_created()
            raise
        return self

    def _kept(self, options: RunOptions) -> RunOptions:
        """``options`` with the strip's kept predictions where their folder can be made; a
        folder that cannot (a read-only parent) costs reruns their speed, not the run."""
        if not options.cache:
            return options
        made = _missing_folders(options.cache)
        try:
            os.makedirs(options.cache, exist_ok=True)
            self.created_cache = made  # a run that ends without depth takes back empty ones
        except OSError as exc:
            self.notes.append(
                f"the model's work is not kept for a faster rerun: cannot write {options.cache} "
                f"({exc.strerror})"
            )
            return replace(options, cache=None)
        return options

    def _inputs(self, name: str) -> str:
        """``name`` in this run's temporary inputs folder (made on first use)."""
        if self.inputs_dir is None:
            self.inputs_dir = tempfile.mkdtemp(prefix=INPUTS_PREFIX)
        return os.path.join(self.inputs_dir, name)

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
        notes = [in_blender_terms(m) for m in run.messages]  # the engine's notes, worded
        self.notes.extend(m for m in notes if m not in self.notes)
        if run.result is not None and run.result.get("ok", True):
            self._finish(run.result)
        elif self.process.cancelled or (run.error or {}).get("kind") == protocol.KIND_CANCELLED:
            self.state = CANCELLED
            self._end_run()
        else:
            # the report carries one line; the console gets the engine's own log, if it wrote one
            log = self.process.log_tail
            if log:
                print(f"RollingDepth engine log:\n{log}", file=sys.stderr)
            self._fail(self._user_paths(error_text(run.error or {})))
        return self.state

    def _user_paths(self, text: str) -> str:
        """``text`` naming the user's files, not the temporary links: a staged plate frame
        becomes the file it links to."""
        if not self.inputs_dir:
            return text
        staged = os.path.join(self.inputs_dir, "plate")
        for source, name in self.plan.staging if self.plan else []:
            text = text.replace(os.path.join(staged, name), source)
        return text

    def run_blocking(self, timeout: float | None = None, interval: float = 0.05) -> str:
        """Step until the end (scripts and background mode, where no timer fires)."""
        return _step_until_done(self, timeout, interval)

    def _timed_out(self, message: str) -> None:
        self.cancel()
        self.error = message
        self.state = FAILED

    def cancel(self) -> None:
        """Stop the engine (terminate, then kill): its publisher drops what it staged, and the
        folder keeps its earlier depth."""
        if self.done:
            return
        if self.process is not None:
            self.process.cancel()
        self.state = CANCELLED
        self._end_run()

    # ---------------------------------------------------------------- for the UI
    @property
    def progress(self) -> float:
        if self.state == FINISHED:
            return 1.0
        return self.process.state.fraction if self.process else 0.0

    @property
    def remaining(self) -> float | None:
        """Seconds this run has left, once the engine's estimate is in (None before)."""
        if self.process is None or self.state != RUNNING or not self.settings.estimate_argv:
            return None
        if self._clock is None:
            ready, report = ESTIMATES.get(list(self.settings.estimate_argv))
            if not ready or not report:
                return None
            self.estimate = report
            self._clock = protocol.RemainingClock(
                report["stages"], start=self.started_at, rough=not report.get("measured", True)
            )
        run = self.process.state
        return self._clock.update(run.stage, run.done, run.total)

    @property
    def status_text(self) -> str:
        if self.process is None:
            return "starting"
        run = self.process.state
        text = run.message
        if run.total and self.state == RUNNING:
            text = f"{run.message} {run.done}/{run.total}"
        remaining = self.remaining
        if remaining is not None:
            text += f", {protocol.duration_text(remaining)} left"
        return text

    # ---------------------------------------------------------------- endings
    def _finish(self, result: dict) -> None:
        assert self.plan is not None
        self.result = result
        self._remove_inputs()
        try:
            files_by_number = self._published(result)
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
                _timecodes_by_number(result),
                result.get("fps"),
            )
            if result["depth_mode"] == "depth":  # scene units: above 1 shows white
                lo, hi = (float(v) for v in result["value_range"])
                if not sequencer.show_depth_range(scene, depth, lo, hi):
                    self.notes.append(
                        "depth in scene units shows white in this Blender's Sequencer "
                        "(values above 1); the files hold the distances"
                    )
            # only now that the new depth is in place do the replaced strips go; their files
            # stay where they are unless this run's publish replaced them (same folder)
            if previous:
                self.replaced = [strip.name for strip in previous]
                channel = min(strip.channel for strip in previous)
                for strip in previous:
                    sequencer.remove_strip(scene, strip)
                depth.channel = min(depth.channel, channel)
                depth.name = f"{source.name} depth"  # the replaced strip's name is free now
            self.depth_strip_name = depth.name
            if self.cache_used and self.settings.estimate_argv:
                # the kept predictions now hold this run's model work: a rerun's estimate
                # that matches it only re-aligns
                source[sequencer.KEPT_FOR_KEY] = kept_key(
                    sequencer.media_path(source), self.settings.estimate_argv
                )
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
            units=(result.get("anchors") or {}).get("units") or "scene units",
        )
        self.defocus_scene_name = defocus.name

    def _published(self, result: dict) -> dict[int, str]:
        """The published frames by source number, from the engine's result."""
        missing = [key for key in RESULT_NEEDS if key not in result]
        if missing:
            raise EngineError(
                f"The engine's result lacks {', '.join(missing)}: install the engine version "
                "that matches this add-on.",
                "EngineError",
            )
        numbers = [int(n) for n in result.get("frame_numbers", [])]
        produced = [os.path.normpath(str(p)) for p in result.get("files", [])]
        if not produced or len(numbers) != len(produced):
            raise EngineError(
                "The engine reported success but listed no matching files; see the console.",
                "EngineCrash",
            )
        self.files = produced
        return dict(zip(numbers, produced, strict=True))

    def _fail(self, message: str) -> None:
        self.error = message
        self.state = FAILED
        self._end_run()

    def _end_run(self) -> None:
        """Remove the temporary inputs and, unless the run finished, the output folders this
        job created that are still empty (a folder with anything in it stays)."""
        self._remove_inputs()
        if self.state != FINISHED:
            self._remove_created()

    def _remove_inputs(self) -> None:
        if self.inputs_dir and os.path.isdir(self.inputs_dir):
            shutil.rmtree(self.inputs_dir, ignore_errors=True)

    def _remove_created(self) -> None:
        if self.created_cache:  # what the engine made in it and left empty goes too
            for part in CACHE_PARTS:
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(self.created_cache[0], part))
        for made in (self.created_cache, self.created_dirs):
            for folder in made:  # deepest first; a folder with files in it stays
                try:
                    os.rmdir(folder)
                except OSError:
                    break


class DepthBatch:
    """The strips of one Estimate Depth call, each its own `DepthJob` (own snippets,
    alignment, normalisation, output folder and depth strip), run one after another.

    Offers what the operator and the sidebar use of a DepthJob (start, step, cancel,
    run_blocking, done, state, progress, status_text, strip_name, notes, error). A strip that
    fails is reported and the next one starts; Cancel stops the running engine and starts no
    other. Strips that finished keep their depth either way.
    """

    def __init__(self, scene, strips, settings: list[JobSettings]) -> None:
        if not strips or len(strips) != len(settings):
            raise ValueError("a batch needs one JobSettings per strip")
        self.scene_name = scene.name
        self.strip_names = [strip.name for strip in strips]
        self.settings = list(settings)
        self.state = RUNNING
        self.error: str | None = None
        self.jobs: list[DepthJob] = []  # the jobs started so far, in order
        self.failures: list[tuple[str, str]] = []  # (strip name, one line), in order
        self.current: DepthJob | None = None
        self._next = 0  # index of the strip to start next

    @property
    def several(self) -> bool:
        return len(self.strip_names) > 1

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> DepthBatch:
        """Check that every strip can be read, then start the first one's engine; raises
        EngineError/StripError before any process starts when the inputs are wrong."""
        scene = bpy.data.scenes[self.scene_name]
        for name in self.strip_names:
            strip = sequencer.find_strip(scene, name)
            try:
                sequencer.plan_for_strip(strip, "")  # reads nothing, writes nothing
            except StripError as exc:
                raise StripError(self._named(name, str(exc))) from exc
        self._start_next(first=True)
        return self

    def _start_next(self, first: bool = False) -> None:
        """Start the next strip; one that cannot start is a failure, then the one after it
        starts. The first strip's failure is raised: nothing has run yet."""
        self.current = None
        scene = bpy.data.scenes.get(self.scene_name)
        while self._next < len(self.strip_names):
            name, settings = self.strip_names[self._next], self.settings[self._next]
            self._next += 1
            strip = sequencer.find_strip(scene, name) if scene else None
            try:
                if strip is None:
                    raise StripError(f"The strip {name!r} was removed before its turn.")
                job = DepthJob(scene, strip, settings)
                job.start()
            except Exception as exc:  # a later strip's failure must not end the batch
                if first:
                    raise
                self.failures.append((name, str(exc) or type(exc).__name__))
                continue
            self.jobs.append(job)
            self.current = job
            return
        self._settle()

    @property
    def done(self) -> bool:
        return self.state != RUNNING

    def step(self) -> str:
        """Advance the running strip's job; never blocks. Returns RUNNING or the end state."""
        if self.done or self.current is None:
            return self.state
        job = self.current
        state = job.step()
        if state == RUNNING:
            return RUNNING
        if state == CANCELLED:  # the engine was stopped from outside: start no other
            self.state = CANCELLED
            return self.state
        if state == FAILED:
            self.failures.append((job.strip_name, job.error or "RollingDepth failed."))
        self._start_next()
        return self.state

    def run_blocking(self, timeout: float | None = None, interval: float = 0.05) -> str:
        """Step until the end (scripts and background mode, where no timer fires)."""
        return _step_until_done(self, timeout, interval)

    def _timed_out(self, message: str) -> None:
        name = self.strip_name
        self.cancel()
        self.failures.append((name, message))
        self._settle()

    def cancel(self) -> None:
        """Stop the running engine (its work folder goes, as with one job); start no other."""
        if self.done:
            return
        if self.current is not None:
            self.current.cancel()
        self.state = CANCELLED

    def _settle(self) -> None:
        if not self.failures:
            self.state = FINISHED
            return
        self.state = FAILED
        self.error = "; ".join(self.failure_lines())

    # ---------------------------------------------------------------- for the UI
    @property
    def finished_jobs(self) -> list[DepthJob]:
        return [job for job in self.jobs if job.state == FINISHED]

    @property
    def strip_name(self) -> str:
        if self.current is not None:
            return self.current.strip_name
        return self.strip_names[max(self._next - 1, 0)]

    @property
    def progress(self) -> float:
        if self.state == FINISHED:
            return 1.0
        ended = len(self.finished_jobs) + len(self.failures)
        running = self.current.progress if self.current and not self.current.done else 0.0
        return min((ended + running) / len(self.strip_names), 1.0)

    @property
    def status_text(self) -> str:
        text = self.current.status_text if self.current is not None else "starting"
        if not self.several:
            return text
        return f"strip {max(self._next, 1)} of {len(self.strip_names)}: {text}"

    @property
    def notes(self) -> list[str]:
        if not self.several:
            return [note for job in self.jobs for note in job.notes]
        return [f"{job.strip_name}: {note}" for job in self.jobs for note in job.notes]

    def failure_lines(self) -> list[str]:
        """One line per strip that failed, naming it."""
        return [self._named(name, message) for name, message in self.failures]

    def not_written(self) -> list[str]:
        """The strips that got no depth: failed, cancelled, or never started."""
        kept = {job.strip_name for job in self.finished_jobs}
        return [name for name in self.strip_names if name not in kept]

    def _named(self, name: str, message: str) -> str:
        """``message`` naming its strip, when there are several to tell apart."""
        if not self.several or repr(name) in message:
            return message
        return f"{name!r}: {message}"


# The blocking path (background mode, scripts) says how the run goes this often, on stdout.
PRINT_EVERY_S = 10.0


def _step_until_done(job: DepthJob | DepthBatch, timeout: float | None, interval: float) -> str:
    """``job.step()`` until it ends, saying how it goes every PRINT_EVERY_S seconds; past
    ``timeout`` seconds the job is stopped and told why (``job._timed_out``)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    said = time.monotonic()
    try:
        while job.step() == RUNNING:
            if deadline is not None and time.monotonic() > deadline:
                job._timed_out(f"The engine did not finish within {timeout:.0f} s; it was stopped.")
                break
            if time.monotonic() - said >= PRINT_EVERY_S:
                said = time.monotonic()
                print(f"RollingDepth: {job.strip_name}: {job.status_text} ({job.progress:.0%})")
            time.sleep(interval)
    except KeyboardInterrupt:
        # Ctrl-C in the terminal of a background Blender is this path's Esc: the engine is
        # stopped (else it runs on for the rest of its hour, holding the folder's lock) and the
        # call ends cancelled, reported as Esc reports it, instead of a Python traceback
        print(f"RollingDepth: {job.strip_name}: stopping (Ctrl-C)")
        job.cancel()
    return job.state


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


def _timecodes_by_number(result: dict) -> dict[int, str] | None:
    """Each source number's timecode, from an engine that reports them (protocol RESULT_KEYS)."""
    timecodes = result.get("timecodes")
    numbers = result.get("frame_numbers") or []
    if not timecodes or len(timecodes) != len(numbers):
        return None
    return {int(n): str(tc) for n, tc in zip(numbers, timecodes, strict=True)}


def summary(job: DepthJob | DepthBatch) -> str:
    """One line for the user about a finished job, or about the strips a batch finished."""
    if isinstance(job, DepthBatch):
        done = job.finished_jobs
        if not job.several and done:
            return summary(done[0])
        names = ", ".join(repr(j.depth_strip_name) for j in done)
        return f"{len(done)} depth strip{'s' if len(done) != 1 else ''} added: {names}"
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
    if reused_predictions(job):
        text += "; the model's work was kept from the last run: this run only re-aligned"
    if job.defocus_scene_name:
        text += f"; Defocus compositing in scene {job.defocus_scene_name!r}"
    return text


def reused_predictions(job: DepthJob) -> bool:
    """Whether ``job`` ran no model: every prediction it aligned was kept from an earlier run
    (the engine's cache counts, in its result)."""
    result = job.result or {}
    stats = result.get("cache_stats") or {}
    return (
        bool(stats.get("blocks_reused"))
        and not stats.get("blocks_computed")
        and not result.get("model_loaded")
    )


def kept_text(job: DepthJob | DepthBatch) -> str:
    """What a cancelled call kept: the depth of the strips a batch finished before it."""
    kept = job.finished_jobs if isinstance(job, DepthBatch) else []
    if not kept:
        return "no depth files were written."
    return (
        f"depth kept for {', '.join(repr(j.strip_name) for j in kept)}; "
        f"nothing written for {', '.join(repr(name) for name in job.not_written())}."
    )


def outcome_reports(job: DepthJob | DepthBatch) -> list[tuple[str, str]]:
    """``(level, line)`` reports for the end of ``job``: what was added, one ERROR line per
    strip that failed (naming it, when there were several), a WARNING for a cancel."""
    several = isinstance(job, DepthBatch) and job.several
    reports = [("INFO", summary(j)) for j in job.finished_jobs] if several else []
    failures = [("ERROR", line) for line in job.failure_lines()] if several else []
    if job.state == FINISHED:
        reports.append(("INFO", summary(job)))
    elif job.state == CANCELLED:
        reports += [*failures, ("WARNING", f"RollingDepth cancelled; {kept_text(job)}")]
    elif several:
        reports += [("INFO", summary(job))] if job.finished_jobs else []
        reports += failures
    else:
        reports.append(("ERROR", job.error or "RollingDepth failed."))
    return reports


def depth_added(job: DepthJob | DepthBatch) -> bool:
    """Whether ``job`` changed the scene (a depth strip, maybe a Defocus scene): worth an undo
    step even when the call as a whole failed or was cancelled."""
    if isinstance(job, DepthBatch):
        return bool(job.finished_jobs)
    return job.state == FINISHED


# ---------------------------------------------------------------------------- the one live job
_current: DepthJob | DepthBatch | None = None
_last_outcome = ""


def current_job() -> DepthJob | DepthBatch | None:
    return _current


def set_current(job: DepthJob | DepthBatch | None) -> None:
    global _current
    _current = job


def finished(job: DepthJob | DepthBatch) -> None:
    """Forget ``job`` as the live one and keep a line about how it ended for the sidebar."""
    global _current, _last_outcome
    if _current is job:
        _current = None
    if job.state == FINISHED:
        _last_outcome = summary(job)
    elif job.state == CANCELLED:
        _last_outcome = f"Cancelled; {kept_text(job)}"
    elif depth_added(job):  # a batch in which some strips failed
        _last_outcome = f"{summary(job)}. Failed: {job.error}"
    else:
        _last_outcome = job.error or "Failed."


def last_outcome() -> str:
    return _last_outcome


def cancel_current() -> None:
    if _current is not None:
        _current.cancel()
