"""Operators (``FATE_OT_*``, ``bl_idname = "fate.*"``), grouped by user action.

Thin: each ``execute`` reads its inputs (scene properties, preferences), calls :mod:`addon`
functions with explicit arguments, catches :class:`addon.errors.FateAddonError` once and
reports it.
"""

from __future__ import annotations

import bpy

from . import avatar, engine_setup, expressions, jobs, report, splats

CLASSES = (*report.CLASSES, *jobs.CLASSES, *avatar.CLASSES, *expressions.CLASSES, *engine_setup.CLASSES,
           *splats.CLASSES)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
