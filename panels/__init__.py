"""Panels (``FATE_PT_*``): the 3D View sidebar tab "FATE" and Render Properties ▸ FATE Splats."""

from __future__ import annotations

import bpy

from . import render, sidebar

CLASSES = (*sidebar.CLASSES, *render.CLASSES)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
