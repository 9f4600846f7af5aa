"""The main job's stages: timing and cancel between stages, and the Blender/build subprocesses.

A Blender stage runs ``python -m addon.demo <stage>`` in its own interpreter (bpy and torch never
share a process) and speaks the worker protocol (docs/PROTOCOL.md): ``progress`` events are
forwarded to the job's sink, the ``done`` event is the stage's result; every other output line
goes to ``<out>/logs/<stage>.log``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from engine.demo.config import DemoConfig
from engine.errors import CancelledError, DemoError
from engine.jobs.events import RESERVED_FIELDS, parse_event_line

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
"""Repository root (holds ``addon/`` and ``build.py``)."""


# ---------------------------------------------------------------------- subprocesses
def blender_python(cfg: DemoConfig) -> str:
    """The interpreter with bpy for the Blender stages (default: this one)."""
    return cfg.blender_python or sys.executable


def run_stage_process(cmd: list[str], stage: str, log_path: Path, sink=None, cancel=None,
                      env: dict | None = None, timeout_s: float | None = None) -> dict:
    """Runs a Blender-side (or build) command, forwarding its ``progress`` events to ``sink``.

    Every line that is not a protocol event goes to ``log_path``. The child is terminated when
    ``cancel`` is requested (then :class:`CancelledError`) or after ``timeout_s``.

    Returns:
        the payload of the child's ``done`` event ({} when it sent none).
    Raises:
        DemoError: non-zero exit (the message names the log and quotes its tail).
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO) + (os.pathsep + full_env["PYTHONPATH"] if full_env.get("PYTHONPATH") else "")
    full_env.update(env or {})
    result: dict = {}
    t0 = time.time()
    with open(log_path, "w", encoding="utf-8") as logf:
        logf.write("$ " + " ".join(cmd) + "\n")
        logf.flush()
        proc = subprocess.Popen(cmd, cwd=str(REPO), env=full_env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        stop = threading.Event()

        def watch():  # cancel / timeout while the child is quiet
            while not stop.wait(0.2):
                late = timeout_s is not None and time.time() - t0 > timeout_s
                if (cancel is not None and cancel.requested) or late:
                    proc.terminate()
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                ev = parse_event_line(line)
                if ev is None:
                    logf.write(line)
                elif ev["type"] == "progress" and sink is not None:
                    sink.progress(ev.get("stage", stage), int(ev["step"]), int(ev["total"]))
                elif ev["type"] == "done":
                    result = {k: v for k, v in ev.items() if k not in RESERVED_FIELDS}
            rc = proc.wait()
        finally:
            stop.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if cancel is not None and cancel.requested:
        raise CancelledError(f"demo cancelled during the {stage} stage")
    if rc != 0:
        tail = "".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines(True)[-15:])
        why = "timed out" if timeout_s is not None and time.time() - t0 > timeout_s else f"exit code {rc}"
        raise DemoError(f"the {stage} stage failed ({why}); full log: {log_path}\n{tail}")
    return result


class StageClock:
    """Times the stages and checks for a cancel request between them."""

    def __init__(self, sink, cancel):
        self.sink, self.cancel = sink, cancel
        self.seconds: dict[str, float] = {}
        self._name: str | None = None
        self._t0 = 0.0

    def start(self, name: str, total: int = 1) -> None:
        self.end()
        if self.cancel is not None and self.cancel.requested:
            raise CancelledError(f"demo cancelled before the {name} stage")
        self._name, self._t0 = name, time.time()
        log.info("demo: %s", name)
        if self.sink is not None:
            self.sink.progress(name, 0, total)

    def end(self, total: int | None = None) -> None:
        if self._name is None:
            return
        if total is not None and self.sink is not None:
            self.sink.progress(self._name, total, total)
        self.seconds[self._name] = round(time.time() - self._t0, 2)
        self._name = None
