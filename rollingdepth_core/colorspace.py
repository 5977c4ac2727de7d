"""Colour management: a plate reaches the model through an OCIO display and view.

The depth model was trained on display-referred sRGB pictures, so every plate is shown to it
the way a compositor's viewer would show it on an sRGB monitor: the input colour space of the
active OCIO config goes through the config's sRGB display and its default SDR view (in the ACES
studio config a real ACES 2.0 tone map, not a clip). A plate that is already encoded for that
display (8-bit sRGB stills, ordinary Rec.709 video) reaches the model unchanged, only clipped,
so those plates give exactly the model input they always did.

Which config: ``--ocio-config`` if given, else ``$OCIO``, else OCIO's built-in studio config.
All conversion is done by OpenColorIO; one processor is built per plate. The ACES 2.0 views
cost seconds per 2K frame on a CPU, so by default large frames go through that processor baked
into a 3D LUT (`BakedDisplayTransform`), with the exact processor redoing every pixel the LUT
cannot reproduce within `BAKE_TOLERANCE`; ``ColorRequest(exact=True)`` (``--ocio-exact``) uses
the exact processor on every pixel.
"""

from __future__ import annotations

import functools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import OpenImageIO as oiio
import PyOpenColorIO as ocio

from .errors import ConfigError

STUDIO_CONFIG = "ocio://studio-config-latest"
AUTO = "auto"
# The two short names the CLI has always taken, as Color Interop Forum ids: the OCIO 2.5
# built-in configs carry them as aliases; a facility config may alias its own spaces so, or
# the user names the space.
ALIASES = {"srgb": "srgb_rec709_scene", "linear": "lin_rec709_scene"}
SRGB_DISPLAY_ID = "srgb_rec709_display"
LIST_HINT = "`rollingdepth colorspaces` lists the active config's colour spaces, displays and views"

# A space this close to the display's own encoding is that encoding (the studio config's sRGB
# texture space differs from its sRGB display space by 2e-5 of matrix round trip); 1e-4 is a
# tenth of a 10-bit code value.
_SAME_ENCODING_TOLERANCE = 1e-4
# OCIO's CPU processor releases the GIL: frames this large are converted in row bands, in
# parallel; smaller ones are not worth the hand-off.
_MIN_PIXELS_TO_SPLIT = 1 << 16
_WORKERS = os.cpu_count() or 1


@dataclass(frozen=True)
class ColorRequest:
    """What the user asked for: an input colour space, and optionally a config and a view.

    ``space`` is ``"auto"`` (decide from the plate's metadata), ``"srgb"``, ``"linear"`` or any
    colour space name or alias of the config. ``config`` is a path or ``ocio://`` URI (None:
    ``$OCIO``, else the studio config). ``view`` is a view of the sRGB display (None: the
    config's default view for it). ``exact`` turns off the baked LUT (see `DisplayTransform`).
    """

    space: str = AUTO
    config: str | None = None
    view: str | None = None
    exact: bool = False  # every pixel through the exact processor, no baked LUT


@dataclass(frozen=True)
class ColorHint:
    """What the plate's own metadata says: a colour space (name, alias or interop id)."""

    space: str
    reason: str


@dataclass(frozen=True)
class PlateColor:
    """How a plate's pixels become model input; the plate exposes it as ``plate.info.color``."""

    config: str  # path or URI of the OCIO config
    input_space: str  # colour space name in that config
    display: str
    view: str
    decided_by: str  # "requested", or the metadata that decided `auto`
    passthrough: bool  # already encoded for the display: only clipped to [0, 1]
    exact: bool = False  # no baked LUT: every pixel through the exact processor

    @property
    def summary(self) -> str:
        """One line for the log: what was assumed and why."""
        route = (
            "unchanged (already encoded for the display)"
            if self.passthrough
            else f"through '{self.display}' / '{self.view}'"
        )
        return f"input colour space '{self.input_space}' ({self.decided_by}), {route}"

    def header(self) -> dict[str, str]:
        """EXR header fields (the writer adds its ``rollingdepth/`` prefix)."""
        fields = {
            "ocio.config": self.config,
            "ocio.input_colorspace": self.input_space,
            "ocio.display": self.display,
            "ocio.view": self.view,
            "ocio.decided_by": self.decided_by,
            "ocio.exact": "yes"
            if self.exact or self.passthrough
            else "no (large frames through a baked 3D LUT where faster)",
        }
        if self.passthrough:  # no view transform was applied: naming one would mislead
            del fields["ocio.view"]
        return fields


def active_config(config: str | None = None) -> str:
    """The config a run uses: ``config`` if given, else ``$OCIO``, else the studio config."""
    return config or os.environ.get("OCIO") or STUDIO_CONFIG


@functools.lru_cache(maxsize=8)
def load_config(config: str) -> ocio.Config:
    """Load (once) the OCIO config at a path or ``ocio://`` URI."""
    try:
        return ocio.Config.CreateFromFile(config)
    except ocio.Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise ConfigError(f"cannot load OCIO config {config!r}: {first_line}") from exc


def resolve_color(request: ColorRequest | str, hints: tuple[ColorHint, ...]) -> PlateColor:
    """Decide the input space, display and view for a plate.

    Parameters
    ----------
    request : ColorRequest or str
        What the user asked for (a str is a colour space with the default config and view).
    hints : tuple of ColorHint
        What the plate's metadata says, most specific first (see `image_color_hints`,
        `video_color_hints`); ``auto`` takes the first the config knows.

    Raises
    ------
    ConfigError
        Unknown colour space or view, or a config that knows none of the hinted spaces.
    """
    if isinstance(request, str):
        request = ColorRequest(space=request)
    config_name = active_config(request.config)
    config = load_config(config_name)
    display = _srgb_display(config)
    views = list(config.getViews(display))
    view = request.view or config.getDefaultView(display)
    if view not in views:
        raise ConfigError(
            f"`--ocio-view` {view!r} is not a view of display '{display}' in {config_name}; "
            f"views: {', '.join(views)}"
        )

    if request.space == AUTO:
        found = [(_find_space(config_name, hint.space), hint) for hint in hints]
        found = [(space, hint) for space, hint in found if space is not None]
        if not found:
            raise ConfigError(
                f"the plate is {hints[0].space} ({hints[0].reason}) but {config_name} has no "
                f"such colour space; pass `--input-colorspace` ({LIST_HINT})"
            )
        input_space, decided_by = found[0][0], found[0][1].reason
    else:
        input_space = _find_space(config_name, ALIASES.get(request.space.lower(), request.space))
        if input_space is None:
            raise ConfigError(
                f"`--input-colorspace` {request.space!r} is not a colour space of "
                f"{config_name}; {LIST_HINT}"
            )
        decided_by = "requested"
    return PlateColor(
        config=config_name,
        input_space=input_space,
        display=display,
        view=view,
        decided_by=decided_by,
        passthrough=_is_display_encoding(config, input_space, display),
        exact=request.exact,
    )


def _find_space(config_name: str, key: str) -> str | None:
    """A colour space by name, alias or interop id; OIIO's name rules as the last resort."""
    config = load_config(config_name)
    space = config.getColorSpace(key)
    if space is None:
        space = next((s for s in config.getColorSpaces() if s.getInteropID() == key), None)
    if space is None:
        # OIIO knows the names older files carry ("Linear", "sRGB", role names).
        resolved = oiio.ColorConfig(config_name).resolve(key)
        space = config.getColorSpace(resolved) if resolved != key else None
    return space.getName() if space is not None else None


def _srgb_display(config: ocio.Config) -> str:
    """The display the model looks through: the config's sRGB display."""
    displays = list(config.getDisplays())
    for display in displays:
        space = config.getColorSpace(
            _display_space(config, display, config.getDefaultView(display))
        )
        if space is not None and SRGB_DISPLAY_ID in (space.getInteropID(), *space.getAliases()):
            return display
    for display in displays:
        if "srgb" in display.lower():
            return display
    return config.getDefaultDisplay()


def _display_space(config: ocio.Config, display: str, view: str) -> str:
    name = config.getDisplayViewColorSpaceName(display, view)
    return display if name == ocio.OCIO_VIEW_USE_DISPLAY_NAME else name


def _is_display_encoding(config: ocio.Config, input_space: str, display: str) -> bool:
    """True when ``input_space`` is how the display itself encodes pictures.

    That is the colour space of one of its views (data views such as Raw aside): such a
    plate is already what the display shows, and a view would tone map it a second time.
    """
    ramp = np.linspace(0.0, 1.0, 17, dtype=np.float32)
    lattice = np.stack(np.meshgrid(ramp, ramp, ramp, indexing="ij"), axis=-1).reshape(-1, 3)
    encodings = {_display_space(config, display, view) for view in config.getViews(display)}
    for encoding in sorted(encodings):
        space = config.getColorSpace(encoding)
        if space is None or space.isData():
            continue
        converted = lattice.copy()
        config.getProcessor(input_space, encoding).getDefaultCPUProcessor().applyRGB(converted)
        if float(np.abs(converted - lattice).max()) < _SAME_ENCODING_TOLERANCE:
            return True
    return False


# ---------------------------------------------------------------------------------------------
# What the plate's metadata says

# Linear spaces an EXR `chromaticities` attribute can name, as interop ids.
_LINEAR_BY_PRIMARIES = (
    ("lin_ap0_scene", "ACES AP0"),
    ("lin_ap1_scene", "ACES AP1"),
    ("lin_rec709_scene", "Rec.709"),
    ("lin_rec2020_scene", "Rec.2020"),
    ("lin_p3d65_scene", "P3-D65"),
)
_CHROMATICITY_TOLERANCE = 1e-3
_DPX_LOG_TRANSFERS = ("Logarithmic", "Printing density")
# FFmpeg's AVColorTransferCharacteristic / AVColorPrimaries numbers, as PyAV frames carry them.
_TRC_NAMES = {1: "bt709", 2: "unspecified", 6: "smpte170m", 8: "linear", 13: "iec61966-2-1",
              14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084", 18: "arib-std-b67"}  # fmt: skip
_PRIMARIES_NAMES = {1: "bt709", 2: "unspecified", 9: "bt2020", 12: "smpte432"}
_TRC_PQ, _TRC_HLG, _TRC_LINEAR, _TRC_SRGB = 16, 18, 8, 13
_PRIMARIES_BT2020, _PRIMARIES_P3D65 = 9, 12


def image_color_hints(spec: oiio.ImageSpec, format_name: str) -> tuple[ColorHint, ...]:
    """Colour spaces an image file's header names, most specific first.

    EXR and DPX: OIIO's ``oiio:ColorSpace`` (from EXR ``colorInteropID`` or the ACES container
    flag, from the DPX transfer), then EXR ``chromaticities`` or the DPX transfer. Then the
    fallback for every format: floating-point pixels are linear Rec.709, integer pixels sRGB. Other formats'
    ``oiio:ColorSpace`` is OIIO's own guess (PNG always says sRGB), so only the fallback counts.
    """
    kind = {"openexr": "EXR", "dpx": "DPX"}.get(format_name)
    hints: list[ColorHint] = []
    if kind is not None:
        named = spec.getattribute("oiio:ColorSpace")
        if named:
            hints.append(ColorHint(str(named), f"{kind} oiio:ColorSpace '{named}'"))
    if kind == "EXR":
        chromaticities = spec.getattribute("chromaticities")
        if chromaticities is not None:
            hints.extend(_hint_from_chromaticities(chromaticities))
    if kind == "DPX":
        transfer = spec.getattribute("dpx:Transfer")
        if transfer in _DPX_LOG_TRANSFERS:
            # Cineon-style printing density: the config's ADX encoding of it.
            hints.append(ColorHint("ADX10", f"DPX transfer '{transfer}'"))
        elif transfer == "Linear":
            hints.append(ColorHint("lin_rec709_scene", "DPX transfer 'Linear'"))
    if spec.format.basetype in (oiio.HALF, oiio.FLOAT, oiio.DOUBLE):
        hints.append(ColorHint("lin_rec709_scene", "floating-point pixels, no colour metadata"))
    else:
        hints.append(ColorHint("srgb_rec709_scene", "integer pixels, no colour metadata"))
    return tuple(hints)


def _hint_from_chromaticities(chromaticities: tuple[float, ...]) -> list[ColorHint]:
    given = np.asarray(chromaticities, dtype=np.float64)
    for space, label, known in _primaries_table():
        if known.shape == given.shape and np.abs(known - given).max() < _CHROMATICITY_TOLERANCE:
            return [ColorHint(space, f"EXR chromaticities of {label}")]
    return []


@functools.lru_cache(maxsize=1)
def _primaries_table() -> tuple[tuple[str, str, np.ndarray], ...]:
    """(interop id, label, 8 chromaticities) of each linear space, from the studio config."""
    studio = oiio.ColorConfig(STUDIO_CONFIG)
    return tuple(
        (space, label, np.asarray(studio.get_chromaticities(space), dtype=np.float64))
        for space, label in _LINEAR_BY_PRIMARIES
    )


def video_color_hints(primaries: int, transfer: int) -> tuple[ColorHint, ...]:
    """Colour spaces a video stream's tags name (FFmpeg numbers, as ``frame.color_trc``).

    PQ and HLG are the config's Rec.2100 display spaces (tone mapped to SDR by the view); a
    linear transfer is linear Rec.709 or Rec.2020; everything else (bt709, sRGB, bt601,
    untagged) is the sRGB encoding a player shows on an sRGB monitor: passed through.
    """
    tags = (
        f"transfer {_TRC_NAMES.get(transfer, transfer)}, "
        f"primaries {_PRIMARIES_NAMES.get(primaries, primaries)}"
    )
    p3 = primaries == _PRIMARIES_P3D65
    if transfer == _TRC_PQ:
        return (ColorHint("pq_p3d65_display" if p3 else "pq_rec2020_display", f"video {tags}"),)
    if transfer == _TRC_HLG:
        return (ColorHint("hlg_rec2020_display", f"video {tags}"),)
    if transfer == _TRC_LINEAR:
        wide = primaries == _PRIMARIES_BT2020
        return (ColorHint("lin_rec2020_scene" if wide else "lin_rec709_scene", f"video {tags}"),)
    if transfer == _TRC_SRGB and p3:
        return (ColorHint("srgb_p3d65_scene", f"video {tags}"),)
    return (ColorHint("srgb_rec709_scene", f"video {tags}"),)


# ---------------------------------------------------------------------------------------------
# Conversion


class DisplayTransform:
    """The OCIO processor of one `PlateColor`, built once; call it on each frame.

    Frames of at least `_MIN_PIXELS_TO_BAKE` pixels go through `BakedDisplayTransform` (built
    on the first such frame) unless ``color.exact`` or the view is cheap enough that the LUT
    is not `BakedDisplayTransform.worthwhile`; smaller frames, exact plates and cheap views
    through the exact processor.
    """

    def __init__(self, color: PlateColor) -> None:
        self.color = color
        self.exact = None
        self._baked: BakedDisplayTransform | None = None
        if not color.passthrough:
            transform = ocio.DisplayViewTransform(
                src=color.input_space, display=color.display, view=color.view
            )
            processor = load_config(color.config).getProcessor(transform)
            self.exact = processor.getDefaultCPUProcessor()

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """float32 [H,W,3] display values in [0,1] from pixels [H,W,3] in the input space."""
        return self.in_place(np.array(rgb, dtype=np.float32, order="C", copy=True))

    def in_place(self, rgb: np.ndarray) -> np.ndarray:
        """Like calling it, but converts ``rgb`` itself when it is float32 and C-contiguous.

        For readers that own the decoded array: saves a frame-sized copy.
        """
        out = np.ascontiguousarray(rgb, dtype=np.float32)  # [H,W,3]
        if out.ndim != 3 or out.shape[-1] != 3:
            raise ConfigError(f"colour conversion needs [H,W,3] pixels; got {out.shape}")
        if self.exact is None:
            return _clip_unit_in_place(out)
        if not (self.color.exact or out.shape[0] * out.shape[1] < _MIN_PIXELS_TO_BAKE):
            baked = self.baked()
            if baked.worthwhile:
                return baked.in_place(out)
        _in_bands(out, self.exact.applyRGB)
        return _clip_unit_in_place(out)

    def baked(self) -> BakedDisplayTransform:
        """The baked LUT of this transform (built on first use)."""
        if self._baked is None:
            self._baked = BakedDisplayTransform(self.color, self.exact)
        return self._baked


# The baked LUT: a 129^3 lattice (the largest OCIO's 3D LUT takes; 65^3 is 2.5x less exact)
# over a log2 shaper for scene-linear input: 2^-12 .. 2^10 (brighter pixels go to the exact
# processor), linear below 2^-7, reaching down to about -0.012. Encoded (log, video, display)
# input spans [0, 1] as it is.
BAKE_SIZE = 129
BAKE_TOLERANCE = 1.0 / 255
_SHAPER_LOG2_RANGE = (-12.0, 10.0)
_SHAPER_LINEAR_BELOW = 2.0**-7
_WORTHWHILE_SPEEDUP = 4.0
# A cell whose corners' display values spread more than this is also checked inside.
_STEEP_CELL = 0.05
_OCTANTS = tuple((i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1))
# Lattice vertices of cells the LUT cannot reproduce hold this: any pixel interpolated from
# one of them (with a weight above 1e-6) comes out above `_MARKED` and is redone by the exact
# processor; interpolation rounding alone leaves values a few ulp above 1.
_SENTINEL = 1.0e6
_MARKED = 2.0
_MIN_PIXELS_TO_BAKE = 1 << 16


class BakedDisplayTransform:
    """`DisplayTransform`'s exact processor baked into a shaper + tetrahedral 3D LUT, by OCIO.

    The LUT holds the exact processor's output on a `BAKE_SIZE` lattice (costs about one 2K
    frame of the exact processor). The bake checks it against the exact processor at every
    cell centre (one more frame's worth), and in steep cells (the gamut compression of bright
    saturated colours under the ACES 2.0 views) at the centres of their octants too; cells off
    by more than `BAKE_TOLERANCE` there, or where the view has no value, are marked, and pixels
    falling in them, outside the LUT's domain, NaN or infinite, go through the exact processor.
    What is left is interpolation error inside cells that passed the check: ACES 2.0 is not
    smooth at a finer scale than any 3D LUT OCIO takes (129^3 is its largest), so it is about
    1/400 at the 99.9th percentile of realistic frames, and can exceed `BAKE_TOLERANCE` between
    the checked points in extreme saturated colours (ACES 2.0 even turns a few of those black,
    e.g. ACEScg (447, 0, 0.006), where the LUT gives white); `tests/core/test_colorspace.py`
    bounds it and `benchmarks/colorspace_bench.py` measures it.
    """

    def __init__(self, color: PlateColor, exact: ocio.CPUProcessor) -> None:
        config = load_config(color.config)
        self._exact = exact
        linear = config.isColorSpaceLinear(
            color.input_space, ocio.REFERENCE_SPACE_SCENE
        ) or config.isColorSpaceLinear(color.input_space, ocio.REFERENCE_SPACE_DISPLAY)
        shaper = _shaper() if linear else None
        # Shaper values -> input values, by OCIO's inverse of the shaper.
        unshape = (
            config.getProcessor(shaper, ocio.TRANSFORM_DIR_INVERSE).getDefaultCPUProcessor()
            if shaper is not None
            else None
        )
        ends = _unshaped(np.array([[[0.0] * 3, [1.0] * 3]], dtype=np.float32), unshape)
        self.domain = (float(ends[0, 0, 0]), float(ends[0, 1, 0]))  # input values

        table = self._exact_on(_lattice(BAKE_SIZE), unshape)
        undefined = np.isnan(table).any(axis=-1)[0]  # extreme input the view has no value for
        _clip_unit_in_place(table)
        lut = ocio.Lut3DTransform(gridSize=BAKE_SIZE)
        lut.setInterpolation(ocio.INTERP_TETRAHEDRAL)
        lut.setData(table.ravel())
        lut_processor = self._processor(shaper, lut)
        n = BAKE_SIZE - 1
        # Every cell is checked at its centre; steep cells (where the display values of its
        # corners spread more than `_STEEP_CELL`) also at the centres of their eight octants.
        corners = table[0].reshape(BAKE_SIZE, BAKE_SIZE, BAKE_SIZE, 3)
        corners = np.stack([corners[i : i + n, j : j + n, k : k + n] for i, j, k in _OCTANTS])
        steep = np.flatnonzero(
            (corners.max(axis=0) - corners.min(axis=0)).max(axis=-1) > _STEEP_CELL
        )
        cell_of = np.concatenate([np.arange(n**3), np.repeat(steep, len(_OCTANTS))])
        octants = (np.asarray(_OCTANTS, dtype=np.float32) + 0.5) / 2.0  # [8,3] inside a cell
        offsets = np.concatenate(
            [np.full((n**3, 3), 0.5, dtype=np.float32), np.tile(octants, (len(steep), 1))]
        )
        where = np.stack(np.unravel_index(cell_of, (n, n, n)), axis=-1) + offsets
        checks = np.ascontiguousarray((where / n).astype(np.float32)[None])  # shaper values
        # CPU time, not wall time: a busy machine must not flip the choice (the ratio is
        # about 10 for the ACES 2.0 views, about 0.3 for a matrix and a curve)
        start = time.process_time()
        expected = self._exact_on(checks, unshape)
        exact_s = time.process_time() - start
        got = _unshaped(checks, unshape)
        start = time.process_time()
        _in_bands(got, lut_processor.applyRGB)
        lut_s = time.process_time() - start
        # NaN fails the comparison: a cell the view leaves undefined somewhere is marked.
        good = np.abs(got - np.clip(expected, 0.0, 1.0)).max(axis=-1)[0] <= BAKE_TOLERANCE
        cells = np.zeros(n**3, dtype=bool)
        cells[cell_of[~good]] = True
        table[0, _vertices_of(cells.reshape(n, n, n)) | undefined] = _SENTINEL
        lut.setData(table.ravel())
        self._lut = self._processor(shaper, lut)
        self.marked_fraction = float(cells.mean())
        # Cheap views (a matrix and a curve) are faster exact than through the LUT, its
        # domain checks and its exact redos: timed on the check points, with room for those.
        self.worthwhile = lut_s * _WORTHWHILE_SPEEDUP < exact_s

    @staticmethod
    def _processor(shaper, lut) -> ocio.CPUProcessor:
        # A raw config of its own: a config's processor cache keys a Lut3DTransform without
        # its values (OCIO 2.5.1), so it would hand back a LUT baked earlier.
        group = ocio.GroupTransform([shaper, lut] if shaper is not None else [lut])
        return ocio.Config.CreateRaw().getProcessor(group).getDefaultCPUProcessor()

    def _exact_on(self, lattice: np.ndarray, unshape) -> np.ndarray:
        """The exact processor's output, unclipped, on input values of shaper ``lattice``."""
        values = _unshaped(lattice, unshape)
        _in_bands(values, self._exact.applyRGB)
        return values

    def in_place(self, rgb: np.ndarray) -> np.ndarray:
        """Convert float32 C-contiguous [H,W,3] ``rgb`` in place; returns it."""
        _in_bands(rgb, self._band)
        return rgb

    def _band(self, band: np.ndarray) -> None:
        lo, hi = self.domain
        source = band.copy()  # the exact processor redoes some pixels from their input
        self._lut.applyRGB(band)
        marked = float(band.max()) > _MARKED
        # NaN fails both comparisons, so NaN pixels are redone too.
        outside = not (float(source.min()) >= lo and float(source.max()) <= hi)
        if marked or outside:
            # flat indices of the few values to redo (a reduction over the last axis of
            # size 3 would cost as much as the LUT itself), then their pixels
            redo = np.flatnonzero(band.reshape(-1) > _MARKED)
            if outside:
                flat = source.reshape(-1)
                redo = np.concatenate([redo, np.flatnonzero(~((flat >= lo) & (flat <= hi)))])
            redo = np.unique(redo // 3)
            pixels = source.reshape(-1, 3)[redo][None]  # [1,N,3]
            self._exact.applyRGB(pixels)
            band.reshape(-1, 3)[redo] = _clip_unit_in_place(pixels)[0]
        # Interpolated lattice values stay in [0, 1] but for float rounding (and are finite:
        # NaN and infinite input was redone above), so one pass clips them.
        np.clip(band, 0.0, 1.0, out=band)


def _shaper() -> ocio.LogCameraTransform:
    low, high = _SHAPER_LOG2_RANGE
    slope = 1.0 / (high - low)
    return ocio.LogCameraTransform(
        linSideBreak=[_SHAPER_LINEAR_BELOW] * 3,
        base=2.0,
        logSideSlope=[slope] * 3,
        logSideOffset=[-low * slope] * 3,
    )


def _lattice(size: int) -> np.ndarray:
    """[1,size^3,3] float32 lattice over [0,1]^3 in OCIO's 3D LUT order (blue fastest)."""
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    grid = np.stack(np.meshgrid(ramp, ramp, ramp, indexing="ij"), axis=-1)
    return np.ascontiguousarray(grid.reshape(1, -1, 3))


def _unshaped(lattice: np.ndarray, unshape: ocio.CPUProcessor | None) -> np.ndarray:
    """Input values [1,N,3] of shaper values [1,N,3] (a copy)."""
    values = lattice.copy()
    if unshape is not None:
        unshape.applyRGB(values)
    return values


def _vertices_of(cells: np.ndarray) -> np.ndarray:
    """Flat mask of the lattice vertices [n^3] that are corners of the marked ``cells`` [n-1]^3."""
    n = cells.shape[0] + 1
    vertices = np.zeros((n, n, n), dtype=bool)
    for i, j, k in _OCTANTS:
        vertices[i : i + n - 1, j : j + n - 1, k : k + n - 1] |= cells
    return vertices.reshape(-1)


def _in_bands(pixels: np.ndarray, fn) -> None:
    """``fn`` on row bands of ``pixels`` [H,W,3] (or [1,N,3]) in parallel, in place.

    OCIO's CPU processor and numpy release the GIL; small arrays are not worth the hand-off.
    """
    rows = pixels if pixels.shape[0] > 1 else pixels[0]
    if rows.shape[0] * (rows[0].size // 3) < _MIN_PIXELS_TO_SPLIT:
        fn(pixels)
        return
    bands = np.array_split(rows, _WORKERS * 2)  # views into `pixels`
    list(_pool().map(fn if pixels.shape[0] > 1 else lambda b: fn(b[None]), bands))


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="ocio")


@functools.lru_cache(maxsize=8)
def display_transform(color: PlateColor) -> DisplayTransform:
    """The (cached) transform of ``color``: one processor per plate colour decision."""
    return DisplayTransform(color)


def to_display(rgb: np.ndarray, color: PlateColor) -> np.ndarray:
    """Show RGB float pixels [H,W,3] in ``color.input_space`` as the model sees them.

    For viewers (the Qt panel): the same transform the plate reader applies.
    """
    return display_transform(color)(rgb)


def _clip_unit_in_place(x: np.ndarray) -> np.ndarray:
    """Clip float32 ``x`` into [0, 1] in place; NaN -> 0, +inf -> 1, -inf -> 0."""
    np.fmax(x, 0.0, out=x)  # fmax drops NaN: NaN -> 0, -inf -> 0
    return np.minimum(x, 1.0, out=x)


def describe_config(config: str | None = None) -> str:
    """The active config's colour spaces (with aliases), displays and views, as text."""
    name = active_config(config)
    cfg = load_config(name)
    display = _srgb_display(cfg)
    lines = [
        f"OCIO config: {name} ({cfg.getName() or 'unnamed'})",
        f"model display: {display}, default view: {cfg.getDefaultView(display)}",
        "",
        "colour spaces (--input-colorspace; also 'auto', 'srgb', 'linear'):",
    ]
    for space in cfg.getColorSpaces():
        aliases = ", ".join(space.getAliases())
        family = space.getFamily()
        lines.append(
            f"  {space.getName()}"
            + (f"  [{family}]" if family else "")
            + (f"  aliases: {aliases}" if aliases else "")
        )
    lines += ["", "displays and views (--ocio-view takes a view of the model display):"]
    for each in cfg.getDisplays():
        lines.append(f"  {each}: {', '.join(cfg.getViews(each))}")
    return "\n".join(lines)
