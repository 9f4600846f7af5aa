"""The map backups next to each map file: names, listing, pruning, atomic copies.

Sync Maps copies a map file to ``<stem>.<YYYYmmdd-HHMMSS>[-n].bak<suffix>`` before it overwrites
it; Restore Previous Maps copies the file it replaces to ``<stem>.<stamp>[-n].replaced<suffix>``.
Both kinds are kept up to a bound per map file (the add-on preference "Backups to Keep"); the
oldest go first. Stamps sort in time order; ``-n`` tells apart copies made within one second.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

__all__ = ["BACKUP", "REPLACED", "backup_path", "list_backups", "prune_backups", "atomic_copy"]

BACKUP = "bak"
"""Kind of the copies Sync Maps makes before overwriting a map."""
REPLACED = "replaced"
"""Kind of the copies Restore Previous Maps makes of the file it replaces."""


def backup_path(path: Path, stamp: str, kind: str = BACKUP) -> Path:
    """``<stem>.<stamp>.<kind><suffix>`` next to ``path``; ``-1``, ``-2``… appended to the stamp if taken."""
    candidate = path.with_name(f"{path.stem}.{stamp}.{kind}{path.suffix}")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}.{stamp}-{n}.{kind}{path.suffix}")
        n += 1
    return candidate


def list_backups(path: Path, kind: str = BACKUP) -> list[tuple[tuple[str, int], Path]]:
    """The copies of one kind of a map file, oldest first.

    Args:
        path: the map file (e.g. ``maps/color.exr``).
        kind: :data:`BACKUP` or :data:`REPLACED`.
    Returns:
        ((stamp, n), file) pairs sorted by stamp then n (n = 0 without a ``-n``).
    """
    path = Path(path)
    pattern = re.compile(rf"^{re.escape(path.stem)}\.(\d{{8}}-\d{{6}})(?:-(\d+))?\.{re.escape(kind)}"
                         rf"{re.escape(path.suffix)}$")
    found = []
    for p in path.parent.glob(f"{path.stem}.*.{kind}{path.suffix}"):
        m = pattern.match(p.name)
        if m:
            found.append(((m.group(1), int(m.group(2) or 0)), p))
    return sorted(found)


def prune_backups(path: Path, keep: int, kind: str = BACKUP) -> list[Path]:
    """Deletes the oldest copies of one kind of a map file beyond the newest ``keep``.

    Args:
        path: the map file.
        keep: how many to keep (≥ 1).
        kind: :data:`BACKUP` or :data:`REPLACED`.
    Returns:
        the files deleted.
    """
    copies = list_backups(path, kind)
    doomed = [p for _, p in copies[:max(0, len(copies) - max(1, int(keep)))]]
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


def atomic_copy(src: Path, dst: Path) -> None:
    """Copies ``src`` over ``dst`` through a temp file in ``dst``'s folder and ``os.replace``: ``dst``
    is either the old file or a complete copy, never half written.

    Raises:
        OSError: the copy failed (``dst`` is unchanged).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
