"""Where the extension lives: its package name and its folder (no bpy, no side effects).

A leaf module so that any part of the add-on can ask without importing :mod:`addon` itself.
"""

from __future__ import annotations

from pathlib import Path

ROOT_PACKAGE: str = __package__.rpartition(".")[0] or __package__
"""The add-on's package name (``bl_ext.<repo>.fate_avatar`` once installed): the preferences'
``bl_idname``."""

EXTENSION_DIR: Path = Path(__file__).resolve().parent.parent
"""The extension's folder: holds ``engine/``; the worker runs with it on PYTHONPATH."""
