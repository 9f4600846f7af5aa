"""Render Properties ▸ FATE Splats: how splats blend, the scene meshes, which view transform shows
the training images' colours, and the native-splat / composite status."""

from __future__ import annotations

import bpy

from ..addon.splats.native import native_splats_supported


def draw_colour_hint(layout, scene) -> None:
    """The view-transform hint: Standard reproduces the training images; others tone-map."""
    vt = scene.view_settings.view_transform
    col = layout.column(align=True)
    if vt == "Standard" and scene.view_settings.look in ("None", "") and scene.view_settings.exposure == 0.0:
        col.label(text="Standard view: renders show the training images' colours", icon="CHECKMARK")
        return
    col.label(text=f"View Transform '{vt}' tone-maps the render", icon="INFO")
    col.label(text="(a white background turns grey under AgX);")
    col.label(text="Standard reproduces the training images")
    col.operator("fate.use_standard_view", icon="COLOR")


def draw_native_status(layout, context) -> None:
    """Native splats (5.3+) or why not, with the composite / export buttons."""
    supported, why = native_splats_supported()
    col = layout.column(align=True)
    if supported:
        col.label(text="Cycles/EEVEE render the avatar's native splats", icon="CHECKMARK")
        col.operator("fate.refresh_native_splats", icon="FILE_REFRESH")
    else:
        col.label(text="No native splats in this Blender (5.3+ has them):", icon="INFO")
        col.label(text="FATE Splats renders the avatar; for Cycles/EEVEE scenes")
        col.operator("fate.setup_composite", icon="NODE_COMPOSITING")
    col.operator("fate.export_splats", icon="EXPORT")


class FATE_PT_render_splats(bpy.types.Panel):
    """FATE Splats settings in the Render properties."""

    bl_label = "FATE Splats"
    bl_idname = "FATE_PT_render_splats"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "render"

    @classmethod
    def poll(cls, context):
        return getattr(context.scene, "fate", None) is not None

    def draw(self, context):
        layout = self.layout
        st = context.scene.fate
        if context.scene.render.engine == "FATE_SPLAT":
            layout.prop(st, "splat_composite")
            layout.prop(st, "splat_draw_meshes")
        draw_colour_hint(layout, context.scene)
        draw_native_status(layout, context)


CLASSES = (FATE_PT_render_splats,)
