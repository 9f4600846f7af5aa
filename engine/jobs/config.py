"""Typed job configurations: dataclasses ↔ JSON ↔ command-line flags.

A config is a ``@dataclass`` whose fields have defaults and a docstring line under each field
(the CLI help). JSON loading rejects unknown keys; every CLI flag is a config field
(``--steps 500``, nested ``--densify.strategy threshold``).

Values are checked against the field types before the dataclass is built (:func:`check_value`):
``bool`` fields take JSON booleans only (``"false"`` is refused: it is a non-empty string), ``int``
fields integers (``5.7`` is refused; ``5.0`` is 5), ``float`` fields finite numbers, ``Literal``
fields one of their choices, ``tuple[float, ...]`` fields that many finite numbers. Each config's
``__post_init__`` then checks ranges (:func:`check_ranges`). Errors are :class:`ConfigError`
naming the file and the key.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import math
import typing
from pathlib import Path
from typing import Any, TypeVar

from engine.errors import ConfigError

T = TypeVar("T")


def field_docs(cls: type) -> dict[str, str]:
    """The string literal under each field of a dataclass (its CLI help)."""
    try:
        tree = ast.parse(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    docs: dict[str, str] = {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant):
                docs[node.target.id] = str(nxt.value.value).strip()
    return docs


def to_dict(cfg: Any) -> dict:
    """A dataclass config as plain JSON-ready data."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Builds ``cls`` from a dict, recursing into nested dataclass fields.

    Raises:
        ConfigError: unknown keys or values of the wrong type, naming ``where`` and the key.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object, found {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            value = from_dict(hint, value, f"{where}.{key}")
        else:
            value = check_value(hint, value, where, key)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    except ConfigError as exc:
        if str(exc).startswith(where):
            raise
        raise ConfigError(f"{where}: {exc}") from exc


def check_value(hint: Any, value: Any, where: str, key: str) -> Any:
    """``value`` checked against a field type (module doc) and normalised (int for integral
    floats, tuple for lists).

    Raises:
        ConfigError: naming ``where`` and ``key``, the expected type and the value found.
    """
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{where}: {key} must be {expected}, found {value!r} ({type(value).__name__})")

    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        choices = list(typing.get_args(hint))
        if not any(type(value) is type(c) and value == c for c in choices):
            raise ConfigError(f"{where}: {key} must be one of {choices}, found {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise bad("true or false (a JSON boolean)")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("an integer")
        if isinstance(value, float):
            if not math.isfinite(value) or value != int(value):
                raise bad("an integer")
            value = int(value)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad("a finite number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise bad(f"a list of {len(args)} numbers")
        return tuple(check_value(a, v, where, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    return value


def require(cfg: Any, name: str, job: str) -> str:
    """The value of a path field a job cannot run without.

    Raises:
        ConfigError: the field is empty, naming it and the job.
    """
    value = getattr(cfg, name)
    if not value:
        doc = field_docs(type(cfg)).get(name, "")
        raise ConfigError(f"{job} needs '{name}'" + (f" ({doc})" if doc else ""))
    return value


def check_ranges(cfg: Any, *, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = (),
                 at_least_one: tuple[str, ...] = (), unit_interval: tuple[str, ...] = ()) -> None:
    """Range checks for a config's ``__post_init__``: each name lists fields (or tuple fields,
    checked element-wise) that must be > 0, >= 0, >= 1 or in [0, 1].

    Raises:
        ConfigError: naming the key, the rule and the value found.
    """
    rules = ((positive, lambda v: v > 0, "> 0"), (non_negative, lambda v: v >= 0, ">= 0"),
             (at_least_one, lambda v: v >= 1, ">= 1"), (unit_interval, lambda v: 0 <= v <= 1, "in [0, 1]"))
    for names, ok, text in rules:
        for name in names:
            value = getattr(cfg, name)
            values = value if isinstance(value, (tuple, list)) else (value,)
            for v in values:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not ok(v):
                    raise ConfigError(f"{name} must be {text}, found {value!r}")


def load_json(cls: type[T], path: Path) -> T:
    """Reads a config JSON file (ConfigError naming the file on bad JSON or keys)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON ({exc})") from exc
    return from_dict(cls, data, str(path))


def add_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """Adds one ``--flag`` per (nested) field of ``cls`` (``--from_maps`` and ``--from-maps`` both
    work); defaults are None (= not given)."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hint):
            add_arguments(parser, hint, prefix=f"{name}.")
            continue
        choices = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None
        flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        parser.add_argument(*flags, dest=name, default=None, type=_parser_for(hint), choices=choices,
                            metavar=f.name.upper() if choices is None else None, help=docs.get(f.name, ""))


def apply_arguments(cfg: T, args: argparse.Namespace) -> T:
    """Returns ``cfg`` with every flag that was given applied (nested via dotted names)."""
    data = to_dict(cfg)
    for key, value in vars(args).items():
        if value is None or key.startswith("_"):
            continue
        parts = key.split(".")
        node = data
        for part in parts[:-1]:
            if part not in node:
                break
            node = node[part]
        else:
            if parts[-1] in node:
                node[parts[-1]] = value
    return from_dict(type(cfg), data)


def _parser_for(hint: Any):
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin is typing.Union and len(args) == 1:
        return _parser_for(args[0])
    if hint is bool:
        return _parse_bool
    if hint in (int, float, str):
        return hint
    if origin is tuple:
        return lambda s: tuple(float(x) for x in s.split(","))
    return str


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, found {text!r}")
