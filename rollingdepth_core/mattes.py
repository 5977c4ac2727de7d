"""Holdout mattes: per frame, what the co-alignment must not trust (1 = ignore).

A compositor's roto or key of a sky, a passing truck, glass or a burn-in: the aligner weights
those pixels by ``1 - matte`` (the merge still fills them from the aligned snippets). A matte
sequence is matched to the plate by frame number and may have any resolution of the plate's
aspect; the alpha channel is used where the files have one, else the first channel. A movie
matte is read as grey, its frames numbered from 0 like a movie plate's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import OpenImageIO as oiio

from .errors import ConfigError, InputError
from .plate import sequence_files

ASPECT_TOLERANCE = 0.01  # relative: a matte of another aspect is for another plate


class MatteSource:
    """The mattes of a plate's frames, read one at a time as ``[H,W]`` float32 in 0..1."""

    def __init__(
        self,
        source: str,
        frame_numbers: Sequence[int],
        plate_size: tuple[int, int],
        alpha_only: bool = False,
    ):
        self.source = str(source)
        self.frame_numbers = [int(f) for f in frame_numbers]
        self.alpha_only = alpha_only
        self.plate_size = (int(plate_size[0]), int(plate_size[1]))
        self.files = sequence_files(source)
        if self.files is None and alpha_only:
            raise ConfigError(
                "`--holdout-alpha` reads the alpha of an image sequence; for a movie plate "
                "pass the matte with `--holdout`"
            )
        if self.files is not None:
            missing = [f for f in self.frame_numbers if f not in self.files]
            if missing:
                shown = ", ".join(str(f) for f in missing[:10])
                raise InputError(
                    f"{self.source}: the holdout matte lacks frames {shown}"
                    + (" ..." if len(missing) > 10 else "")
                    + f" ({len(missing)} of the plate's {len(self.frame_numbers)})"
                )
            first = self._read(self.files[self.frame_numbers[0]], self.frame_numbers[0])
        else:
            first = next(self._video(), None)
            if first is None:
                raise InputError(f"{self.source}: the holdout matte has no frames")
        self._check_aspect(first.shape, plate_size)
        self._check_leaves_pixels(first)

    def _check_leaves_pixels(self, first: np.ndarray) -> None:
        """InputError when every matte is white: nothing would be left to align on. Reads
        mattes until one holds a pixel under 1: most often the first, already read."""
        if (first < 1.0).any() or any((matte < 1.0).any() for matte in self._rest()):
            return
        raise InputError(
            f"{self.source}: the holdout matte is white (1) on every pixel of every frame, so "
            "nothing is left to align on; 1 marks what the alignment must ignore (invert the "
            "matte?)"
        )

    def _rest(self) -> Iterator[np.ndarray]:
        """The mattes after the plate's first frame's."""
        frames = self.frames()
        next(frames, None)
        yield from frames

    def check_all(self) -> None:
        """Every matte frame's header, before the model loads: readable, of the plate's
        aspect; a movie long enough for the plate's frame numbers. Reads no pixels."""
        if self.files is None:
            import av

            try:
                with av.open(self.source) as container:
                    stream = container.streams.video[0]
                    count = stream.frames or sum(
                        1 for packet in container.demux(stream) if packet.size
                    )
            except (av.error.FFmpegError, IndexError) as exc:
                raise InputError(f"{self.source}: cannot read the holdout matte: {exc}") from exc
            last = max(self.frame_numbers)
            if last >= count:
                raise ConfigError(
                    f"`--holdout` {self.source}: the movie has {count} frames (0-{count - 1}), "
                    f"the plate's frames run to {last}: a movie matte numbers its frames from 0 "
                    "like a movie plate; for an image-sequence plate pass the matte as a "
                    "sequence numbered like the plate"
                )
            return
        for number in self.frame_numbers:
            path = self.files[number]
            inp = oiio.ImageInput.open(str(path))
            if inp is None:
                raise InputError(
                    f"`--holdout` {path} (frame {number}): cannot read: "
                    + (oiio.geterror().strip().splitlines() or ["unreadable"])[0]
                )
            try:
                spec = inp.spec()
            finally:
                inp.close()
            if self.alpha_only and spec.alpha_channel < 0:
                raise InputError(
                    f"{path} (frame {number}): `--holdout-alpha` needs an alpha channel; "
                    "it has none"
                )
            try:
                self._check_aspect((spec.height, spec.width), self.plate_size)
            except ConfigError as exc:
                raise ConfigError(f"{exc} (frame {number}: {path.name})") from None

    def used_files(self) -> list[Path]:
        """The files the plate's frames' mattes come from, in order (for provenance)."""
        if self.files is None:
            return [Path(self.source)]
        return [self.files[n] for n in self.frame_numbers]

    def _check_aspect(self, shape: tuple[int, int], plate_size: tuple[int, int]) -> None:
        matte, plate = shape[1] / shape[0], plate_size[1] / plate_size[0]
        if abs(matte / plate - 1) > ASPECT_TOLERANCE:
            raise ConfigError(
                f"{self.source}: the holdout matte is {shape[1]}x{shape[0]}, the plate "
                f"{plate_size[1]}x{plate_size[0]}: their aspects differ"
            )

    def _read(self, path: Path, number: int) -> np.ndarray:
        inp = oiio.ImageInput.open(str(path))
        if inp is None:
            raise InputError(f"{path}: cannot read the holdout matte: {oiio.geterror()}")
        try:
            spec = inp.spec()
            pixels = inp.read_image(0, 0, 0, spec.nchannels, "float")
        finally:
            inp.close()
        if pixels is None:
            raise InputError(f"{path}: cannot read the holdout matte: {oiio.geterror()}")
        pixels = np.asarray(pixels).reshape(spec.height, spec.width, spec.nchannels)
        channel = spec.alpha_channel
        if channel < 0:
            if self.alpha_only:
                raise InputError(f"{path}: `--holdout-alpha` needs an alpha channel; it has none")
            channel = 0
        matte = pixels[..., channel]
        bad = int(np.count_nonzero(~np.isfinite(matte)))
        if bad:
            raise InputError(
                f"{path}: the holdout matte of frame {number} holds {bad} NaN or infinite "
                "pixels; a matte's values must lie in 0..1"
            )
        return np.clip(matte, 0.0, 1.0).astype(np.float32)

    def _video(self) -> Iterator[np.ndarray]:
        import av

        try:
            with av.open(self.source) as container:
                for frame in container.decode(video=0):
                    grey = frame.to_ndarray(format="gray16le").astype(np.float32)
                    yield grey / 65535.0
        except av.error.FFmpegError as exc:
            raise InputError(f"{self.source}: cannot read the holdout matte: {exc}") from exc

    def frames(self) -> Iterator[np.ndarray]:
        """The plate's frames' mattes ``[H,W]`` in the plate's order."""
        if self.files is not None:
            for number in self.frame_numbers:
                yield self._read(self.files[number], number)
            return
        wanted = iter(self.frame_numbers)
        target = next(wanted, None)
        for index, matte in enumerate(self._video()):
            if target is None:
                return
            if index == target:
                yield matte
                target = next(wanted, None)
        if target is not None:
            raise InputError(f"{self.source}: the holdout movie ends before frame {target}")
