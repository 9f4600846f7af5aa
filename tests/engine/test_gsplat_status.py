"""How gsplat is installed, told without importing it (issue 21): prebuilt wheel, JIT build with
or without nvcc and a compiler, not installed."""

from __future__ import annotations

import importlib.machinery

import pytest

from engine.raster import gsplat_status as gs


@pytest.fixture
def fake_gsplat(tmp_path, monkeypatch):
    pkg = tmp_path / "gsplat"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")

    def find_spec(name, *a, **k):
        if name == "gsplat":
            return _spec(pkg)
        return None

    monkeypatch.setattr(gs.importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(gs, "_version", lambda: "1.5.3")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    return pkg


def _spec(pkg):
    spec = importlib.machinery.ModuleSpec("gsplat", None, is_package=True)
    spec.submodule_search_locations = [str(pkg)]
    return spec


def test_prebuilt_wheel_needs_no_compiler(fake_gsplat, monkeypatch):
    (fake_gsplat / "csrc.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    monkeypatch.setattr(gs, "find_nvcc", lambda: None)
    s = gs.gsplat_status()
    assert (s.installed, s.kind, s.usable, s.problem) == (True, "prebuilt", True, None)


def test_jit_without_nvcc_says_what_is_missing(fake_gsplat, monkeypatch):
    monkeypatch.setattr(gs, "find_nvcc", lambda: None)
    monkeypatch.setattr(gs, "find_cxx", lambda: "/usr/bin/c++")
    s = gs.gsplat_status()
    assert (s.kind, s.usable) == ("jit", False)
    assert "nvcc" in s.problem and "prebuilt" in s.problem and "C++" not in s.problem


def test_jit_with_toolchain_or_a_finished_build_is_usable(fake_gsplat, monkeypatch, tmp_path):
    monkeypatch.setattr(gs, "find_nvcc", lambda: "/usr/local/cuda/bin/nvcc")
    monkeypatch.setattr(gs, "find_cxx", lambda: "/usr/bin/c++")
    assert gs.gsplat_status().usable
    monkeypatch.setattr(gs, "find_nvcc", lambda: None)
    monkeypatch.setattr(gs, "find_cxx", lambda: None)
    built = tmp_path / "ext" / "py311_cu124" / "gsplat_cuda"
    built.mkdir(parents=True)
    (built / "gsplat_cuda.so").write_bytes(b"")
    s = gs.gsplat_status()
    assert (s.usable, s.jit_built) == (True, True)


def test_not_installed(monkeypatch):
    monkeypatch.setattr(gs.importlib.util, "find_spec", lambda name, *a, **k: None)
    s = gs.gsplat_status()
    assert (s.installed, s.usable) == (False, False) and "not installed" in s.problem
