"""The on-disk snippet cache: per-frame latents and per-block snippet predictions.

Layout under the cache folder (shared between the machines of a farm)::

    latents/<key>.latent            one frame's RGB latent [4,h,w] in the compute dtype: a
                                    header with the SHA-256 of its key and array, then the .npy
    blocks/<key>/maps.npy           a block of snippets [b,L,H,W] float16, full resolution
    blocks/<key>/reduced.npy        the same block as the aligner sees it [b,L,h,w] float16
    blocks/<key>/meta.json          what the block holds (its key, the latent keys of its
                                    snippets' frames, the settings, its dilation and snippet
                                    indices, the plate it was first computed for), min value,
                                    shape, the SHA-256 of both arrays' files and of itself

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
the others are dropped). Every cache file is checked before it is used: a latent against the
digest in its header, which covers its key too; a block's meta against its own digest and the
key it is read under (a block renamed to another's key is caught, whatever its shape), its
arrays against the digests in its meta. An entry that does not match (a damaged disk, a copy
cut short, folders renamed by hand) is moved aside; a latent a run needs is then encoded again
on the spot, anything else stops the run with one line naming the entry and saying to run the
same command again, which recomputes just that entry. Temporary files
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
# renamed into place whole, with its files' digests; 4: latents carry a digest, a block's meta
# names what it holds and has a digest of its own
CACHE_VERSION = 4
LATENT_MAGIC = b"RDLATENT4\n"  # then the SHA-256 (32 bytes) of the key and the .npy bytes
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


BLOCK_SETTINGS = (
    "model",
    "snippet_len",
    "denoise_steps",
    "seed",
    "dtype",
    "batch_size",
    "vae_batch_size",
)


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
    """A block of snippets: its frames' latent keys (in snippet order) and the model settings
    (:data:`BLOCK_SETTINGS`, in that order)."""
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


def _meta_digest(meta: dict) -> str:
    """SHA-256 of a block's meta without its own digest (canonical JSON)."""
    rest = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(
        json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


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


def _bytes_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
        return self.folder / "latents" / f"{key}.latent"

    def has_latent(self, key: str) -> bool:
        return self.latent_path(key).exists()

    def latent_ok(self, key: str) -> bool:
        """Whether the latent is there and matches its digest; a damaged one is moved aside
        (so that the caller encodes it again) and False returned."""
        if not self.has_latent(key):
            return False
        try:
            self.load_latent(key)
        except CacheDamaged:
            return False
        return True

    def load_latent(self, key: str) -> np.ndarray:
        """The latent, checked against the digest in its header (which covers its key: a file
        renamed to another frame's key does not pass)."""
        path = self.latent_path(key)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise self._damaged(path, f"cannot be read ({exc.strerror})") from exc
        head = len(LATENT_MAGIC)
        if data[:head] != LATENT_MAGIC or len(data) < head + 32:
            raise self._damaged(path, "is not a latent of this cache version")
        digest, body = data[head : head + 32], data[head + 32 :]
        if hashlib.sha256(key.encode() + body).digest() != digest:
            raise self._damaged(path, "does not match its digest")
        try:
            return np.load(io.BytesIO(body))
        except (OSError, ValueError, EOFError) as exc:
            raise self._damaged(path, f"cannot be read ({exc})") from exc

    def save_latent(self, key: str, latent: np.ndarray) -> None:
        body = io.BytesIO()
        np.save(body, np.ascontiguousarray(latent))
        data = body.getvalue()
        digest = hashlib.sha256(key.encode() + data).digest()
        self._atomic(self.latent_path(key), lambda fh: fh.write(LATENT_MAGIC + digest + data))

    # ------------------------------------------------------------------ blocks
    def block_dir(self, key: str) -> Path:
        return self.folder / "blocks" / key

    def has_block(self, key: str) -> bool:
        return (self.block_dir(key) / "meta.json").exists()

    def block_ok(self, key: str) -> bool:
        """Whether the block is there and its meta is whole and names ``key``; one that is not
        is moved aside (so that the caller computes it again) and False returned."""
        if not self.has_block(key):
            return False
        try:
            self.block_meta(key)
        except CacheDamaged:
            return False
        return True

    def block_keys(self) -> list[str]:
        """The keys of every complete block in the cache."""
        return sorted(
            p.parent.name
            for p in (self.folder / "blocks").glob("*/meta.json")
            if not p.parent.name.startswith(".")
        )

    def save_block(
        self, key: str, maps: np.ndarray, reduced: np.ndarray, holds: dict | None = None
    ) -> bool:
        """Store a block ``[b,L,H,W]`` and its reduced maps as one folder renamed into place;
        False when another writer's complete block was there first (this one is dropped).
        ``holds``: what the block is (latent keys, settings, indices), recorded in its meta;
        its ``latents`` and ``settings`` must give ``key`` (:func:`block_key`)."""
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
                **(holds or {}),
                "key": key,
                "version": CACHE_VERSION,
                "shape": list(maps.shape),
                "min": float(maps.min()),
                "sha256": digests,
            }
            meta["meta_sha256"] = _meta_digest(meta)
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
        """The block's meta, checked against its own digest and against ``key``: it must name
        this key, and its latents and settings must give it."""
        path = self.block_dir(key) / "meta.json"
        try:
            meta = json.loads(path.read_text())
            if not all(isinstance(meta["sha256"].get(n), str) for n in self.BLOCK_FILES):
                raise ValueError("no digests")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise self._damaged(self.block_dir(key), f"has no readable meta.json ({exc})") from exc
        if meta.get("meta_sha256") != _meta_digest(meta):
            raise self._damaged(
                self.block_dir(key), "has a meta.json that does not match its digest"
            )
        if meta.get("key") != key:
            raise self._damaged(
                self.block_dir(key), f"holds another block (its meta.json names {meta.get('key')})"
            )
        if "latents" in meta and "settings" in meta:
            try:
                settings = [meta["settings"][name] for name in BLOCK_SETTINGS]
                derived = block_key(meta["latents"], *settings)
            except (KeyError, TypeError) as exc:
                raise self._damaged(
                    self.block_dir(key), f"has an incomplete meta.json ({exc})"
                ) from exc
            if derived != key:
                raise self._damaged(
                    self.block_dir(key), "holds snippets of other frames or settings than its key"
                )
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
        if _bytes_digest(data) != expected:
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
