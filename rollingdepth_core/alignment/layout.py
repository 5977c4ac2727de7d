"""Who covers what, for the solvers: occurrences, per-frame slots and frame chunks."""

from __future__ import annotations

import numpy as np
import torch

from .checks import tensor_view

CHUNK_ELEMENTS = 1 << 18  # reduced-map values per frame chunk in a pass (1 MiB per temporary)


class Layout:
    """Who covers what. Occurrence o = (entry, snippet, position), global snippet id ``gid``.

    ``slots[f, q]`` is the q-th occurrence covering frame f (-1 past the frame's count);
    frames are processed in chunks whose gathers are planned once.
    """

    def __init__(self, indices: list[np.ndarray], n_frames: int, n_pixels: int):
        self.n_frames = n_frames
        self.n_pixels = n_pixels
        self.sizes = [k.shape[0] for k in indices]
        starts = np.concatenate([[0], np.cumsum(self.sizes)])
        self.n_snippets = int(starts[-1])
        gid, entry, row, frame = [], [], [], []
        for i, k in enumerate(indices):
            n, length = k.shape
            snip = np.repeat(np.arange(n), length)
            gid.append(starts[i] + snip)
            entry.append(np.full(n * length, i))
            row.append(snip * length + np.tile(np.arange(length), n))
            frame.append(k.ravel())
        self.entry_spans = [(int(starts[i]), k.shape[0], k.shape[1]) for i, k in enumerate(indices)]
        self.occ_gid = np.concatenate(gid)
        self.occ_entry = np.concatenate(entry)
        self.occ_row = np.concatenate(row)
        occ_frame = np.concatenate(frame)
        self.n_occurrences = occ_frame.size
        order = np.argsort(occ_frame, kind="stable")
        self.counts = np.bincount(occ_frame, minlength=n_frames)
        first = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
        rank = np.arange(order.size) - np.repeat(first, self.counts)
        self.slots = np.full((n_frames, int(self.counts.max())), -1, dtype=np.int64)
        self.slots[occ_frame[order], rank] = order
        per_frame = self.slots.shape[1] * n_pixels
        step = max(1, CHUNK_ELEMENTS // per_frame)
        self.chunks = [self._plan(f0, min(f0 + step, n_frames)) for f0 in range(0, n_frames, step)]

    def _plan(self, f0: int, f1: int) -> dict:
        occ = self.slots[f0:f1].ravel()
        valid = occ >= 0
        safe = np.where(valid, occ, 0)
        gathers = []
        for i in range(len(self.sizes)):
            pos = np.flatnonzero(valid & (self.occ_entry[safe] == i))
            if pos.size:
                rows = self.occ_row[occ[pos]]
                gathers.append((i, torch.from_numpy(pos), torch.from_numpy(rows)))
        shape = (f1 - f0, self.slots.shape[1])
        return {
            "f0": f0,
            "f1": f1,
            "gid": torch.from_numpy(np.where(valid, self.occ_gid[safe], 0).reshape(shape)),
            "gid_np": np.where(valid, self.occ_gid[safe], 0).reshape(shape),
            "valid": torch.from_numpy(valid.reshape(shape).astype(np.float32)),
            "shared": torch.from_numpy(
                (valid.reshape(shape) & (self.counts[f0:f1, None] >= 2)).astype(np.float32)
            ),
            "gathers": gathers,
            "occ": torch.from_numpy(occ[valid]),  # occurrence ids of the valid slots
            "occ_at": torch.from_numpy(np.flatnonzero(valid)),  # ... and their flat positions
            "full": bool(valid.all()),  # no pads
        }

    def gather(
        self, chunk: dict, maps: list[torch.Tensor], offset: float, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Reduced values minus ``offset`` of the chunk's occurrences: ``[F, c, P]`` (pads 0),
        into ``out`` when given."""
        f, c = chunk["gid"].shape
        if out is None:
            x = torch.zeros(f * c, self.n_pixels)
        else:  # a reused buffer: only its pads need clearing (all slots are overwritten)
            x = out.view(f * c, -1)
            if not chunk["full"]:
                x.zero_()
        for i, pos, rows in chunk["gathers"]:
            picked = maps[i].index_select(0, rows).float().flatten(1)  # new: free to change
            x.index_copy_(0, pos, picked.sub_(offset) if offset else picked)
        return x.view(f, c, self.n_pixels)

    def split(self, flat: np.ndarray) -> list[np.ndarray]:
        """Per-snippet values ``[K]`` into one ``[n]`` array per entry."""
        return np.split(np.asarray(flat), np.cumsum(self.sizes)[:-1])


def flat_maps(reduced: list[np.ndarray]) -> list[torch.Tensor]:
    """The reduced views as tensors ``[n L, h, w]`` on the caller's memory."""
    return [tensor_view(r).flatten(0, 1) for r in reduced]
