"""The worker's preview image, shown in the image datablock "FATE Preview"."""

from __future__ import annotations

from pathlib import Path

import bpy

__all__ = ["PREVIEW_IMAGE_NAME", "load_preview_image"]

PREVIEW_IMAGE_NAME = "FATE Preview"


def load_preview_image(path: str | Path) -> bpy.types.Image:
    """Shows a worker preview file (PNG, sRGB) in the image "FATE Preview" (created or reloaded)."""
    path = str(Path(path).resolve())
    img = bpy.data.images.get(PREVIEW_IMAGE_NAME)
    if img is None:
        img = bpy.data.images.load(path, check_existing=False)
        img.name = PREVIEW_IMAGE_NAME
    else:
        img.filepath = path
        img.reload()
    return img
