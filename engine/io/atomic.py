"""Atomic file writes: the one place the engine publishes a file.

Every writer of the engine goes through :func:`atomic_path`: the data is written to a temporary
file in the destination's folder (same file system), flushed, and renamed over the destination
with ``os.replace``, so a reader sees the old file or the new one, never half of one, and a
crash or a cancel leaves at most a hidden ``.<name>.*.tmp`` file behind. The typed writers below
(JSON, text, ``.npz``, safetensors) are thin wrappers.

This module imports no torch at import time (the CLI's first event must not wait for it).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path next to ``path``; on a clean exit it replaces ``path``.

    The temporary file keeps ``path``'s suffix (``.tmp.png`` …) so writers that pick a format by
    extension (imageio, OpenEXR, ffmpeg) work on it. On an exception the temporary file is
    removed and ``path`` is left as it was.

    Args:
        path: the destination; its folder is created if missing.
    Yields:
        the temporary path to write (it exists, empty).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fsync(path: str) -> None:
    """Flushes a written file to disk before it is renamed (a rename can outlive the data)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomic UTF-8 text file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Atomic, pretty JSON (numpy scalars and paths are converted)."""
    write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Atomic uncompressed ``.npz`` that ``np.load(allow_pickle=False)`` reads."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def write_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict | None = None) -> None:
    """Atomic safetensors file; tensors are made contiguous and moved to the CPU first.

    Args:
        path: destination ``.safetensors``.
        tensors: name → torch tensor.
        metadata: string-valued header metadata (values are converted with ``str``).
    """
    from safetensors.torch import save_file

    data = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(data, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
