"""Helpers the Blender tests share (a module of its own: ``conftest`` is ambiguous when the
engine's tests are collected in the same run): the interpreter that runs the engine, and the
engine's render of an avatar's maps."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENGINE_PYTHON_ENV = "FATE_TEST_ENGINE_PYTHON"
"""Overrides the interpreter the tests run the engine with (it needs torch)."""


def _has_torch(python: str) -> bool:
    try:
        return subprocess.run([python, "-c", "import torch"], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@functools.cache
def engine_python() -> str | None:
    """The interpreter that runs the engine (``python -m engine``) for the Blender tests, or None.

    As in an artist's Blender, the engine runs in its own interpreter (the Worker Python):
    ``$FATE_TEST_ENGINE_PYTHON`` when set (None if it has no torch), else this one when it has
    torch (bpy 5.0, Python 3.11), else the repository's ``.venv`` (Python 3.11 with torch; bpy 5.3
    runs on Python 3.13, where torch has no CPU build).
    """
    override = os.environ.get(ENGINE_PYTHON_ENV, "")
    if override:
        return override if Path(override).is_file() and _has_torch(override) else None
    if _has_torch_here():
        return sys.executable
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.is_file() and _has_torch(str(venv)) else None


def _has_torch_here() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


NO_ENGINE_PYTHON = (f"no interpreter with torch for the engine (this one has none; set "
                    f"{ENGINE_PYTHON_ENV} or create .venv with .ci/setup)")


def engine_env() -> dict:
    """Environment for engine subprocesses: the repository on PYTHONPATH, one torch thread."""
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def engine_render(avatar: Path, out: Path, background=(1.0, 1.0, 1.0)) -> list[Path]:
    """The engine's render of an avatar's baked maps (``python -m engine render --from_maps``) on
    every tracked frame, with :func:`engine_python`; returns the PNGs in frame order."""
    python = engine_python()
    if python is None:
        pytest.skip(NO_ENGINE_PYTHON)
    subprocess.run([python, "-m", "engine", "render", "--avatar", str(avatar), "--out", str(out),
                    "--split", "all", "--from_maps", "true", "--device", "cpu",
                    "--background", ",".join(str(float(c)) for c in background), "--events", "none"],
                   env=engine_env(), check=True, timeout=300, capture_output=True)
    return sorted(Path(out).glob("*.png"))


def set_image_pixels(img, data) -> None:
    """Overwrites a Blender image's RGB(A) channels (``data`` [H, W, C], bottom row first)."""
    import numpy as np

    res_x, res_y = img.size
    rgba = np.ones((res_y, res_x, 4), np.float32)
    rgba[..., :data.shape[-1]] = data
    img.pixels.foreach_set(rgba.reshape(-1))
    img.update()
