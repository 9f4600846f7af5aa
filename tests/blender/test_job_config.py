"""The job configs the add-on builds, checked against the engine's schema (addon/jobs/job_schema.json).

No bpy needed. The last test compares the shipped schema with the engine's dataclasses when torch
and the engine import; after ``python -m engine schema`` regenerates the file it must still pass.
"""

from __future__ import annotations

import dataclasses
import importlib
import typing

import pytest

from addon.errors import SetupError
from addon.jobs import config as job_config

SCHEMA = job_config.load_schema()


def _defaults(fields: dict) -> dict:
    """The schema's defaults as a config (objects recursed)."""
    return {k: _defaults(f["fields"]) if f["type"] == "object" else f["default"] for k, f in fields.items()}


# ---------------------------------------------------------------------------- the add-on's configs
@pytest.mark.parametrize("kwargs", [
    {},
    {"device": "CPU", "steps": 12, "resume": True},
    {"extra": {"uv_resolution": 16, "checkpoint_every": 6, "preview_every": 6}},  # test_engine_roundtrip
    {"extra": {"densify": {"strategy": "threshold", "grad_threshold": 1e-3}, "background": (0, 0, 0)}},
])
def test_train_configs_validate(kwargs):
    cfg = job_config.train_config("/data/subject", "/avatars/subject", job_config.DEMO_HEAD, **kwargs)
    job_config.validate_config("train", cfg)  # train_config validated it too


@pytest.mark.parametrize("kwargs", [
    {},
    {"device": "cuda", "resume": True, "resolution": 256, "steps": 77, "appearance_only": True},  # the panel
    {"device": "cpu", "extra": {"resolution": 32, "steps": 6, "warmup_steps": 3, "base_channels": 8,
                                "depth": 2}},  # test_engine_roundtrip
])
def test_bake_configs_validate(kwargs):
    cfg = job_config.bake_config("/avatars/subject", **kwargs)
    job_config.validate_config("bake", cfg)


@pytest.mark.parametrize("verb", sorted(SCHEMA["jobs"]))
def test_schema_defaults_fit_their_own_types(verb):
    """ints are JSON integers, bools true/false, lists of the stated length, choices hold the default."""
    job_config.validate_config(verb, _defaults(SCHEMA["jobs"][verb]["fields"]))


# ---------------------------------------------------------------------------- drift is caught early
@pytest.mark.parametrize("extra, key, what", [
    ({"stepz": 10}, "stepz", "unknown key"),
    ({"learn_blendshapes": "false"}, "learn_blendshapes", "must be a bool"),
    ({"steps": 5.7}, "steps", "must be an int"),
    ({"device": "gpu"}, "device", "must be one of"),
    ({"background": [1.0, 1.0]}, "background", "must have 3 values"),
    ({"densify": {"strategy": "random"}}, "densify.strategy", "must be one of"),
    ({"densify": {"every_n": 3}}, "densify.every_n", "unknown key"),
])
def test_train_config_rejects(extra, key, what):
    with pytest.raises(SetupError, match=f"train job config.*'{key}'.*") as err:
        job_config.train_config("/d", "/a", job_config.DEMO_HEAD, extra=extra)
    assert what in str(err.value)


def test_bake_config_rejects_a_bool_as_int_and_an_unknown_verb():
    with pytest.raises(SetupError, match="bake job config: 'resolution' must be an int"):
        job_config.bake_config("/a", extra={"resolution": True})
    with pytest.raises(SetupError, match="no job 'paint'"):
        job_config.validate_config("paint", {})


def test_schema_file_is_checked(tmp_path):
    bad = tmp_path / "job_schema.json"
    bad.write_text('{"format": "fate-job-schema", "format_version": 2, "jobs": {}}')
    with pytest.raises(SetupError, match="version 1"):
        job_config.load_schema(bad)
    with pytest.raises(SetupError, match="cannot read"):
        job_config.load_schema(tmp_path / "missing.json")


# ---------------------------------------------------------------------------- schema == engine
def _engine_config_class(verb: str) -> type:
    """``engine.<verb>.config.<Verb>Config`` (the engine's new layout) or ``engine.<verb>.<Verb>Config``;
    skips with the reason when neither imports."""
    pytest.importorskip("torch", reason="torch is not installed (the engine's configs import it)")
    name, errors = f"{verb.capitalize()}Config", []
    for module in (f"engine.{verb}.config", f"engine.{verb}"):
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError as exc:
            errors.append(f"{module}: {exc}")
            continue
        if cls is not None:
            return cls
        errors.append(f"{module} has no {name}")
    pytest.skip(f"the engine's {name} is not importable ({'; '.join(errors)})")


def _engine_field(owner: str, tp, default) -> dict:
    """One dataclass field as a schema entry without its doc."""
    if dataclasses.is_dataclass(tp):
        return {"type": "object", "fields": _engine_fields(tp)}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return {"type": type(args[0]).__name__, "default": default, "choices": list(args)}
    if origin is tuple and args and Ellipsis not in args:
        return {"type": f"{args[0].__name__}_list", "default": list(default), "length": len(args)}
    if origin in (tuple, list) and args:
        return {"type": f"{args[0].__name__}_list", "default": list(default)}
    if tp in (str, int, float, bool):
        return {"type": tp.__name__, "default": default}
    pytest.fail(f"{owner}: type {tp} has no job-schema type yet (extend addon/jobs/config.py and this test)")


def _engine_fields(cls: type) -> dict:
    """A dataclass's fields as schema entries (type, default, choices, length, fields; no docs)."""
    hints = typing.get_type_hints(cls)
    return {f.name: _engine_field(f"{cls.__name__}.{f.name}", hints[f.name],
                                  f.default if f.default is not dataclasses.MISSING else f.default_factory())
            for f in dataclasses.fields(cls)}


def _assert_same_fields(shipped: dict, engine: dict, where: str) -> None:
    assert sorted(shipped) == sorted(engine), f"{where}: field names differ; regenerate addon/jobs/job_schema.json"
    for key, expected in engine.items():
        for attr in ("type", "default", "choices", "length"):
            assert shipped[key].get(attr) == expected.get(attr), f"{where}.{key}: {attr}"
        if expected["type"] == "object":
            _assert_same_fields(shipped[key]["fields"], expected["fields"], f"{where}.{key}")


def test_track_config_validates_and_names_its_folders(tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    assert job_config.check_video_path(str(video)) == video
    assert job_config.track_dataset_dir(video, "") == tmp_path / "clip_dataset"
    cfg = job_config.track_config(video, tmp_path / "ds", job_config.DEMO_HEAD, device="CPU", resume=True,
                                  extra={"resolution": 256, "max_frames": 100})
    job_config.validate_config("track", cfg)
    with pytest.raises(SetupError, match="Pick a video"):
        job_config.check_video_path("")
    with pytest.raises(SetupError, match="resolution"):
        job_config.track_config(video, tmp_path / "ds", job_config.DEMO_HEAD, extra={"resolution": "big"})


@pytest.mark.parametrize("verb", ["train", "bake", "track"])
def test_schema_matches_the_engine_dataclasses(verb):
    cls = _engine_config_class(verb)
    _assert_same_fields(SCHEMA["jobs"][verb]["fields"], _engine_fields(cls), verb)
