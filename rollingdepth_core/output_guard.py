"""The output-folder policy: what a run may write where, and what it leaves behind.

A run writes ``NAME.####.exr``, ``NAME_alignment.json``, ``NAME_preview.mp4`` and its
manifest ``NAME_run.json`` into the output folder. The manifest names the run (its *run id*,
a hash of the plate, its frame numbers and every setting), the frames it plans, the files it
wrote, whether the sequence is complete, and the frames of an earlier run it replaces.

- Rerunning the same run into its folder is always allowed (a retried farm task, a resume):
  frames are replaced one by one, each by a complete file.
- A folder that holds ``NAME.*.exr`` frames of another run (another run id, or frames no
  manifest accounts for) is refused, unless ``overwrite``. With ``overwrite`` the old frames
  stay until the new sequence is complete; then those the new run did not replace are
  removed, so the folder never mixes two runs once a run has finished.
- A run never writes over its own input files, and ``NAME`` cannot leave the folder.

Use (the runner): ``guard.check()`` before the model loads; ``with guard.writing():`` around
the frame writes, each to ``guard.frame_path(n)`` and followed by ``guard.wrote(n)``;
``guard.finish(extra_files)`` once every frame and sidecar is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from . import __version__
from .errors import Cancelled, ConfigError, OutputError, RollingDepthError

MANIFEST_SUFFIX = "_run.json"


def check_name(name: str) -> None:
    """ConfigError unless ``name`` is a plain file-name prefix that stays in the folder."""
    if not name or not name.strip():
        raise ConfigError("`name` must not be empty: it is the prefix of NAME.####.exr")
    if "/" in name or "\\" in name or os.sep in name or name in (".", ".."):
        raise ConfigError(f"`name` must be a file-name prefix, not a path; got {name!r}")
    if name.startswith("."):
        raise ConfigError(f"`name` must not start with '.' (hidden files); got {name!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ConfigError(f"`name` must not hold control characters; got {name!r}")


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


class OutputGuard:
    """The policy for one run's output folder; see the module text."""

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
        padding: int = 4,
        timecode: Mapping[str, object] | None = None,
    ) -> None:
        check_name(name)
        if not frame_numbers:
            raise OutputError("a run writes at least one frame")
        self.folder = Path(folder)
        self.name = name
        self.frame_numbers = tuple(int(n) for n in frame_numbers)
        self.run_id = run_id
        self.input_paths = tuple(Path(p) for p in input_paths)
        self.overwrite = overwrite
        self.source = source
        self.pad = padding  # the plate's: the writer names frames with it
        self.timecode = timecode  # the plate's first/last timecode and rate, for the manifest
        self.manifest_path = self.folder / f"{name}{MANIFEST_SUFFIX}"
        self._written: set[int] = set()
        self._replaces: set[str] = set()  # file names of another run's frames
        self._checked = False

    @classmethod
    def for_plate(
        cls,
        folder: str | os.PathLike[str],
        name: str,
        plate,
        settings: Mapping[str, object],
        overwrite: bool = False,
    ) -> OutputGuard:
        """The guard for writing ``plate`` (an opened `Plate`) with ``settings``.

        ``settings``: everything that shapes the result and is known before the model loads
        (checkpoint, preset, InferenceConfig and OutputConfig fields), e.g.
        ``{"checkpoint": ..., **asdict(config), **asdict(output)}``.
        """
        info = plate.info
        return cls(
            folder,
            name,
            info.frame_numbers,
            run_identity(info.source, info.frame_numbers, settings),
            input_paths=plate.source_files,
            overwrite=overwrite,
            source=info.source,
            padding=info.padding,
            timecode=info.timecodes and info.timecodes.to_dict(info.frame_numbers),
        )

    # ------------------------------------------------------------------ names
    def frame_path(self, frame: int) -> Path:
        return self.folder / f"{self.name}.{frame:0{self.pad}d}.exr"

    def sidecar_paths(self) -> list[Path]:
        """The run's other files: alignment sidecar, preview, manifest."""
        return [
            self.folder / f"{self.name}_alignment.json",
            self.folder / f"{self.name}_preview.mp4",
            self.manifest_path,
        ]

    # ------------------------------------------------------------------ before the model
    def check(self) -> None:
        """Refuse, before any long computation, what the run must not do to the folder.

        Raises
        ------
        OutputError
            The run would write over one of its input files, or the folder holds another
            run's frames and ``overwrite`` is off (the message says which run and how many).
        """
        planned = [self.frame_path(n) for n in self.frame_numbers] + self.sidecar_paths()
        inputs = {_real(p) for p in self.input_paths}
        for path in planned:
            if _real(path) in inputs:
                raise OutputError(
                    f"{path} is one of the plate's own files; the run would overwrite its "
                    "input: choose another `-o` folder or `--name`"
                )
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputError(f"output folder {self.folder} is a file")

        existing = self._existing_frames()
        manifest = self._read_manifest()
        same_run = manifest is not None and manifest.get("run_id") == self.run_id
        ours = set(self.frame_numbers) if same_run else set()
        carried = set(manifest.get("replaces", [])) if same_run else set()
        # Never touch an input file, whatever the folder's history.
        existing = {n: p for n, p in existing.items() if _real(p) not in inputs}
        foreign = {n for n, path in existing.items() if n not in ours and path.name not in carried}
        # Files an earlier --overwrite authorised, and still there, stay to be removed.
        self._replaces = {existing[n].name for n in foreign} | {
            p.name for p in existing.values() if p.name in carried
        }
        if foreign and not self.overwrite:
            raise OutputError(
                f"{self.folder} holds {len(foreign)} {self.name}.*.exr frames "
                f"({frame_ranges(foreign)}) of {_describe_run(manifest)}; pass `--overwrite` "
                "to replace them (they are removed once the new sequence is complete) or "
                "choose another `-o` folder or `--name`"
            )
        self._checked = True

    # ------------------------------------------------------------------ while writing
    def begin(self) -> None:
        """Mark the sequence incomplete in the manifest, before the first frame is written."""
        if not self._checked:
            self.check()
        self._write_manifest(complete=False, files=[])

    def wrote(self, frame: int) -> None:
        """Record that ``frame_path(frame)`` now holds this run's complete frame."""
        if frame not in self.frame_numbers:
            raise OutputError(f"frame {frame} is not one of this run's frames")
        self._written.add(frame)

    @contextmanager
    def writing(self) -> Iterator[OutputGuard]:
        """`begin`, then turn an interruption or a failed write into one honest line.

        Ctrl-C (KeyboardInterrupt) becomes `Cancelled`, any RollingDepthError keeps its type;
        both messages then say what the folder holds (see `describe_partial`).
        """
        self.begin()
        try:
            yield self
        except KeyboardInterrupt:
            raise Cancelled(f"cancelled while writing: {self.describe_partial()}") from None
        except RollingDepthError as exc:
            raise type(exc)(f"{exc}; {self.describe_partial()}") from exc

    def describe_partial(self) -> str:
        """What the folder holds now, for a run that stopped while writing."""
        total = len(self.frame_numbers)
        done = len(self._written)
        leftover = self._replaces - {self.frame_path(n).name for n in self._written}
        if done == 0:
            text = f"no frame of this run was written to {self.folder}"
        else:
            text = (
                f"{done} of {total} frames of this run are in {self.folder} "
                f"({self.name}.{frame_ranges(self._written)}), {total - done} are not written"
            )
        if leftover:
            text += f"; {len(leftover)} frames of the earlier run are still there"
        if done:
            text += (
                f"; {self.manifest_path.name} marks the sequence incomplete: rerun the same "
                "command to complete it"
            )
        return text

    # ------------------------------------------------------------------ after writing
    def finish(self, extra_files: Iterable[str | os.PathLike[str]] = ()) -> list[Path]:
        """Mark the sequence complete, then remove the earlier run's frames it did not replace.

        Returns the removed files. Raises OutputError if a planned frame was not written.
        """
        missing = [n for n in self.frame_numbers if n not in self._written]
        if missing:
            raise OutputError(
                f"{len(missing)} frames were not written ({frame_ranges(missing)}); the "
                "sequence stays marked incomplete"
            )
        frames = [self.frame_path(n) for n in self.frame_numbers]
        files = [p.name for p in frames] + [Path(p).name for p in extra_files]
        ours = {p.name for p in frames}
        stale = sorted(self._replaces - ours)
        self._write_manifest(complete=True, files=files)
        removed = []
        for name in stale:
            path = self.folder / name
            path.unlink(missing_ok=True)
            removed.append(path)
        self._replaces = set()
        if removed:
            self._write_manifest(complete=True, files=files)
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

    def _write_manifest(self, complete: bool, files: list[str]) -> None:
        manifest = {
            "rollingdepth": __version__,
            "run_id": self.run_id,
            "source": self.source,
            "name": self.name,
            "frames": list(self.frame_numbers),
            "timecode": self.timecode,
            "complete": complete,
            "files": files,
            "replaces": sorted(self._replaces),
        }
        write_text_atomic(self.manifest_path, json.dumps(manifest, indent=1) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary name, fsync, then rename over ``path``."""
    temp = path.with_name(f".{path.name}.tmp{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(temp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {exc}") from exc
    finally:
        temp.unlink(missing_ok=True)


def _real(path: Path) -> str:
    return os.path.realpath(path)


def _describe_run(manifest: dict | None) -> str:
    if manifest is None:
        return "a run this folder has no manifest for"
    source = manifest.get("source") or "an unknown plate"
    state = "complete" if manifest.get("complete") else "incomplete"
    return f"another run ({state}, plate {source}, run id {manifest.get('run_id')})"
