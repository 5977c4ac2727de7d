"""The publisher: a run's sequence replaces the folder's sequence whole, or not at all.

A run writes ``NAME.####.exr`` and its sidecars (``NAME_alignment.json``, ``NAME_anchors.json``,
``NAME_preview.mp4``, ``NAME.otio``) and a manifest ``NAME_run.json`` (its *run id*, a hash of
the plate, its frame numbers and every setting; its state; the frames; the files; who asked
for it; what it used: holdout, anchors, cuts, colour; its keys are in :mod:`.protocol`) into
the output folder. What readers of the folder can rely on:

- **Whole or nothing.** Every file is first written into a staging folder beside the
  sequence (``.NAME.staging/`` in the output folder, so the swap is a rename on one file
  system). Only when every frame and sidecar is complete does the swap run: a journal
  (``.NAME.staging/swap.json``) is written as the commit point, the folder's manifest is
  rewritten to say ``being swapped``, then each file takes its place by ``os.replace``
  (the complete manifest last) and the earlier sequence's frames and sidecars the new one
  does not have are removed (each said). Interrupted before the journal (Ctrl-C, a kill, a
  full disk, a failed frame), the folder still holds the earlier sequence untouched; the
  staging folder is removed then, or by the next run or ``rollingdepth check --output``
  after a kill. SIGINT, SIGTERM and SIGHUP wait while the swap runs, whichever thread the
  kernel hands them to (handlers that record them; the run is cancelled after, saying that
  the new sequence is complete); a SIGKILL or a power cut inside it leaves the journal and a
  manifest that says ``being swapped``, and the next run or ``rollingdepth check --output``
  completes the swap before anything else reads or writes the sequence. The journal is
  trusted only after it is checked: every name a plain file of this sequence in this folder.
- **One writer.** ``.NAME.lock`` in the folder is held (``flock``) from the check before the
  model loads until the swap is done. A second writer of the same sequence is refused at
  once in one line naming the holder. The kernel drops the lock of a process that dies, so
  a dead writer's lock is taken over by the next run.
- **Another run's frames are kept unless asked.** A folder holding ``NAME.*.exr`` frames of
  another run (another run id, a partial ``--frames`` range, a plate of its own, or frames no
  manifest accounts for) is refused unless ``overwrite``. With ``overwrite`` the new
  sequence replaces the old one whole: old frames the new run does not write are removed at
  the swap, and said so. Rerunning the same run (a retried farm task) replaces it the same way.
- A run never writes over its own input files, and ``NAME`` cannot leave the folder.

Use (the runner, the panel): ``publisher.check()`` before the model loads (takes the lock);
``with publisher.writing():`` around the writes, each frame to ``publisher.staging_path(n)``
followed by ``publisher.wrote(n)``, sidecars to ``publisher.staging / name``; then
``publisher.publish(extra_files)``. ``publisher.release()`` (or ``with publisher:``) frees the
lock of a run that stops before publishing.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from . import __version__, protocol
from .atomic import write_text_atomic
from .config import check_name
from .errors import Cancelled, ConfigError, OutputError, RollingDepthError
from .output import expand_pattern, not_a_folder, sequence_pattern

MANIFEST_SUFFIX = protocol.MANIFEST_SUFFIX
JOURNAL = protocol.JOURNAL_NAME


class ForeignFrames(OutputError):
    """The folder holds another run's frames of the sequence; ``overwrite`` replaces them.

    ``folder``, ``frames`` (their ranges, "1001-1024") and ``plate`` (the other run's plate,
    "" when unknown) let a front-end say it in its own words.
    """

    def __init__(self, message: str, folder: str = "", frames: str = "", plate: str = "") -> None:
        super().__init__(message)
        self.folder, self.frames, self.plate = folder, frames, plate


def run_identity(source: str, frame_numbers: Sequence[int], settings: Mapping[str, object]) -> str:
    """The run id: the same plate, frames and settings give the same id on every machine."""
    blob = json.dumps(
        {"source": os.path.abspath(source), "frames": list(frame_numbers), "settings": settings},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def header_value_range(
    mode: str, near: float, far: float, lo: float, hi: float
) -> tuple[float, float]:
    """The (min, max) of the values written for a clip whose inverse depth spans lo..hi.

    What ``rollingdepth/value_min`` / ``value_max`` must say: for ``depth`` that is about
    near..far in scene units, for ``normalized`` 0..1, for ``inverse`` lo..hi.
    """
    import numpy as np

    from .output import convert_depth

    values = convert_depth(np.array([lo, hi], dtype=np.float32), mode, near, far, lo, hi)
    return float(values.min()), float(values.max())


def frame_ranges(numbers: Iterable[int]) -> str:
    """``1001-1007, 1010`` for the sorted numbers."""
    parts: list[str] = []
    run: list[int] = []
    for n in sorted(numbers):
        if run and n != run[-1] + 1:
            parts.append(_span(run))
            run = []
        run.append(n)
    if run:
        parts.append(_span(run))
    return ", ".join(parts)


def _span(run: list[int]) -> str:
    return str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}"


def split_pattern(pattern: str | os.PathLike[str]) -> tuple[Path, str, int]:
    """``FOLDER/NAME.####.exr`` (or ``%04d``, ``@@@@``, ``$F4``) -> (FOLDER, NAME, digits):
    the publisher's folder, sequence name and padding. ConfigError for any other form."""
    path = Path(pattern)
    match = re.fullmatch(r"(.+)\.(#+|@+|%0?\d*d|\$F\d*)\.exr", path.name)
    if match is None:
        raise ConfigError(
            f"the file pattern {str(pattern)!r} must look like NAME.####.exr (one frame "
            "token between the name and .exr), e.g. depth.####.exr"
        )
    check_name(match.group(1))
    token = match.group(2)
    digits = re.sub(r"\D", "", token)
    padding = len(token) if token[0] in "#@" else int(digits or 1)
    return path.parent, match.group(1), padding


def staging_folder(folder: str | os.PathLike[str], name: str) -> Path:
    return Path(folder) / f".{name}.staging"


def lock_path(folder: str | os.PathLike[str], name: str) -> Path:
    return Path(folder) / f".{name}.lock"


class FolderReadOnly(OutputError):
    """The folder takes no files (a read-only mount or permissions): no lock can be made."""


class SequenceLock:
    """An exclusive ``flock`` on ``.NAME.lock``, holding who took it (pid, host, time)."""

    def __init__(self, folder: str | os.PathLike[str], name: str) -> None:
        self.path = lock_path(folder, name)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock at once, or raise OutputError naming the writer that holds it."""
        if self._fd is not None:
            return
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                kind = (
                    FolderReadOnly
                    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
                    else OutputError
                )
                raise kind(f"{self.path}: cannot create the lock: {exc.strerror}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise OutputError(f"{self.path}: cannot lock: {exc.strerror}") from exc
                raise OutputError(
                    f"{self.path.parent} is being written by {self._describe_holder()}: "
                    "wait for it to finish, or choose another `-o` folder or `--name`"
                ) from None
            # the file may have been removed (released) between open and flock: lock the
            # file that is at the path now, or try again
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.strftime("%Y-%m-%d %H:%M:%S")})  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        # unlink while holding it: a writer that opened the old file re-checks the inode
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def _describe_holder(self) -> str:
        try:
            holder = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            holder = {}
        if not holder:
            return "another process"
        return (
            f"another run (pid {holder.get('pid')} on {holder.get('host')}, "
            f"since {holder.get('since')})"
        )


class JournalError(OutputError):
    """A swap journal that fails validation: left as it is for a person, nothing touched."""


def recover_staging(
    folder: str | os.PathLike[str], name: str, message: Callable[[str], None] | None = None
) -> str | None:
    """Finish or clean what an interrupted publish left for sequence ``name`` in ``folder``.

    A staging folder with a journal is a swap that was cut short: it is completed (the new
    sequence is whole in the folder afterwards). One without is a run that stopped while
    writing: it is removed (the folder holds the earlier sequence, untouched). Call with the
    sequence's lock held. Returns what was done, in one line, or None.

    Raises
    ------
    JournalError
        The journal names something that is not a plain file of this sequence in this folder
        (``../x``, an absolute path, another sequence's file, a symlink), lacks a key, or the
        staging folder is a symlink: nothing is renamed or removed.
    """
    folder = Path(folder)
    staging = staging_folder(folder, name)
    if staging.is_symlink():
        raise JournalError(
            f"{staging} is a link, not the folder a run stages its files in; it is left for a "
            "person to look at (nothing was renamed or removed)"
        )
    if not staging.is_dir():
        return None
    journal = staging / JOURNAL
    if journal.is_file() or journal.is_symlink():
        files, remove = read_journal(folder, name)
        removed = _swap(folder, staging, files, remove, message)
        text = (
            f"{folder}: completed the interrupted publish of {name} ({len(files)} files"
            + (f", {len(removed)} files of the earlier sequence removed" if removed else "")
            + ")"
        )
        if message:
            message(text)
        return text
    count = sum(1 for p in staging.iterdir() if p.suffix == ".exr")
    shutil.rmtree(staging, ignore_errors=True)
    text = (
        f"{folder}: removed the staging of an interrupted run of {name} ({count} frames "
        "never published; the folder's sequence is untouched)"
    )
    if message:
        message(text)
    return text


def read_journal(folder: str | os.PathLike[str], name: str) -> tuple[list[str], list[str]]:
    """The swap journal of sequence ``name``: (files to move in, files to remove), each a plain
    file name of the sequence, checked against the folder before anything is touched.
    JournalError otherwise (see :func:`recover_staging`)."""
    folder = Path(folder)
    staging = staging_folder(folder, name)
    journal = staging / JOURNAL

    def refuse(why: str) -> JournalError:
        return JournalError(
            f"{journal}: {why}; the interrupted publish of {name} is left as it is for a "
            "person to look at (nothing was renamed or removed)"
        )

    if journal.is_symlink() or staging.is_symlink():
        raise refuse("the journal is a link")
    try:
        plan = json.loads(journal.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise refuse(f"cannot be read ({exc})") from None
    if not isinstance(plan, dict):
        raise refuse("not a journal (a JSON object with `files` and `remove`)")
    lists = []
    for key in ("files", "remove"):
        entries = plan.get(key)
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise refuse(f"`{key}` is missing or not a list of file names")
        lists.append(entries)
    files, remove = lists
    for entry in remove:
        if not is_sequence_file(name, entry):
            raise refuse(f"{entry!r} is not a file of the {name} sequence in this folder")
    for entry in files:
        if not (is_sequence_file(name, entry) or _is_points_file(entry)):
            raise refuse(f"{entry!r} is not a file of the {name} sequence in this folder")
    if set(files) & set(remove):
        raise refuse(f"{sorted(set(files) & set(remove))[0]!r} is both moved in and removed")
    for entry in files:
        if (staging / entry).is_symlink() or (
            (staging / entry).exists() and not (staging / entry).is_file()
        ):
            raise refuse(f"the staged {entry!r} is not a plain file")
    for entry in files + remove:
        target = folder / entry
        if target.is_symlink() or (target.exists() and not target.is_file()):
            raise refuse(f"{target} is not a plain file")
    return files, remove


def is_sequence_file(name: str, entry: str) -> bool:
    """Whether ``entry`` is the plain file name of a frame or sidecar of sequence ``name``."""
    if entry in {name + suffix for suffix in protocol.SIDECAR_SUFFIXES}:
        return True
    return re.fullmatch(re.escape(name) + r"\.-?\d+\.exr", entry) is not None


def _is_points_file(entry: str) -> bool:
    """A run's `--points` USD stage: a plain, visible file name in the folder (moved in with
    the sequence, never removed by a journal)."""
    from .points import USD_SUFFIXES

    plain = entry == Path(entry).name and entry not in ("", ".", "..") and "\\" not in entry
    return plain and not entry.startswith(".") and Path(entry).suffix.lower() in USD_SUFFIXES


def _swap(
    folder: Path,
    staging: Path,
    files: Sequence[str],
    remove: Sequence[str],
    message: Callable[[str], None] | None,
) -> list[Path]:
    """Move ``files`` from ``staging`` into ``folder`` (each by one rename; idempotent), then
    remove ``remove`` from ``folder`` and the staging folder."""
    for name in files:
        source = staging / name
        if source.exists():
            os.replace(source, folder / name)
    removed = []
    for name in remove:
        path = folder / name
        if path.exists():
            path.unlink()
            removed.append(path)
    _fsync_dir(folder)
    shutil.rmtree(staging, ignore_errors=True)
    if removed and message:
        frames = [p for p in removed if p.suffix == ".exr"]
        others = [p.name for p in removed if p.suffix != ".exr"]
        said = ([f"{len(frames)} frames"] if frames else []) + (
            [", ".join(others)] if others else []
        )
        message(
            f"removed {' and '.join(said)} of the earlier sequence that the new one does not "
            f"have{f' ({frame_ranges(_numbers(frames))})' if frames else ''} from {folder}"
        )
    return removed


def _numbers(paths: Iterable[Path]) -> list[int]:
    found = []
    for p in paths:
        match = re.search(r"\.(-?\d+)\.exr$", p.name)
        if match:
            found.append(int(match.group(1)))
    return found


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a folder; the renames are still ordered
    finally:
        os.close(fd)


DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Deferred:
    """The first stop signal that arrived while the swap ran (None: none did)."""

    signum: int | None = None


@contextmanager
def _signals_deferred() -> Iterator[_Deferred]:
    """SIGINT, SIGTERM and SIGHUP wait until the block ends, for the whole process.

    A per-thread mask does not do it: torch, OpenMP and tqdm threads still take the signal,
    and Python then runs its handler in the main thread wherever that is. Handlers set here
    (in the main thread, where Python runs them) only record the signal; the caller acts on
    it after the block. Signals the process ignores stay ignored. Off the main thread (the
    panel's worker) there is nothing to install: such a process handles signals its own way.
    """
    deferred = _Deferred()
    previous: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():

        def record(signum, frame) -> None:
            if deferred.signum is None:
                deferred.signum = signum

        for signum in DEFERRED_SIGNALS:
            try:
                if signal.getsignal(signum) == signal.SIG_IGN:
                    continue
                previous[signum] = signal.signal(signum, record) or signal.SIG_DFL
            except (ValueError, OSError):
                pass
    try:
        yield deferred
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class Publisher:
    """One run's sequence in its output folder; see the module text."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        name: str,
        frame_numbers: Sequence[int],
        run_id: str,
        *,
        input_paths: Iterable[str | os.PathLike[str]] = (),
        overwrite: bool = False,
        source: str = "",
        record: Mapping[str, object] | None = None,
        message: Callable[[str], None] | None = None,
        padding: int = 4,
    ) -> None:
        check_name(name)
        if not frame_numbers:
            raise OutputError("a run writes at least one frame")
        self.folder = Path(folder)
        self.name = name
        self.padding = padding
        self.frame_numbers = tuple(int(n) for n in frame_numbers)
        self.run_id = run_id
        self.input_paths = tuple(Path(p) for p in input_paths)
        self.overwrite = overwrite
        self.source = source
        self.record = dict(record or {})  # what the run used, for the manifest
        self.message = message
        self.pattern = sequence_pattern(self.folder, name, padding)  # the plate's padding
        self.manifest_path = self.folder / f"{name}{MANIFEST_SUFFIX}"
        self.staging = staging_folder(self.folder, name)
        self.lock = SequenceLock(self.folder, name)
        self._written: set[int] = set()
        self._replaces: set[str] = set()  # file names of the earlier sequence to remove
        self._checked = False
        self._earlier = 0  # frames of the earlier sequence in the folder
        # the outermost folder this run created (None: the folder was there), removed again
        # if the run stops before publishing and leaves it empty
        self._created: Path | None = None
        self._published = False

    @classmethod
    def for_plate(
        cls,
        folder: str | os.PathLike[str],
        name: str,
        plate,
        settings: Mapping[str, object],
        overwrite: bool = False,
        record: Mapping[str, object] | None = None,
        message: Callable[[str], None] | None = None,
        frame_numbers: Sequence[int] | None = None,
        padding: int | None = None,
    ) -> Publisher:
        """The publisher for writing ``plate`` (an opened `Plate`) with ``settings``.

        ``settings``: everything that shapes the result and is known before the model loads
        (checkpoint, preset, InferenceConfig and OutputConfig fields, anchors, holdout, cuts).
        ``frame_numbers`` (default: the plate's) and ``padding`` (default: the plate's) are
        for an export of part of a plate under another file name (the panel's).
        """
        info = plate.info
        numbers = list(info.frame_numbers if frame_numbers is None else frame_numbers)
        record = {protocol.KEY_SETTINGS: json.loads(json.dumps(settings, default=str)),
                  **(record or {})}  # fmt: skip
        if info.timecodes:
            record["timecode"] = info.timecodes.to_dict(numbers)
        return cls(
            folder,
            name,
            numbers,
            run_identity(info.source, numbers, settings),
            input_paths=plate.source_files,
            overwrite=overwrite,
            source=info.source,
            record=record,
            message=message,
            padding=info.padding if padding is None else padding,
        )

    # ------------------------------------------------------------------ names
    def frame_path(self, frame: int) -> Path:
        """Where frame ``frame`` is published."""
        return self.folder / self.frame_name(frame)

    def staging_path(self, frame: int) -> Path:
        """Where frame ``frame`` is written before the swap."""
        return self.staging / self.frame_name(frame)

    def frame_name(self, frame: int) -> str:
        return Path(expand_pattern(self.pattern, frame)).name

    def staging_pattern(self) -> str:
        """``.NAME.staging/NAME.####.exr``: the pattern the writer writes frames to."""
        return str(self.staging / Path(self.pattern).name)

    def sidecar_paths(self) -> list[Path]:
        """The sequence's other files a run may write: sidecars, timeline, manifest."""
        return [self.folder / f"{self.name}{suffix}" for suffix in protocol.SIDECAR_SUFFIXES]

    # ------------------------------------------------------------------ before the model
    def check(self) -> None:
        """Refuse, before any long computation, what the run must not do to the folder, and
        take the sequence's lock (held until `publish` or `release`).

        Raises
        ------
        OutputError
            The run would write over one of its input files, another run is writing this
            sequence, or the folder holds another run's frames and ``overwrite`` is off (the
            message says which run and how many).
        """
        planned = [self.frame_path(n) for n in self.frame_numbers] + self.sidecar_paths()
        inputs = {_real(p) for p in self.input_paths}
        for path in planned:
            if _real(path) in inputs:
                raise OutputError(
                    f"{path} is one of the plate's own files; the run would overwrite its "
                    "input: choose another `-o` folder or `--name`"
                )
        in_the_way = not_a_folder(self.folder)
        if in_the_way:
            raise OutputError(in_the_way)
        if self._created is None:
            self._created = first_missing(self.folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output folder {self.folder}: {exc.strerror}") from exc
        self.lock.acquire()
        try:
            recover_staging(self.folder, self.name, self.message)
            self._check_policy(inputs)
        except BaseException:
            self.lock.release()
            raise
        self._checked = True

    def _check_policy(self, inputs: set[str]) -> None:
        existing = {n: p for n, p in self._existing_frames().items() if _real(p) not in inputs}
        manifest = self._read_manifest()
        same_run = manifest is not None and manifest.get("run_id") == self.run_id
        mine = {self.frame_name(n) for n in self.frame_numbers}
        foreign = {n for n, path in existing.items() if not same_run or path.name not in mine}
        self._earlier = len(existing)
        # the new sequence replaces the folder's whole: what it does not write goes at the
        # swap, its earlier sidecars too (the manifest is always written)
        sidecars = {
            p.name
            for p in self.sidecar_paths()
            if p != self.manifest_path and p.is_file() and not p.is_symlink()
        }
        self._replaces = {p.name for p in existing.values() if p.name not in mine} | sidecars
        if foreign and not self.overwrite:
            partial = ""
            if manifest is not None and manifest.get("source") == self.source:
                partial = (
                    " (another frame range or other settings of this plate: each run has its "
                    "own depth scale, so ranges are not mixed in one sequence; to split a plate "
                    "over a farm use `rollingdepth infer --chunk K/N` and `finalize`)"
                )
            raise ForeignFrames(
                f"{self.folder} holds {len(foreign)} {self.name}.*.exr frames "
                f"({frame_ranges(foreign)}) of {_describe_run(manifest)}{partial}; pass "
                "`--overwrite` to replace that sequence with this run's (swapped in whole once "
                "complete) or choose another `-o` folder or `--name`",
                folder=str(self.folder),
                frames=frame_ranges(foreign),
                plate=str((manifest or {}).get("source") or ""),
            )

    def release(self) -> None:
        """Free the lock (and drop the staging) of a run that stops before publishing."""
        if (
            self.staging.is_dir()
            and not self.staging.is_symlink()
            and not (self.staging / JOURNAL).exists()
        ):
            shutil.rmtree(self.staging, ignore_errors=True)
        self.lock.release()
        if not self._published:
            remove_if_empty(self._created, self.folder)

    def adopt_created(self, created: Path | None) -> None:
        """The folder the request's checks created before this publisher ran (see
        :func:`first_missing`): removed with ours if the run stops before publishing."""
        if created is not None:
            self._created = created

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # ------------------------------------------------------------------ while writing
    def begin(self) -> None:
        """A fresh, empty staging folder for this run's files."""
        if not self._checked:
            self.check()
        shutil.rmtree(self.staging, ignore_errors=True)
        try:
            self.staging.mkdir()
        except OSError as exc:
            raise OutputError(f"cannot create {self.staging}: {exc.strerror}") from exc
        self._written = set()

    def wrote(self, frame: int) -> None:
        """Record that ``staging_path(frame)`` now holds this run's complete frame."""
        if frame not in self.frame_numbers:
            raise OutputError(f"frame {frame} is not one of this run's frames")
        self._written.add(frame)

    @contextmanager
    def writing(self) -> Iterator[Publisher]:
        """`begin`, then turn an interruption or a failed write into one honest line.

        Ctrl-C (KeyboardInterrupt) becomes `Cancelled`, any RollingDepthError keeps its type,
        an OSError (a full disk) becomes OutputError; each message says that nothing was
        published and what the folder still holds. The staging folder is removed.
        """
        self.begin()
        try:
            yield self
        except KeyboardInterrupt:
            self._discard()
            raise Cancelled(f"cancelled while writing: {self.describe_kept()}") from None
        except RollingDepthError as exc:
            self._discard()
            raise type(exc)(f"{exc}; {self.describe_kept()}") from exc
        except OSError as exc:
            self._discard()
            raise OutputError(
                f"{exc.filename or self.staging}: {exc.strerror}; {self.describe_kept()}"
            ) from exc

    def _discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def describe_kept(self) -> str:
        """What the folder holds after a run that stopped before its swap."""
        kept = (
            f"{self.folder} keeps its earlier {self.name} sequence ({self._earlier} frames)"
            if self._earlier
            else f"no {self.name} frames were written to {self.folder}"
        )
        return f"nothing of this run was published ({len(self._written)} of " \
               f"{len(self.frame_numbers)} frames were staged); {kept}"  # fmt: skip

    # ------------------------------------------------------------------ the swap
    def publish(self, extra_files: Iterable[str | os.PathLike[str]] = ()) -> list[Path]:
        """Swap the staged sequence in whole, then remove the earlier frames it does not have.

        ``extra_files``: sidecars written into :attr:`staging`. Returns the removed files.
        Raises OutputError (and publishes nothing) if a planned frame was not written.
        """
        missing = [n for n in self.frame_numbers if n not in self._written]
        if missing:
            self._discard()
            raise OutputError(
                f"{len(missing)} frames were not written ({frame_ranges(missing)}); "
                f"{self.describe_kept()}"
            )
        frames = [self.frame_name(n) for n in self.frame_numbers]
        extras = [Path(p).name for p in extra_files]
        stale = sorted(self._replaces - set(frames) - set(extras))
        manifest = {
            protocol.KEY_VERSION: __version__,
            protocol.KEY_RUN_ID: self.run_id,
            protocol.KEY_SOURCE: self.source,
            protocol.KEY_NAME: self.name,
            protocol.KEY_FRAMES: list(self.frame_numbers),
            protocol.KEY_STATE: protocol.STATE_COMPLETE,
            protocol.KEY_COMPLETE: True,
            protocol.KEY_FILES: frames + extras,
            protocol.KEY_REPLACED: stale,
            protocol.KEY_FRONT_END: protocol.DEFAULT_FRONT_END,
            protocol.KEY_REQUESTED_BY: None,
            **self.record,
        }
        write_text_atomic(self.staging / self.manifest_path.name, json.dumps(manifest, indent=1))
        # the manifest goes last: it names the sequence the frames already are
        files = frames + extras + [self.manifest_path.name]
        swapping = {**manifest, protocol.KEY_STATE: protocol.STATE_SWAPPING,
                    protocol.KEY_COMPLETE: False}  # fmt: skip
        try:
            with _signals_deferred() as deferred:
                _fsync_dir(self.staging)
                write_text_atomic(
                    self.staging / JOURNAL, json.dumps({"files": files, "remove": stale})
                )  # the commit point
                # until the complete manifest goes in last, a reader (or a kill's leftovers)
                # says "being swapped", never "complete"
                write_text_atomic(self.manifest_path, json.dumps(swapping, indent=1))
                removed = _swap(self.folder, self.staging, files, stale, self.message)
                self._published = True
        except OSError as exc:
            raise OutputError(f"{self.folder}: the swap failed: {exc}") from exc
        finally:
            self.lock.release()
        self._replaces = set()
        if deferred.signum is not None:
            raise Cancelled(
                f"cancelled ({signal.Signals(deferred.signum).name} waited for the swap): "
                f"{self.folder} holds the new {self.name} sequence, complete "
                f"({len(frames)} frames)"
            )
        return removed

    # ------------------------------------------------------------------ helpers
    def _existing_frames(self) -> dict[int, Path]:
        if not self.folder.is_dir():
            return {}
        pattern = re.compile(re.escape(self.name) + r"\.(-?\d+)\.exr")
        found = {}
        for entry in os.scandir(self.folder):
            match = pattern.fullmatch(entry.name)
            if match and entry.is_file():
                found[int(match.group(1))] = Path(entry.path)
        return found

    def _read_manifest(self) -> dict | None:
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            return None
        return manifest if isinstance(manifest, dict) else None


STATE_BEING_WRITTEN = "being written"
STATE_JOURNAL_REFUSED = "swap journal refused"
STATE_NOTHING = "nothing published"
# the states `rollingdepth check --output` exits 0 for: nothing there needs anyone
SETTLED_STATES = (protocol.STATE_COMPLETE, STATE_NOTHING)


def check_output(
    folder: str | os.PathLike[str], message: Callable[[str], None] | None = None
) -> list[dict]:
    """``rollingdepth check --output FOLDER``: every sequence's state, after finishing or
    cleaning what interrupted runs left (sequences being written are only reported).

    Each entry has ``name``, ``state`` (:data:`.protocol.STATE_COMPLETE`, ``nothing
    published`` (only an unpublished staging was there, now removed), ``being written``,
    ``being swapped``, ``incomplete``, ``no manifest``, ``unreadable`` or ``swap journal
    refused``), ``frames`` (the frames in the folder), ``run_id`` and ``source`` where a
    manifest says, ``recovered`` where an interrupted run was finished or cleaned, ``detail``
    for every state but complete, and ``read_only: True`` where the folder takes no files (it
    is then only read: nothing can be finished or cleaned there).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise OutputError(f"{folder} is not a folder")
    names = {
        p.name[1 : -len(protocol.STAGING_SUFFIX)]
        for p in folder.glob(f".*{protocol.STAGING_SUFFIX}")
        if p.is_dir() or p.is_symlink()
    }
    names |= {p.name[: -len(MANIFEST_SUFFIX)] for p in folder.glob(f"*{MANIFEST_SUFFIX}")}
    report = []
    for name in sorted(names):
        entry: dict[str, object] = {"name": name}
        lock = SequenceLock(folder, name)
        read_only = False
        try:
            lock.acquire()
        except FolderReadOnly:
            read_only = True  # nobody can be writing here: read what is there
        except OutputError as exc:
            entry["state"] = STATE_BEING_WRITTEN
            entry["detail"] = str(exc)
            report.append(entry)
            continue
        try:
            if not read_only:
                done = recover_staging(folder, name, message)
                if done:
                    entry["recovered"] = done
        except JournalError as exc:
            entry["state"] = STATE_JOURNAL_REFUSED
            entry["detail"] = str(exc)
            report.append(entry)
            continue
        finally:
            lock.release()
        described = protocol.describe_output_folder(folder, name) or {
            "state": STATE_NOTHING  # an unpublished staging was all there was
        }
        frames = sorted(_numbers(folder.glob(f"{glob_escape(name)}.*.exr")))
        entry["frames"] = frame_ranges(frames)
        if described.get("run_id") is not None or described.get("plate") is not None:
            entry["run_id"] = described.get("run_id")
            entry["source"] = described.get("plate")
        entry["state"] = described.get("state", protocol.STATE_NO_MANIFEST)
        if described.get("detail"):
            entry["detail"] = described["detail"]
        if read_only:
            entry["read_only"] = True
        report.append(entry)
    return report


def glob_escape(text: str) -> str:
    return re.sub(r"([*?[])", r"[\1]", text)


def _real(path: Path) -> str:
    return os.path.realpath(path)


def _describe_run(manifest: dict | None) -> str:
    if manifest is None:
        return "a run this folder has no manifest for"
    source = manifest.get("source") or "an unknown plate"
    return f"another run (plate {source}, run id {manifest.get('run_id')})"


def first_missing(folder: str | os.PathLike[str]) -> Path | None:
    """The outermost of ``folder`` and its parents that does not exist yet (None: it does)."""
    missing = None
    path = Path(os.path.abspath(folder))
    while not path.exists() and path != path.parent:
        missing = path
        path = path.parent
    return missing


def remove_if_empty(created: Path | None, folder: str | os.PathLike[str]) -> None:
    """Remove ``folder`` and its parents up to ``created`` where they are empty: the folders
    a run made and left nothing in (a refused run leaves no folder behind)."""
    if created is None:
        return
    path = Path(os.path.abspath(folder))
    while True:
        try:
            path.rmdir()
        except OSError:
            return  # not empty (or gone): what is in it stays
        if path == created or path == path.parent:
            return
        path = path.parent
