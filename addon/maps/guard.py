"""Keeps unsynced paint in memory through renders that would reload it from disk.

In background mode (``blender -b``), Cycles frees the buffers of the images it loads once it has
copied them (``BlenderImageLoader::load_pixels`` → ``BKE_image_free_buffers_ex``); the next use of
such an image reloads it from its file, and paint that was not synced is gone (checked with
bpy 5.0: a painted map is back to its file after one Cycles F12). This guard snapshots the
pixels of every FATE map image with unsaved paint before each render and puts them back after
each frame, so the paint survives (and the next frame renders it too).

Only in background mode: there the render handlers run on the main thread. In the UI they run
on the render thread, where touching image buffers is not safe, and the guard does nothing.
"""

from __future__ import annotations

import logging

import bpy
import numpy as np
from bpy.app.handlers import persistent

from ..rig.bindings import all_map_images

log = logging.getLogger(__name__)

__all__ = ["register", "unregister", "snapshot_paint", "restore_paint"]

_SNAPSHOTS: dict[str, np.ndarray] = {}
"""Image name → its painted pixels (Image.pixels order) while a render runs."""


def _pixels(img: bpy.types.Image) -> np.ndarray:
    buf = np.empty(len(img.pixels), np.float32)
    img.pixels.foreach_get(buf)
    return buf


def snapshot_paint() -> list[str]:
    """Remembers the pixels of every map image with unsaved paint (not yet remembered).

    Returns:
        the images remembered now.
    """
    names = []
    for img in all_map_images():
        if img.is_dirty and img.name not in _SNAPSHOTS:
            _SNAPSHOTS[img.name] = _pixels(img)
            names.append(img.name)
    return names


def restore_paint(forget: bool = False) -> list[str]:
    """Puts remembered paint back into images that lost it (reloaded from their file).

    Args:
        forget: drop the snapshots afterwards (the render is over).
    Returns:
        the images whose paint was put back.
    """
    restored = []
    for name, px in list(_SNAPSHOTS.items()):
        img = bpy.data.images.get(name)
        if img is None or len(img.pixels) != len(px):
            continue
        if not img.is_dirty or not np.array_equal(_pixels(img), px):
            img.pixels.foreach_set(px)
            img.update()
            restored.append(name)
            log.info("image %s had its unsynced paint reloaded from disk by the render: put back", name)
    if forget:
        _SNAPSHOTS.clear()
    return restored


@persistent
def _on_render_pre(*_args) -> None:
    if bpy.app.background:
        snapshot_paint()


@persistent
def _on_render_post(*_args) -> None:
    if bpy.app.background:
        restore_paint()


@persistent
def _on_render_end(*_args) -> None:
    if bpy.app.background:
        restore_paint(forget=True)


_HANDLERS = (("render_pre", _on_render_pre), ("render_post", _on_render_post),
             ("render_complete", _on_render_end), ("render_cancel", _on_render_end))


def register() -> None:
    """Adds the render handlers (once)."""
    for name, fn in _HANDLERS:
        handlers = getattr(bpy.app.handlers, name)
        if fn not in handlers:
            handlers.append(fn)


def unregister() -> None:
    """Removes the render handlers and forgets any snapshot."""
    for name, fn in _HANDLERS:
        handlers = getattr(bpy.app.handlers, name)
        while fn in handlers:
            handlers.remove(fn)
    _SNAPSHOTS.clear()
