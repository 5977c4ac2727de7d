"""The on-disk snippet cache: per-frame latents and per-block snippet predictions.

Layout under the cache folder (shared between the machines of a farm)::

    latents/<key>.npy               one frame's RGB latent [4,h,w] in the compute dtype
    blocks/<key>/maps.npy           a block of snippets [b,L,H,W] float16, full resolution
    blocks/<key>/reduced.npy        the same block as the aligner sees it [b,L,h,w] float16
    blocks/<key>/meta.json          min value, shape and the SHA-256 of both arrays' files

Keys are content hashes, so a file is valid wherever and whenever it was written: a latent's key
covers the frame's decoded pixels, the model, the processing resolution and the dtype; a block's
key covers the latent keys of its snippets' frames and every setting that changes a snippet
(snippet length, denoising steps, seed, dtype, model). Alignment and output settings are not in
any key, so changing them reuses everything.

Farms run a task twice (a node that looks dead but is not), kill tasks and retry them, so any
number of processes on any machines may write the same entry at once. No reader ever sees a
torn entry: a latent is written to a temporary name in its folder and renamed into place; a
block is written whole into a temporary folder and that folder is renamed to ``blocks/<key>``,
which is atomic and fails when another writer got there first (the first complete block wins,
the others are dropped). Every read of a block checks its files against the digests in its
meta; an entry that does not match (a damaged disk, a copy cut short) is moved aside and the run
stops with one line saying to run it again, which recomputes just that entry. Temporary files
carry the writer's host and process id, so leftovers of a killed writer on this host are removed
when a cache is next opened here.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import OutputError, RollingDepthError

# 2: reduced maps stored [b,L,h,w] (the aligner's view), not [b,L,P]; 3: a block is one folder,
# renamed into place whole, with its files' digests
CACHE_VERSION = 3
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


class CacheDamaged(RollingDepthError):
    """A cache entry does not match its digest or cannot be read; it was moved aside."""


# temporary names: .tmp~HOST~PID~...; '~' appears in no host name
TMP_PREFIX = ".tmp~"
HASH_CHUNK = 1 << 22


def _tmp_prefix() -> str:
    return f"{TMP_PREFIX}{socket.gethostname()}~{os.getpid()}~"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _HashingWriter:
    """A file that hashes what is written to it (np.save writes through ``write``)."""

    def __init__(self, fh):
        self.fh, self.digest = fh, hashlib.sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        return self.fh.write(data)


class SnippetCache:
    """Reads and atomically writes the cache's entries; see the module docstring for the layout."""

    BLOCK_FILES = ("maps.npy", "reduced.npy")

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        try:
            for sub in ("latents", "blocks"):
                (self.folder / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the cache folder {str(folder)!r}: {exc}") from exc
        self.stats = CacheStats()
        self._verified: set[str] = set()  # blocks whose files matched their digests here
        self._remove_stale_temporaries()

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
        path = self.latent_path(key)
        try:
            return np.load(path)
        except (OSError, ValueError, EOFError) as exc:
            raise self._damaged(path, f"cannot be read ({exc})") from exc

    def save_latent(self, key: str, latent: np.ndarray) -> None:
        self._save_npy(self.latent_path(key), latent)

    # ------------------------------------------------------------------ blocks
    def block_dir(self, key: str) -> Path:
        return self.folder / "blocks" / key

    def has_block(self, key: str) -> bool:
        return (self.block_dir(key) / "meta.json").exists()

    def block_keys(self) -> list[str]:
        """The keys of every complete block in the cache."""
        return sorted(
            p.parent.name
            for p in (self.folder / "blocks").glob("*/meta.json")
            if not p.parent.name.startswith(".")
        )

    def save_block(self, key: str, maps: np.ndarray, reduced: np.ndarray) -> bool:
        """Store a block ``[b,L,H,W]`` and its reduced maps as one folder renamed into place;
        False when another writer's complete block was there first (this one is dropped)."""
        final = self.block_dir(key)
        if self.has_block(key):
            return False
        maps = np.asarray(maps, dtype=np.float16)
        reduced = np.asarray(reduced, dtype=np.float16)
        tmp = None
        try:
            tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(), dir=final.parent))
            digests = {
                name: self._write_synced(tmp / name, lambda fh, a=array: np.save(fh, a))
                for name, array in zip(self.BLOCK_FILES, (maps, reduced), strict=True)
            }
            meta = {
                "version": CACHE_VERSION,
                "shape": list(maps.shape),
                "min": float(maps.min()),
                "sha256": digests,
            }
            self._write_synced(tmp / "meta.json", lambda fh: fh.write(json.dumps(meta).encode()))
            try:
                os.rename(tmp, final)
            except OSError as exc:
                # a directory renamed onto a non-empty one fails: a duplicate writer finished
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) and self.has_block(key):
                    shutil.rmtree(tmp, ignore_errors=True)
                    return False
                raise
            tmp = None
            self._verified.add(key)
            return True
        except OSError as exc:
            raise OutputError(f"cannot write the cache entry {final}: {exc}") from exc
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

    def block_meta(self, key: str) -> dict:
        path = self.block_dir(key) / "meta.json"
        try:
            meta = json.loads(path.read_text())
            if not all(isinstance(meta["sha256"].get(n), str) for n in self.BLOCK_FILES):
                raise ValueError("no digests")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise self._damaged(self.block_dir(key), f"has no readable meta.json ({exc})") from exc
        return meta

    def load_reduced(self, key: str) -> np.ndarray:
        data = self._read_verified(key, "reduced.npy")
        return np.load(io.BytesIO(data))

    def open_block(self, key: str) -> np.ndarray:
        """The block's full-resolution maps, memory-mapped (pages load as frames are read);
        the file is checked against its digest the first time this cache opens it."""
        path = self.block_dir(key) / "maps.npy"
        if key not in self._verified:
            expected = self.block_meta(key)["sha256"]["maps.npy"]
            try:
                actual = _file_digest(path)
            except OSError as exc:
                raise self._damaged(self.block_dir(key), f"cannot be read ({exc})") from exc
            if actual != expected:
                raise self._damaged(self.block_dir(key), "does not match its digest")
            self._verified.add(key)
        return np.load(path, mmap_mode="r")

    def _read_verified(self, key: str, name: str) -> bytes:
        expected = self.block_meta(key)["sha256"][name]
        try:
            data = (self.block_dir(key) / name).read_bytes()
        except OSError as exc:
            raise self._damaged(self.block_dir(key), f"cannot be read ({exc})") from exc
        if hashlib.sha256(data).hexdigest() != expected:
            raise self._damaged(self.block_dir(key), "does not match its digest")
        return data

    def _damaged(self, path: Path, why: str) -> CacheDamaged:
        """Move a bad entry aside (so that a rerun recomputes it) and say so in one line."""
        aside = path.with_name(f".damaged-{path.name}-{os.getpid()}")
        try:
            os.rename(path, aside)
            where = f"moved aside to {aside.name}"
        except OSError:
            where = "it could not be moved aside: delete it"
        return CacheDamaged(
            f"the cache entry {path} {why}; {where}. Run the same command again to recompute it"
        )

    # ------------------------------------------------------------------ atomic files
    def _save_npy(self, path: Path, array: np.ndarray) -> None:
        self._atomic(path, lambda fh: np.save(fh, np.ascontiguousarray(array)))

    def _atomic(self, path: Path, write) -> None:
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(), suffix=".tmp", dir=path.parent)
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

    @staticmethod
    def _write_synced(path: Path, write) -> str:
        """Write a file, flushed to the disk before its folder is renamed; its SHA-256."""
        with path.open("wb") as fh:
            hashing = _HashingWriter(fh)
            write(hashing)
            fh.flush()
            os.fsync(fh.fileno())
        return hashing.digest.hexdigest()

    def _remove_stale_temporaries(self) -> None:
        """Remove what killed writers on this host left behind (their process is gone)."""
        host = socket.gethostname()
        for sub in ("latents", "blocks"):
            for path in (self.folder / sub).glob(f"{TMP_PREFIX}*"):
                parts = path.name.split("~")
                if len(parts) < 4 or parts[1] != host or not parts[2].isdigit():
                    continue
                if _pid_alive(int(parts[2])):
                    continue
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
