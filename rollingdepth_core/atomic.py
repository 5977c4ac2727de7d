"""Text files written whole or not at all: a temporary name beside the target, flushed to
disk, then renamed over it. A leaf module (it imports nothing of the engine but its errors), so
that every writer of a small file (the publisher's manifest and journal, the anchors report,
the timeline) uses the one way."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from .errors import OutputError


@contextmanager
def open_atomic(path: Path) -> Iterator[TextIO]:
    """A text handle whose contents replace ``path`` when the block ends without an error;
    otherwise ``path`` is left as it was and the temporary file is removed."""
    temp = path.with_name(f".{path.name}.tmp{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(temp, "w", encoding="utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {exc}") from exc
    finally:
        temp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary name, fsync, then rename over ``path``."""
    with open_atomic(path) as handle:
        handle.write(text)
