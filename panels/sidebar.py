"""The FATE tab of the 3D View sidebar: the steps in order, the job, and the setup status.

1. Dataset → 2. Train → 3. Bake → 4. Import → 5. Paint → 6. Sync → 7. Render. Drawing reads
properties only (no file or process access), so it stays cheap.
"""

from __future__ import annotations

import bpy

from ..addon.jobs import runtime as job_runtime
from ..addon.rig.bindings import find_head_object
from ..addon.ui import preferences


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
        box.label(text="1. Dataset", icon="FILE_MOVIE")
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
        box.prop(st, "import_tracking")
        op = box.operator("fate.import_avatar", icon="IMPORT")
        op.with_tracking = st.import_tracking

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

        box = layout.box()
        box.label(text="7. Render", icon="RENDER_ANIMATION")
        box.prop(context.scene.render, "engine", text="Engine")
        box.label(text="F12 renders the tracked camera's view")

        if running:
            layout.label(text="A job is running: see FATE Job below", icon="TIME")


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


CLASSES = (FATE_PT_avatar, FATE_PT_job, FATE_PT_status)
