"""Atomic file writes (stdlib): a temp file in the same folder, then ``os.replace``, so a reader
sees the old file or the whole new one, never a half-written file (docs/FORMATS.md)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_bytes"]


def write_bytes(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (parent folders are created).

    Raises:
        OSError: the folder is not writable (``path`` is unchanged).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
