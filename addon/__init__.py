"""Blender-side runtime of FATE for Blender, one subpackage per concept (docs/ARCHITECTURE.md,
"Blender side"):

- :mod:`.files`: the avatar folder's files (numpy + stdlib, no bpy);
- :mod:`.rig`: the imported avatar as Blender data (rig maths, keyframes, markers, map images,
  Import Avatar);
- :mod:`.splats`: splat runtime, GPU drawer and the "FATE Splats" render engine;
- :mod:`.maps`: Sync Maps, Restore Previous Maps, backups and previews, the paint guard;
- :mod:`.jobs`: the worker client, job configs, the active job;
- :mod:`.ui`: preferences and scene properties;
- :mod:`.demo`: the Blender half of the developers' main job (not shipped in the extension).

Imports only bpy, numpy and the standard library — never torch or the ``engine`` package, which
runs in its own interpreter (:mod:`addon.jobs.worker`). This module imports no bpy at import time,
so the bpy-free parts (:mod:`addon.files`, :mod:`addon.jobs.worker`, :mod:`addon.jobs.config`,
:mod:`addon.rig.flame_math`) can be tested without Blender.
"""

from __future__ import annotations

import logging

from .extension import EXTENSION_DIR, ROOT_PACKAGE

log = logging.getLogger(__name__)

__all__ = ["EXTENSION_DIR", "ROOT_PACKAGE", "RENDER_ENGINE_STATUS", "register", "unregister"]

RENDER_ENGINE_STATUS: str = "not loaded"
"""What happened to the render engine at register: "registered", or "failed: ..."."""


def register() -> None:
    """Registers properties and preferences, the job handlers, the paint guard and the render engine."""
    global RENDER_ENGINE_STATUS
    from .jobs import runtime as job_runtime
    from .maps import guard
    from .ui import preferences, properties

    properties.register()
    preferences.register()
    job_runtime.register()
    guard.register()
    try:
        from .splats import render_engine

        render_engine.register()
        RENDER_ENGINE_STATUS = "registered"
    except Exception as exc:  # noqa: BLE001 - a broken renderer must not take the add-on down
        RENDER_ENGINE_STATUS = f"failed: {type(exc).__name__}: {exc}"
        log.exception("FATE: render engine not registered")


def unregister() -> None:
    """Stops any running worker, removes handlers and timers, unregisters in reverse order."""
    global RENDER_ENGINE_STATUS
    from .jobs import runtime as job_runtime
    from .maps import guard
    from .ui import preferences, properties

    if RENDER_ENGINE_STATUS == "registered":
        from .splats import render_engine

        try:
            render_engine.unregister()
        except Exception:  # noqa: BLE001
            log.exception("FATE: render engine unregister failed")
    RENDER_ENGINE_STATUS = "not loaded"
    guard.unregister()
    job_runtime.unregister()
    preferences.unregister()
    properties.unregister()
