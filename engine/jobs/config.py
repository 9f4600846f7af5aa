"""Typed job configurations: dataclasses ↔ JSON ↔ command-line flags.

A config is a ``@dataclass`` whose fields have defaults and a docstring line under each field
(the CLI help). JSON loading rejects unknown keys; every CLI flag is a config field
(``--steps 500``, nested ``--densify.strategy threshold``).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
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
        elif isinstance(value, list) and typing.get_origin(hint) is tuple:
            value = tuple(value)
        elif typing.get_origin(hint) is typing.Literal and value not in typing.get_args(hint):
            raise ConfigError(f"{where}: {key} must be one of {list(typing.get_args(hint))}, found {value!r}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


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
