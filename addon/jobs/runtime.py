"""Runs worker jobs from Blender: one active job, polled by a ``bpy.app.timers`` callback.

:func:`tick` (the timer) polls the active :class:`~addon.jobs.worker.Job` and hands each event to
:func:`apply_event`, which writes ``scene.fate`` (progress, stage, loss, PSNR, ETA, messages),
the status bar text and the "FATE Preview" image, and reports errors with the engine's
message and the log path. Everything here runs on the main thread; in background mode timers
may not fire, so tests call :func:`tick` (or :func:`apply_event`) directly.

No worker outlives Blender: :func:`register` adds a ``load_pre`` handler (opening another file
stops the job) and an ``atexit`` hook; :func:`unregister` stops the job too.
"""

from __future__ import annotations

import atexit
import logging
import math
from pathlib import Path

import bpy

from . import worker
from ..errors import WorkerError
from .preview import load_preview_image
from .worker import Job, WorkerClient

log = logging.getLogger(__name__)

__all__ = ["TIMER_INTERVAL_S", "active_job", "start_job", "attach", "tick", "apply_event",
           "cancel_active", "stop_all", "format_status", "register", "unregister"]

TIMER_INTERVAL_S = 0.25

_active: Job | None = None
_scene_name: str | None = None


def active_job() -> Job | None:
    """The job started last, while it is running (None once it has finished)."""
    return _active if _active is not None and _active.running else None


def start_job(scene: bpy.types.Scene, client: WorkerClient, verb: str, config: dict,
              job_dir: Path) -> Job:
    """Starts ``python -m engine <verb>`` and follows it from ``scene``.

    Raises:
        WorkerError: another job is running, or the worker could not start.
    """
    if active_job() is not None:
        raise WorkerError(f"A {_active.kind} job is already running: cancel it first.")
    job = client.start(verb, config, job_dir)
    attach(job, scene)
    return job


def attach(job: Job, scene: bpy.types.Scene, *, use_timer: bool = True) -> None:
    """Makes ``job`` the active job shown in ``scene.fate`` and starts the timer."""
    global _active, _scene_name
    _active, _scene_name = job, scene.name
    st = scene.fate
    st.job_kind = job.kind
    st.job_state = "RUNNING"
    st.job_stage = ""
    st.progress = 0.0
    st.job_step = st.job_total = 0
    st.job_loss = st.job_psnr = st.job_eta_s = 0.0
    st.job_message = f"{job.kind} started"
    st.job_error = ""
    st.job_checkpoint = ""
    st.job_log = str(job.log_path or "")
    if use_timer and not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=0.1, persistent=True)


def _num(value, default: float = 0.0) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return default
    return v if math.isfinite(v) else default


def format_status(kind: str, event: dict) -> str:
    """Status-bar text for a progress event, e.g. ``FATE train: 1200/30000 (4%) · loss 0.0341 · ...``."""
    step, total = int(_num(event.get("step"))), int(_num(event.get("total")))
    stage = event.get("stage") or kind
    parts = [f"FATE {kind}" + (f"/{stage}" if stage != kind else "") + f": {step}/{total}"
             + (f" ({100.0 * step / total:.0f}%)" if total else "")]
    if event.get("loss") is not None:
        parts.append(f"loss {_num(event['loss']):.4g}")
    if event.get("psnr") is not None:
        parts.append(f"PSNR {_num(event['psnr']):.2f} dB")
    eta = event.get("eta_s")
    if eta is not None and _num(eta, -1) >= 0:
        m, s = divmod(int(_num(eta)), 60)
        h, m = divmod(m, 60)
        parts.append(f"ETA {h}:{m:02d}:{s:02d}" if h else f"ETA {m}:{s:02d}")
    return " · ".join(parts)


def _set_status_text(text: str | None) -> None:
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", ()):
        try:
            window.workspace.status_text_set(text)
        except (AttributeError, RuntimeError, TypeError):
            pass
        for area in window.screen.areas:
            if area.type in {"VIEW_3D", "PROPERTIES", "IMAGE_EDITOR"}:
                area.tag_redraw()


def _report(level: str, message: str) -> None:
    """Shows a message in Blender's status bar / Info log (via an internal operator) and the log."""
    getattr(log, {"ERROR": "error", "WARNING": "warning"}.get(level, "info"))("%s", message)
    try:
        bpy.ops.fate.show_report("EXEC_DEFAULT", level=level, message=message[:1000])
    except (AttributeError, RuntimeError, TypeError, KeyError):
        pass  # operator not registered (tests) or no context


def apply_tracked_video(scene: bpy.types.Scene, event: dict) -> None:
    """A finished ``track`` job: its dataset becomes step 1's, the video's frame rate the scene's."""
    if event.get("dataset"):
        scene.fate.dataset_dir = str(event["dataset"])
    fps = _num(event.get("fps"))
    if fps > 0:
        scene.render.fps = max(1, int(round(fps)))
        scene.render.fps_base = scene.render.fps / fps


def apply_event(scene: bpy.types.Scene, job: Job, event: dict) -> str | None:
    """Applies one worker event to ``scene.fate`` and the UI (main thread only).

    Returns:
        the message reported to the user for terminal events, else None.
    """
    st = scene.fate
    etype = event.get("type")
    if etype == "progress":
        step, total = int(_num(event.get("step"))), int(_num(event.get("total")))
        st.job_stage = str(event.get("stage") or job.kind)
        st.job_step, st.job_total = step, total
        st.progress = min(max(step / total, 0.0), 1.0) if total > 0 else 0.0
        if event.get("loss") is not None:
            st.job_loss = _num(event["loss"])
        if event.get("psnr") is not None:
            st.job_psnr = _num(event["psnr"])
        st.job_eta_s = max(_num(event.get("eta_s")), 0.0)
        if st.job_state != "CANCELLING":
            st.job_state = "RUNNING"
        _set_status_text(format_status(job.kind, event))
    elif etype == "preview":
        path = event.get("path")
        if path:
            try:
                load_preview_image(path)
            except (RuntimeError, OSError) as exc:
                log.warning("cannot load preview %s: %s", path, exc)
    elif etype == "log":
        message = str(event.get("message", ""))
        if message:
            st.job_message = message[:1000]
            if event.get("level") in ("warning", "error"):
                log.warning("worker: %s", message)
    elif etype == "done":
        st.job_state = "DONE"
        st.progress = 1.0
        if job.kind == "track":
            apply_tracked_video(scene, event)
        what = {"track": "Tracking finished: the dataset is set, train the avatar next",
                "train": "Training finished: bake the avatar next",
                "bake": "Baking finished: import the avatar next",
                "install": "Engine installed"}.get(job.kind, f"{job.kind} finished")
        st.job_message = what
        _report("INFO", what)
        return what
    elif etype == "error":
        message = str(event.get("message") or "the worker failed")
        hint = job.error.get("hint") if job.error else None
        text = f"{job.kind} failed: {message}"
        if hint and hint not in message:
            text += f" — {hint}"
        if job.log_path and str(job.log_path) not in text:
            text += f" (full log: {job.log_path})"
        st.job_state = "ERROR"
        st.job_error = text[:1000]
        st.job_message = text[:1000]
        _report("ERROR", text)
        return text
    elif etype == "cancelled":
        st.job_state = "CANCELLED"
        ckpt = event.get("checkpoint")
        st.job_checkpoint = str(ckpt or "")
        text = (f"{job.kind} cancelled; checkpoint {ckpt} — run it again with Resume to continue"
                if ckpt else f"{job.kind} cancelled")
        st.job_message = text
        _report("WARNING", text)
        return text
    return None


def tick() -> float | None:
    """Timer callback: polls the active job and applies its events. Returns the next interval,
    or None (unregister) once the job has finished."""
    global _active
    job = _active
    if job is None:
        return None
    scene = bpy.data.scenes.get(_scene_name or "")
    events = job.poll()
    if scene is not None and hasattr(scene, "fate"):
        for event in events:
            try:
                apply_event(scene, job, event)
            except Exception:  # noqa: BLE001 - never let the timer die with a job running
                log.exception("applying worker event %r failed", event.get("type"))
    if job.running:
        return TIMER_INTERVAL_S
    _set_status_text(None)
    return None


def cancel_active(grace_s: float = worker.CANCEL_GRACE_S) -> bool:
    """Asks the active job to stop (checkpoint + exit). Returns False if none is running."""
    job = active_job()
    if job is None:
        return False
    job.cancel(grace_s)
    scene = bpy.data.scenes.get(_scene_name or "")
    if scene is not None and hasattr(scene, "fate"):
        scene.fate.job_state = "CANCELLING"
        scene.fate.job_message = f"cancelling {job.kind}: waiting for the checkpoint"
    return True


def stop_all(timeout_s: float = 5.0) -> int:
    """Stops every worker now (file load, unregister, quit). Returns how many were running."""
    n = 0
    if _active is not None and _active.running:
        _active.stop(timeout_s)
        n += 1
    n += worker.stop_all(timeout_s)
    if n:
        log.warning("FATE: stopped %d running worker(s)", n)
    return n


@bpy.app.handlers.persistent
def _on_load_pre(*_args) -> None:
    global _active
    if active_job() is not None:
        stop_all()
    _active = None


def _at_exit() -> None:
    worker.stop_all(3.0)


def register() -> None:
    """Adds the ``load_pre`` handler and the ``atexit`` hook that stop workers."""
    if _on_load_pre not in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.append(_on_load_pre)
    atexit.register(_at_exit)


def unregister() -> None:
    """Stops the active job and every worker, removes the timer, handler and hook."""
    global _active
    stop_all()
    _active = None
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
    if _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
    atexit.unregister(_at_exit)
    _set_status_text(None)
