"""The FATE tab of the 3D View sidebar: the steps in order, the job, and the setup status.

1. Dataset → 2. Train → 3. Bake → 4. Import → 5. Paint → 6. Sync → 7. Render, then "FATE
Animation" (the tracking layer, expression presets, neutral, look-at). Drawing reads properties
only (no file or process access), so it stays cheap.
"""

from __future__ import annotations

import bpy

from ..addon.jobs import runtime as job_runtime
from ..addon.rig.bindings import PROP_PERCEPTUAL, avatar_map_images, find_head_object, has_trained_attributes
from ..addon.rig.presets import preset_names
from ..addon.rig.tracking import TRACK_NAME
from ..addon.ui import preferences
from . import render as render_panel


def _draw_bake_first(box, head) -> None:
    """Says why an unbaked avatar renders as it does, with the Bake button beside it."""
    try:
        has_maps = bool(avatar_map_images(head))
    except Exception:  # noqa: BLE001 - a broken 'fate_maps' is reported by the renderer
        has_maps = True
    if has_maps:
        return
    row = box.row(align=True)
    if has_trained_attributes(head):
        row.label(text="Not baked: renders the trained Gaussians", icon="INFO")
    else:
        row.alert = True
        row.label(text="Bake first: no maps to render", icon="ERROR")
    row.operator("fate.bake_start", text="Bake", icon="RENDER_STILL")


class _FateSidebar:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "FATE"

    @classmethod
    def poll(cls, context):
        return getattr(context.scene, "fate", None) is not None


class FATE_PT_avatar(_FateSidebar, bpy.types.Panel):
    """From a tracked video to a painted, rendered avatar."""

    bl_label = "FATE Avatar"
    bl_idname = "FATE_PT_avatar"

    def draw(self, context):
        layout = self.layout
        st = context.scene.fate
        running = job_runtime.active_job() is not None

        box = layout.box()
        box.label(text="0. Video", icon="FILE_MOVIE")
        box.prop(st, "video_path", text="Video")
        box.operator("fate.track_start", icon="TRACKING")

        box = layout.box()
        box.label(text="1. Dataset", icon="FILE_FOLDER")
        box.prop(st, "dataset_dir", text="Dataset")
        box.prop(st, "avatar_dir", text="Avatar")

        box = layout.box()
        box.label(text="2. Train", icon="PLAY")
        row = box.row(align=True)
        row.prop(st, "steps")
        row.prop(st, "resume", toggle=True)
        box.operator("fate.train_start", icon="PLAY")

        box = layout.box()
        box.label(text="3. Bake", icon="TEXTURE")
        row = box.row(align=True)
        row.prop(st, "bake_resolution", text="")
        row.prop(st, "bake_steps", text="Steps")
        box.prop(st, "bake_appearance_only")
        box.prop(st, "bake_full_head")
        if st.bake_full_head:
            box.prop(st, "bake_completion_generator")
            if st.bake_completion_generator:
                box.prop(st, "bake_completion_options")
        box.operator("fate.bake_start", icon="RENDER_STILL")

        box = layout.box()
        box.label(text="4. Import", icon="IMPORT")
        row = box.row(align=True)
        row.prop(st, "import_tracking")
        row.prop(st, "import_camera", text="")
        op = box.operator("fate.import_avatar", icon="IMPORT")
        op.with_tracking = st.import_tracking
        op.camera = st.import_camera

        head = find_head_object(context.active_object)
        box = layout.box()
        box.label(text="5. Paint", icon="BRUSH_DATA")
        if head is None:
            box.label(text="Select an imported avatar")
        elif context.active_object != head:
            box.label(text=f"Select the head mesh '{head.name}'")
        else:
            op = box.operator("object.mode_set", text="Texture Paint", icon="TPAINT_HLT")
            op.mode = "TEXTURE_PAINT"
            box.label(text="Paints the colour map; pick another map's", icon="INFO")
            box.label(text="image node in the material to paint it")

        box = layout.box()
        box.label(text="6. Sync", icon="FILE_REFRESH")
        box.operator("fate.sync_maps", icon="FILE_REFRESH")
        box.operator("fate.restore_maps", icon="LOOP_BACK")

        box = layout.box()
        box.label(text="7. Render", icon="RENDER_ANIMATION")
        box.prop(context.scene.render, "engine", text="Engine")
        if head is not None:
            settings = getattr(head, "fate", None)
            if settings is not None:
                row = box.row(align=True)
                row.prop(settings, "resplat", text="")
                if settings.resplat == "TEXEL":
                    row.prop(settings, "texel_stride", text="Every")
                box.prop(settings, "map_keys")
            _draw_bake_first(box, head)
            _draw_training_note(box, head)
        box.label(text="F12 renders the scene camera's view")
        render_panel.draw_colour_hint(box, context.scene)
        render_panel.draw_native_status(box, context)

        if running:
            layout.label(text="A job is running: see FATE Job below", icon="TIME")


def _draw_training_note(layout, head) -> None:
    """Says plainly when the avatar was trained without FATE's VGG perceptual loss."""
    term = str(head.get(PROP_PERCEPTUAL, ""))
    if term.startswith("dssim"):
        col = layout.column(align=True)
        col.label(text="Trained with D-SSIM: no VGG16 weights were given", icon="ERROR")
        col.label(text="(FATE trains with VGG x0.1; see README, 'VGG weights')")


class FATE_PT_animation(_FateSidebar, bpy.types.Panel):
    """Direct the avatar: the tracking as a layer, expression presets, neutral, eye target."""

    bl_label = "FATE Animation"
    bl_idname = "FATE_PT_animation"

    def draw(self, context):
        layout = self.layout
        head = find_head_object(context.active_object)
        if head is None:
            layout.label(text="Select an imported avatar")
            return
        rig = head.parent
        key = head.data.shape_keys
        box = layout.box()
        box.label(text="Tracking layer (NLA)", icon="NLA")
        for title, id_data in (("Expressions", key), ("Pose", rig)):
            ad = getattr(id_data, "animation_data", None)
            track = ad.nla_tracks.get(TRACK_NAME) if ad is not None else None
            if track is None:
                continue
            row = box.row(align=True)
            row.label(text=title)
            row.prop(track, "mute", text="Mute Tracking", toggle=True)
            row.prop(ad, "action_blend_type", text="Your Keys")

        box = layout.box()
        box.label(text="Expression presets", icon="PRESET")
        row = box.row(align=True)
        row.prop(context.scene.fate, "preset_name", text="")
        row.operator("fate.preset_save", text="Save", icon="ADD")
        for name in preset_names(head):
            row = box.row(align=True)
            op = row.operator("fate.preset_apply", text=name, icon="PLAY")
            op.name = name
            op = row.operator("fate.preset_delete", text="", icon="X")
            op.name = name
        row = box.row(align=True)
        row.operator("fate.expression_neutral", icon="LOOP_BACK")
        row.operator("fate.look_at_add", text="Look-At Target", icon="HIDE_OFF")


class FATE_PT_job(_FateSidebar, bpy.types.Panel):
    """Progress of the current worker job."""

    bl_label = "FATE Job"
    bl_idname = "FATE_PT_job"

    def draw(self, context):
        layout = self.layout
        st = context.scene.fate
        if st.job_state == "IDLE":
            layout.label(text="No job has run yet")
            return
        col = layout.column(align=True)
        col.label(text=f"{st.job_kind}: {st.job_state.lower()}" + (f" ({st.job_stage})" if st.job_stage else ""),
                  icon={"ERROR": "ERROR", "DONE": "CHECKMARK", "CANCELLED": "CANCEL"}.get(st.job_state, "TIME"))
        text = f"{st.job_step}/{st.job_total}" if st.job_total else ""
        if hasattr(col, "progress"):
            col.progress(factor=st.progress, type="BAR", text=text)
        else:  # pragma: no cover - Blender < 4.0
            col.prop(st, "progress", text=text)
        if st.job_total:
            row = col.row()
            row.label(text=f"loss {st.job_loss:.4g}")
            row.label(text=f"PSNR {st.job_psnr:.2f} dB")
            m, s = divmod(int(st.job_eta_s), 60)
            row.label(text=f"ETA {m}:{s:02d}")
        if st.job_message:
            col.label(text=st.job_message[:120])
        if st.job_state == "ERROR" and st.job_error:
            err = layout.box()
            err.alert = True
            for i in range(0, min(len(st.job_error), 360), 60):
                err.label(text=st.job_error[i:i + 60])
        row = layout.row(align=True)
        row.operator("fate.job_cancel", icon="CANCEL")
        row.operator("fate.job_log_open", icon="TEXT")
        preview = bpy.data.images.get("FATE Preview")
        if preview is not None:
            layout.label(text="Preview: image 'FATE Preview' (Image Editor)", icon="IMAGE_DATA")


class FATE_PT_status(_FateSidebar, bpy.types.Panel):
    """FLAME and worker setup."""

    bl_label = "FATE Setup"
    bl_idname = "FATE_PT_status"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        prefs = preferences.get_preferences(context)
        col = layout.column(align=True)
        if prefs is None:
            col.label(text="Preferences unavailable (add-on not enabled?)", icon="ERROR")
            return
        col.label(text=f"FLAME: {prefs.flame_dir or 'demo head (not FLAME)'}", icon="USER")
        python = preferences.worker_python(context)
        col.label(text=f"Worker Python: {python or 'not set'}", icon="CONSOLE" if python else "ERROR")
        col.label(text=f"Device: {prefs.device.lower()}")
        col.label(text=f"Worker: {prefs.worker_status}")
        row = layout.row(align=True)
        row.operator("fate.check_worker", icon="CHECKMARK")
        row.operator("fate.install_engine", icon="IMPORT")


CLASSES = (FATE_PT_avatar, FATE_PT_animation, FATE_PT_job, FATE_PT_status)
