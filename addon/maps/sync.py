"""Sync Maps: saves painted map images back to their files, never without a backup.

For each map image (:func:`addon.rig.bindings.avatar_map_images`) that was changed:

1. the current file is copied to ``<stem>.<YYYYmmdd-HHMMSS>.bak<suffix>`` next to it (e.g.
   ``color.20250101-120000.bak.exr``); if that copy fails nothing is written;
2. the image is written to its file:
   - data maps (Non-Color EXR) with :mod:`addon.files.exr`, keeping the file's channel names
     (a ``Y`` map stays one channel), pixel type and channel order, bit-exactly;
   - colour (sRGB) and 8-bit maps with Blender's own ``Image.save()``, which encodes the
     scene-linear pixels back to the file's colour space;
3. the splat runtime is told (:func:`addon.splats.runtime.tag_maps_changed`): viewports
   re-read the maps and redraw.
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

log = logging.getLogger(__name__)

__all__ = ["SyncReport", "backup_path", "image_to_channels", "sync_maps"]


@dataclass
class SyncReport:
    """What :func:`sync_maps` did: files written, backups made, images skipped (unchanged)."""

    saved: list[Path] = field(default_factory=list)
    backups: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def backup_path(path: Path, stamp: str) -> Path:
    """``<stem>.<stamp>.bak<suffix>`` next to ``path``; ``-1``, ``-2``… appended if taken."""
    candidate = path.with_name(f"{path.stem}.{stamp}.bak{path.suffix}")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}.{stamp}-{n}.bak{path.suffix}")
        n += 1
    return candidate


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
              stamp: str | None = None) -> SyncReport:
    """Backs up and saves painted map images (see the module doc).

    Args:
        images: map images to consider.
        only_changed: skip images that are not dirty (unchanged since load/save).
        stamp: backup time stamp (default: now, ``YYYYmmdd-HHMMSS``).
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
        path = Path(bpy.path.abspath(img.filepath_raw or img.filepath))
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
        log.info("saved map %s to %s (backup %s)", img.name, path, backup)
    if report.saved:
        splat_runtime.tag_maps_changed()
    return report
