"""One job per output folder: the lock file ``<folder>/.fate.lock``.

A job that writes a folder (train, bake, render, eval, demo; track when it exists) holds its lock
for the whole run (:func:`engine.io.output.claim_output`). The file holds the owner's pid, host,
job name and start time (JSON, docs/FORMATS.md) so that a second job is refused with a message
that says who holds the folder.

Liveness comes from the operating system, not from the pid: the holder keeps an exclusive
``flock`` (POSIX) or ``msvcrt.locking`` (Windows) on the open file, which the kernel drops when
the process ends, however it ends (``kill -9`` included). A lock file whose OS lock is free is
stale: the next job takes it over and logs the dead owner. One exception: a stale file written by
*another host* is not taken over (on some network file systems OS locks do not reach across
hosts, so the owner may be alive); the message says which file to delete.

The holder deletes the file when it releases the lock. Acquiring checks that the file it locked is
still the one at the path (a releaser may have unlinked it in between) and retries if not.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from engine.errors import FolderLockedError, OutputError
from engine.io.atomic import uninterruptible

log = logging.getLogger(__name__)

LOCK_NAME = ".fate.lock"
"""File name of a folder's lock."""
LOCK_FORMAT = "fate-lock"

HOST = socket.gethostname()
"""This machine's host name as written into lock files."""

_HELD: dict[str, "FolderLock"] = {}
"""Locks held by this process, by the folder's real path."""

try:  # POSIX
    import fcntl

    def _os_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False

    def _os_unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

except ImportError:  # pragma: no cover - Windows
    import msvcrt

    _WIN_OFFSET = 1 << 20  # lock a byte past the JSON so that others can still read it

    def _os_lock(fd: int) -> bool:
        os.lseek(fd, _WIN_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _os_unlock(fd: int) -> None:
        os.lseek(fd, _WIN_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


def _key(folder: Path) -> str:
    return os.path.realpath(folder)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def read_lock_info(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The owner recorded in a folder's lock file (None: no file, or not readable JSON)."""
    try:
        info = json.loads((Path(folder) / LOCK_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def describe_owner(info: dict | None) -> str:
    """``"train (pid 123 on host 'box', since 2025-01-01 12:00:00)"`` for messages."""
    if not info:
        return "another job"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info.get("started", 0))))
    return f"{info.get('job', '?')} (pid {info.get('pid', '?')} on host {info.get('host', '?')!r}, since {since})"


def held_by_this_process(folder: str | os.PathLike) -> bool:
    """Whether this process holds ``folder``'s lock."""
    return _key(Path(folder)) in _HELD


class FolderLock:
    """The lock of one output folder (module doc). Use as a context manager.

    Args:
        folder: the folder (created if missing).
        job: the job's name, written into the lock file (``"train"``, ``"bake"``, ...).
    """

    def __init__(self, folder: str | os.PathLike, job: str):
        self.folder = Path(folder)
        self.job = job
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> "FolderLock":
        """Takes the lock (a cancel cannot cut this short and leave the file behind).

        Raises:
            FolderLockedError: a live job holds it (its pid, host, job and start time in the
                message), or a stale lock of another host is in the way.
            OutputError: the folder or the lock file cannot be created.
        """
        try:
            with uninterruptible():
                self._acquire()
        except BaseException:  # e.g. a cancel that arrived meanwhile takes effect here: leave nothing
            self.release()
            raise
        return self

    def _acquire(self) -> None:
        key = _key(self.folder)
        if key in _HELD:
            raise FolderLockedError(f"{self.folder} is already in use by this process "
                                    f"({_HELD[key].job}); one job per folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the output folder {self.folder}: {exc.strerror or exc}") from exc
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OutputError(f"cannot create the lock file {self.path}: {exc.strerror or exc}") from exc
            if not _os_lock(fd):
                os.close(fd)
                raise FolderLockedError(f"{self.folder} is in use by {describe_owner(read_lock_info(self.folder))}; "
                                        "wait for that job to finish or cancel it (one job per folder)")
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            _os_unlock(fd)  # a releaser unlinked it after we opened it: try the new file
            os.close(fd)
        else:  # pragma: no cover - only under pathological churn
            raise FolderLockedError(f"{self.folder}: could not take the lock {self.path}")
        try:
            self._take_over(fd)
        except BaseException:
            _os_unlock(fd)
            os.close(fd)
            raise
        self._fd = fd
        _HELD[key] = self

    def _take_over(self, fd: int) -> None:
        """Checks what a previous owner left in the file, then writes this process's info."""
        previous = read_lock_info(self.folder)
        if previous and previous.get("host") not in (None, HOST):
            raise FolderLockedError(
                f"{self.folder} carries a lock of {describe_owner(previous)}, another machine; if no job runs "
                f"there on this folder, delete {self.path}")
        if previous:
            pid = int(previous.get("pid", 0) or 0)
            state = "not running" if not pid_alive(pid) else "its lock was free"
            log.warning("%s: taking over the stale lock of %s (%s)", self.folder, describe_owner(previous), state)
        info = {"format": LOCK_FORMAT, "pid": os.getpid(), "host": HOST, "job": self.job,
                "started": round(time.time(), 3)}
        data = (json.dumps(info) + "\n").encode("utf-8")
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, data)
        os.fsync(fd)

    def release(self) -> None:
        """Deletes the lock file and drops the OS lock (idempotent)."""
        with uninterruptible():
            self._release()

    def _release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        _HELD.pop(_key(self.folder), None)
        try:
            if os.name != "nt":  # POSIX: unlink while holding it; Windows cannot unlink open files
                self.path.unlink(missing_ok=True)
            _os_unlock(fd)
        except OSError:  # pragma: no cover - the folder vanished
            pass
        finally:
            os.close(fd)
        if os.name == "nt":  # pragma: no cover
            try:
                self.path.unlink(missing_ok=True)
            except OSError:
                pass


def folder_locked_by_other(folder: str | os.PathLike) -> dict | None:
    """The owner info when a live job of another process holds ``folder``'s lock, else None.

    (Tries the OS lock on a fresh descriptor and drops it again; never changes the file.)
    """
    path = Path(folder) / LOCK_NAME
    if held_by_this_process(folder):
        return None
    try:
        fd = os.open(path, os.O_RDONLY if os.name != "nt" else os.O_RDWR)
    except OSError:
        return None
    try:
        if _os_lock(fd):
            _os_unlock(fd)
            return None
        return read_lock_info(folder) or {}
    finally:
        os.close(fd)
