"""The one result type of every entry point (:func:`coalign`, :func:`solve_reduced`,
:func:`merge_solution`)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import OutputError


@dataclass
class AlignmentResult:
    """What co-alignment produced; ``depth`` is on the min-shifted values, not renormalised."""

    # [N,H,W] float32; None from solve_reduced (merged elsewhere) and in the pipeline's
    # results, which normalise it in place into DepthPrediction.aligned
    depth: np.ndarray | None
    scales: list[np.ndarray]  # per dilation entry [n_snippets]
    shifts: list[np.ndarray]  # per dilation entry [n_snippets]
    confidence: np.ndarray | None  # [N,H,W] float32 in [0,1] when asked
    frame_residuals: np.ndarray  # [N] mean |aligned occurrence - merged frame|, reduced maps
    method: str
    iterations: int
    seconds: float
    loss_history: list[float]
    offset: float
    converged: bool = True
    merge_weights: list[np.ndarray] | None = field(default=None, repr=False)  # [n] per entry
    # [N] robust spread of one occurrence around the merge (reduced maps), for confidence
    frame_sigma: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """JSON-ready summary (no per-pixel arrays)."""
        out = {
            "method": self.method,
            "iterations": int(self.iterations),
            "converged": bool(self.converged),
            "seconds": round(float(self.seconds), 4),
            "offset": float(self.offset),
            "n_frames": int(self.frame_residuals.shape[0]),
            "scales": [np.asarray(s, dtype=float).tolist() for s in self.scales],
            "shifts": [np.asarray(t, dtype=float).tolist() for t in self.shifts],
            "frame_residuals": np.asarray(self.frame_residuals, dtype=float).tolist(),
            "loss_history": [float(v) for v in self.loss_history],
        }
        if self.merge_weights is not None:
            out["merge_weights"] = [np.asarray(w, dtype=float).tolist() for w in self.merge_weights]
        return out

    def save_json(self, path) -> None:
        """Write :meth:`to_dict` atomically (temporary file in the same folder, then replace)."""
        path = Path(path)
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.to_dict(), fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
            raise OutputError(f"cannot write the alignment report {path}: {exc}") from exc
