"""Loads the repository root as the add-on package (as Blender would), without installing it.

The root ``__init__.py`` uses relative imports (``from . import addon, operators, panels``), so
the repo is imported under a package name of its own, ``fate_avatar_dev``; its ``addon``,
``operators`` and ``panels`` are then ``fate_avatar_dev.addon`` etc. Tests that register the
add-on in-process use this package's modules consistently (not the top-level ``addon``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "fate_avatar_dev"


def load_root_package():
    """The repo root imported as ``fate_avatar_dev`` (cached in sys.modules)."""
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    spec = importlib.util.spec_from_file_location(PACKAGE, REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    spec.loader.exec_module(module)
    return module


def submodule(name: str):
    """``fate_avatar_dev.<name>``, e.g. ``submodule("addon.jobs.runtime")``."""
    load_root_package()
    return importlib.import_module(f"{PACKAGE}.{name}")


try:
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

if pytest is not None:
    @pytest.fixture(scope="module")
    def registered():
        """The add-on registered in-process (the repo imported as ``fate_avatar_dev``); yields the
        root package and unregisters it afterwards. Import this fixture into a test module."""
        root = load_root_package()
        root.register()
        yield root
        root.unregister()
