"""Helpers of the fault-injection suite (docs/RELIABILITY.md): tiny job configs, folder digests,
and running ``python -m engine`` as the add-on does (``--events jsonl``).

Everything is CPU-sized so the suite runs in a few minutes on a 2-core CI machine: 8 frames at
32², 32² UV sampling (~830 Gaussians), a handful of steps, maps at 16².
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

TINY_TRAIN = dict(steps=4, uv_resolution=32, threads=1, preview_every=0, checkpoint_every=2, device="cpu",
                  seed=0)
"""A training run of a few steps (seconds on a CPU)."""
TINY_DENSIFY = dict(strategy="none")
TINY_BAKE = dict(resolution=16, steps=2, base_channels=4, depth=1, device="cpu", threads=1, checkpoint_every=0)
"""A bake of two steps at 16² (BakeNet with one level)."""


def files_digest(folder: Path, skip=(".fate.lock",)) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` (the lock file skipped)."""
    out = {}
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file() and p.name not in skip:
            out[p.relative_to(folder).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def leftovers(folder: Path) -> list[str]:
    """Staging folders, journals, temporary files and lock files left under ``folder``."""
    bad = []
    for p in Path(folder).rglob("*"):
        n = p.name
        if n.startswith(".staging-") or n == ".commit" or n == ".fate.lock" or n.endswith(".tmp") or \
                (n.startswith(".") and ".tmp" in n):
            bad.append(p.relative_to(folder).as_posix())
    return sorted(bad)


def train_config(dataset: Path, output: Path, head: Path, **kw):
    from engine.train.config import TrainConfig
    from engine.train.densify.config import DensifyConfig

    values = {**TINY_TRAIN, **kw}
    dens = DensifyConfig(**{**TINY_DENSIFY, **values.pop("densify", {})})
    return TrainConfig(dataset=str(dataset), output=str(output), head_model=str(head), densify=dens, **values)


def bake_config(avatar: Path, **kw):
    from engine.bake.config import BakeConfig

    return BakeConfig(avatar=str(avatar), **{**TINY_BAKE, **kw})


def write_config(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def engine_env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")


SLOW_FRAMES = r"""
import runpy, time
import engine.evaluate.evaluate as evaluate
import engine.evaluate.render as render

real = render.render_frames

def slow(*args, **kwargs):  # a slow machine: every rendered frame takes half a second more
    for item in real(*args, **kwargs):
        time.sleep(0.5)
        yield item

render.render_frames = evaluate.render_frames = slow
runpy.run_module("engine", run_name="__main__", alter_sys=True)
"""
"""A ``-c`` program that runs ``python -m engine`` with every rendered frame slowed down (so a
render or an eval is still running when the test cancels it)."""


class EngineJob:
    """``python -m engine <verb> ... --events jsonl`` as the add-on runs it; stdout events are
    collected by a reader thread.

    Args:
        args: the verb and its flags.
        code: run this ``-c`` program (which calls ``engine.jobs.cli.main``) instead of
            ``-m engine``, e.g. :data:`SLOW_FRAMES`.
    """

    def __init__(self, args: list[str], code: str | None = None):
        cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "engine"]
        self.proc = subprocess.Popen([*cmd, *args, "--events", "jsonl"], cwd=REPO,
                                     env=engine_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.events: list[dict] = []
        self._lines: queue.Queue = queue.Queue()
        self.stderr = ""
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(json.loads(line))  # every stdout line must be one JSON event
        self._lines.put(None)

    def next_event(self, timeout: float = 60.0) -> dict | None:
        ev = self._lines.get(timeout=timeout)
        if ev is not None:
            self.events.append(ev)
        return ev

    def wait_for(self, pred, timeout: float = 60.0) -> dict:
        """The first event for which ``pred(event)`` holds (AssertionError if the job ends first)."""
        deadline = time.monotonic() + timeout
        while True:
            ev = self.next_event(max(deadline - time.monotonic(), 0.01))
            assert ev is not None, f"the job ended before the awaited event; stderr:\n{self.read_stderr()}"
            if pred(ev):
                return ev

    def cancel(self, how: str) -> None:
        if how == "sigterm":
            self.proc.terminate()
        else:
            self.proc.stdin.write('{"type": "cancel"}\n')
            self.proc.stdin.flush()

    def finish(self, timeout: float = 120.0) -> int:
        rc = self.proc.wait(timeout=timeout)
        while self.next_event(timeout=10.0) is not None:
            pass
        self.read_stderr()
        return rc

    def read_stderr(self) -> str:
        if self.proc.poll() is not None and not self.stderr:
            self.stderr = self.proc.stderr.read()
        return self.stderr

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run_engine(*args: str, timeout: float = 300.0) -> tuple[int, list[dict], str]:
    """Runs a job to its end: (exit code, events, stderr)."""
    job = EngineJob([str(a) for a in args])
    try:
        rc = job.finish(timeout)
    finally:
        job.kill()
    return rc, job.events, job.stderr


def wait_for_file(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)
