"""The job config schema: the engine's config dataclasses as JSON, for the Blender add-on.

The dataclasses (``TrainConfig``, ``BakeConfig``, …) are the one definition of every job key. The
add-on has no torch and cannot import them, so ``python -m engine schema --out
addon/jobs/job_schema.json`` writes this description, which the add-on ships and validates its
configs against before starting a job; a test fails when the shipped file and the dataclasses
drift apart.

Format (``fate-job-schema`` v1)::

    {"format": "fate-job-schema", "format_version": 1,
     "jobs": {<verb>: {"fields": {<name>: <field>, ...}}, ...}}

    <field> = {"type": "bool" | "int" | "float" | "str" | "float_list" | "object",
               "default": <JSON value>, "doc": <one line>,
               "choices": [...]            (Literal fields),
               "length": n                 (float_list: fixed-length tuples),
               "fields": {<name>: <field>} (object: a nested config)}
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from engine.bake.config import BakeConfig
from engine.evaluate.config import EvalConfig, RenderConfig
from engine.jobs.config import field_docs
from engine.track.config import TrackConfig
from engine.train.config import TrainConfig

SCHEMA_FORMAT = "fate-job-schema"
SCHEMA_FORMAT_VERSION = 1
ADDON_JOBS: dict[str, type] = {"train": TrainConfig, "bake": BakeConfig, "render": RenderConfig,
                               "eval": EvalConfig, "track": TrackConfig}
"""The verbs whose configs the Blender add-on writes, and their config classes."""


def field_schema(hint: Any, default: Any, doc: str) -> dict:
    """The schema entry of one config field.

    Raises:
        TypeError: a field type the schema cannot describe (add it here first).
    """
    if dataclasses.is_dataclass(hint):
        return {"type": "object", "doc": doc, "fields": config_fields(hint)}
    entry: dict[str, Any]
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        choices = list(typing.get_args(hint))
        kinds = {type(c) for c in choices}
        if kinds != {str}:
            raise TypeError(f"only string Literal fields are supported, found {hint}")
        entry = {"type": "str", "choices": choices}
    elif origin is tuple:
        args = typing.get_args(hint)
        if not args or any(a is not float for a in args):
            raise TypeError(f"only tuple[float, ...] fields of fixed length are supported, found {hint}")
        entry = {"type": "float_list", "length": len(args)}
        default = [float(x) for x in default]
    elif hint in (bool, int, float, str):
        entry = {"type": hint.__name__}
    else:
        raise TypeError(f"config field type {hint!r} has no schema type")
    entry["default"] = default
    entry["doc"] = doc
    return entry


def config_fields(cls: type) -> dict[str, dict]:
    """Schema entries of every field of a config dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        out[f.name] = field_schema(hints[f.name], default, " ".join(docs.get(f.name, "").split()))
    return out


def job_schema(jobs: dict[str, type] | None = None) -> dict:
    """The schema of the given verb → config classes (default: those the add-on writes)."""
    jobs = ADDON_JOBS if jobs is None else jobs
    return {"format": SCHEMA_FORMAT, "format_version": SCHEMA_FORMAT_VERSION,
            "jobs": {v: {"fields": config_fields(cls)} for v, cls in jobs.items()}}
