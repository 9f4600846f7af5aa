"""One typed config validation before any work, reported as an ``error`` event in jsonl mode (it
was raised before ``run_job`` started, so the add-on saw a traceback and no event); values of the
wrong type are refused naming the key (``"resume": "false"`` used to resume, ``"steps": 5.7`` ran
6 steps, ``--steps -3`` baked nothing and overwrote the maps)."""

from __future__ import annotations

import json

import pytest
from reliability_kit import files_digest, run_engine


@pytest.mark.parametrize("key, value, text", [
    ("resume", "false", "resume must be true or false (a JSON boolean), found 'false'"),
    ("steps", 5.7, "steps must be an integer, found 5.7"),
    ("steps", "10", "steps must be an integer, found '10'"),
    ("background", [1, float("nan"), 1], "background[1] must be a finite number, found nan"),
    ("background", [1, 2, 1], "background must be in [0, 1]"),
    ("lr_color", -1.0, "lr_color must be > 0"),
    ("device", "gpu", "device must be one of ['auto', 'cuda', 'cpu'], found 'gpu'"),
    ("densify", {"strategy": "sampling", "count": -5}, "densify: count must be >= 0"),
    ("learning_rate", 1, "unknown key(s) ['learning_rate']"),
])
def test_a_bad_train_config_is_an_error_event_naming_file_and_key(tmp_path, key, value, text):
    cfg = tmp_path / "job.json"
    cfg.write_text(json.dumps({"dataset": str(tmp_path), "output": str(tmp_path / "out"), key: value}))
    rc, events, stderr = run_engine("train", "--config", cfg)
    assert rc == 1, stderr
    assert [e["type"] for e in events] == ["error"]
    err = events[0]
    assert err["error_type"] == "ConfigError" and err["traceback"] == ""
    assert str(cfg) in err["message"] and text in err["message"], err["message"]
    assert not (tmp_path / "out").exists()  # refused before any work


def test_truncated_config_json_is_an_error_event(tmp_path):
    cfg = tmp_path / "job.json"
    cfg.write_text('{"steps": 10, "datas')
    rc, events, _ = run_engine("bake", "--config", cfg)
    assert rc == 1 and events[-1]["error_type"] == "ConfigError" and "invalid JSON" in events[-1]["message"]


def test_bake_with_negative_steps_is_refused_and_the_maps_stay(avatar_copy):
    before = files_digest(avatar_copy / "maps")
    rc, events, stderr = run_engine("bake", "--avatar", avatar_copy, "--steps", "-3", "--device", "cpu")
    assert rc == 1, stderr
    assert events[-1]["error_type"] == "ConfigError" and "steps must be >= 0, found -3" in events[-1]["message"]
    assert files_digest(avatar_copy / "maps") == before


def test_a_job_without_its_folder_is_refused_before_it_creates_one(tmp_path):
    rc, events, _ = run_engine("bake", "--avatar", tmp_path / "nope")
    assert rc == 1 and events[-1]["error_type"] == "AvatarError" and "does not exist" in events[-1]["message"]
    assert not (tmp_path / "nope").exists()
    rc, events, _ = run_engine("render")
    assert rc == 1 and "render needs 'avatar'" in events[-1]["message"]
