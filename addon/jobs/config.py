"""Job configurations the add-on sends to the engine, and the checks done before starting one.

Standard library only. The keys are the engine's config fields; the engine's dataclass configs
are the source of truth and ship to the add-on as ``job_schema.json`` next to this module
(``python -m engine schema`` writes it; format below). :func:`validate_config` checks every
config the add-on builds against it, so a key or type that drifted fails here, before a job
starts, with the verb, the key and what is wrong.

``job_schema.json``::

    {"format": "fate-job-schema", "format_version": 1,
     "jobs": {"<verb>": {"fields": {"<key>": FIELD, ...}}, ...}}

    FIELD = {"type": "str" | "int" | "float" | "bool" | "<elem>_list" | "object",
             "default": ..., "doc": "...",
             "choices": [...],       # optional: the allowed values
             "length": n,            # optional, lists: the required length
             "fields": {...}}        # "object" only: its FIELDs (no default)

An ``int`` must be a JSON integer, a ``float`` any JSON number, a ``bool`` ``true``/``false``.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

from ..errors import SetupError

__all__ = ["DEMO_HEAD", "resolve_head_model", "check_dataset_dir", "check_avatar_dir",
           "train_config", "bake_config", "track_config", "check_video_path", "track_dataset_dir",
           "FLAME_DOWNLOAD_URL", "SCHEMA_PATH", "load_schema",
           "validate_config"]

DEMO_HEAD = "demo"
"""``head_model`` value of the engine's procedural demo head (not FLAME), always available."""
FLAME_DOWNLOAD_URL = "https://flame.is.tue.mpg.de"
SCHEMA_PATH = Path(__file__).with_name("job_schema.json")
"""The engine's job config schema, shipped with the add-on (see the module doc)."""
SCHEMA_FORMAT, SCHEMA_VERSION = "fate-job-schema", 1
_MODEL_PATTERNS = ("generic_model.pkl", "flame2023*.pkl", "FLAME*.pkl", "*.npz")


def resolve_head_model(flame_dir: str) -> str:
    """The engine's ``head_model`` for the FLAME folder set in the preferences.

    Args:
        flame_dir: folder with the FLAME model (``generic_model.pkl``, ``flame2023*.pkl`` or an
            ``.npz``) and ``head_template_mesh.obj``; empty = the demo head.
    Returns:
        ``"demo"`` or the folder path.
    Raises:
        SetupError: the folder is missing, or holds no model or no texture-space .obj; the
            message says what to put where.
    """
    if not flame_dir or not flame_dir.strip():
        return DEMO_HEAD
    folder = Path(os.path.expanduser(flame_dir.strip()))
    if not folder.is_dir():
        raise SetupError(f"FLAME folder '{folder}' does not exist. Download FLAME 2020 or 2023 from "
                         f"{FLAME_DOWNLOAD_URL} (free registration), unpack it and pick that folder in "
                         "Preferences > Add-ons > FATE Avatar > FLAME folder — or clear the field to use "
                         "the demo head.")
    models = [p for pat in _MODEL_PATTERNS for p in glob.glob(str(folder / pat))]
    if not models:
        raise SetupError(f"FLAME folder '{folder}' has no model: expected generic_model.pkl (FLAME 2020), "
                         f"flame2023*.pkl or a FLAME .npz. Download it from {FLAME_DOWNLOAD_URL} and put it "
                         "there, or clear the field to use the demo head.")
    if not (folder / "head_template_mesh.obj").is_file():
        raise SetupError(f"FLAME folder '{folder}' has no head_template_mesh.obj (FLAME texture space, "
                         f"from the FLAME texture-space download at {FLAME_DOWNLOAD_URL}): put it next to "
                         "the model.")
    return str(folder)


def check_dataset_dir(dataset_dir: str) -> Path:
    """Checks that a folder looks like a tracked dataset (INSTA or IMavatar layout).

    Raises:
        SetupError: not set, missing, or neither transforms_train.json nor flame_params.json inside.
    """
    if not dataset_dir:
        raise SetupError("Set the dataset folder first (FATE sidebar > 1. Dataset): a tracked video in "
                         "the INSTA layout (transforms_train.json, images/, flame/) or IMavatar layout "
                         "(flame_params.json).")
    folder = Path(os.path.expanduser(dataset_dir))
    if not folder.is_dir():
        raise SetupError(f"Dataset folder '{folder}' does not exist.")
    if not ((folder / "transforms_train.json").is_file() or (folder / "flame_params.json").is_file()
            or any(folder.glob("*/flame_params.json"))):
        raise SetupError(f"Dataset folder '{folder}' has neither transforms_train.json (INSTA layout) nor "
                         "flame_params.json (IMavatar layout); see docs/FORMATS.md.")
    return folder


def check_avatar_dir(avatar_dir: str, *, must_exist: bool) -> Path:
    """Checks the avatar (output) folder.

    Args:
        avatar_dir: the folder.
        must_exist: it must hold a trained avatar (avatar.json) — for bake and import.
    Raises:
        SetupError: not set, or (``must_exist``) no avatar.json inside.
    """
    if not avatar_dir:
        raise SetupError("Set the avatar folder first (FATE sidebar > 1. Dataset > Avatar folder).")
    folder = Path(os.path.expanduser(avatar_dir))
    if must_exist and not (folder / "avatar.json").is_file():
        raise SetupError(f"'{folder}' holds no trained avatar (no avatar.json): train one first.")
    return folder


def train_config(dataset: str | Path, output: str | Path, head_model: str, *, device: str = "auto",
                 steps: int | None = None, resume: bool = False, extra: dict | None = None) -> dict:
    """The ``train`` job configuration (engine ``TrainConfig`` keys).

    Args:
        dataset: tracked dataset folder.
        output: avatar folder to write.
        head_model: ``"demo"`` or a FLAME folder (:func:`resolve_head_model`).
        device: "auto", "cuda" or "cpu".
        steps: optimisation steps (None = the engine's default).
        resume: continue from ``output/checkpoints/last.*``.
        extra: more TrainConfig fields, passed through.
    Raises:
        SetupError: a key or value does not fit the engine's schema (:func:`validate_config`).
    """
    cfg = {"dataset": str(dataset), "output": str(output), "head_model": head_model,
           "device": device.lower(), "resume": bool(resume)}
    if steps:
        cfg["steps"] = int(steps)
    cfg.update(extra or {})
    validate_config("train", cfg)
    return cfg


def check_video_path(video_path: str) -> Path:
    """The video file (or frames folder) for Track.

    Raises:
        SetupError: not set or missing.
    """
    if not video_path:
        raise SetupError("Pick a video first (FATE sidebar > 0. Video).")
    path = Path(os.path.expanduser(video_path))
    if not path.exists():
        raise SetupError(f"Video '{path}' does not exist.")
    return path


def track_dataset_dir(video: Path, dataset_dir: str) -> Path:
    """Where Track writes: the dataset folder if one is set, else ``<video name>_dataset`` beside it."""
    if dataset_dir:
        return Path(os.path.expanduser(dataset_dir))
    return video.parent / f"{video.stem}_dataset"


def track_config(video: str | Path, output: str | Path, head_model: str, *, device: str = "auto",
                 resume: bool = False, extra: dict | None = None) -> dict:
    """The ``track`` job configuration (engine ``TrackConfig`` keys).

    Raises:
        SetupError: a key or value does not fit the engine's schema (:func:`validate_config`).
    """
    cfg = {"video": str(video), "output": str(output), "head_model": head_model, "device": device.lower(),
           "resume": bool(resume)}
    cfg.update(extra or {})
    validate_config("track", cfg)
    return cfg


def bake_config(avatar: str | Path, *, device: str = "auto", resume: bool = False,
                resolution: int | None = None, steps: int | None = None, appearance_only: bool = False,
                extra: dict | None = None) -> dict:
    """The ``bake`` job configuration (engine ``BakeConfig`` keys).

    Args:
        avatar: trained avatar folder; the maps go to ``avatar/maps``.
        device: "auto", "cuda" or "cpu".
        resume: continue from ``avatar/maps_checkpoint.safetensors``.
        resolution: map size in texels (None = the engine's default, 512).
        steps: BakeNet image-objective steps (None = the engine's default).
        appearance_only: bake colour + opacity only (FATE supp. §9).
        extra: more BakeConfig fields, passed through.
    Raises:
        SetupError: a key or value does not fit the engine's schema (:func:`validate_config`).
    """
    cfg = {"avatar": str(avatar), "device": device.lower(), "resume": bool(resume),
           "appearance_only": bool(appearance_only)}
    if resolution:
        cfg["resolution"] = int(resolution)
    if steps is not None:
        cfg["steps"] = int(steps)
    cfg.update(extra or {})
    validate_config("bake", cfg)
    return cfg


def load_schema(path: Path = SCHEMA_PATH) -> dict:
    """The job config schema (see the module doc).

    Raises:
        SetupError: the file is missing, not JSON, or not a ``fate-job-schema`` version 1.
    """
    try:
        schema = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SetupError(f"cannot read the job schema {path} ({exc}): reinstall the extension") from exc
    found = (schema.get("format"), schema.get("format_version")) if isinstance(schema, dict) else None
    if found != (SCHEMA_FORMAT, SCHEMA_VERSION) or not isinstance(schema.get("jobs"), dict):
        raise SetupError(f"{path}: expected a {SCHEMA_FORMAT!r} version {SCHEMA_VERSION} object with "
                         f"\"jobs\", found (format, version) {found}: reinstall the extension")
    return schema


def validate_config(verb: str, config: dict, schema: dict | None = None) -> None:
    """Checks a job config against the engine's schema before the job starts.

    Args:
        verb: the job ("train", "bake", ...).
        config: the config the add-on will send; keys may be a subset of the schema's.
        schema: the schema (default: :func:`load_schema`).
    Raises:
        SetupError: no schema for ``verb``, an unknown key, a value of the wrong type, a value
            not in the field's choices, or a list of the wrong length; the message names the
            verb and the key (``densify.strategy`` inside objects).
    """
    schema = load_schema() if schema is None else schema
    job = schema["jobs"].get(verb)
    if job is None:
        raise SetupError(f"{verb} job config: the job schema has no job {verb!r} "
                         f"(it knows {sorted(schema['jobs'])})")
    _check_fields(verb, "", job["fields"], config)


def _check_fields(verb: str, prefix: str, fields: dict, config: dict) -> None:
    for key, value in config.items():
        where = f"{verb} job config: '{prefix}{key}'"
        spec = fields.get(key)
        if spec is None:
            raise SetupError(f"{verb} job config: unknown key '{prefix}{key}' (the engine's "
                             f"{prefix[:-1] or verb} fields are {sorted(fields)})")
        if spec["type"] == "object":
            if not isinstance(value, dict):
                raise SetupError(f"{where} must be an object, found {_describe(value)}")
            _check_fields(verb, f"{prefix}{key}.", spec["fields"], value)
            continue
        problem = _value_problem(spec, value)
        if problem:
            raise SetupError(f"{where} {problem}")


_SCALARS = {
    "str": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
}


def _value_problem(spec: dict, value) -> str | None:
    """What is wrong with ``value`` for a non-object field ``spec``, or None."""
    kind = spec["type"]
    if kind.endswith("_list"):
        elem = kind[:-len("_list")]
        if not isinstance(value, (list, tuple)) or not all(_is(elem, v) for v in value):
            return f"must be a list of {elem}, found {_describe(value)}"
        if "length" in spec and len(value) != spec["length"]:
            return f"must have {spec['length']} values, found {len(value)}"
    elif not _is(kind, value):
        return f"must be {'a' if kind != 'int' else 'an'} {kind}, found {_describe(value)}"
    if "choices" in spec and value not in spec["choices"]:
        return f"must be one of {spec['choices']}, found {value!r}"
    return None


def _is(kind: str, value) -> bool:
    if kind not in _SCALARS:
        raise SetupError(f"the job schema uses an unknown type {kind!r}: update the add-on")
    return _SCALARS[kind](value)


def _describe(value) -> str:
    return f"{type(value).__name__} {value!r}"
