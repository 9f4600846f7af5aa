"""Import Avatar, Sync Maps and Restore Previous Maps."""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from ..addon.errors import FateAddonError
from ..addon.ui import preferences


def _backups_to_keep(context) -> int:
    prefs = preferences.get_preferences(context)
    return int(prefs.backups_to_keep) if prefs is not None else preferences.DEFAULT_BACKUPS


def _map_images(context) -> list:
    from ..addon.rig.bindings import all_map_images, avatar_map_images, find_head_object

    head = find_head_object(context.active_object)
    return list(avatar_map_images(head).values()) if head is not None else all_map_images()


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
    camera: EnumProperty(
        name="Camera", default="STILL",
        items=(("STILL", "Still", "A still camera; the head (root bone) carries the tracked motion and turns "
                                  "in the world"),
               ("TRACKED", "Tracked", "The camera replays the training video's views, to check against the "
                                      "footage; from any other camera the head barely turns")),
        description="Where the tracked head motion goes")
    set_resolution: BoolProperty(name="Set Resolution", default=True,
                                 description="Set the scene's output size and pixel aspect to the video's")
    set_frame_range: BoolProperty(name="Set Frame Range", default=True,
                                  description="Set the scene's frame range to the tracked frames")
    set_active_camera: BoolProperty(name="Set Active Camera", default=True,
                                    description="Make the imported camera the scene camera")

    @classmethod
    def poll(cls, context):
        return context.mode == "OBJECT"

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "with_tracking")
        layout.prop(self, "with_maps")
        col = layout.column()
        col.active = self.with_tracking
        col.prop(self, "camera")
        col.prop(self, "set_resolution")
        col.prop(self, "set_frame_range")
        col.prop(self, "set_active_camera")

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
                                   with_maps=self.with_maps, camera=self.camera,
                                   set_resolution=self.set_resolution, set_frame_range=self.set_frame_range,
                                   set_active_camera=self.set_active_camera)
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
        changed = ", ".join(result.scene_changes) or "nothing"
        self.report({"INFO"}, f"Imported {result.head.name}: {len(keys) - 1} shape keys, "
                              f"{result.num_frames} tracked frames, {len(result.images)} maps; scene "
                              f"settings changed: {changed}")
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

        try:
            report = sync_maps(_map_images(context), only_changed=not self.all_maps,
                               keep=_backups_to_keep(context))
        except FateAddonError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        for warning in report.warnings:
            self.report({"WARNING"}, warning)
        if not report.saved:
            self.report({"INFO"}, "No painted maps to save")
            return {"CANCELLED"}
        self.report({"INFO"}, f"Saved {len(report.saved)} map(s); backups: "
                              + ", ".join(p.name for p in report.backups)
                              + (f"; {len(report.pruned)} old backup(s) deleted" if report.pruned else ""))
        return {"FINISHED"}


class FATE_OT_restore_maps(bpy.types.Operator):
    """Bring back the map files as they were before the last Sync Maps (from its backups; the
    current files are kept as .replaced copies) and reload them"""

    bl_idname = "fate.restore_maps"
    bl_label = "Restore Previous Maps"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        from ..addon.rig.bindings import all_map_images

        return bool(all_map_images())

    def invoke(self, context, event):
        return context.window_manager.invoke_confirm(self, event)

    def execute(self, context):
        from ..addon.maps.restore import restore_previous_maps

        try:
            report = restore_previous_maps(_map_images(context), keep=_backups_to_keep(context))
        except FateAddonError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Restored {len(report.restored)} map(s) from the sync of {report.stamp}; "
                              "the replaced files: " + ", ".join(p.name for p in report.replaced))
        return {"FINISHED"}


CLASSES = (FATE_OT_import_avatar, FATE_OT_sync_maps, FATE_OT_restore_maps)
