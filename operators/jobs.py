"""Track, Train, Bake, Cancel and Open Job Log."""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty

from ..addon.errors import FateAddonError
from ..addon.extension import EXTENSION_DIR
from ..addon.jobs import config as job_config
from ..addon.jobs import runtime as job_runtime
from ..addon.jobs.worker import WorkerClient
from ..addon.ui import preferences


def _client(context) -> WorkerClient:
    return WorkerClient(preferences.worker_python(context), EXTENSION_DIR)


class _EngineJobOperator:
    """Starts one engine job (one at a time) from the scene's FATE settings; subclasses give the
    verb, the message and :meth:`job_config`."""

    bl_options = {"REGISTER"}
    verb = ""
    started = ""

    @classmethod
    def poll(cls, context):
        return job_runtime.active_job() is None

    def job_config(self, context) -> tuple[dict, Path]:
        """(engine config dict, avatar folder) from the scene settings; raises FateAddonError."""
        raise NotImplementedError

    def execute(self, context):
        try:
            cfg, avatar = self.job_config(context)
            job = job_runtime.start_job(context.scene, _client(context), self.verb, cfg, avatar)
        except FateAddonError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        self.report({"INFO"}, f"{self.started} (log: {job.log_path})")
        return {"FINISHED"}


class FATE_OT_track_start(_EngineJobOperator, bpy.types.Operator):
    """Track the video into a FLAME dataset (runs the engine in the background); the result becomes the dataset"""

    bl_idname = "fate.track_start"
    bl_label = "Track"
    verb, started = "track", "Tracking started"

    def job_config(self, context):
        st = context.scene.fate
        video = job_config.check_video_path(bpy.path.abspath(st.video_path))
        dataset = job_config.track_dataset_dir(video, bpy.path.abspath(st.dataset_dir))
        head_model = job_config.resolve_head_model(preferences.flame_dir(context))
        return job_config.track_config(video, dataset, head_model, device=preferences.device(context),
                                       resume=st.resume), dataset


class FATE_OT_train_start(_EngineJobOperator, bpy.types.Operator):
    """Train an avatar from the dataset folder into the avatar folder (runs the engine in the background)"""

    bl_idname = "fate.train_start"
    bl_label = "Train"
    verb, started = "train", "Training started"

    def job_config(self, context):
        st = context.scene.fate
        dataset = job_config.check_dataset_dir(bpy.path.abspath(st.dataset_dir))
        avatar = job_config.check_avatar_dir(bpy.path.abspath(st.avatar_dir), must_exist=False)
        head_model = job_config.resolve_head_model(preferences.flame_dir(context))
        return job_config.train_config(dataset, avatar, head_model, device=preferences.device(context),
                                       steps=st.steps, resume=st.resume), avatar


class FATE_OT_bake_start(_EngineJobOperator, bpy.types.Operator):
    """Bake the trained avatar's Gaussians into UV maps (runs the engine in the background)"""

    bl_idname = "fate.bake_start"
    bl_label = "Bake"
    verb, started = "bake", "Baking started"

    def job_config(self, context):
        st = context.scene.fate
        avatar = job_config.check_avatar_dir(bpy.path.abspath(st.avatar_dir), must_exist=True)
        return job_config.bake_config(avatar, device=preferences.device(context), resume=st.resume,
                                      resolution=int(st.bake_resolution), steps=st.bake_steps,
                                      appearance_only=st.bake_appearance_only,
                                      extra={"full_head": st.bake_full_head,
                                             "completion_generator": st.bake_completion_generator.strip(),
                                             "completion_options": st.bake_completion_options}), avatar


class FATE_OT_job_cancel(bpy.types.Operator):
    """Stop the running job: it writes a checkpoint first, so Resume can continue it"""

    bl_idname = "fate.job_cancel"
    bl_label = "Cancel Job"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return job_runtime.active_job() is not None

    def execute(self, context):
        if job_runtime.cancel_active():
            self.report({"INFO"}, "Cancelling: the worker writes a checkpoint and stops")
            return {"FINISHED"}
        self.report({"WARNING"}, "No job is running")
        return {"CANCELLED"}


class FATE_OT_job_log_open(bpy.types.Operator):
    """Show the log of the current or last job (in the Text Editor, or the system's viewer)"""

    bl_idname = "fate.job_log_open"
    bl_label = "Open Job Log"
    bl_options = {"REGISTER"}

    external: BoolProperty(name="External Viewer", default=False,
                           description="Open the file with the system's default application")

    @classmethod
    def poll(cls, context):
        return bool(getattr(context.scene, "fate", None) and context.scene.fate.job_log)

    def execute(self, context):
        path = Path(context.scene.fate.job_log)
        if not path.is_file():
            self.report({"ERROR"}, f"Log file {path} not found")
            return {"CANCELLED"}
        if self.external:
            bpy.ops.wm.path_open(filepath=str(path))
            return {"FINISHED"}
        name = "FATE job log"
        text = bpy.data.texts.get(name) or bpy.data.texts.new(name)
        text.clear()
        text.write(path.read_text(encoding="utf-8", errors="replace"))
        text.filepath = ""
        shown = False
        for area in getattr(context.screen, "areas", ()):
            if area.type == "TEXT_EDITOR":
                area.spaces.active.text = text
                shown = True
                break
        self.report({"INFO"}, f"Log {path} loaded into the text '{name}'" + ("" if shown else
                    " (open a Text Editor to read it)"))
        return {"FINISHED"}


CLASSES = (FATE_OT_track_start, FATE_OT_train_start, FATE_OT_bake_start, FATE_OT_job_cancel, FATE_OT_job_log_open)
