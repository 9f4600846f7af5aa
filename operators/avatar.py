"""Import Avatar and Sync Maps."""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, StringProperty

from ..addon.errors import FateAddonError


def _native_splats(result) -> str:
    """Blender ≥ 5.3: the avatar's native splat point cloud (Cycles/EEVEE). Returns a warning, or ""."""
    from ..addon.splats.native import create_native_splats

    if result.bindings is None or not result.images:
        return ""
    try:
        create_native_splats(result.head, result.collection)
    except FateAddonError as err:
        return f"No native splats: {err}"
    return ""


class FATE_OT_import_avatar(bpy.types.Operator):
    """Import a trained avatar: rigged head with expression and pose shape keys, the tracked
    animation and camera, baked maps as paintable images"""

    bl_idname = "fate.import_avatar"
    bl_label = "Import Avatar"
    bl_options = {"REGISTER", "UNDO"}

    directory: StringProperty(name="Avatar Folder", subtype="DIR_PATH",
                              description="Avatar folder (default: the scene's FATE avatar folder)")
    with_tracking: BoolProperty(name="Tracked Animation", default=True,
                                description="Key the training video's expressions, poses and camera")
    with_maps: BoolProperty(name="Maps", default=True, description="Load the baked maps and the material")

    @classmethod
    def poll(cls, context):
        return context.mode == "OBJECT"

    def invoke(self, context, event):
        if self.directory or (getattr(context.scene, "fate", None) and context.scene.fate.avatar_dir):
            return self.execute(context)
        context.window_manager.fileselect_add(self)  # no folder set yet: let the user pick one
        return {"RUNNING_MODAL"}

    def execute(self, context):
        from ..addon.rig.importer import import_avatar

        folder = self.directory or getattr(context.scene, "fate", None) and context.scene.fate.avatar_dir
        if not folder:
            self.report({"ERROR"}, "Choose an avatar folder (FATE sidebar > 1. Dataset > Avatar)")
            return {"CANCELLED"}
        folder = Path(bpy.path.abspath(folder))
        try:
            result = import_avatar(folder, context.scene, context, with_tracking=self.with_tracking,
                                   with_maps=self.with_maps)
        except FateAddonError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        for warning in result.warnings:
            self.report({"WARNING"}, warning)
        native = _native_splats(result)
        if native:
            self.report({"WARNING"}, native)
        for obj in context.view_layer.objects:
            obj.select_set(False)
        result.head.select_set(True)
        context.view_layer.objects.active = result.head
        keys = result.head.data.shape_keys.key_blocks
        self.report({"INFO"}, f"Imported {result.head.name}: {len(keys) - 1} shape keys, "
                              f"{result.num_frames} tracked frames, {len(result.images)} maps")
        return {"FINISHED"}


class FATE_OT_sync_maps(bpy.types.Operator):
    """Save the painted maps to their files (the previous files are kept as .bak copies) and
    refresh the render"""

    bl_idname = "fate.sync_maps"
    bl_label = "Sync Maps"
    bl_options = {"REGISTER"}

    all_maps: BoolProperty(name="All Maps", default=False,
                           description="Save unchanged maps too (default: only painted ones)")

    @classmethod
    def poll(cls, context):
        from ..addon.rig.bindings import all_map_images

        return bool(all_map_images())

    def execute(self, context):
        from ..addon.maps.sync import sync_maps
        from ..addon.rig.bindings import all_map_images, avatar_map_images, find_head_object

        head = find_head_object(context.active_object)
        try:
            images = list(avatar_map_images(head).values()) if head is not None else all_map_images()
            report = sync_maps(images, only_changed=not self.all_maps)
        except FateAddonError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        if not report.saved:
            self.report({"INFO"}, "No painted maps to save")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Saved {len(report.saved)} map(s); backups: "
                              + ", ".join(p.name for p in report.backups))
        return {"FINISHED"}


CLASSES = (FATE_OT_import_avatar, FATE_OT_sync_maps)
