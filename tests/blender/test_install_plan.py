"""Install Engine's plan (issue 21): gsplat's prebuilt wheel for the installed torch/CUDA pair,
the JIT-built PyPI package as the fallback, nothing for CPU-only torch; per platform."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installer():
    spec = importlib.util.spec_from_file_location("fate_install_engine", REPO / "addon" / "jobs" / "install_engine.py",
                                                  submodule_search_locations=None)
    sys.path.insert(0, str(REPO / "addon" / "jobs"))  # the script imports its sibling events.py
    try:
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(REPO / "addon" / "jobs"))
    return mod


@pytest.mark.parametrize("torch_version, cuda, index", [
    ("2.4.1+cu124", "12.4", "https://docs.gsplat.studio/whl/pt24cu124"),
    ("2.11.0", "13.0", "https://docs.gsplat.studio/whl/pt211cu130"),
    ("2.13.0+cpu", None, None),
    ("2.13.0+cpu", "", None),
])
def test_gsplat_wheel_index(installer, torch_version, cuda, index):
    assert installer.gsplat_wheel_index(torch_version, cuda) == index


def test_gsplat_commands_try_the_prebuilt_wheel_first(installer):
    cmds = installer.gsplat_commands("/v/bin/python", "2.4.1+cu124", "12.4")
    assert cmds[0][:5] == ["/v/bin/python", "-m", "pip", "install", "gsplat"]
    assert "--index-url" in cmds[0] and "https://docs.gsplat.studio/whl/pt24cu124" in cmds[0]
    assert cmds[1] == ["/v/bin/python", "-m", "pip", "install", "gsplat"]  # PyPI: JIT build on first use
    assert installer.gsplat_commands("/v/bin/python", "2.13.0+cpu", "") == []


@pytest.mark.parametrize("platform, device, torch_index, has_gsplat, vpy", [
    ("linux", "cuda", None, True, "/env/bin/python"),            # PyPI's Linux torch carries CUDA
    ("linux", "auto", None, True, "/env/bin/python"),
    ("linux", "cpu", "https://download.pytorch.org/whl/cpu", False, "/env/bin/python"),
    ("win32", "cuda", "https://download.pytorch.org/whl/cu128", True, "/env\\Scripts\\python.exe"),
    ("win32", "cpu", "https://download.pytorch.org/whl/cpu", False, "/env\\Scripts\\python.exe"),
    ("darwin", "auto", None, False, "/env/bin/python"),           # no CUDA on macOS
])
def test_install_plan_per_platform(installer, platform, device, torch_index, has_gsplat, vpy):
    steps = installer.plan("/env", device, "/blender/python", platform=platform)
    names = [name for name, _ in steps]
    torch_cmd = dict(steps)["install torch (large download)"]
    assert torch_cmd[0] == vpy
    if torch_index is None:
        assert "--index-url" not in torch_cmd
    else:
        assert torch_cmd[torch_cmd.index("--index-url") + 1] == torch_index
    gsplat = [cmd for _, cmd in steps if isinstance(cmd, installer.GsplatStep)]
    assert bool(gsplat) == has_gsplat
    assert names[0] == "create the virtual environment" and names[-1] == "check the installation"
    assert all("gsplat" not in " ".join(cmd) for _, cmd in steps if isinstance(cmd, list))
