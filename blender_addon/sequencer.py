"""Every access to Blender's Video Sequencer lives here.

Blender 5.0 calls them *strips* (``sequence_editor.strips``, ``strips_all``); 4.5 has both the
new names and the old ``sequences``/``sequences_all``. ``context.sequencer_scene`` (5.0) is None
in background mode and absent in 4.5, so the active scene stands in.
"""

from __future__ import annotations

import contextlib
import os
import shutil

import bpy

from .frames import (
    FramePlan,
    StripError,
    plan_image_strip,
    plan_movie_strip,
    sequence_numbering,
    split_numbered,
)

SUPPORTED_TYPES = ("IMAGE", "MOVIE")
MAX_CHANNEL = 128
# A depth strip (and a Defocus scene) carries the name of the strip it was estimated from.
SOURCE_KEY = "rollingdepth_source"
# on a source strip: the folder of its kept predictions (folders.cache_folder)
CACHE_KEY = "rollingdepth_cache"
# on a source strip: what the kept predictions were made for (engine.kept_key of the last
# finished run), so that the dialog's estimate counts a rerun that only re-aligns as such
KEPT_FOR_KEY = "rollingdepth_kept_for"
# A depth strip's source timecode by frame number (the number in its file names; an ID
# property's key holds at most 63 characters, a file name may not fit) and the plate's frame
# rate, from the engine's result (a plate without timecode has neither): what the sidebar
# shows at the playhead.
TIMECODES_KEY = "rollingdepth_timecodes"
FPS_KEY = "rollingdepth_fps"
# The node group of a depth strip's view modifier (depth in scene units shown as 1 .. 0).
VIEW_MODIFIER = "RollingDepth view"


# ---------------------------------------------------------------------------- API differences
def sequencer_scene(context) -> bpy.types.Scene:
    scene = getattr(context, "sequencer_scene", None)
    return scene if scene is not None else context.scene


def strips_in(owner):
    """The strips directly inside a sequence editor or a meta strip."""
    return owner.strips if hasattr(owner, "strips") else owner.sequences


ALL_STRIPS = (
    "strips_all" if "strips_all" in bpy.types.SequenceEditor.bl_rna.properties else "sequences_all"
)


def all_strips(scene) -> list:
    editor = scene.sequence_editor
    if editor is None:
        return []
    return list(getattr(editor, ALL_STRIPS))


def active_strip(scene):
    editor = scene.sequence_editor
    return editor.active_strip if editor is not None else None


def find_strip(scene, name: str):
    for strip in all_strips(scene):
        if strip.name == name:
            return strip
    return None


def container_of(scene, strip):
    """The meta strip holding ``strip``, or the scene's sequence editor."""
    parent = strip.parent_meta() if hasattr(strip, "parent_meta") else None
    return parent if parent is not None else scene.sequence_editor


# ---------------------------------------------------------------------------- reading a strip
def _abspath(strip, path: str) -> str:
    return os.path.normpath(bpy.path.abspath(path, library=strip.id_data.library))


def strip_problem(strip) -> str | None:
    """Why ``strip`` cannot be processed, or None."""
    if strip is None:
        return "Select an image-sequence or movie strip in the Sequencer first."
    if strip.get(SOURCE_KEY):
        return (
            f"{strip.name!r} is the RollingDepth depth of {strip[SOURCE_KEY]!r}: select "
            f"{strip[SOURCE_KEY]!r} to estimate its depth again."
        )
    if strip.type not in SUPPORTED_TYPES:
        return (
            f"The active strip {strip.name!r} is a {strip.type.lower()} strip; select an "
            "image-sequence or movie strip."
        )
    if strip.type == "MOVIE":
        # Image strips go through Blender's own frame lookup, which applies all of these;
        # a movie strip is mapped by formula, which covers plain playback only.
        if strip.use_reverse_frames:
            return f"Movie strip {strip.name!r} plays reversed: turn off Reverse Frames first."
        if strip.strobe > 1.0:  # 0 (strips made by scripts) and 1 both mean off
            return f"Movie strip {strip.name!r} uses Strobe: set Strobe to 1 first."
        if len(strip.retiming_keys):
            return (
                f"Movie strip {strip.name!r} is retimed: reset its retiming "
                "(Strip ▸ Retiming ▸ Reset Retiming) first."
            )
    return None


def is_plate(strip, holdout: str = "") -> bool:
    """An image-sequence or movie strip that is neither a depth strip nor the holdout matte."""
    return strip.type in SUPPORTED_TYPES and not strip.get(SOURCE_KEY) and strip.name != holdout


def estimate_sources(scene, holdout: str = "") -> tuple[list, list, str | None]:
    """What Estimate Depth runs on: ``(sources, skipped, problem)``.

    ``sources``: the selected plates (`is_plate`) of the timeline shown (the meta strip being
    edited, else the top level) and the active strip if it is one, ordered by start frame,
    then channel. With none, the active strip alone, as when only the active strip ran.
    ``skipped``: the selected strips of other types (effects, sounds, scenes ...); depth
    strips and the holdout matte are left out silently. ``problem``: why the run cannot
    start (`strip_problem` of the first source that has one), or None: one bad plate stops
    the whole call before any engine starts.
    """
    active = active_strip(scene)
    editor = scene.sequence_editor
    picked = []
    if editor is not None:
        stack = list(editor.meta_stack)
        picked = [s for s in strips_in(stack[-1] if stack else editor) if s.select]
    if active is not None and active not in picked:
        picked.append(active)
    sources = sorted(
        (s for s in picked if is_plate(s, holdout)),
        key=lambda s: (s.frame_final_start, s.channel),
    )
    if not sources:
        if holdout and any(s.name == holdout for s in picked):
            # a matte run as a plate, with itself as holdout, gives depth of nothing
            return picked, [], holdout_alone(holdout)
        return ([active] if active is not None else []), [], strip_problem(active)
    skipped = [s for s in picked if s.type not in SUPPORTED_TYPES]
    problems = (strip_problem(s) for s in sources)
    return sources, skipped, next((p for p in problems if p), None)


def holdout_alone(holdout: str) -> str:
    return (
        f"{holdout!r} is the Holdout Matte: select the plate it belongs to as well (or "
        "instead), or clear Holdout Matte."
    )


def plan_for_strip(strip, staging_dir: str) -> FramePlan:
    """The engine run that covers exactly the frames ``strip`` shows (see frames.py)."""
    problem = strip_problem(strip)
    if problem:
        raise StripError(problem)
    start, end = strip.frame_final_start, strip.frame_final_end
    if strip.type == "IMAGE":
        directory = _abspath(strip, strip.directory)
        element_names = [element.filename for element in strip.elements]
        visible = []
        for frame in range(start, end):
            element = strip.strip_elem_from_frame(frame)
            if element is None:
                raise StripError(f"Strip {strip.name!r} shows no image at frame {frame}.")
            visible.append((frame, element.filename))
        missing = sorted(
            {name for _, name in visible if not os.path.isfile(os.path.join(directory, name))}
        )
        if missing:
            raise StripError(
                f"Strip {strip.name!r} cannot be read: {len(missing)} file(s) missing in "
                f"{directory}, e.g. {missing[0]}. Relink the strip (Strip ▸ Change Path) first."
            )
        return plan_image_strip(directory, visible, element_names, staging_dir)
    path = _abspath(strip, strip.filepath)
    if not os.path.isfile(path):
        raise StripError(
            f"Strip {strip.name!r} cannot be read: {path} does not exist. Relink the strip "
            "(Strip ▸ Change Path) first."
        )
    return plan_movie_strip(
        path,
        start,
        end,
        int(round(strip.frame_start)),
        strip.animation_offset_start,
        strip.frame_duration,
    )


def stage_plate(plan: FramePlan, staging_dir: str) -> None:
    """Make the staging folder a plan reads from: links to the source files (copies if the
    file system refuses links, e.g. Windows without developer mode)."""
    if not plan.staging:
        return
    os.makedirs(staging_dir, exist_ok=True)
    for source, name in plan.staging:
        target = os.path.join(staging_dir, name)
        if os.path.lexists(target):
            os.remove(target)
        try:
            os.symlink(source, target)
        except (OSError, NotImplementedError):
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)


def media_path(strip) -> str:
    """What the engine reads for ``strip``: a movie file, or an image sequence's pattern."""
    if strip.type == "MOVIE":
        return _abspath(strip, strip.filepath)
    if strip.type == "IMAGE":
        numbering = sequence_numbering([element.filename for element in strip.elements])
        if numbering is not None:
            return os.path.join(_abspath(strip, strip.directory), numbering[0])
    raise StripError(
        f"{strip.name!r} is not a movie or one numbered image sequence; a holdout matte must be."
    )


def plate_size(strip) -> tuple[int, int] | None:
    """(width, height) of the strip's media, when Blender has read it."""
    for element in strip.elements:
        if element.orig_width and element.orig_height:
            return element.orig_width, element.orig_height
    return None


# ---------------------------------------------------------------------------- adding the result
def free_channel_above(scene, strip, start: int, end: int) -> int:
    """The lowest channel above ``strip`` with nothing in ``start .. end - 1``."""
    siblings = list(strips_in(container_of(scene, strip)))
    for channel in range(strip.channel + 1, MAX_CHANNEL + 1):
        if not any(
            other.channel == channel
            and other.frame_final_start < end
            and other.frame_final_end > start
            for other in siblings
        ):
            return channel
    raise StripError(f"No free channel above {strip.name!r} for the depth strip.")


def _blend_relative(path: str) -> str:
    if not bpy.data.filepath:
        return path
    try:
        return bpy.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path


def add_depth_strip(
    scene,
    source,
    plan: FramePlan,
    files_by_number: dict[int, str],
    name: str,
    depth_size: tuple[int, int] | None = None,
    timecodes: dict[int, str] | None = None,
    fps: str | None = None,
):
    """An image strip of the depth EXRs that shows, on every timeline frame, the depth of the
    source frame shown there; in the next free channel above ``source``, ``Non-Color``.
    ``timecodes`` (source number -> the plate frame's timecode) and ``fps`` go with it for
    `timecode_at`."""
    missing = [n for n in plan.source_numbers if n not in files_by_number]
    if missing:
        raise StripError(
            f"The engine wrote no depth for source frame(s) {missing[:5]}; nothing was added."
        )
    files = [files_by_number[number] for _, number in plan.timeline]
    directories = {os.path.dirname(f) for f in files}
    if len(directories) != 1:
        raise StripError("The depth files are not in one folder; nothing was added.")
    start = plan.timeline[0][0]
    end = plan.timeline[-1][0] + 1
    channel = free_channel_above(scene, source, start, end)
    collection = strips_in(container_of(scene, source))
    strip = collection.new_image(name, _blend_relative(files[0]), channel, start)
    for path in files[1:]:
        strip.elements.append(os.path.basename(path))
    strip.colorspace_settings.name = "Non-Color"
    strip[SOURCE_KEY] = source.name
    if timecodes:
        strip[TIMECODES_KEY] = {str(n): timecodes[n] for n in plan.source_numbers if n in timecodes}
    if fps:
        strip[FPS_KEY] = fps
    _match_placement(source, strip, depth_size)
    return strip


def timecode_at(strip, frame: int) -> tuple[str | None, str | None] | None:
    """``(source timecode, frame rate)`` of the depth ``strip`` shows at timeline ``frame``
    (either None where the plate stated none); None where it shows no depth there."""
    if not strip.get(SOURCE_KEY) or not strip.frame_final_start <= frame < strip.frame_final_end:
        return None
    element = strip.strip_elem_from_frame(frame)
    if element is None:
        return None
    numbered = split_numbered(element.filename)
    by_number = strip.get(TIMECODES_KEY) or {}
    timecode = by_number.get(str(numbered.number)) if numbered else None
    return timecode, strip.get(FPS_KEY)


def depth_strips_of(scene, source) -> list:
    """The depth strips earlier runs made from ``source``."""
    return [s for s in all_strips(scene) if s.get(SOURCE_KEY) == source.name and s != source]


def strip_folder(strip) -> str:
    """The absolute folder an image strip's files are in."""
    return _abspath(strip, strip.directory)


def remove_strip(scene, strip) -> None:
    groups = [m.node_group for m in strip.modifiers if getattr(m, "node_group", None)]
    strips_in(container_of(scene, strip)).remove(strip)
    for group in groups:
        if group.users == 0:
            bpy.data.node_groups.remove(group)


def show_depth_range(scene, strip, near: float, far: float) -> bool:
    """Let the Sequencer show a strip of depth in scene units: a compositor modifier maps
    ``near`` .. ``far`` to 1 (white) .. 0 (black), as Normalized depth looks; the files keep
    their values. Returns False where this Blender has no compositor modifier (before 5.0):
    values above 1 then show white."""
    if "COMPOSITOR" not in _modifier_types() or not far > near:
        return False
    tree = bpy.data.node_groups.new(f"{strip.name} {VIEW_MODIFIER}", "CompositorNodeTree")
    tree.interface.new_socket("Image", in_out="INPUT", socket_type="NodeSocketColor")
    tree.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
    group_in, group_out = tree.nodes.new("NodeGroupInput"), tree.nodes.new("NodeGroupOutput")
    mapping = tree.nodes.new("ShaderNodeMapRange")
    mapping.label = f"depth {near:.4g} .. {far:.4g} -> 1 .. 0"
    for socket, value in zip(mapping.inputs[1:5], (near, far, 1.0, 0.0), strict=True):
        socket.default_value = value
    mapping.clamp = True
    group_in.location, mapping.location, group_out.location = (-300, 0), (0, 0), (300, 0)
    tree.links.new(group_in.outputs[0], mapping.inputs[0])
    tree.links.new(mapping.outputs[0], group_out.inputs[0])
    with _sequencer_scene_set(scene) as ready:
        if not ready:
            bpy.data.node_groups.remove(tree)
            return False
        modifier = strip.modifiers.new(name=VIEW_MODIFIER, type="COMPOSITOR")
    modifier.node_group = tree
    return True


def _modifier_types() -> set[str]:
    items = bpy.types.StripModifier.bl_rna.properties["type"].enum_items
    return {item.identifier for item in items}


@contextlib.contextmanager
def _sequencer_scene_set(scene):
    """Blender 5.0.1 crashes in ``strip.modifiers.new`` while ``context.sequencer_scene`` is
    None (background mode, a script without a Sequencer): point the workspace at ``scene``
    for the call."""
    if getattr(bpy.context, "sequencer_scene", scene) is not None:
        yield True
        return
    window = getattr(bpy.context, "window", None)
    workspace = window.workspace if window is not None else None
    if workspace is None:
        yield False  # nothing to point: no modifier rather than a crash
        return
    workspace.sequencer_scene = scene
    try:
        yield True
    finally:
        workspace.sequencer_scene = None


def _match_placement(source, depth, depth_size: tuple[int, int] | None) -> None:
    """Give the depth strip the source's framing, so the two overlay pixel for pixel."""
    factor = 1.0
    source_size = plate_size(source)
    if depth_size and source_size and depth_size[0]:
        factor = source_size[0] / depth_size[0]
    transform, target = source.transform, depth.transform
    target.offset_x, target.offset_y = transform.offset_x, transform.offset_y
    target.rotation = transform.rotation
    target.origin = transform.origin
    target.scale_x = transform.scale_x * factor
    target.scale_y = transform.scale_y * factor
    for side in ("min_x", "max_x", "min_y", "max_y"):
        setattr(depth.crop, side, int(round(getattr(source.crop, side) / factor)))
    depth.use_flip_x, depth.use_flip_y = source.use_flip_x, source.use_flip_y
