"""Whether gsplat's CUDA kernels can run here, told without importing gsplat.

gsplat ships two ways: prebuilt wheels for a torch/CUDA pair from its own index
(``https://docs.gsplat.studio/whl/pt<torch>cu<cuda>``), which carry the compiled extension
``gsplat/csrc*.so`` (``.pyd`` on Windows), and the PyPI package, which compiles its kernels on
first use (JIT) and for that needs the CUDA toolkit's ``nvcc`` and a C++ compiler — what artists'
machines rarely have. Importing gsplat starts that build, so this module only looks at files.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class GsplatStatus:
    """How gsplat is installed and whether its kernels can load.

    Attributes:
        installed: the package is importable.
        version: its version (from the installed metadata), or None.
        kind: "prebuilt" (compiled extension inside the package), "jit" (kernels compiled on first
            use) or None (not installed).
        jit_built: a JIT build is already in torch's extension cache.
        nvcc: path of the CUDA compiler, or None.
        cxx: path of a C++ compiler (cl.exe on Windows), or None.
        usable: the kernels can load (prebuilt, already built, or buildable here).
        problem: one plain sentence when not usable (what is missing and what to do), else None.
    """

    installed: bool
    version: str | None
    kind: str | None
    jit_built: bool
    nvcc: str | None
    cxx: str | None
    usable: bool
    problem: str | None

    def as_dict(self) -> dict:
        return asdict(self)


def _package_dir() -> Path | None:
    spec = importlib.util.find_spec("gsplat")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _version() -> str | None:
    try:
        from importlib.metadata import version
        return version("gsplat")
    except Exception:  # noqa: BLE001 - metadata missing or unreadable
        return None


def find_nvcc() -> str | None:
    """nvcc from CUDA_HOME / CUDA_PATH, else on PATH."""
    exe = "nvcc.exe" if sys.platform == "win32" else "nvcc"
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home and Path(home, "bin", exe).is_file():
            return str(Path(home, "bin", exe))
    return shutil.which("nvcc")


def find_cxx() -> str | None:
    """The C++ compiler torch's extension builder would use (cl on Windows; $CXX, c++, g++, clang++)."""
    if sys.platform == "win32":
        return shutil.which("cl")
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _jit_built() -> bool:
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "torch_extensions")
    return bool(glob.glob(os.path.join(root, "**", "gsplat_cuda", "gsplat_cuda.*"), recursive=True))


def gsplat_status() -> GsplatStatus:
    """The :class:`GsplatStatus` of this interpreter (no gsplat import, no CUDA call)."""
    pkg = _package_dir()
    nvcc, cxx = find_nvcc(), find_cxx()
    if pkg is None:
        return GsplatStatus(False, None, None, False, nvcc, cxx, False,
                            "gsplat is not installed: training on a GPU uses the slower PyTorch rasteriser; "
                            "Install Engine (or pip install gsplat from its wheel index) adds it")
    prebuilt = bool(glob.glob(str(pkg / "csrc*.so")) + glob.glob(str(pkg / "csrc*.pyd")))
    if prebuilt:
        return GsplatStatus(True, _version(), "prebuilt", False, nvcc, cxx, True, None)
    built = _jit_built()
    missing = [what for what, path in (("the CUDA toolkit's nvcc", nvcc), ("a C++ compiler", cxx)) if path is None]
    if built or not missing:
        return GsplatStatus(True, _version(), "jit", built, nvcc, cxx, True, None)
    return GsplatStatus(True, _version(), "jit", False, nvcc, cxx, False,
                        f"gsplat from PyPI compiles its CUDA kernels on first use and needs {' and '.join(missing)}, "
                        "which are not found: reinstall the engine (Install Engine picks gsplat's prebuilt wheel "
                        "for your torch/CUDA) or install the CUDA toolkit matching torch's CUDA version; until "
                        "then the engine uses the PyTorch rasteriser")
