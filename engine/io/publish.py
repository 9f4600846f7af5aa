"""Publishing a set of files into a folder as one change: staging folder, commit rename, journal.

A set that must change together (an avatar's files, a checkpoint's pair, the baked maps, a
render's frames) is written whole into a staging folder beside its destination, then made visible
with one rename and moved into place::

    <root>/.staging-<pid>-<random>/...     1. every file written here (atomic, fsynced), then the
                                              journal publish.json (the files, in move order)
    <root>/.commit/                        2. the staging folder renamed to this: the commit point
    <root>/<files>                         3. each file moved (os.replace) into place, in journal
                                              order (the manifest last, e.g. avatar.json); then
                                              .commit is removed

A crash before step 2 leaves a staging folder that :func:`recover` deletes: the previous files
are untouched. A crash after it leaves ``.commit``, which :func:`recover` rolls forward: the new
set is completed. So after recovery the folder holds the old set or the new set, never a mix —
whenever the process died (tests/reliability/test_publish.py crashes it at every step). Each step
is a rename within one file system; nothing is copied. Who may publish: the holder of the folder's
lock (:mod:`engine.io.lock`); readers that find ``.commit`` call :func:`settle` (wait for the
holder, or recover when it is gone).

Why not one rename of the whole folder: the avatar folder also holds what other writers own
(Blender's ``jobs/`` and ``logs/`` — a running job's log file is open there — the lock file, baked
maps next to a re-trained avatar), and the file names Blender reads (``blender/head.npz``, ...) are
fixed, so the set is moved file by file under a journal instead. Readers that cannot take part in
recovery (Blender) trust only files whose sha256 matches the manifest (avatar.json ``files``).

Staging failures (disk full, read-only folder) raise :class:`~engine.errors.OutputError` after the
staging folder is removed; the destination is unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.errors import FolderLockedError, OutputError
from engine.io.atomic import file_sha256, fsync_path, uninterruptible, write_json
from engine.io.lock import (
    FolderLock,
    describe_owner,
    folder_locked_by_other,
    held_by_this_process,
    pid_alive,
)

log = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"
COMMIT_DIR = ".commit"
JOURNAL = "publish.json"
JOURNAL_FORMAT = "fate-publish"
JOURNAL_FORMAT_VERSION = 1

_ACTIVE: set[str] = set()
"""Staging folders of this process that are being written (never removed by :func:`recover`)."""


class Publication:
    """Files staged for one atomic publication into ``root`` (use :func:`publish`).

    Args:
        root: the destination folder.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.dir = self.root / f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self.files: list[str] = []

    def path(self, rel: str) -> Path:
        """Where to write the file that will be published as ``root/rel`` (parents created).

        Files are moved into place in the order of their first ``path`` call: register the
        manifest that names the others last.
        """
        rel = Path(rel).as_posix()
        if rel.startswith("../") or rel.startswith("/") or rel in ("", "."):
            raise ValueError(f"publication path must be inside the folder, found {rel!r}")
        if rel not in self.files:
            self.files.append(rel)
        p = self.dir / rel
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot write {self.root / rel}: {exc.strerror or exc}") from exc
        return p

    def sha256(self, rel: str) -> str:
        """Hex sha256 of a staged file."""
        return file_sha256(self.dir / Path(rel).as_posix())

    def hashes(self, exclude: tuple[str, ...] = ()) -> dict[str, str]:
        """``{rel: sha256}`` of every staged file (in registration order), e.g. for a manifest."""
        return {rel: self.sha256(rel) for rel in self.files if rel not in exclude and (self.dir / rel).exists()}

    # ------------------------------------------------------------------ steps
    def open(self) -> None:
        with uninterruptible():
            try:
                self.dir.mkdir(parents=True)
            except OSError as exc:
                raise OutputError(f"cannot write into {self.root}: {exc.strerror or exc}") from exc
            _ACTIVE.add(str(self.dir))

    def discard(self) -> None:
        """Removes the staging folder (nothing was published)."""
        with uninterruptible():
            shutil.rmtree(self.dir, ignore_errors=True)
            _ACTIVE.discard(str(self.dir))

    def commit(self) -> None:
        """Writes the journal, renames the staging folder to ``.commit`` and rolls forward."""
        missing = [rel for rel in self.files if not (self.dir / rel).is_file()]
        if missing:
            raise OutputError(f"{self.root}: staged file(s) {missing} were never written")
        write_json(self.dir / JOURNAL, {"format": JOURNAL_FORMAT, "format_version": JOURNAL_FORMAT_VERSION,
                                        "files": self.files, "pid": os.getpid(), "time": round(time.time(), 3)})
        fsync_path(self.dir)
        commit = self.root / COMMIT_DIR
        with uninterruptible():
            if commit.exists():  # a previous publication was interrupted: finish it first
                roll_forward(self.root)
            try:
                os.replace(self.dir, commit)
            except OSError as exc:
                raise OutputError(f"cannot publish into {self.root}: {exc.strerror or exc}") from exc
            _ACTIVE.discard(str(self.dir))
            fsync_path(self.root)
            roll_forward(self.root)


@contextmanager
def publish(root: str | os.PathLike) -> Iterator[Publication]:
    """Stages files and publishes them as one change (module doc).

    ``with publish(folder) as pub: write(pub.path("a.bin")); write(pub.path("manifest.json"))``
    — on a clean exit the files replace ``folder/a.bin`` and ``folder/manifest.json``; on an
    exception (or a cancel) nothing is replaced and the staging folder is removed.

    Raises:
        OutputError: the staging folder cannot be written (disk full, read-only folder); the
            destination is unchanged.
    """
    root = Path(root)
    recover(root)
    pub = Publication(root)
    try:
        pub.open()
        yield pub
    except (OSError, OutputError) as exc:
        pub.discard()
        if isinstance(exc, FolderLockedError):
            raise
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).replace(str(pub.dir), str(root))
        raise OutputError(f"cannot save into {root}: {why}; nothing was replaced (the previous files are intact)"
                          ) from exc
    except BaseException:
        pub.discard()
        raise
    try:
        pub.commit()
    except BaseException:
        if pub.dir.exists():
            pub.discard()
        raise


def roll_forward(root: str | os.PathLike) -> bool:
    """Completes a committed publication (``root/.commit``): moves its files into place in journal
    order and removes it. Idempotent; returns whether there was one.

    Raises:
        OutputError: the journal is unreadable, or a file cannot be moved (read-only folder).
    """
    root = Path(root)
    commit = root / COMMIT_DIR
    if not commit.exists():
        return False
    jpath = commit / JOURNAL
    with uninterruptible():
        try:
            journal = json.loads(jpath.read_text(encoding="utf-8"))
            files = [str(f) for f in journal["files"]]
        except FileNotFoundError:
            files = None  # a previous roll-forward finished the moves and removed the journal
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise OutputError(f"{jpath}: unreadable publication journal ({exc}); the folder {root} needs "
                              "a look by hand") from exc
        try:
            for rel in files or []:
                src = commit / rel
                if src.is_file():
                    dst = root / rel
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(src, dst)
            fsync_path(root)
            if files is not None:
                jpath.unlink(missing_ok=True)
            shutil.rmtree(commit, ignore_errors=True)
        except OSError as exc:
            raise OutputError(f"cannot complete the interrupted save in {root}: {exc.strerror or exc}") from exc
    if files is not None:
        log.debug("published %d file(s) into %s", len(files), root)
    return True


def recover(root: str | os.PathLike) -> None:
    """Brings ``root`` back to a complete state after a crash: rolls a committed publication
    forward and deletes abandoned staging folders (of processes that are gone). Call it holding
    the folder's lock."""
    root = Path(root)
    if not root.is_dir():
        return
    with uninterruptible():
        _recover(root)


def _recover(root: Path) -> None:
    if roll_forward(root):
        log.info("%s: completed a save that was interrupted", root)
    for d in root.glob(STAGING_PREFIX + "*"):
        if str(d) in _ACTIVE or not d.is_dir():
            continue
        try:
            pid = int(d.name[len(STAGING_PREFIX):].split("-")[0])
        except ValueError:
            pid = -1
        if pid != os.getpid() and pid_alive(pid):
            continue
        shutil.rmtree(d, ignore_errors=True)
        log.info("%s: removed %s, left by a save that did not finish (the previous files are intact)", root, d.name)


def settle(root: str | os.PathLike, timeout_s: float = 30.0) -> None:
    """Makes sure no publication is half-way in ``root`` before it is read.

    When ``root/.commit`` exists: if a live job holds the folder's lock, waits (up to
    ``timeout_s``) for it to finish moving; otherwise takes the lock and completes it.

    Raises:
        OutputError: the publication is still running after ``timeout_s``, or cannot be
            completed (read-only folder).
    """
    root = Path(root)
    commit = root / COMMIT_DIR
    deadline = time.monotonic() + timeout_s
    while commit.exists():
        if held_by_this_process(root):
            roll_forward(root)
            return
        owner = folder_locked_by_other(root)
        if owner is None:
            try:
                with FolderLock(root, "recover"):
                    recover(root)
                return
            except FolderLockedError:
                pass  # someone else took it just now: wait for them
        if time.monotonic() > deadline:
            raise OutputError(f"{root} is being saved by {describe_owner(owner)}; try again when it has finished")
        time.sleep(0.05)
