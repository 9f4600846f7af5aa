"""Check Worker and Install Engine (the worker's Python environment)."""

from __future__ import annotations

import os
import sys
import time

import bpy

from ..addon.errors import FateAddonError
from ..addon.extension import EXTENSION_DIR
from ..addon.jobs import runtime as job_runtime
from ..addon.jobs.worker import Job, WorkerClient
from ..addon.ui import preferences


class FATE_OT_check_worker(bpy.types.Operator):
    """Run the worker's self-check: torch version, device and rasteriser"""

    bl_idname = "fate.check_worker"
    bl_label = "Check Worker"
    bl_options = {"REGISTER"}

    def execute(self, context):
        prefs = preferences.get_preferences(context)
        client = WorkerClient(preferences.worker_python(context), EXTENSION_DIR)
        context.window_manager.progress_begin(0, 1)
        try:
            info = client.check()
        except FateAddonError as err:
            if prefs is not None:
                prefs.worker_status = f"error: {err}"[:500]
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        finally:
            context.window_manager.progress_end()
        if prefs is not None:
            prefs.worker_status = info.summary()
        self.report({"INFO"}, f"Worker OK: {info.summary()}")
        return {"FINISHED"}


class FATE_OT_install_engine(bpy.types.Operator):
    """Create a Python environment in the extension's user folder and install torch, gsplat, smplx
    and the engine's other packages with pip (several GB; needs Internet access)"""

    bl_idname = "fate.install_engine"
    bl_label = "Install Engine"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return job_runtime.active_job() is None

    def invoke(self, context, event):
        return context.window_manager.invoke_confirm(self, event)

    def execute(self, context):
        if not getattr(bpy.app, "online_access", True):
            self.report({"ERROR"}, "Installing the engine downloads packages: enable Preferences > System > "
                                   "Network > Allow Online Access, or set an existing Worker Python instead")
            return {"CANCELLED"}
        target = preferences.engine_env_dir(create=True)
        script = EXTENSION_DIR / "addon" / "jobs" / "install_engine.py"
        log_path = target.parent / f"install-{time.strftime('%Y%m%d-%H%M%S')}.log"
        argv = [sys.executable, str(script), "--target", str(target), "--device", preferences.device(context)]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
        try:
            job = Job("install", argv, env=env, log_path=log_path, extension_dir=EXTENSION_DIR)
        except FateAddonError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}

        def on_done(event):
            prefs = preferences.get_preferences()
            if prefs is not None and event.get("python"):
                prefs.python_path = str(event["python"])
                prefs.worker_status = "engine installed: click Check"

        job.on("done", on_done)
        job_runtime.attach(job, context.scene)
        self.report({"INFO"}, f"Installing the engine into {target}; progress in the FATE sidebar (log: {log_path})")
        return {"FINISHED"}


CLASSES = (FATE_OT_check_worker, FATE_OT_install_engine)
