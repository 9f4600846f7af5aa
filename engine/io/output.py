"""Claiming an output folder before a job does any work: writable, locked, recovered, room.

Every job that writes a folder calls :func:`claim_output` first (train, bake, render, eval, demo;
a future ``track`` job the same way)::

    with claim_output(cfg.output, "train") as out:
        ...                                   # load inputs, build the model
        out.require_space(estimated_bytes)    # once the size of the outputs is known
        ...                                   # step 1 onwards

so a read-only, full or busy folder is an error before step 1, not after the last one.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from engine.errors import OutputError
from engine.io.atomic import uninterruptible
from engine.io.lock import FolderLock
from engine.io.publish import recover

log = logging.getLogger(__name__)

MIB = 1 << 20


def check_writable(folder: str | os.PathLike, job: str = "the job") -> Path:
    """Creates ``folder`` if needed and proves a file can be written, flushed and deleted there.

    Raises:
        OutputError: the folder cannot be created or written (read-only file system,
            permissions, a file in the way), naming it and the system's reason.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"output folder {folder} is a file, not a folder ({job})")
    try:
        with uninterruptible():  # a cancel never leaves the probe file behind
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".fate-probe-", dir=folder)
            try:
                os.write(fd, b"fate")
                os.fsync(fd)
            finally:
                os.close(fd)
                os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"output folder {folder} is not writable ({exc.strerror or exc}); {job} needs "
                          "to write there: choose another folder or fix its permissions") from exc
    return folder


def check_free_space(folder: str | os.PathLike, need_bytes: int, job: str = "the job") -> None:
    """Raises when ``folder``'s file system has less than ``need_bytes`` free.

    Raises:
        OutputError: naming the folder, the free and the needed MiB.
    """
    try:
        free = shutil.disk_usage(folder).free
    except OSError as exc:  # pragma: no cover - the folder vanished
        raise OutputError(f"cannot check the free space of {folder}: {exc.strerror or exc}") from exc
    if free < need_bytes:
        raise OutputError(f"output folder {folder} has {free / MIB:.1f} MiB free; {job} needs about "
                          f"{need_bytes / MIB:.1f} MiB: free some space or choose another folder")


@dataclass
class ClaimedOutput:
    """An output folder this job holds (see :func:`claim_output`)."""

    folder: Path
    job: str

    def require_space(self, need_bytes: int) -> None:
        """:func:`check_free_space` for this folder."""
        check_free_space(self.folder, int(need_bytes), self.job)


@contextmanager
def claim_output(folder: str | os.PathLike, job: str, need_bytes: int = 0) -> Iterator[ClaimedOutput]:
    """Holds ``folder`` for a job: checks it is writable, takes its lock
    (:class:`~engine.io.lock.FolderLock`), completes or discards an interrupted save
    (:func:`~engine.io.publish.recover`) and checks for ``need_bytes`` of room.

    Raises:
        OutputError: not writable or not enough room.
        FolderLockedError: another job holds the folder.
    """
    folder = check_writable(folder, job)
    with FolderLock(folder, job):
        recover(folder)
        claimed = ClaimedOutput(folder, job)
        if need_bytes:
            claimed.require_space(need_bytes)
        yield claimed
