"""A run request: everything a run asks for, checked whole before the model loads.

The CLI, farm jobs (``infer --chunk`` / ``finalize``), Ray, the add-on (through the CLI) and
the panel's export build one :class:`RunRequest`; :meth:`RunRequest.prepare` checks it and
returns a :class:`PreparedRun` (the opened plate, the shots, the mattes, the anchors, the
publisher holding the output's lock) or refuses in one line naming the flag, the file and the
frame. A failure found after inference wastes an artist's GPU hour, so what can be known
from headers, file listings and the anchors file is known here: the settings, the folder
policy and its lock, every matte frame's presence, readability and aspect, the anchors
against the plate's frames, size and shots, ``--restore-res`` feasibility, memory. What can
only be known after the fit (a half-range overflow with anchors) is checked by the runner
before the first frame is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .anchors import Anchors, load_anchors
from .cameras import CameraRequest, CameraTrack, load_camera, require_usd
from .colorspace import ColorRequest
from .config import DEFAULT_MAX_FRAME_GIB, DEFAULT_MIN_SHOT_FRAMES, InferenceConfig, OutputConfig
from .cuts import parse_cuts, shots_from_cuts
from .errors import ConfigError, InputError
from .mattes import MatteSource
from .model import check_processing_size, processing_size
from .output import ensure_writable
from .passes import check_passes, wanted_passes
from .plate import Plate, open_plate
from .points import DEFAULT_BUDGET, check_points_name
from .protocol import DEFAULT_FRONT_END, FRONT_ENDS, KEY_FRONT_END, KEY_REQUESTED_BY
from .publish import Publisher, first_missing, remove_if_empty
from .snippets import check_clip_length
from .upsample import check_restore_res

MODES = ("run", "infer", "finalize")
ANCHOR_FITS = ("global", "smooth")
EXECUTORS = ("local", "ray")
HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class RunRequest:
    """What a run asks for (see :func:`.runner.run_plate` for each field's meaning)."""

    plate: str
    output_dir: str | None
    config: InferenceConfig
    output: OutputConfig
    checkpoint: str
    preset: str = "fast"
    device: str = "auto"
    dtype_explicit: bool = False
    frames: str | None = None
    input_colorspace: str | ColorRequest = "auto"
    cache_dir: str | None = None
    executor: str = "local"
    ray_address: str | None = None
    mode: str = "run"
    chunk: str | None = None
    anchors: str | None = None
    anchor_fit: str = "global"
    cuts: str | None = None
    holdout: str | None = None
    holdout_alpha: bool = False
    overwrite: bool = False
    max_frame_memory: float = DEFAULT_MAX_FRAME_GIB
    reference: bool = False
    compile: bool = False
    camera: CameraRequest = field(default_factory=CameraRequest)
    points: str | None = None  # a USD file name written in the output folder
    points_budget: int = DEFAULT_BUDGET
    front_end: str = DEFAULT_FRONT_END  # who built the request: recorded, not in the run id
    requested_by: str | None = None  # free text (the add-on: its .blend file), recorded

    @property
    def passes(self) -> tuple[str, ...]:
        """What every frame carries: ``--passes``, or Z (and P, N with a camera)."""
        return wanted_passes(self.output.passes, self.camera.given)

    def check_settings(self) -> tuple[int, int]:
        """The checks that need no file: settings and their combinations. Returns the chunk
        share (K, N)."""
        self.config.check()
        self.output.check(confidence=self.config.confidence)
        if self.front_end not in FRONT_ENDS:
            raise ConfigError(
                f"`--front-end` must be one of {', '.join(FRONT_ENDS)}; got {self.front_end!r}"
            )
        if self.requested_by is not None and not self.requested_by.isprintable():
            raise ConfigError("`--requested-by` must be one line of printable text")
        if self.mode not in MODES:
            raise ConfigError(f"`mode` must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.executor not in EXECUTORS:
            raise ConfigError(
                f"`--executor` must be one of {', '.join(EXECUTORS)}; got {self.executor!r}"
            )
        if self.cache_dir is None and (self.mode != "run" or self.executor != "local"):
            need = "`--executor ray`" if self.mode == "run" else f"`rollingdepth {self.mode}`"
            raise ConfigError(f"{need} needs `--cache DIR` on storage every node sees")
        if self.chunk is not None and self.mode != "infer":
            raise ConfigError("`--chunk` belongs to `rollingdepth infer`; finalize with all chunks")
        if self.holdout is not None and self.holdout_alpha:
            raise ConfigError("pass `--holdout PATTERN` or `--holdout-alpha`, not both")
        if self.anchors is not None and self.mode != "infer":
            if self.anchor_fit not in ANCHOR_FITS:
                raise ConfigError(
                    f"`--anchor-fit` must be one of {', '.join(ANCHOR_FITS)}; "
                    f"got {self.anchor_fit!r}"
                )
            if self.output.depth_mode == "normalized":
                raise ConfigError(
                    "`--anchors` gives scene units: use `--depth-mode depth` (Z) or `inverse` (1/Z)"
                )
        self.camera.check()
        if self.mode != "infer":
            check_passes(self.passes, self.camera.given, self.output.depth_mode,
                         self.anchors is not None, self.points is not None)  # fmt: skip
            if self.points is not None:
                check_points_name(self.points)
                require_usd("`--points`")  # not only once every frame is computed
                if self.points_budget < 1:
                    raise ConfigError(
                        f"`--points-budget` must be >= 1 point per frame; got {self.points_budget}"
                    )
        return parse_chunk(self.chunk) if self.chunk else (1, 1)

    def settings(self, config: InferenceConfig) -> dict:
        """What shapes the result, for the run id (same plate + settings = same id)."""
        settings = {
            "checkpoint": self.checkpoint,
            "preset": self.preset,
            **asdict(config),
            **asdict(self.output),
            "anchors": self.anchors,
            "cuts": self.cuts,
            "holdout": self.holdout,
            "holdout_alpha": self.holdout_alpha,
        }
        # the 3D outputs enter only when asked for: earlier runs keep their identity
        if self.output.passes is None:
            del settings["passes"]
        if self.camera.given:
            settings["camera"] = asdict(self.camera)
        if self.points:
            settings["points"] = [self.points, self.points_budget]
        return settings

    def prepare(
        self,
        message: Callable[[str], None] | None = None,
        model=None,
        progress=None,
    ) -> PreparedRun:
        """Check everything that can be checked before the model loads; see the module text.

        ``model``: an already loaded model (its device and dtype win). Takes the output
        folder's lock: release it with :meth:`PreparedRun.release` (or ``with prepared:``)
        if the run stops before publishing. ``progress`` hears the cut detection's pass.
        """
        share = self.check_settings()
        finishing = self.mode != "infer"
        created = None
        if finishing:
            if self.output_dir is None:
                raise ConfigError("`-o`/`--output` is required")
            created = first_missing(self.output_dir)
            ensure_writable(self.output_dir)  # a folder that takes no files fails first
        try:
            prepared = self._prepare(share, finishing, message, model)
        except BaseException:
            # a refused request leaves no folder behind: the one the check above created
            if created is not None:
                remove_if_empty(created, self.output_dir)
            raise
        if prepared.publisher is not None:
            prepared.publisher.adopt_created(created)
        return prepared

    def _prepare(self, share, finishing: bool, message, model) -> PreparedRun:
        from .device import resolve_device, resolve_dtype

        anchor_points = (
            load_anchors(self.anchors) if self.anchors is not None and finishing else None
        )
        source = open_plate(
            self.plate,
            frames=self.frames or None,
            input_colorspace=self.input_colorspace,
            max_frame_gib=self.max_frame_memory,
        )
        info = source.info
        if model is not None:
            torch_device, dtype = model.device, model.dtype_name
        else:
            torch_device = resolve_device(self.device)
            dtype = resolve_dtype(self.config.dtype, torch_device, explicit=self.dtype_explicit)
        config = replace(self.config, dtype=dtype)
        # huge frames are read in strips and resized on the way (not under --reference, which
        # resizes as the reference does); what cannot fit is refused before anything is decoded
        fit = None if self.reference else processing_size(info.height, info.width,
                                                          config.processing_res)  # fmt: skip
        source.check_memory(fit)
        size = check_processing_size(info.height, info.width, config.processing_res)
        if self.output.restore_res and finishing:
            check_restore_res((info.height, info.width), size, self.output.upsample, message)
        check_clip_length(len(source), config.snippet_len)
        camera = None
        if finishing and self.camera.given:
            # frames covered, finite values, the film back's aspect against the plate's
            camera = load_camera(self.camera, info.frame_numbers, (info.height, info.width),
                                 info.pixel_aspect)  # fmt: skip
            if (
                self.points
                and self.camera.file
                and (
                    (Path(self.output_dir) / self.points).resolve()
                    == Path(self.camera.file).resolve()
                )
            ):
                raise ConfigError(
                    f"`--points {self.points}` would overwrite the camera file it is made from: "
                    "give the points another name"
                )
        mattes = None
        if self.holdout is not None or self.holdout_alpha:
            mattes = MatteSource(
                self.holdout if self.holdout is not None else self.plate,
                info.frame_numbers,
                (info.height, info.width),
                alpha_only=self.holdout_alpha,
            )
            mattes.check_all()
        cuts, detected = plate_cuts(source, fit, self.cuts, self.frames, config.min_shot_frames)
        if cuts is not None:
            shots = shots_from_cuts(info.frame_numbers, cuts)
            for shot in shots:
                try:
                    check_clip_length(shot.n_frames, config.snippet_len)
                except ConfigError as exc:
                    raise ConfigError(
                        f"shot {shot.index} (frames {shot.first_frame}-{shot.last_frame}): {exc}"
                    ) from exc
            if anchor_points is not None:
                check_anchors(anchor_points, info.frame_numbers, (info.height, info.width),
                              shots, self.anchors)  # fmt: skip
        record = provenance(self, source, cuts, detected, mattes, anchor_points, camera)
        publisher = None
        if finishing:
            publisher = Publisher.for_plate(
                self.output_dir,
                self.output.name,
                source,
                self.settings(config),
                self.overwrite,
                record=record,
                message=message,
            )
        from .checkpoint import locate_checkpoint

        # the checkpoint is found (or fetched) before the folder's policy and lock, and both
        # before the model loads
        located = locate_checkpoint(self.checkpoint)
        if publisher is not None:
            publisher.check()
        return PreparedRun(
            request=self,
            source=source,
            config=config,
            torch_device=torch_device,
            dtype=dtype,
            fit=fit,
            share=share,
            cuts=cuts,
            mattes=mattes,
            anchors=anchor_points,
            publisher=publisher,
            checkpoint_folder=located,
            record=record,
            camera=camera,
        )


@dataclass
class PreparedRun:
    """A checked request: what the method and the publisher need."""

    request: RunRequest
    source: Plate
    config: InferenceConfig  # with the dtype the run uses
    torch_device: object
    dtype: str
    fit: tuple[int, int] | None  # the processing size frames are read at (None: --reference)
    share: tuple[int, int]
    cuts: list[int] | None  # clip positions where shots start (None: detect, infer chunks)
    mattes: MatteSource | None
    anchors: Anchors | None
    publisher: Publisher | None
    checkpoint_folder: object = None
    record: dict = field(default_factory=dict)
    camera: CameraTrack | None = None  # every plate frame's camera, when one is given

    @property
    def info(self):
        return self.source.info

    def release(self) -> None:
        if self.publisher is not None:
            self.publisher.release()

    def __enter__(self) -> PreparedRun:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def plate_cuts(
    plate: Plate,
    fit: tuple[int, int] | None,
    text: str | None = None,
    frames: str | None = None,
    min_shot_frames: int = DEFAULT_MIN_SHOT_FRAMES,
) -> tuple[list[int], bool]:
    """The plate's shots as a run takes them: ``--cuts`` ``text`` (default: ``auto`` for a
    video, ``none`` for an image sequence), detected on the frames at ``fit`` when ``auto``.
    Returns the clip positions where shots start and whether they were detected."""
    info = plate.info
    text = text or default_cuts(info)
    cuts = parse_cuts(text, info.frame_numbers, frames, info)
    if cuts is not None:
        return cuts, False
    from .cuts import detect_cuts

    # one pass over the plate, before the model: a shot too short is refused now
    frames_at_fit = (rgb for _, rgb in plate.frames(fit))
    return detect_cuts(frames_at_fit, min_shot_frames=min_shot_frames), True


def default_cuts(info) -> str:
    """``--cuts`` when not given: ``auto`` for a video, ``none`` for an image sequence."""
    return "auto" if info.kind == "video" else "none"


def parse_chunk(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 1 <= K <= N."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"`--chunk` must look like K/N, e.g. 2/8; got {text!r}") from None
    if not 1 <= k <= n:
        raise ConfigError(f"`--chunk` K/N needs 1 <= K <= N; got {text!r}")
    return k, n


def check_anchors(
    anchors: Anchors,
    frame_numbers,
    plate_size: tuple[int, int],
    shots,
    path: str | None = None,
) -> None:
    """ConfigError unless every shot has at least two anchors inside the plate on its frames,
    at more than one depth: what the fit needs, known before the depth is."""
    height, width = plate_size
    inside = (anchors.x >= 0) & (anchors.x < width) & (anchors.y >= 0) & (anchors.y < height)
    name = Path(path).name if path else "the anchors file"
    processed = np.isin(anchors.frame, np.asarray(frame_numbers, np.int64))
    if not (inside & processed).any():
        what = []
        if (~inside).any():
            what.append(f"{int((~inside).sum())} outside the {width}x{height} plate")
        if (~processed).any():
            what.append(f"{int((~processed).sum())} on frames not processed "
                        f"({frame_numbers[0]}-{frame_numbers[-1]})")  # fmt: skip
        raise ConfigError(
            f"`--anchors` {name}: none of its {len(anchors)} anchors can be used ("
            + ", ".join(what)
            + "); check the frame numbers and that x, y are plate pixels"
        )
    for shot in shots:
        numbers = np.asarray(frame_numbers[shot.start : shot.stop], np.int64)
        usable = inside & np.isin(anchors.frame, numbers)
        where = (
            ""
            if len(shots) == 1
            else f" in shot {shot.index} (frames {shot.first_frame}-{shot.last_frame})"
        )
        if usable.sum() < 2:
            raise ConfigError(
                f"`--anchors` {name}: {int(usable.sum())} usable anchor(s){where}; the fit "
                "needs at least 2 at different depths"
            )
        z = anchors.depth[usable]
        if z.max() < z.min() * (1 + 1e-3):
            raise ConfigError(
                f"`--anchors` {name}: the usable anchors{where} are all at one depth "
                f"({z.min():.6g}); anchors at different distances are needed"
            )


def file_hash(paths) -> str:
    """SHA-256 over the bytes of ``paths`` in order (the first 16 hex digits)."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            with open(path, "rb") as handle:
                while chunk := handle.read(HASH_CHUNK):
                    digest.update(chunk)
        except OSError as exc:
            raise InputError(f"{path}: cannot read: {exc.strerror}") from exc
    return digest.hexdigest()[:16]


def provenance(
    request: RunRequest, source: Plate, cuts, detected: bool, mattes, anchors, camera=None
) -> dict:
    """What the run used beyond its settings: the manifest's ``used`` entry and the EXR
    headers' ``holdout.*``, ``anchors.*`` and ``cuts.*``, and who asked for it."""
    used = used_record(
        source.info.frame_numbers,
        cuts,
        cuts_source(request.cuts, detected),
        mattes,
        anchors,
        request.anchors,
    )
    if camera is not None:
        used["camera"] = {
            "file": camera.source,
            "sha256": camera.sha256,
            "prim": camera.prim,
            "space": camera.space,
            "passes": list(request.passes),
        }
    return {**({"used": used} if used else {}), **who_record(request.front_end,
            request.requested_by)}  # fmt: skip


def cuts_source(text: str | None, detected: bool) -> str:
    """How a run's shots were found: ``detected``, ``given`` (``--cuts``) or ``none``."""
    return "detected" if detected else ("given" if text else "none")


def used_record(frame_numbers, cuts, cuts_from: str, mattes, anchors, anchors_file) -> dict:
    """The manifest's ``used`` entry, the same for every front-end: the holdout (pattern,
    alpha, hash of the matte files), the anchors (file, hash, count, units) and the cuts
    (how they were found, the frames where shots start)."""
    record: dict[str, object] = {}
    if mattes is not None:
        record["holdout"] = {
            "pattern": str(mattes.source),
            "alpha": bool(mattes.alpha_only),
            "frames": len(frame_numbers),
            "sha256": file_hash(mattes.used_files()),
        }
    if anchors is not None:
        record["anchors"] = {
            "file": str(Path(anchors_file).resolve()),
            "sha256": file_hash([anchors_file]),
            "count": len(anchors),
            "units": anchors.units,
        }
    if cuts is not None:
        shots = shots_from_cuts(frame_numbers, cuts)
        record["cuts"] = {
            "source": cuts_from,
            "starts": [shot.first_frame for shot in shots[1:]],
        }
    return record


def who_record(front_end: str, requested_by: str | None) -> dict:
    """Who asked for the run, as the manifest records it."""
    return {KEY_FRONT_END: front_end, KEY_REQUESTED_BY: requested_by}


def header_record(record: dict) -> dict[str, str | int]:
    """The provenance as EXR header fields (the writer adds its ``rollingdepth/`` prefix)."""
    used = record.get("used", {})
    header: dict[str, str | int] = {}
    if record.get(KEY_FRONT_END):
        header[KEY_FRONT_END] = record[KEY_FRONT_END]
    if record.get(KEY_REQUESTED_BY):
        header[KEY_REQUESTED_BY] = record[KEY_REQUESTED_BY]
    if "holdout" in used:
        h = used["holdout"]
        header["holdout"] = h["pattern"]
        header["holdout.alpha"] = int(h["alpha"])
        header["holdout.sha256"] = h["sha256"]
    if "anchors" in used:
        a = used["anchors"]
        header["anchors.file"] = a["file"]
        header["anchors.sha256"] = a["sha256"]
        header["anchors.count"] = a["count"]
    if "cuts" in used:
        c = used["cuts"]
        header["cuts"] = c["source"]
        header["cuts.starts"] = " ".join(str(s) for s in c["starts"])
    return header
