"""Sync Maps: saves painted map images back to their files, never without a backup.

For each map image (:func:`addon.rig.bindings.avatar_map_images`) that was changed:

1. the current file is copied to ``<stem>.<YYYYmmdd-HHMMSS>.bak<suffix>`` next to it (e.g.
   ``color.20250101-120000.bak.exr``); if that copy fails nothing is written;
2. the image is written to its file:
   - data maps (Non-Color EXR) with :mod:`addon.files.exr`, keeping the file's channel names
     (a ``Y`` map stays one channel), pixel type and channel order, bit-exactly;
   - colour (sRGB) and 8-bit maps with Blender's own ``Image.save()``, which encodes the
     scene-linear pixels back to the file's colour space;
3. the oldest backups beyond the bound (``keep``, the preference "Backups to Keep") are deleted,
   the map's ``.png`` preview is rewritten (:mod:`.previews`), and other images of the same file
   (another import of the avatar) are reloaded if they hold no paint of their own;
4. the splat runtime is told (:func:`addon.splats.runtime.tag_maps_changed`): viewports
   re-read the maps and redraw.

Restore Previous Maps (:mod:`.restore`) brings the backups back.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np

from ..errors import MapsError
from ..files import exr
from ..rig.material import is_data_colorspace
from ..splats import runtime as splat_runtime
from .backups import backup_path, prune_backups
from .previews import refresh_preview

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_KEEP", "SyncReport", "backup_path", "image_file", "images_of_file", "image_to_channels",
           "reload_other_images", "sync_maps"]

DEFAULT_KEEP = 10
"""Backups kept per map file when the caller gives no bound (the preference's default)."""


@dataclass
class SyncReport:
    """What :func:`sync_maps` did: files written, backups made and pruned, previews rewritten,
    images skipped (unchanged), and warnings (e.g. another image of a file holds paint)."""

    saved: list[Path] = field(default_factory=list)
    backups: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    pruned: list[Path] = field(default_factory=list)
    previews: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def image_file(img: bpy.types.Image) -> Path:
    """The absolute file of an image (its file path, relative paths resolved against the .blend)."""
    return Path(bpy.path.abspath(img.filepath_raw or img.filepath)).resolve()


def images_of_file(path: Path, exclude: bpy.types.Image | None = None) -> list[bpy.types.Image]:
    """Every image of the open file that shows ``path`` (e.g. a second import of the avatar)."""
    path = Path(path).resolve()
    return [img for img in bpy.data.images
            if img != exclude and img.source == "FILE" and (img.filepath_raw or img.filepath)
            and image_file(img) == path]


def reload_other_images(img: bpy.types.Image, path: Path) -> list[str]:
    """Reloads the other images of ``path`` that hold no unsaved paint; returns warnings for those
    that do (they are left alone: their paint is never discarded behind the artist's back)."""
    warnings = []
    for other in images_of_file(path, exclude=img):
        if other.is_dirty:
            warnings.append(f"image {other.name} also shows {path.name} and holds unsynced paint: "
                            "it was left as it is (syncing it would overwrite this save)")
        else:
            other.reload()
    return warnings


def image_to_channels(img: bpy.types.Image, channels: list[str]) -> np.ndarray:
    """A data image's pixels in a file's channel layout.

    Args:
        img: a Non-Color image (pixels as stored).
        channels: the file's channel names (any order; ``Y`` alone = grey).
    Returns:
        values per channel, row 0 = top row (file order). [H, W, len(channels)] float32
    """
    w, h = img.size
    px = np.empty(w * h * 4, np.float32)
    img.pixels.foreach_get(px)
    rgba = px.reshape(h, w, 4)[::-1]  # Blender: bottom row first; files: top row first
    index = {"R": 0, "G": 1, "B": 2, "A": 3, "Y": 0}
    if all(c in index for c in channels):
        cols = [index[c] for c in channels]
    else:  # other names: Blender loaded them in file order into R, G, B, A
        cols = list(range(len(channels)))
    if max(cols) > 3:
        raise MapsError(f"image {img.name}: cannot map {len(channels)} file channels {channels} onto RGBA")
    return np.ascontiguousarray(rgba[:, :, cols])


def _write_image(img: bpy.types.Image, path: Path) -> None:
    data = is_data_colorspace(img.colorspace_settings.name)
    if data and path.suffix.lower() == ".exr":
        header = exr.read_exr_header(path)
        channels = header.channel_order or header.channels
        types = [header.pixel_types[header.channels.index(c)] for c in channels]
        exr.write_exr(path, image_to_channels(img, channels), channels,
                         pixel_type=[t if t in (1, 2) else 2 for t in types])
        img.reload()  # re-read what was written: the image is clean and equals the file
    else:
        img.save()


def sync_maps(images: Iterable[bpy.types.Image], *, only_changed: bool = True,
              stamp: str | None = None, keep: int = DEFAULT_KEEP) -> SyncReport:
    """Backs up and saves painted map images (see the module doc).

    Args:
        images: map images to consider.
        only_changed: skip images that are not dirty (unchanged since load/save).
        stamp: backup time stamp (default: now, ``YYYYmmdd-HHMMSS``).
        keep: backups kept per map file (≥ 1; the oldest beyond it are deleted).
    Returns:
        what was written.
    Raises:
        MapsError: an image has no file, or its backup could not be written (nothing is
            overwritten then).
    """
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    report = SyncReport()
    for img in images:
        if only_changed and not img.is_dirty:
            report.skipped.append(img.name)
            continue
        if img.packed_file is not None and not img.filepath:
            raise MapsError(f"image {img.name} is packed and has no file: unpack it first")
        path = image_file(img)
        if not path.is_file():
            raise MapsError(f"image {img.name}: its file {path} is missing (moved?); set the image's "
                            "file path or re-import the avatar")
        backup = backup_path(path, stamp)
        try:
            shutil.copy2(path, backup)
        except OSError as exc:
            raise MapsError(f"cannot back up {path} to {backup} ({exc}); nothing was overwritten") from exc
        report.backups.append(backup)
        try:
            _write_image(img, path)
        except (RuntimeError, OSError, exr.ExrError) as exc:
            raise MapsError(f"cannot save {img.name} to {path} ({exc}); the previous file is in {backup}") from exc
        report.saved.append(path)
        report.pruned += prune_backups(path, keep)
        preview = refresh_preview(img, path)
        if preview is not None:
            report.previews.append(preview)
        report.warnings += reload_other_images(img, path)
        log.info("saved map %s to %s (backup %s)", img.name, path, backup)
    if report.saved:
        splat_runtime.tag_maps_changed()
    return report
