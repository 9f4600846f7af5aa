"""Add-on preferences: FLAME folder, worker Python, device; Check and Install Engine buttons."""

from __future__ import annotations

import os
from pathlib import Path

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

from ..extension import ROOT_PACKAGE
from ..jobs.worker import python_in_venv

ENGINE_ENV_FOLDER = "engine-venv"
WORKER_PYTHON_ENV = "FATE_WORKER_PYTHON"
"""Environment variable used when the preference is empty (scripts, CI)."""
DEFAULT_BACKUPS = 10
"""Backups kept per map file when the add-on is not enabled (tests, scripts)."""


def engine_env_dir(create: bool = False) -> Path:
    """Where 'Install Engine' puts its virtual environment: the extension's user directory
    (kept across extension updates); a config folder when not running as an extension."""
    try:
        return Path(bpy.utils.extension_path_user(ROOT_PACKAGE, path=ENGINE_ENV_FOLDER, create=create))
    except (ValueError, AttributeError):
        base = Path(bpy.utils.user_resource("CONFIG", path="fate_avatar", create=create))
        return base / ENGINE_ENV_FOLDER


class FATE_AddonPreferences(bpy.types.AddonPreferences):
    """FATE Avatar preferences."""

    bl_idname = ROOT_PACKAGE

    flame_dir: StringProperty(
        name="FLAME Folder", subtype="DIR_PATH",
        description="Folder with the FLAME model (generic_model.pkl or flame2023*.pkl) and "
                    "head_template_mesh.obj; empty = the procedural demo head (not FLAME)")
    python_path: StringProperty(
        name="Worker Python", subtype="FILE_PATH",
        description="Python interpreter with torch, gsplat and smplx that runs training and baking; "
                    "empty = the one 'Install Engine' created")
    device: EnumProperty(
        name="Device", default="AUTO",
        items=(("AUTO", "Auto", "CUDA when available, else CPU"),
               ("CUDA", "CUDA", "NVIDIA GPU (fast; needed for gsplat)"),
               ("CPU", "CPU", "Slow reference path (small tests only)")))
    worker_status: StringProperty(name="Worker Status", default="not checked",
                                  description="Result of the last Check")
    backups_to_keep: IntProperty(
        name="Backups to Keep", default=DEFAULT_BACKUPS, min=1, soft_max=100,
        description="Map backups kept per map file by Sync Maps (and copies kept by Restore Previous Maps); "
                    "the oldest are deleted")

    def draw(self, context):
        """The preferences panel: FLAME folder, worker Python, device, Check / Install Engine."""
        layout = self.layout
        col = layout.column()
        col.prop(self, "flame_dir")
        if not self.flame_dir:
            col.label(text="Using the demo head (not FLAME). FLAME: https://flame.is.tue.mpg.de", icon="INFO")
        col.separator()
        col.prop(self, "python_path")
        row = col.row(align=True)
        row.prop(self, "device", expand=True)
        row = col.row(align=True)
        row.operator("fate.check_worker", icon="CHECKMARK")
        row.operator("fate.install_engine", icon="IMPORT")
        col.label(text=f"Worker: {self.worker_status}")
        col.prop(self, "backups_to_keep")
        env_python = python_in_venv(engine_env_dir())
        if env_python.is_file():
            col.label(text=f"Installed engine: {env_python}", icon="CHECKBOX_HLT")


def get_preferences(context=None) -> FATE_AddonPreferences | None:
    """The add-on's preferences, or None when it is not enabled as an add-on (e.g. tests)."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ROOT_PACKAGE)
    return addon.preferences if addon is not None else None


def worker_python(context=None) -> str:
    """The worker interpreter: the preference, else $FATE_WORKER_PYTHON, else the installed engine."""
    prefs = get_preferences(context)
    if prefs is not None and prefs.python_path:
        return bpy.path.abspath(prefs.python_path)
    if os.environ.get(WORKER_PYTHON_ENV):
        return os.environ[WORKER_PYTHON_ENV]
    installed = python_in_venv(engine_env_dir())
    return str(installed) if installed.is_file() else ""


def flame_dir(context=None) -> str:
    """The FLAME folder of the preferences (absolute), or "" for the demo head."""
    prefs = get_preferences(context)
    return bpy.path.abspath(prefs.flame_dir) if prefs is not None and prefs.flame_dir else ""


def device(context=None) -> str:
    """The engine device of the preferences: "auto", "cuda" or "cpu"."""
    prefs = get_preferences(context)
    return prefs.device.lower() if prefs is not None else "auto"


CLASSES = (FATE_AddonPreferences,)


def register() -> None:
    """Registers the preferences class."""
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister() -> None:
    """Unregisters the preferences class."""
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
