"""The engine's layout rules (docs/ARCHITECTURE.md): no import cycles, no bpy, a torch-free CLI.

The import graph is read from the source (every ``import`` statement, function-level ones
included), so a cycle that only shows when a lazy import runs is found too.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENGINE = REPO / "engine"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(ENGINE.rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def _imports(path: Path, name: str, mods: dict[str, Path]) -> set[str]:
    """Engine modules imported anywhere in ``path`` (parents of the module itself excluded)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for t in targets:
            while t and t not in mods:
                t = t.rpartition(".")[0]
            if t and t != name and not name.startswith(t + "."):
                found.add(t)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_engine_has_no_import_cycles():
    mods = _modules()
    graph = {m: _imports(p, m, mods) for m, p in mods.items()}
    assert _cycles(graph) == []


OPEN = ("engine.errors", "engine.device", "engine.io.atomic", "engine.jobs.config")
"""Modules every room may import (errors, the device choice, atomic writes, config ↔ JSON)."""
_LOW = ("engine.geometry", "engine.io")
ALLOWED: dict[str, tuple[str, ...]] = {
    "engine.geometry": (),
    "engine.io": (),
    "engine.image_ops": (),
    "engine.vgg": (),
    "engine.data": _LOW,
    "engine.raster": ("engine.geometry",),
    "engine.model": (*_LOW, "engine.data", "engine.raster"),
    "engine.maps": (*_LOW, "engine.model"),
    "engine.map_keys": (*_LOW, "engine.model", "engine.maps"),
    "engine.avatar_folder": (*_LOW, "engine.data", "engine.model"),
    "engine.train": (*_LOW, "engine.data", "engine.raster", "engine.model", "engine.avatar_folder",
                     "engine.image_ops", "engine.vgg"),
    "engine.bake": (*_LOW, "engine.data", "engine.raster", "engine.model", "engine.avatar_folder", "engine.maps",
                    "engine.map_keys", "engine.train.losses"),
    "engine.evaluate": (*_LOW, "engine.data", "engine.raster", "engine.model", "engine.avatar_folder",
                        "engine.maps", "engine.map_keys", "engine.image_ops", "engine.vgg"),
    "engine.track": (*_LOW, "engine.data", "engine.raster", "engine.model", "engine.avatar_folder", "engine.train",
                     "engine.image_ops", "engine.vgg"),
}
"""Room → what it may import besides itself and OPEN (docs/ARCHITECTURE.md). ``engine.jobs``,
``engine.demo`` and ``engine.bench`` are the top and may import any room."""


def _room(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:2])


def test_rooms_import_only_what_the_architecture_allows():
    mods = _modules()
    bad = []
    for m, p in mods.items():
        allowed = ALLOWED.get(_room(m))
        if allowed is None:
            continue
        for t in _imports(p, m, mods):
            if _room(t) == _room(m) or t.startswith(OPEN) or t.startswith(allowed):
                continue
            bad.append(f"{m} -> {t}")
    assert bad == [], "update docs/ARCHITECTURE.md and ALLOWED together, or move the code"


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_engine_never_imports_bpy():
    offenders = []
    for path in ENGINE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] in ("bpy", "mathutils", "gpu", "addon_utils") for n in names):
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []


def test_cli_and_configs_start_without_torch():
    """The worker's first event must not wait for torch: the verb table, every job config and the
    schema import without it."""
    code = ("import sys, engine.jobs.cli, engine.jobs.schema, engine.train.config, engine.bake.config, "
            "engine.evaluate.config, engine.track.config; sys.exit(1 if 'torch' in sys.modules else 0)")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env).returncode == 0


def test_test_files_have_unique_basenames():
    """pytest imports test modules of folders without __init__.py by their basename: two files of
    the same name in tests/engine and tests/blender stop the whole run at collection."""
    names = [p.name for p in (REPO / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
