"""The on-disk snippet cache: per-frame latents and per-block snippet predictions.

Layout under the cache folder (shared between the machines of a farm)::

    latents/<key>.npy         one frame's RGB latent [4,h,w] in the compute dtype
    blocks/<key>.npy          a block of snippets [b,L,H,W] float16, full resolution
    blocks/<key>.reduced.npy  the same block as the aligner sees it [b,L,h,w] float16
    blocks/<key>.json         min value and shape; written last: its presence means complete

Keys are content hashes, so a file is valid wherever and whenever it was written: a latent's key
covers the frame's decoded pixels, the model, the processing resolution and the dtype; a block's
key covers the latent keys of its snippets' frames and every setting that changes a snippet
(snippet length, denoising steps, seed, dtype, model). Alignment and output settings are not in
any key, so changing them reuses everything. Every file is written to a temporary name in its
folder and renamed into place, so a killed run leaves no half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import OutputError

CACHE_VERSION = 2  # 2: reduced maps stored [b,L,h,w] (the aligner's view), not [b,L,P]
REDUCE_BORDER = 2
REDUCE_SUBSAMPLE = 10
# how much of a weights file (start and end) enters the model fingerprint besides its size
FINGERPRINT_BYTES = 1 << 20


def frame_hash(rgb: np.ndarray) -> str:
    """Hash of one decoded frame's pixels (shape and dtype included); BLAKE2b, which hashes a
    float32 1080p frame about twice as fast as SHA-256."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"{rgb.shape}{rgb.dtype}".encode())
    digest.update(np.ascontiguousarray(rgb).data)
    return digest.hexdigest()


def model_fingerprint(folder: str | Path) -> str:
    """Identity of a checkpoint folder's UNet and VAE: their configs and their weights files.

    Weights enter by size and their first and last MiB (a safetensors header names every tensor
    and its offsets), not by path or mtime, so a checkpoint copied to each farm machine keeps
    its fingerprint and any retrained weights change it.
    """
    digest = hashlib.sha256()
    folder = Path(folder)
    for sub in ("unet", "vae"):
        for path in sorted((folder / sub).iterdir()):
            if not path.is_file():
                continue
            digest.update(f"{sub}/{path.name}".encode())
            if path.suffix == ".json":
                digest.update(path.read_bytes())
                continue
            size = path.stat().st_size
            digest.update(str(size).encode())
            with path.open("rb") as fh:
                digest.update(fh.read(FINGERPRINT_BYTES))
                if size > FINGERPRINT_BYTES:
                    fh.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
                    digest.update(fh.read())
    return digest.hexdigest()


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()[:40]


def latent_key(frame: str, model: str, processing_res: int, dtype: str, group: int) -> str:
    """A frame's latent: its pixels, the model, the resolution, the dtype and the VAE batch it
    was encoded in (batch composition can change the last bits of a convolution)."""
    return _key("latent", CACHE_VERSION, frame, model, processing_res, dtype, group)


def block_key(
    snippet_latents: list[list[str]],
    model: str,
    snippet_len: int,
    denoise_steps: int,
    seed: int,
    dtype: str,
    batch_size: int,
    vae_batch_size: int,
) -> str:
    """A block of snippets: its frames' latent keys (in snippet order) and the model settings."""
    return _key(
        "block",
        CACHE_VERSION,
        model,
        snippet_len,
        denoise_steps,
        seed,
        dtype,
        batch_size,
        vae_batch_size,
        snippet_latents,
    )


@dataclass
class CacheStats:
    """What a run found in the cache and what it had to compute."""

    latents_reused: int = 0
    latents_computed: int = 0
    blocks_reused: int = 0
    blocks_computed: int = 0
    snippets_reused: int = 0
    snippets_computed: int = 0
    computed_blocks: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "latents_reused": self.latents_reused,
            "latents_computed": self.latents_computed,
            "blocks_reused": self.blocks_reused,
            "blocks_computed": self.blocks_computed,
            "snippets_reused": self.snippets_reused,
            "snippets_computed": self.snippets_computed,
        }


class SnippetCache:
    """Reads and atomically writes the cache's entries; see the module docstring for the layout."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        try:
            for sub in ("latents", "blocks"):
                (self.folder / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the cache folder {str(folder)!r}: {exc}") from exc
        self.stats = CacheStats()

    def check_writable(self, why: str) -> None:
        """OutputError now, not after the model ran, when entries cannot be written here (a
        cache on a read-only mount); ``why`` says what would write them."""
        try:
            with tempfile.NamedTemporaryFile(dir=self.folder / "blocks", prefix=".probe-"):
                pass
        except OSError as exc:
            raise OutputError(
                f"the cache folder {str(self.folder)!r} takes no files ({exc.strerror}); {why}"
            ) from exc

    # ------------------------------------------------------------------ latents
    def latent_path(self, key: str) -> Path:
        return self.folder / "latents" / f"{key}.npy"

    def has_latent(self, key: str) -> bool:
        return self.latent_path(key).exists()

    def load_latent(self, key: str) -> np.ndarray:
        return np.load(self.latent_path(key))

    def save_latent(self, key: str, latent: np.ndarray) -> None:
        self._save_npy(self.latent_path(key), latent)

    # ------------------------------------------------------------------ blocks
    def block_path(self, key: str, kind: str = "") -> Path:
        suffix = {"": ".npy", "reduced": ".reduced.npy", "meta": ".json"}[kind]
        return self.folder / "blocks" / f"{key}{suffix}"

    def has_block(self, key: str) -> bool:
        return self.block_path(key, "meta").exists()

    def save_block(self, key: str, maps: np.ndarray, reduced: np.ndarray) -> None:
        """Store a block ``[b,L,H,W]`` and its reduced maps; the meta file goes last."""
        maps = np.asarray(maps, dtype=np.float16)
        self._save_npy(self.block_path(key), maps)
        self._save_npy(self.block_path(key, "reduced"), np.asarray(reduced, dtype=np.float16))
        meta = {"version": CACHE_VERSION, "shape": list(maps.shape), "min": float(maps.min())}
        self._save_bytes(self.block_path(key, "meta"), json.dumps(meta).encode())

    def block_meta(self, key: str) -> dict:
        return json.loads(self.block_path(key, "meta").read_text())

    def load_reduced(self, key: str) -> np.ndarray:
        return np.load(self.block_path(key, "reduced"))

    def open_block(self, key: str) -> np.ndarray:
        """The block's full-resolution maps, memory-mapped (pages load as frames are read)."""
        return np.load(self.block_path(key), mmap_mode="r")

    # ------------------------------------------------------------------ atomic files
    def _save_npy(self, path: Path, array: np.ndarray) -> None:
        self._atomic(path, lambda fh: np.save(fh, np.ascontiguousarray(array)))

    def _save_bytes(self, path: Path, data: bytes) -> None:
        self._atomic(path, lambda fh: fh.write(data))

    def _atomic(self, path: Path, write) -> None:
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                write(fh)
            os.replace(tmp, path)
        except OSError as exc:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
            raise OutputError(f"cannot write the cache entry {path}: {exc}") from exc
        except BaseException:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
            raise
