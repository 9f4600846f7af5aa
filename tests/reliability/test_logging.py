"""Every training log line is emitted once: one ``log`` event in jsonl mode, one stderr line
otherwise (the trainer logged *and* sent each message to the sink, which also logs)."""

from __future__ import annotations

import json
import subprocess
import sys

from reliability_kit import REPO, engine_env, run_engine, train_config

from engine.jobs.config import to_dict


def test_each_training_message_once_as_an_event(tmp_path, tiny_dataset, head_npz):
    cfg = tmp_path / "job.json"
    cfg.write_text(json.dumps(to_dict(train_config(tiny_dataset, tmp_path / "avatar", head_npz, steps=2))))
    rc, events, stderr = run_engine("train", "--config", cfg)
    assert rc == 0, stderr
    messages = [e["message"] for e in events if e["type"] == "log"]
    training = [m for m in messages if m.startswith("training on ")]
    assert len(training) == 1, messages
    assert len(messages) == len(set(messages)), messages


def test_each_training_message_once_on_stderr(tmp_path, tiny_dataset, head_npz):
    cfg = tmp_path / "job.json"
    cfg.write_text(json.dumps(to_dict(train_config(tiny_dataset, tmp_path / "avatar", head_npz, steps=2))))
    r = subprocess.run([sys.executable, "-m", "engine", "train", "--config", str(cfg), "--events", "none"],
                       cwd=REPO, env=engine_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    lines = [ln for ln in r.stderr.splitlines() if "training on cpu" in ln]
    assert len(lines) == 1, r.stderr
