"""Where a strip's depth goes, and whether writing there would replace depth someone uses.

The engine's publisher owns the folder (lock, staging swap, the record of the run beside the
frames); this module only decides, before the engine starts, which folder to ask for and
whether to pass it the artist's permission to replace what is there (``--overwrite``). It
reads what a folder holds through ``protocol.describe_output_folder``, the same reading the
engine and the panel use, and never moves or deletes a file.

- The default folder is one per .blend file and strip, ``//depth/<blend name>/<strip>/``, so
  ``shot_v01.blend`` and ``shot_v02.blend`` never share one.
- **Replace Previous Depth** on: the folder's depth is replaced when it is this strip's own
  earlier depth (made by this .blend, from this plate or shown by this strip's depth strip,
  and shown by no other strip here). Anything else there (another .blend's, another plate's,
  the command line's, frames nobody accounts for) is replaced only when the artist ticks
  **Replace Other Depth**; otherwise the run is refused in one line naming what is there.
- **Replace Previous Depth** off: nothing is replaced. When the folder already holds depth,
  the run goes to the first free version beside it, ``<folder>_v002``, ``<folder>_v003``...,
  and the new strip shows its own frames.
- An unsaved .blend has no folder of its own: ``//`` means a folder for this Blender session
  in the system's temporary folder (the dialog and the report say so).
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import bpy

from . import protocol, sequencer
from .engine import FRONT_END
from .frames import StripError

# The sequence name the add-on writes (depth.####.exr, depth_run.json beside them).
SEQUENCE = protocol.DEFAULT_SEQUENCE_NAME
MAX_VERSIONS = 999


def blend_path() -> str:
    """The saved .blend's absolute path, or "" for an unsaved one."""
    return os.path.normpath(bpy.data.filepath) if bpy.data.filepath else ""


def requested_by() -> str:
    """What the run records as the one that asked for it: the .blend's path; for an unsaved
    .blend, this Blender session (its temporary folder is its own)."""
    return blend_path() or f"unsaved .blend (Blender process {os.getpid()} on {_host()})"


def _host() -> str:
    return socket.gethostname() or "this computer"


def unsaved_folder() -> str:
    """What ``//`` stands for while the .blend is unsaved: this session's temporary folder."""
    return os.path.join(tempfile.gettempdir(), "rollingdepth", f"unsaved-{os.getpid()}")


def default_parent() -> str:
    """``//depth/<blend name>/``: the .blend's own folder of depth, one subfolder per strip."""
    blend = os.path.splitext(os.path.basename(bpy.data.filepath))[0] or "unsaved"
    return f"//depth/{bpy.path.clean_name(blend)}/"


def default_output_dir(strip_name: str) -> str:
    """``//depth/<blend name>/<strip name>/``: one folder per .blend file and strip."""
    return f"{default_parent()}{bpy.path.clean_name(strip_name)}/"


def shown(folder: str) -> str:
    """``folder`` as the artist set it: relative to the saved .blend (``//depth/...``)."""
    if not bpy.data.filepath:
        return folder
    try:
        return bpy.path.relpath(folder)
    except ValueError:  # another drive on Windows
        return folder


def resolve_output_dir(text: str, strip_name: str, several: bool = False) -> tuple[str, str | None]:
    """Absolute output folder for ``text`` and, when the .blend is unsaved, a note saying
    where ``//`` went.

    Empty ``text`` is the strip's default folder. When one call runs ``several`` strips, a
    chosen folder gets one subfolder per strip, ``<folder>/<strip name>/``, so that no strip
    writes into another's folder. A ``//`` path is relative to the .blend.
    """
    text = text.strip()
    if not text:
        text = default_output_dir(strip_name)
    elif several:
        text = os.path.join(text, bpy.path.clean_name(strip_name), "")
    if text.startswith("//") and not bpy.data.filepath:
        folder = os.path.normpath(os.path.join(unsaved_folder(), text[2:]))
        return folder, (
            f"The .blend is not saved, so the depth EXRs go to a temporary folder: {folder}. "
            "Save the .blend to keep them next to it."
        )
    return os.path.normpath(bpy.path.abspath(text)), None


# ---------------------------------------------------------------------------- what a folder holds
def holds(folder: str) -> dict | None:
    """What ``folder`` holds of the add-on's sequence (protocol.describe_output_folder), or
    None when it holds no depth."""
    return protocol.describe_output_folder(folder, SEQUENCE)


def _busy(folder: str) -> bool:
    """A run is writing there, or left its staging: not a free version."""
    return any(
        os.path.exists(os.path.join(folder, f".{SEQUENCE}{ending}"))
        for ending in (".lock", protocol.STAGING_SUFFIX)
    )


def free_version(folder: str) -> str:
    """``folder`` if it holds no depth, else the first of ``<folder>_v002``, ``_v003``... that
    holds none (and that no run is writing)."""
    base = folder.rstrip("/\\") or folder
    for version in range(1, MAX_VERSIONS + 1):
        candidate = base if version == 1 else f"{base}_v{version:03d}"
        if holds(candidate) is None and not _busy(candidate):
            return candidate
    raise StripError(
        f"{base} has {MAX_VERSIONS} versions of depth already: choose another Output Folder."
    )


def depth_strips_in(folder: str) -> list:
    """The depth strips of this .blend (every scene) that show frames from ``folder``."""
    key = os.path.normcase(os.path.normpath(folder))
    return [
        strip
        for scene in bpy.data.scenes
        for strip in sequencer.all_strips(scene)
        if strip.get(sequencer.SOURCE_KEY)
        and os.path.normcase(sequencer.strip_folder(strip)) == key
    ]


def _same_path(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    return os.path.normcase(os.path.normpath(a)) == os.path.normcase(os.path.normpath(b))


def made_by(described: dict) -> str:
    """Who made the depth a folder holds, in an artist's words."""
    front_end, by = described.get("front_end"), described.get("requested_by")
    if front_end == FRONT_END:
        if by == requested_by():
            return "this .blend"
        return os.path.basename(by) if by and not by.startswith("unsaved") else "another .blend"
    if front_end == "panel":
        return "the RollingDepth panel"
    if front_end == "cli":
        return "the rollingdepth command"
    return "an earlier run"


# ---------------------------------------------------------------------------- the decision
@dataclass(frozen=True)
class FolderChoice:
    """Where one strip's run writes, and whether the engine may replace what is there."""

    folder: str  # absolute
    overwrite: bool = False  # the engine's --overwrite: this strip's own depth, or agreed
    other: str | None = None  # what the folder holds that is not this strip's own depth
    question: str | None = None  # why the run must not start without Replace Other Depth
    note: str | None = None  # what the artist should know: a new version, what is replaced


def choose_folder(
    source, plate: Callable[[], str], folder: str, replace: bool, replace_other: bool
) -> FolderChoice:
    """Where ``source``'s run writes, asked for ``folder``.

    ``plate`` gives what the run reads (called only when the folder's run must be matched by
    its plate: planning a long strip reads every file's status). ``replace``: Replace
    Previous Depth; ``replace_other``: the artist ticked Replace Other Depth after being
    asked. See the module text for the rules.
    """
    folder = os.path.normpath(folder)
    if not replace:
        version = free_version(folder)
        note = None
        if version != folder:
            note = (
                f"{shown(folder)} already holds depth; Replace Previous Depth is off, so this "
                f"run writes a new version: {shown(version)}"
            )
        return FolderChoice(version, note=note)
    described = holds(folder)
    if described is None:
        return FolderChoice(folder)
    showing = depth_strips_in(folder)
    others = [s for s in showing if not _is_depth_of(s, source)]
    mine = len(showing) > len(others)  # this strip's depth strip shows these frames
    own = (
        described["state"] in (protocol.STATE_COMPLETE, protocol.STATE_INCOMPLETE)
        and described.get("front_end") == FRONT_END
        and described.get("requested_by") == requested_by()
        and not others
        and (mine or _same_path(described.get("plate"), plate()))
    )
    if own:
        return FolderChoice(folder, overwrite=True)
    other = describe_depth(described, others)
    if replace_other:
        return FolderChoice(
            folder, overwrite=True, other=other, note=f"replacing {other} in {shown(folder)}"
        )
    return FolderChoice(
        folder,
        other=other,
        question=(
            f"{shown(folder)} holds {other}: tick Replace Other Depth to replace it, turn off "
            "Replace Previous Depth to write a new version beside it, or choose another Output "
            "Folder."
        ),
    )


def _is_depth_of(depth, source) -> bool:
    return depth.get(sequencer.SOURCE_KEY) == source.name and depth.id_data == source.id_data


def describe_depth(described: dict, shown_by=()) -> str:
    """``the depth of plate.####.png (frames 1001-1014) made by shot_v01.blend``, and the
    strips of this .blend that show it."""
    first, last = described.get("first_frame"), described.get("last_frame")
    frames = f"frames {first}-{last}" if first is not None else "no frames"
    if described.get("plate") and described["state"] == protocol.STATE_COMPLETE:
        text = (
            f"the depth of {os.path.basename(described['plate'])} ({frames}) made by "
            f"{made_by(described)}"
        )
    else:
        count = described.get("frame_count") or 0
        text = f"{count} depth frames ({frames}; {described.get('detail') or described['state']})"
    if shown_by:
        text += f", shown by {', '.join(repr(s.name) for s in shown_by)} in this .blend"
    return text
