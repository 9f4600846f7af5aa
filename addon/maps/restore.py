"""Restore Previous Maps: brings back the map files as they were before the last Sync Maps.

The newest backup stamp among the maps' backups (:mod:`.backups`) marks the last sync; every map
with a backup of that stamp gets it back, byte for byte:

1. images with unsynced paint stop the restore before anything is touched (their paint would be
   lost; sync or revert them first);
2. the current file is copied to ``<stem>.<now>.replaced<suffix>`` (nothing is overwritten without a
   saved copy), then the backup is copied over the map file atomically and deleted (so the next
   restore goes one sync further back);
3. the images of the file are reloaded, the previews rewritten, and the splat runtime told.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import bpy

from ..errors import MapsError
from ..splats import runtime as splat_runtime
from .backups import REPLACED, atomic_copy, backup_path, list_backups, prune_backups
from .previews import refresh_preview
from .sync import DEFAULT_KEEP, image_file, images_of_file

log = logging.getLogger(__name__)

__all__ = ["RestoreReport", "restorable", "restore_previous_maps"]


@dataclass
class RestoreReport:
    """What :func:`restore_previous_maps` did."""

    stamp: str = ""
    """The stamp of the backups brought back (the sync they were made by)."""
    restored: list[Path] = field(default_factory=list)
    replaced: list[Path] = field(default_factory=list)
    """Copies of the files the restore overwrote."""


def restorable(images: Iterable[bpy.types.Image]) -> tuple[tuple[str, int] | None, list]:
    """The newest backup key among the images' map files, and what it would restore.

    Returns:
        ((stamp, n) or None, [(image, map file, backup file)] for that key).
    """
    found = []
    for img in images:
        if img.source != "FILE" or not (img.filepath_raw or img.filepath):
            continue
        path = image_file(img)
        for key, backup in list_backups(path):
            found.append((key, img, path, backup))
    if not found:
        return None, []
    newest = max(f[0] for f in found)
    return newest, [(img, path, backup) for key, img, path, backup in found if key == newest]


def restore_previous_maps(images: Iterable[bpy.types.Image], *, keep: int = DEFAULT_KEEP,
                          stamp: str | None = None) -> RestoreReport:
    """Restores the maps saved by the last Sync Maps (see the module doc).

    Args:
        images: the avatar's map images.
        keep: ``.replaced`` copies kept per map file.
        stamp: time stamp of the ``.replaced`` copies (default: now).
    Returns:
        what was restored.
    Raises:
        MapsError: no backups, an image with unsynced paint, or a copy failed (the map files
            restored until then stay restored; the failing one is unchanged).
    """
    key, targets = restorable(list(images))
    if key is None:
        raise MapsError("no map backups to restore: Sync Maps makes one before it overwrites a map")
    dirty = sorted({other.name for _, path, _ in targets for other in images_of_file(path) if other.is_dirty})
    if dirty:
        raise MapsError(f"{', '.join(dirty)} hold(s) unsynced paint: Sync Maps or revert the image before "
                        "restoring (the paint would be lost); nothing was restored")
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    report = RestoreReport(stamp=key[0] + (f"-{key[1]}" if key[1] else ""))
    for img, path, backup in targets:
        copy = backup_path(path, stamp, REPLACED)
        try:
            atomic_copy(path, copy)
            atomic_copy(backup, path)
        except OSError as exc:
            raise MapsError(f"cannot restore {path} from {backup} ({exc}); {path} is unchanged") from exc
        backup.unlink()
        prune_backups(path, keep, REPLACED)
        report.restored.append(path)
        report.replaced.append(copy)
        for shown in images_of_file(path):
            shown.reload()
        refresh_preview(img, path)
        log.info("restored %s from %s (the replaced file is in %s)", path, backup, copy)
    splat_runtime.tag_maps_changed()
    return report
