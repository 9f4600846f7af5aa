"""Blender-side runtime of FATE for Blender: preferences, properties, worker client, avatar import,
maps ↔ images, and (written separately) the splat runtime and RenderEngine.

Imports only bpy, numpy and the standard library — never torch or the ``engine`` package, which
runs in its own interpreter (:mod:`addon.worker`). This module itself imports no bpy at import
time so the bpy-free parts (:mod:`addon.worker`, :mod:`addon.job_config`, :mod:`addon.flame_math`)
can be tested without Blender.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

log = logging.getLogger(__name__)

ROOT_PACKAGE: str = __package__.rpartition(".")[0] or __package__
"""The add-on's package name (``bl_ext.<repo>.fate_avatar`` once installed): the preferences'
``bl_idname``."""

EXTENSION_DIR: Path = Path(__file__).resolve().parent.parent
"""The extension's folder: holds ``engine/``; the worker runs with it on PYTHONPATH."""

RENDER_ENGINE_STATUS: str = "not loaded"
"""What happened to the optional ``addon.render_engine`` module at register."""

_render_engine = None


def _load_render_engine():
    """Imports ``addon.render_engine`` if it exists (written independently); None otherwise."""
    global RENDER_ENGINE_STATUS
    try:
        module = importlib.import_module(f"{__name__}.render_engine")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.render_engine":
            raise
        RENDER_ENGINE_STATUS = "missing (addon/render_engine.py not present)"
        log.info("FATE: %s; the add-on works without rendering", RENDER_ENGINE_STATUS)
        return None
    return module


def register() -> None:
    """Registers preferences and properties, the job handlers and the render engine (if present)."""
    global _render_engine, RENDER_ENGINE_STATUS
    from . import jobs, preferences, properties

    properties.register()
    preferences.register()
    jobs.register()
    try:
        _render_engine = _load_render_engine()
        if _render_engine is not None:
            _render_engine.register()
            RENDER_ENGINE_STATUS = "registered"
    except Exception as exc:  # noqa: BLE001 - a broken renderer must not take the add-on down
        _render_engine = None
        RENDER_ENGINE_STATUS = f"failed: {type(exc).__name__}: {exc}"
        log.exception("FATE: render engine not registered")


def unregister() -> None:
    """Stops any running worker, removes handlers and timers, unregisters in reverse order."""
    global _render_engine, RENDER_ENGINE_STATUS
    from . import jobs, preferences, properties

    if _render_engine is not None:
        try:
            _render_engine.unregister()
        except Exception:  # noqa: BLE001
            log.exception("FATE: render engine unregister failed")
        _render_engine = None
        RENDER_ENGINE_STATUS = "not loaded"
    jobs.unregister()
    preferences.unregister()
    properties.unregister()
