"""One job per output folder: a second job is refused with a message naming the owner; a lock
left by a dead process (``kill -9``) is taken over; a lock of another host is not."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest
from reliability_kit import REPO, engine_env, leftovers, train_config, wait_for_file

from engine.errors import FolderLockedError
from engine.io.lock import LOCK_NAME, FolderLock, read_lock_info
from engine.jobs.config import to_dict


def test_a_second_lock_on_one_folder_is_refused_naming_the_owner(tmp_path):
    with FolderLock(tmp_path / "out", "train"):
        info = read_lock_info(tmp_path / "out")
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname() and info["job"] == "train"
        with pytest.raises(FolderLockedError, match=r"in use by this process \(train\)"):
            FolderLock(tmp_path / "out", "bake").acquire()
    assert not (tmp_path / "out" / LOCK_NAME).exists()  # released: the file is gone
    with FolderLock(tmp_path / "out", "bake"):  # and the folder can be taken again
        pass


def test_a_lock_held_by_another_live_process_is_refused(tmp_path):
    folder = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from engine.io.lock import FolderLock; "
                               f"FolderLock({str(folder)!r}, 'render').acquire(); print('held', flush=True); "
                               "time.sleep(60)"], cwd=REPO, env=engine_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderLockedError, match=rf"in use by render \(pid {holder.pid} on host"):
            FolderLock(folder, "train").acquire()
        holder.kill()  # kill -9: the OS drops the lock with the process
        holder.wait()
        assert (folder / LOCK_NAME).exists()  # the file stays behind, stale
        with FolderLock(folder, "train"):
            assert read_lock_info(folder)["pid"] == os.getpid()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_a_stale_lock_file_of_a_dead_process_is_taken_over(tmp_path, caplog):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / LOCK_NAME).write_text(json.dumps({"pid": 999_999_999, "host": socket.gethostname(), "job": "bake",
                                                "started": time.time() - 3600}))
    with caplog.at_level(logging.WARNING):
        with FolderLock(folder, "train"):
            pass
    assert "stale lock of bake (pid 999999999" in caplog.text and "not running" in caplog.text


def test_a_lock_of_another_host_is_not_broken(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / LOCK_NAME).write_text(json.dumps({"pid": 123, "host": "render-farm-7", "job": "train",
                                                "started": time.time()}))
    with pytest.raises(FolderLockedError, match=rf"another machine.*delete {folder / LOCK_NAME}"):
        FolderLock(folder, "train").acquire()


def test_two_training_jobs_on_one_folder(engine_job, tmp_path, tiny_dataset, head_npz):
    """The issue's defect: two jobs writing one folder both reported "done" and one result was
    lost. Now the second is refused before it does anything; the first runs on (then it is
    cancelled, and its checkpoint is its own)."""
    out = tmp_path / "avatar"
    cfg = tmp_path / "job.json"
    cfg.write_text(json.dumps(to_dict(train_config(tiny_dataset, out, head_npz, steps=100_000))))
    first = engine_job("train", "--config", cfg)
    wait_for_file(out / LOCK_NAME)
    second = engine_job("train", "--config", cfg, "--seed", "5")
    assert second.finish(timeout=120) == 1, second.stderr
    err = second.events[-1]
    assert err["type"] == "error" and err["error_type"] == "FolderLockedError"
    assert f"{out} is in use by train (pid {first.proc.pid}" in err["message"]
    assert not any(e["type"] == "progress" for e in second.events)
    assert first.proc.poll() is None  # undisturbed
    first.wait_for(lambda e: e["type"] == "progress")
    first.cancel("sigterm")
    assert first.finish(timeout=60) == 130, first.stderr
    assert first.events[-1]["type"] == "cancelled" and first.events[-1]["checkpoint"]
    assert leftovers(out) == []
