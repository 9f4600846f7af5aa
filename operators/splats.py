"""Splat operators: Export Splats (.ply), Setup Composite (Cycles/EEVEE + FATE Splats), Use
Standard View, Refresh Native Splats."""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, IntProperty, StringProperty

from ..addon.errors import FateAddonError


def _head(context):
    from ..addon.rig.bindings import find_head_object

    return find_head_object(context.active_object)


class FATE_OT_export_splats(bpy.types.Operator):
    """Write the posed avatar as 3DGS Gaussian splats (.ply: SuperSplat, KIRI 3DGS Render, gsplat
    viewers, Blender 5.3's PLY import); the current frame, or a frame range as numbered files"""

    bl_idname = "fate.export_splats"
    bl_label = "Export Splats (.ply)"
    bl_options = {"REGISTER"}

    filepath: StringProperty(name="File", subtype="FILE_PATH", default="//splats.ply")
    filter_glob: StringProperty(default="*.ply", options={"HIDDEN"})
    use_range: BoolProperty(name="Frame Range", default=False,
                            description="Write every frame of the range as <name>_<frame>.ply")
    frame_start: IntProperty(name="Start", default=1, description="First frame of the range")
    frame_end: IntProperty(name="End", default=1, description="Last frame of the range")

    @classmethod
    def poll(cls, context):
        return _head(context) is not None

    def invoke(self, context, event):
        self.frame_start, self.frame_end = context.scene.frame_start, context.scene.frame_end
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        from ..addon.splats.export import export_splats

        head = _head(context)
        frames = list(range(self.frame_start, self.frame_end + 1)) if self.use_range else None
        if frames == []:
            self.report({"ERROR"}, f"Frame range {self.frame_start}..{self.frame_end} is empty")
            return {"CANCELLED"}
        try:
            files = export_splats(head, context.scene, Path(bpy.path.abspath(self.filepath)), frames)
        except FateAddonError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Wrote {len(files)} PLY file(s): {files[0].name}" + (" …" if len(files) > 1 else ""))
        return {"FINISHED"}


class FATE_OT_setup_composite(bpy.types.Operator):
    """Render the avatar with FATE Splats inside this Cycles/EEVEE scene: a linked FATE Splats
    scene Z-combined through the Depth pass (for Blender versions without native splats). Hides
    the head meshes from camera rays"""

    bl_idname = "fate.setup_composite"
    bl_label = "Setup Composite"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return context.scene is not None and context.scene.render.engine != "FATE_SPLAT"

    def execute(self, context):
        from ..addon.splats.composite import setup_composite

        try:
            result = setup_composite(context.scene)
        except FateAddonError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        hidden = ", ".join(h.name for h in result.hidden_heads) or "none"
        self.report({"INFO"}, f"Composite: scene '{result.splat_scene.name}' (FATE Splats) Z-combined into "
                              f"'{context.scene.name}'; hidden from the camera: {hidden}")
        return {"FINISHED"}


class FATE_OT_use_standard_view(bpy.types.Operator):
    """Set the view transform to Standard (no look, exposure 0, gamma 1): renders then show the
    training images' colours; AgX and Filmic tone-map them (a white background turns grey)"""

    bl_idname = "fate.use_standard_view"
    bl_label = "Use Standard View"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context):
        vs = context.scene.view_settings
        vs.view_transform = "Standard"
        vs.look = "None"
        vs.exposure = 0.0
        vs.gamma = 1.0
        return {"FINISHED"}


class FATE_OT_refresh_native_splats(bpy.types.Operator):
    """Create the native splats of the selected avatar, or point them at its current map images
    (after replacing a map image or changing the colour map's colour space). Blender 5.3 or newer"""

    bl_idname = "fate.refresh_native_splats"
    bl_label = "Refresh Native Splats"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        from ..addon.splats.native import native_splats_supported

        return _head(context) is not None and native_splats_supported()[0]

    def execute(self, context):
        from ..addon.splats.native import create_native_splats

        try:
            obj = create_native_splats(_head(context))
        except FateAddonError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Native splats: {obj.name} ({len(obj.data.points)} splats)")
        return {"FINISHED"}


CLASSES = (FATE_OT_export_splats, FATE_OT_setup_composite, FATE_OT_use_standard_view,
           FATE_OT_refresh_native_splats)
