"""Panels (``FATE_PT_*``): the 3D View sidebar tab "FATE". The render-engine settings in the
Render properties belong to ``addon/render_engine.py``."""

from __future__ import annotations

import bpy

from . import sidebar

CLASSES = (*sidebar.CLASSES,)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
