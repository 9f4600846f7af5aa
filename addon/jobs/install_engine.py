"""Installs the engine's Python packages into a new virtual environment (run as a script).

    python install_engine.py --target DIR [--device auto|cuda|cpu] [--dry-run]

Run by the "Install Engine" operator with Blender's own Python (``sys.executable``) as a worker
job: it speaks the worker protocol (docs/PROTOCOL.md) on stdout — ``progress`` per step,
``log`` lines from pip, then ``done {"python": ...}``, ``error`` or ``cancelled`` — and stops on a
``{"type": "cancel"}`` stdin line or SIGTERM (exit 130). Standard library only; needs network
access to PyPI (and download.pytorch.org for CPU-only torch). ``--dry-run`` reports the plan
without running it (used by the tests).
"""

from __future__ import annotations

import argparse
import ntpath
import os
import posixpath
import signal
import subprocess
import sys
import threading

if __package__:
    from . import events
else:  # run as a script (python .../addon/jobs/install_engine.py): its folder is sys.path[0]
    import events

PACKAGES = ["smplx", "numpy", "scipy", "safetensors", "imageio", "OpenEXR", "tqdm"]
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_CUDA_INDEX = "https://download.pytorch.org/whl/cu128"
GSPLAT_WHEEL_INDEX = "https://docs.gsplat.studio/whl/pt{torch}cu{cuda}"
"""gsplat's own index of prebuilt wheels (compiled CUDA kernels, Linux and Windows), one per
torch/CUDA pair, e.g. ``pt24cu124`` for torch 2.4 with CUDA 12.4."""
TORCH_VERSION_PROBE = "import torch; print(torch.__version__, torch.version.cuda or '')"
"""Run with the new environment's Python: prints torch's version and its CUDA version (or '')."""

_cancel = threading.Event()
_current: list[subprocess.Popen] = []


def emit(type_: str, **fields) -> None:
    """One protocol event of the ``install`` job on stdout (:func:`.events.emit`)."""
    events.emit(type_, "install", **fields)


def venv_python(target: str) -> str:
    """The interpreter of the virtual environment at ``target`` (``Scripts\\python.exe`` on Windows)."""
    if sys.platform == "win32":
        return os.path.join(target, "Scripts", "python.exe")
    return os.path.join(target, "bin", "python")


def gsplat_wheel_index(torch_version: str, cuda_version: str | None) -> str | None:
    """gsplat's prebuilt-wheel index for a torch/CUDA pair, or None for a CPU-only torch.

    Args:
        torch_version: ``torch.__version__``, e.g. "2.4.1+cu124".
        cuda_version: ``torch.version.cuda``, e.g. "12.4"; None or "" for a CPU build.
    Returns:
        e.g. "https://docs.gsplat.studio/whl/pt24cu124".
    """
    if not cuda_version:
        return None
    major, minor = torch_version.split("+")[0].split(".")[:2]
    return GSPLAT_WHEEL_INDEX.format(torch=f"{major}{minor}", cuda=cuda_version.replace(".", ""))


def gsplat_commands(vpy: str, torch_version: str, cuda_version: str | None) -> list[list[str]]:
    """The ways to install gsplat, tried in order: the prebuilt wheel for this torch/CUDA pair
    (no compiler needed), then PyPI's package, which compiles its kernels on first use (needs
    the CUDA toolkit's nvcc and a C++ compiler; ``python -m engine check`` says what is missing).
    Empty for a CPU-only torch: the engine then uses its PyTorch rasteriser."""
    index = gsplat_wheel_index(torch_version, cuda_version)
    if index is None:
        return []
    pip = [vpy, "-m", "pip", "install"]
    return [pip + ["gsplat", "--index-url", index, "--extra-index-url", "https://pypi.org/simple"],
            pip + ["gsplat"]]


class GsplatStep:
    """The plan's gsplat step: asks the new environment for its torch/CUDA pair, then runs the
    first of :func:`gsplat_commands` that succeeds."""

    description = "install gsplat (its prebuilt wheel for this torch and CUDA, else the JIT-built package)"

    def __init__(self, vpy: str):
        self.vpy = vpy

    def __str__(self) -> str:
        return (f"{self.vpy} -c {TORCH_VERSION_PROBE!r}; then pip install gsplat --index-url "
                f"{GSPLAT_WHEEL_INDEX.format(torch='<torch>', cuda='<cuda>')} (else PyPI's gsplat)")

    def run(self) -> int:
        out = subprocess.run([self.vpy, "-c", TORCH_VERSION_PROBE], capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr, flush=True)
            return out.returncode
        torch_version, _, cuda_version = out.stdout.strip().partition(" ")
        commands = gsplat_commands(self.vpy, torch_version, cuda_version.strip())
        if not commands:
            emit("log", level="info", message=f"torch {torch_version} has no CUDA: gsplat is not needed")
            return 0
        rc = 1
        for k, cmd in enumerate(commands):
            emit("log", level="info", message=("prebuilt gsplat wheel: " if k == 0 else "fallback: ") + " ".join(cmd[3:]))
            rc = run_step(cmd)
            if rc == 0 or _cancel.is_set():
                return rc
        return rc


def plan(target: str, device: str, python: str, platform: str = sys.platform) -> list[tuple[str, object]]:
    """The install steps: (description, command list or :class:`GsplatStep`).

    Args:
        target: the new virtual environment's folder.
        device: "auto", "cuda" or "cpu" (which torch build to install).
        python: the interpreter that creates the environment (Blender's own).
        platform: ``sys.platform`` of the machine the plan is for ("linux", "win32", "darwin").
    """
    vpy = (ntpath.join(target, "Scripts", "python.exe") if platform == "win32"
           else posixpath.join(target, "bin", "python"))
    torch_cmd = [vpy, "-m", "pip", "install", "torch"]
    if device == "cpu" and platform != "darwin":
        torch_cmd += ["--index-url", TORCH_CPU_INDEX]
    elif device in ("auto", "cuda") and platform == "win32":
        torch_cmd += ["--index-url", TORCH_CUDA_INDEX]  # PyPI's Windows torch is CPU-only
    steps: list[tuple[str, object]] = [
        ("create the virtual environment", [python, "-m", "venv", target]),
        ("upgrade pip", [vpy, "-m", "pip", "install", "--upgrade", "pip"]),
        ("install torch (large download)", torch_cmd),
        ("install smplx and the other packages", [vpy, "-m", "pip", "install", *PACKAGES]),
    ]
    if device != "cpu" and platform != "darwin":  # no CUDA on macOS
        steps.append((GsplatStep.description, GsplatStep(vpy)))
    steps.append(("check the installation",
                  [vpy, "-c", "import torch, smplx, safetensors; print('torch', torch.__version__)"]))
    return steps


def _watch_stdin() -> None:
    for line in sys.stdin:
        text = line.strip()
        if text == "cancel" or '"cancel"' in text:
            _request_cancel()
            return


def _request_cancel(*_args) -> None:
    _cancel.set()
    for proc in list(_current):
        if proc.poll() is None:
            proc.terminate()


def run_step(cmd: list[str]) -> int:
    """Runs one step; pip's output goes to stderr (the job log), its key lines as ``log`` events.

    Returns:
        the step's exit code.
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    _current.append(proc)
    try:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                print(line, file=sys.stderr, flush=True)  # full pip output goes to the job log
                if line.startswith(("Collecting", "Successfully", "ERROR", "Downloading", "Installing")):
                    emit("log", level="error" if line.startswith("ERROR") else "info", message=line[:300])
        return proc.wait()
    finally:
        _current.remove(proc)


def main(argv: list[str] | None = None) -> int:
    """Runs the install plan as a worker job; exit code 0 (done), 1 (error) or 130 (cancelled)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="virtual environment folder to create")
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--events", default="jsonl", choices=["jsonl"])
    parser.add_argument("--dry-run", action="store_true", help="report the steps without running them")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _request_cancel)
    threading.Thread(target=_watch_stdin, daemon=True).start()
    steps = plan(os.path.abspath(args.target), args.device, sys.executable)
    total = len(steps)
    for i, (what, cmd) in enumerate(steps):
        if _cancel.is_set():
            emit("cancelled", checkpoint=None)
            return 130
        emit("progress", stage="install", step=i, total=total, eta_s=None)
        emit("log", level="info", message=f"{i + 1}/{total}: {what}")
        if args.dry_run:
            emit("log", level="debug", message=str(cmd) if isinstance(cmd, GsplatStep) else " ".join(cmd))
            continue
        try:
            rc = cmd.run() if isinstance(cmd, GsplatStep) else run_step(cmd)
        except OSError as exc:
            emit("error", message=f"cannot run {cmd[0]}: {exc}", traceback="")
            return 1
        if _cancel.is_set():
            emit("cancelled", checkpoint=None)
            return 130
        if rc != 0:
            emit("error", message=f"step '{what}' failed (exit code {rc}); see the log for pip's output. "
                                  "Check the network connection, or install the packages yourself and set "
                                  "the Worker Python in the preferences.", traceback="")
            return 1
    emit("progress", stage="install", step=total, total=total, eta_s=0)
    emit("done", python=venv_python(os.path.abspath(args.target)), dry_run=bool(args.dry_run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
