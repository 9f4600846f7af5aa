"""Worker client against fake engines (no torch needed): progress, done, error, cancel, a worker
killed mid-job, an interpreter without torch, a missing FLAME folder; and the Blender side:
events reach ``scene.fate``, the operators start/cancel jobs, no worker survives unregister or a
file load. Timers do not run in background mode, so the tests call ``jobs.tick()`` themselves.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed")

from addon.errors import SetupError, WorkerError  # noqa: E402
from addon.jobs import config as job_config  # noqa: E402
from addon.jobs import worker  # noqa: E402
from addon.jobs.worker import Job, WorkerClient  # noqa: E402
from addon_package import registered, submodule  # noqa: E402,F401
from fake_engine import make_fake_extension  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 20.0  # generous upper bound per job; the fake jobs take < 1 s


@pytest.fixture
def fake_ext(tmp_path) -> Path:
    return make_fake_extension(tmp_path / "ext")


@pytest.fixture
def client(fake_ext) -> WorkerClient:
    return WorkerClient(sys.executable, fake_ext)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped) counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


# ---------------------------------------------------------------------------- Job (no bpy state)


def test_progress_preview_done(client, tmp_path):
    seen: dict[str, list] = {}
    job = client.start("train", {"scenario": "ok", "output": str(tmp_path)}, tmp_path)
    for kind in ("progress", "preview", "log", "done", "finished"):
        job.on(kind, lambda ev, kind=kind: seen.setdefault(kind, []).append(ev))
    assert job.wait(TIMEOUT_S) == "done"
    assert [ev["step"] for ev in seen["progress"]] == [1, 2, 3, 4, 5]
    assert seen["progress"][-1]["psnr"] == 25.0 and job.last_progress["total"] == 5
    assert Path(seen["preview"][0]["path"]).is_file()
    assert seen["done"][0]["output"] == str(tmp_path) and job.result["steps"] == 5
    assert seen["finished"][0]["returncode"] == 0 and job.returncode == 0
    # config and log files where the docs say, the log holds the worker's stderr
    assert (tmp_path / "jobs").is_dir() and json.loads(next((tmp_path / "jobs").glob("train-*.json")).read_text())
    assert job.log_path.parent == tmp_path / "logs" and "scenario=ok" in job.log_path.read_text()


def test_error_event_keeps_engine_message(client, tmp_path):
    job = client.start("bake", {"scenario": "error", "avatar": str(tmp_path)}, tmp_path)
    errors = []
    job.on("error", errors.append)
    assert job.wait(TIMEOUT_S) == "error"
    assert errors[0]["message"] == "images/00003.png is missing (dataset folder)"
    assert errors[0]["log_path"] == str(job.log_path)
    assert job.error["error_type"] == "DatasetError" and job.returncode == 1


def test_cancel_checkpoints_and_stops(client, tmp_path):
    job = client.start("train", {"scenario": "slow", "output": str(tmp_path)}, tmp_path)
    t0 = time.monotonic()
    while not job.last_progress and time.monotonic() - t0 < TIMEOUT_S:
        job.poll()
        time.sleep(0.01)
    job.cancel(grace_s=5.0)
    assert job.wait(TIMEOUT_S) == "cancelled"
    assert job.returncode == 130
    assert job.checkpoint and Path(job.checkpoint).is_file()
    assert time.monotonic() - t0 < 5.0  # stopped on the cancel line, not by the SIGTERM fallback


def test_cancel_escalates_to_kill(client, tmp_path):
    """A worker that ignores the cancel line and SIGTERM is killed after the grace periods."""
    job = client.start("train", {"scenario": "stubborn", "output": str(tmp_path)}, tmp_path)
    t0 = time.monotonic()
    while not job.last_progress and time.monotonic() - t0 < TIMEOUT_S:
        job.poll()
        time.sleep(0.01)
    job.cancel(grace_s=0.2, kill_after_s=0.3)
    assert job.wait(TIMEOUT_S) == "cancelled"
    assert job.returncode == -9 and not _pid_alive(job.pid)


def test_killed_worker_is_reported_without_hang(client, tmp_path):
    job = client.start("train", {"scenario": "die", "output": str(tmp_path)}, tmp_path)
    t0 = time.monotonic()
    assert job.wait(TIMEOUT_S) == "error"
    assert time.monotonic() - t0 < 10.0
    msg = job.error["message"]
    assert "killed by signal SIGKILL" in msg and str(job.log_path) in msg
    assert "allocating 80 GB" in msg  # the last line of the worker's log


def test_garbage_output_and_silent_exit(client, tmp_path):
    job = client.start("train", {"scenario": "garbage", "output": str(tmp_path)}, tmp_path)
    logs = []
    job.on("log", logs.append)
    assert job.wait(TIMEOUT_S) == "error"
    assert [ev["message"] for ev in logs] == ["this is not json", "{broken"]
    assert "exit code 3" in job.error["message"]


def test_stop_all_leaves_no_worker(client, tmp_path):
    job = client.start("train", {"scenario": "slow", "output": str(tmp_path)}, tmp_path)
    assert worker.stop_all(timeout_s=5.0) == 1
    assert not _pid_alive(job.pid)
    assert job.wait(TIMEOUT_S) == "cancelled"
    assert worker.live_jobs() == []


# ---------------------------------------------------------------------------- checks and setup


def test_check_without_torch_is_actionable(fake_ext, tmp_path):
    """An interpreter without torch (here: the test Python with site-packages disabled)."""
    if os.name != "posix":
        pytest.skip("the no-site wrapper script is POSIX-only")
    wrapper = tmp_path / "python-no-torch"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(WorkerError) as err:
        WorkerClient(str(wrapper), fake_ext).check(timeout_s=60)
    msg = str(err.value)
    assert "has no module 'torch'" in msg and "Install Engine" in msg and "pip install torch" in msg


def test_check_bad_python_path(fake_ext, tmp_path):
    with pytest.raises(WorkerError, match="not found: fix the path in Preferences"):
        WorkerClient(str(tmp_path / "nope" / "python"), fake_ext).check()
    with pytest.raises(WorkerError, match="No worker Python is set"):
        WorkerClient("", fake_ext).check()


def test_check_real_engine():
    """``python -m engine check`` of the real engine with the Worker Python the tests use (this
    interpreter when it has torch, else the 3.11 ``.venv``: see conftest.engine_python)."""
    from blender_support import NO_ENGINE_PYTHON, engine_python

    if not (REPO / "engine" / "__main__.py").is_file():
        pytest.skip("engine/__main__.py not present yet")
    python = engine_python()
    if python is None:
        pytest.skip(NO_ENGINE_PYTHON)
    info = WorkerClient(python, REPO).check(timeout_s=120)
    assert info["torch"] and info["device"] in ("cpu", "cuda") and info.get("rasterizer")
    assert "torch " in info.summary() and "rasteriser" in info.summary()


def test_missing_flame_folder_says_what_to_do(tmp_path):
    with pytest.raises(SetupError) as err:
        job_config.resolve_head_model(str(tmp_path / "FLAME2020"))
    msg = str(err.value)
    assert "does not exist" in msg and "flame.is.tue.mpg.de" in msg and "FLAME folder" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(SetupError, match="generic_model.pkl"):
        job_config.resolve_head_model(str(tmp_path / "empty"))
    (tmp_path / "empty" / "generic_model.pkl").write_bytes(b"")
    with pytest.raises(SetupError, match="head_template_mesh.obj"):
        job_config.resolve_head_model(str(tmp_path / "empty"))
    (tmp_path / "empty" / "head_template_mesh.obj").write_text("")
    assert job_config.resolve_head_model(str(tmp_path / "empty")) == str(tmp_path / "empty")
    assert job_config.resolve_head_model("") == "demo"


def test_install_engine_dry_run(tmp_path):
    script = REPO / "addon" / "jobs" / "install_engine.py"
    job = Job("install", [sys.executable, str(script), "--target", str(tmp_path / "venv"), "--dry-run"],
              log_path=tmp_path / "install.log")
    progress = []
    job.on("progress", progress.append)
    assert job.wait(TIMEOUT_S) == "done"
    assert progress[-1]["step"] == progress[-1]["total"] == (5 if sys.platform == "darwin" else 6)
    assert job.result["python"].startswith(str(tmp_path / "venv")) and job.result["dry_run"] is True


# ---------------------------------------------------------------------------- Blender side


@pytest.fixture
def scene(registered):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context.scene


def _run_ticks(jobs_mod, timeout_s: float = TIMEOUT_S) -> None:
    t0 = time.monotonic()
    while jobs_mod.tick() is not None:
        assert time.monotonic() - t0 < timeout_s, "job did not finish"
        time.sleep(0.01)


def test_events_reach_scene_properties(scene, client, tmp_path):
    jobs = submodule("addon.jobs.runtime")
    job = client.start("train", {"scenario": "ok", "output": str(tmp_path)}, tmp_path)
    jobs.attach(job, scene, use_timer=False)
    assert scene.fate.job_state == "RUNNING" and scene.fate.job_log == str(job.log_path)
    _run_ticks(jobs)
    st = scene.fate
    assert st.job_state == "DONE" and st.progress == pytest.approx(1.0)
    assert (st.job_step, st.job_total) == (5, 5)
    assert st.job_psnr == pytest.approx(25.0) and st.job_loss == pytest.approx(0.2)
    assert "bake the avatar next" in st.job_message
    preview = bpy.data.images.get("FATE Preview")
    assert preview is not None and tuple(preview.size) == (4, 3)
    assert jobs.format_status("train", {"step": 30, "total": 120, "loss": 0.5, "psnr": 27.25, "eta_s": 3725}) \
        == "FATE train: 30/120 (25%) · loss 0.5 · PSNR 27.25 dB · ETA 1:02:05"


def test_error_and_crash_reach_scene(scene, client, tmp_path):
    jobs = submodule("addon.jobs.runtime")
    jobs.attach(client.start("bake", {"scenario": "error"}, tmp_path), scene, use_timer=False)
    _run_ticks(jobs)
    assert scene.fate.job_state == "ERROR"
    assert "images/00003.png is missing" in scene.fate.job_error and "full log:" in scene.fate.job_error
    job = client.start("train", {"scenario": "die", "output": str(tmp_path)}, tmp_path)
    jobs.attach(job, scene, use_timer=False)
    _run_ticks(jobs)
    assert scene.fate.job_state == "ERROR" and "killed by signal" in scene.fate.job_error
    assert str(job.log_path) in scene.fate.job_error


@pytest.fixture
def fake_worker(fake_ext, monkeypatch):
    """The job operators start the fake engine (this interpreter) instead of the real one."""
    monkeypatch.setattr(submodule("operators.jobs"), "EXTENSION_DIR", fake_ext)
    monkeypatch.setenv(submodule("addon.ui.preferences").WORKER_PYTHON_ENV, sys.executable)


def test_train_operator_and_cancel(scene, fake_worker, tmp_path, monkeypatch):
    """Train → progress → Cancel through the operators, with the fake engine as the worker."""
    jobs = submodule("addon.jobs.runtime")
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "transforms_train.json").write_text("{}")
    scene.fate.dataset_dir = str(dataset)
    scene.fate.avatar_dir = str(tmp_path / "avatar")
    # the fake engine reads "scenario" from the config: make the operator's config a slow job
    real_train_config = job_config.train_config
    monkeypatch.setattr(submodule("addon.jobs.config"), "train_config",
                        lambda *a, **k: {**real_train_config(*a, **k), "scenario": "slow"})
    assert bpy.ops.fate.train_start() == {"FINISHED"}
    job = jobs.active_job()
    cfg = json.loads(next((tmp_path / "avatar" / "jobs").glob("train-*.json")).read_text())
    assert cfg["dataset"] == str(dataset) and cfg["head_model"] == "demo" and cfg["device"] == "auto"
    assert cfg["steps"] == 30000 and cfg["resume"] is True
    assert not bpy.ops.fate.train_start.poll()  # one job at a time
    t0 = time.monotonic()
    while scene.fate.job_step < 3 and time.monotonic() - t0 < TIMEOUT_S:
        jobs.tick()
        time.sleep(0.01)
    assert scene.fate.progress > 0.0 and scene.fate.job_state == "RUNNING"
    assert bpy.ops.fate.job_cancel() == {"FINISHED"}
    assert scene.fate.job_state == "CANCELLING"
    _run_ticks(jobs)
    assert scene.fate.job_state == "CANCELLED" and Path(scene.fate.job_checkpoint).is_file()
    assert job.returncode == 130 and jobs.active_job() is None
    assert bpy.ops.fate.job_log_open() == {"FINISHED"}
    assert "scenario=slow" in bpy.data.texts["FATE job log"].as_string()


def test_operator_reports_missing_flame_folder(scene, tmp_path, monkeypatch):
    prefs = submodule("addon.ui.preferences")
    monkeypatch.setattr(prefs, "flame_dir", lambda context=None: str(tmp_path / "no_flame_here"))
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "transforms_train.json").write_text("{}")
    scene.fate.dataset_dir = str(dataset)
    scene.fate.avatar_dir = str(tmp_path / "avatar")
    with pytest.raises(RuntimeError, match="FLAME folder .* does not exist.*flame.is.tue.mpg.de"):
        bpy.ops.fate.train_start()
    scene.fate.dataset_dir = ""
    with pytest.raises(RuntimeError, match="Set the dataset folder first"):
        bpy.ops.fate.train_start()


def test_no_worker_survives_file_load_or_unregister(scene, client, tmp_path, registered):
    jobs = submodule("addon.jobs.runtime")
    job = client.start("train", {"scenario": "slow", "output": str(tmp_path)}, tmp_path)
    jobs.attach(job, scene, use_timer=False)
    assert jobs._on_load_pre in bpy.app.handlers.load_pre
    bpy.ops.wm.read_homefile(use_empty=True)  # runs the load_pre handlers
    assert not _pid_alive(job.pid)
    job2 = client.start("train", {"scenario": "slow", "output": str(tmp_path)}, tmp_path)
    jobs.attach(job2, bpy.context.scene, use_timer=False)
    registered.unregister()
    try:
        assert not _pid_alive(job2.pid)
        assert jobs._on_load_pre not in bpy.app.handlers.load_pre
        assert not hasattr(bpy.types.Scene, "fate")
    finally:
        registered.register()


def test_bake_operator_passes_the_completion_generator(scene, fake_worker, tmp_path):
    """The Bake box's Full Head settings reach the BakeConfig (issue 16)."""
    jobs = submodule("addon.jobs.runtime")
    avatar = tmp_path / "avatar"
    avatar.mkdir()
    (avatar / "avatar.json").write_text("{}")
    scene.fate.avatar_dir = str(avatar)
    scene.fate.bake_completion_generator = " mypkg.sphere:complete "
    scene.fate.bake_completion_options = "/models/spherehead"
    assert bpy.ops.fate.bake_start() == {"FINISHED"}
    cfg = json.loads(next((avatar / "jobs").glob("bake-*.json")).read_text())
    assert (cfg["full_head"], cfg["completion_generator"], cfg["completion_options"]) == (
        True, "mypkg.sphere:complete", "/models/spherehead")
    _run_ticks(jobs)


def test_bake_operator_passes_the_panel_settings(scene, fake_worker, tmp_path):
    """Bake writes a BakeConfig with the sidebar's map size, steps and appearance-only flag."""
    jobs = submodule("addon.jobs.runtime")
    avatar = tmp_path / "avatar"
    avatar.mkdir()
    (avatar / "avatar.json").write_text("{}")
    scene.fate.avatar_dir = str(avatar)
    scene.fate.bake_resolution, scene.fate.bake_steps, scene.fate.bake_appearance_only = "256", 77, True
    assert bpy.ops.fate.bake_start() == {"FINISHED"}
    cfg = json.loads(next((avatar / "jobs").glob("bake-*.json")).read_text())
    assert (cfg["avatar"], cfg["resolution"], cfg["steps"], cfg["appearance_only"]) == (str(avatar), 256, 77, True)
    assert (cfg["full_head"], cfg["completion_generator"]) == (True, "")  # built-in completion by default
    _run_ticks(jobs)
    assert scene.fate.job_state == "DONE" and "import the avatar next" in scene.fate.job_message
