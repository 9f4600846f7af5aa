"""The maps' 8-bit ``.png`` previews, rewritten whenever Sync Maps or Restore changes a map file.

The engine writes ``<stem>.png`` next to each ``<stem>.exr`` (``engine.maps.write_maps``): the
colour map's encoded values, the data maps mapped from their preview range
(:data:`addon.files.avatar.PREVIEW_RANGES`) to [0, 1], one-channel maps as grey. A preview that
does not exist is not created (maps.json names the previews the engine made).
"""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np

from ..files.avatar import PREVIEW_RANGES
from ..files.png import write_png
from ..rig.bindings import IMAGE_PROP_CHANNELS, IMAGE_PROP_MAP
from ..splats.pixels import ENCODED_MAPS, image_pixels

__all__ = ["preview_path", "preview_array", "refresh_preview"]


def preview_path(map_file: Path) -> Path:
    """The preview next to a map file: ``<stem>.png``."""
    return Path(map_file).with_suffix(".png")


def preview_array(img: bpy.types.Image) -> np.ndarray:
    """An image's preview as the engine draws it.

    Args:
        img: a map image (``fate_map`` = its map name, ``fate_channels`` its channel count).
    Returns:
        uint8, row 0 = top. [H, W] (one-channel maps) or [H, W, 3]
    """
    name = str(img.get(IMAGE_PROP_MAP, ""))
    px = image_pixels(img, encoded=(name in ENCODED_MAPS))[::-1]  # top row first, as the files
    channels = 1 if int(img.get(IMAGE_PROP_CHANNELS, 3)) == 1 else 3
    lo, hi = PREVIEW_RANGES.get(name, (0.0, 1.0))
    v = np.clip((px[..., :channels].astype(np.float64) - lo) / (hi - lo), 0.0, 1.0)
    out = np.round(v * 255.0).astype(np.uint8)
    return out[..., 0] if channels == 1 else out


def refresh_preview(img: bpy.types.Image, map_file: Path) -> Path | None:
    """Rewrites the preview of ``map_file`` from ``img`` when the preview exists.

    Returns:
        the preview written, or None (no preview next to the map).
    """
    path = preview_path(map_file)
    if not path.is_file():
        return None
    write_png(path, preview_array(img))
    return path
