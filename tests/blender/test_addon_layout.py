"""The Blender side's layout, read from the source (AST; no bpy needed, nothing is imported).

- no import cycle among the modules of ``addon/``, ``operators/`` and ``panels/`` (imports inside
  functions count too);
- no torch and no ``engine`` import there: the engine runs in its own interpreter;
- no ``importlib.import_module`` / ``__import__`` in ``addon/`` unless a comment on that line says
  why;
- each ``addon`` subpackage imports only the layers docs/ARCHITECTURE.md ("Blender side") allows,
  and the bpy-free modules stay bpy-free (also through what they import).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("addon", "operators", "panels")
BLENDER_MODULES = {"bpy", "gpu", "gpu_extras", "mathutils", "bpy_extras", "addon_utils", "bl_math"}

ALLOWED = {
    "addon.errors": set(),
    "addon.extension": set(),
    "addon.files": {"addon.errors"},
    "addon.rig": {"addon.errors", "addon.files"},
    "addon.splats": {"addon.errors", "addon.files", "addon.rig"},
    "addon.maps": {"addon.errors", "addon.files", "addon.rig", "addon.splats"},
    "addon.jobs": {"addon.errors"},
    "addon.ui": {"addon.extension", "addon.jobs"},
    "addon.demo": {"addon.errors", "addon.jobs", "addon.rig", "addon.splats"},
    "addon": {"addon.extension", "addon.jobs", "addon.ui", "addon.splats", "addon.maps"},
}
"""Layer (``addon`` = its ``__init__``) → the other layers it may import (docs/ARCHITECTURE.md)."""

BPY_FREE = ("addon.errors", "addon.extension", "addon.files", "addon.rig.flame_math",
            "addon.splats.colour", "addon.splats.geometry", "addon.splats.texels", "addon.splats.conventions", "addon.maps.backups", "addon.jobs.events", "addon.jobs.worker",
            "addon.jobs.config", "addon.jobs.install_engine", "addon.splats.shading")
"""Modules (or packages: every module in them) that must import no Blender module, directly or
through the add-on modules they import."""


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    tree: ast.Module
    lines: list[str]
    imports: list[tuple[str, int]] = field(default_factory=list)
    """(absolute dotted name as written/resolved, line) of every import, wherever it is."""


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _resolve(mod: Module, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names (relative to the repository root)."""
    if node.level == 0:
        return node.module or ""
    package = mod.name.split(".") if mod.is_package else mod.name.split(".")[:-1]
    base = package[:len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _load() -> dict[str, Module]:
    modules = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            name, is_package = _module_name(path)
            text = path.read_text(encoding="utf-8")
            modules[name] = Module(name, path, is_package, ast.parse(text, str(path)), text.splitlines())
    for mod in modules.values():
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.Import):
                mod.imports += [(a.name, node.lineno) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(mod, node)
                for a in node.names:  # "from . import x" imports the module x when there is one
                    sub = f"{target}.{a.name}" if target else a.name
                    mod.imports.append((sub if sub in modules else target, node.lineno))
    return modules


MODULES = _load()


def _edges(mod: Module) -> set[str]:
    """The add-on modules ``mod`` imports (the innermost known module of each dotted name)."""
    out = set()
    for name, _ in mod.imports:
        parts = name.split(".")
        for n in range(len(parts), 0, -1):
            candidate = ".".join(parts[:n])
            if candidate in MODULES and candidate != mod.name:
                out.add(candidate)
                break
    return out


def _layer(name: str) -> str:
    parts = name.split(".")
    if parts[0] != "addon":
        return parts[0]
    return ".".join(parts[:2]) if len(parts) > 1 else "addon"


def test_modules_found():
    for expected in ("addon.splats.runtime", "addon.rig.bindings", "addon.jobs.config", "addon.demo.__main__",
                     "operators.avatar", "panels.sidebar"):
        assert expected in MODULES, expected


def test_no_import_cycles():
    graph = {name: _edges(mod) for name, mod in MODULES.items()}
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("pkg", PACKAGES)
def test_no_torch_or_engine_imports(pkg):
    bad = [f"{mod.path.relative_to(REPO)}:{line}: {name}" for mod in MODULES.values()
           if mod.name.split(".")[0] == pkg for name, line in mod.imports
           if name.split(".")[0] in ("torch", "engine")]
    assert not bad, "the Blender side must not import torch or the engine:\n" + "\n".join(bad)


def _dynamic_imports(mod: Module) -> list[int]:
    lines = []
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in ("import_module", "__import__"):
                lines.append(node.lineno)
    return lines


def test_no_dynamic_imports_without_a_reason():
    bad = []
    for mod in MODULES.values():
        if mod.name.split(".")[0] != "addon":
            continue
        for line in _dynamic_imports(mod):
            text = mod.lines[line - 1]
            if "#" not in text or not text.split("#", 1)[1].strip():
                bad.append(f"{mod.path.relative_to(REPO)}:{line}: {text.strip()}")
    assert not bad, "importlib.import_module without a comment saying why:\n" + "\n".join(bad)


def test_layers_import_only_what_the_architecture_allows():
    bad = []
    for mod in MODULES.values():
        layer = _layer(mod.name)
        if layer not in ALLOWED:
            assert not layer.startswith("addon"), f"{mod.name}: layer {layer} is not in ALLOWED"
            continue
        for target in _edges(mod):
            other = _layer(target)
            if other != layer and other not in ALLOWED[layer]:
                bad.append(f"{mod.name} imports {target} ({layer} may import {sorted(ALLOWED[layer])})")
    assert not bad, "\n".join(bad)


def _bpy_free_modules() -> list[str]:
    return [name for name in MODULES if any(name == p or name.startswith(p + ".") for p in BPY_FREE)]


@pytest.mark.parametrize("name", _bpy_free_modules())
def test_bpy_free_modules_stay_bpy_free(name):
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        blender = sorted({n for n, _ in MODULES[current].imports if n.split(".")[0] in BLENDER_MODULES})
        assert not blender, f"{name} must not need Blender, but {current} imports {blender}"
        todo += _edges(MODULES[current])
