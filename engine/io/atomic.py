"""Atomic file writes: the one place the engine publishes a file.

Every writer of the engine goes through :func:`atomic_path`: the data is written to a temporary
file in the destination's folder (same file system), flushed, and renamed over the destination
with ``os.replace``, so a reader sees the old file or the new one, never half of one, and a
crash or a cancel leaves at most a hidden ``.<name>.*.tmp`` file behind. The typed writers below
(JSON, text, ``.npz``, safetensors) are thin wrappers. A *set* of files that must change together
(an avatar, a checkpoint, the maps) is published with :mod:`engine.io.publish`, which uses these.

The rename and the clean-up run in an :class:`uninterruptible` block: a cancel that arrives there
does not interrupt them (``engine.jobs.cancel`` asks :func:`in_uninterruptible` before it raises
asynchronously). Loops that poll the cancel flag at their step boundaries (training, baking) run in
one too, so they stop at a step boundary with a checkpoint. A
write that fails with an ``OSError`` (disk full, read-only folder) raises
:class:`~engine.errors.OutputError` naming the file.

This module imports no torch at import time (the CLI's first event must not wait for it).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import OutputError

_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK
"""Mode of published files: what ``open()`` would give (``mkstemp`` makes them 0600)."""

_critical = threading.local()
_exit_hooks: list[Callable[[], None]] = []


class uninterruptible:
    """Marks code that a cancel must not interrupt asynchronously: renames and clean-up of
    published files, and loops that check the cancel flag themselves at each step.

    Nestable; per thread. ``with uninterruptible(): os.replace(tmp, path)``. When the outermost
    block ends normally (no exception on its way), the hooks of :func:`on_uninterruptible_exit`
    run: a cancel that arrived inside takes effect right after it.
    """

    def __enter__(self) -> "uninterruptible":
        _critical.depth = getattr(_critical, "depth", 0) + 1
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        _critical.depth -= 1
        if exc_type is None and _critical.depth == 0 and _exit_hooks and sys.exc_info()[0] is None:
            for hook in list(_exit_hooks):
                hook()


def on_uninterruptible_exit(hook: Callable[[], None], add: bool = True) -> None:
    """Registers (or, with ``add=False``, removes) a function called when an outermost
    :class:`uninterruptible` block ends normally (``engine.jobs.cancel`` raises a pending cancel
    there)."""
    if add:
        _exit_hooks.append(hook)
    elif hook in _exit_hooks:
        _exit_hooks.remove(hook)


def in_uninterruptible() -> bool:
    """Whether the calling thread is inside a :class:`uninterruptible`."""
    return getattr(_critical, "depth", 0) > 0


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
    Raises:
        OutputError: the folder cannot be created or the file written (``OSError``: disk full,
            read-only folder, permissions), naming the file; ``path`` is left as it was.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with uninterruptible():
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
                os.close(fd)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
        yield Path(tmp)
        fsync_path(tmp)
        with uninterruptible():
            os.chmod(tmp, _FILE_MODE)
            os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        with uninterruptible():
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)


def fsync_path(path: str | os.PathLike) -> None:
    """Flushes a written file (before it is renamed: a rename can outlive the data) or a folder's
    entries (after renames in it) to disk, where the platform allows it; errors are ignored."""
    if os.name == "nt" and os.path.isdir(path):  # pragma: no cover - Windows cannot open folders
        return
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
        try:
            save_file(data, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
        except Exception as exc:  # SafetensorError: safetensors reports a full disk as its own type
            if "I/O error" not in str(exc):
                raise
            raise OSError(f"{exc}".split("I/O error: ")[-1]) from exc


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
