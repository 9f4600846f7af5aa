"""Worker client: runs ``python -m engine <job>`` in its own interpreter and follows its events.

Standard library only (no bpy, no torch), so it is testable anywhere. The protocol is
docs/PROTOCOL.md: one JSON object per stdout line (``progress``, ``preview``, ``log``, ``done``,
``error``, ``cancelled``); a ``{"type": "cancel"}`` line on stdin or SIGTERM asks the job to stop
at the next step (it checkpoints and exits with 130); exit codes 0 / 1 / 130.

Threads: one reader thread per job turns stdout lines into events on a queue and, at EOF, waits
for the process and queues an exit marker. Nothing else happens off the main thread: callbacks
registered with :meth:`Job.on` run inside :meth:`Job.poll`, which the add-on calls from a
``bpy.app.timers`` callback (:mod:`addon.jobs.runtime`) and tests call directly. The worker's stderr
(its logging and tracebacks) goes straight to a log file, ``<avatar>/logs/<job>-<time>.log``.

No worker outlives Blender: :func:`stop_all` (registered with ``atexit`` by the add-on, and
called on file load and unregister) cancels every live job, then terminates and kills it.

Example::

    client = WorkerClient(python="/path/to/venv/bin/python", extension_dir=EXTENSION_DIR)
    job = client.start("train", config, job_dir=avatar_dir)
    job.on("progress", lambda ev: print(ev["step"], ev["total"]))
    job.on("error", lambda ev: print(ev["message"]))
    job.cancel()  # cancel line now, SIGTERM after a grace period
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import WorkerError
from .events import EVENT_TYPES, TERMINAL_EVENTS

log = logging.getLogger(__name__)

__all__ = ["EVENT_TYPES", "TERMINAL_EVENTS", "Job", "WorkerClient", "WorkerInfo", "stop_all",
           "live_jobs", "explain_failure", "check_python_path", "ENGINE_PACKAGES"]

EXIT_OK, EXIT_ERROR, EXIT_CANCELLED = 0, 1, 130

#: What the engine needs in the worker's interpreter (pip names), for error messages and the
#: installer (:mod:`addon.jobs.install_engine`).
ENGINE_PACKAGES = ("torch", "gsplat", "smplx", "numpy", "scipy", "safetensors", "imageio",
                   "OpenEXR", "tqdm")

CANCEL_GRACE_S = 10.0
"""Seconds between the cancel line and SIGTERM."""
KILL_GRACE_S = 20.0
"""Seconds between SIGTERM and SIGKILL."""
LOG_TAIL_LINES = 12

_LIVE: "weakref.WeakSet[Job]" = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()

Callback = Callable[[dict], Any]


def _now_stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + f"-{int(time.time() * 1000) % 1000:03d}"


def _tail(path: Path | None, n: int = LOG_TAIL_LINES) -> str:
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


_MISSING_MODULE = re.compile(r"No module named '([\w.]+)'")


def explain_failure(text: str, python: str, extension_dir: Path | None = None) -> str | None:
    """An actionable message for a known failure in a worker's stderr, or None.

    Args:
        text: the worker's stderr (or its tail).
        python: the worker interpreter, named in the message.
        extension_dir: where ``engine/`` should be.
    """
    m = _MISSING_MODULE.search(text)
    if m:
        module = m.group(1).split(".")[0]
        if module == "engine":
            where = f" ({extension_dir / 'engine'})" if extension_dir else ""
            return (f"The worker cannot find the engine package{where}: reinstall the FATE Avatar "
                    "extension (the engine ships inside it).")
        return (f"The worker Python '{python}' has no module '{module}'. Choose a Python with the "
                "engine's packages in Preferences > Add-ons > FATE Avatar > Worker Python, or click "
                "'Install Engine' there, or run: "
                f"\"{python}\" -m pip install {' '.join(ENGINE_PACKAGES)}")
    if "SyntaxError" in text or "requires Python" in text:
        return (f"The worker Python '{python}' is too old: the engine needs Python 3.10 or newer. "
                "Choose another interpreter in Preferences > Add-ons > FATE Avatar.")
    if "CUDA out of memory" in text or "OutOfMemoryError" in text:
        return "The GPU ran out of memory: lower the image size or the number of Gaussians, or use the CPU."
    return None


def check_python_path(python: str) -> str:
    """Checks that a worker interpreter path exists and is executable.

    Returns:
        the path, user-expanded.
    Raises:
        WorkerError: empty, missing or not executable, with what to do.
    """
    if not python:
        raise WorkerError("No worker Python is set: in Preferences > Add-ons > FATE Avatar choose a "
                          "Python that has torch, gsplat and smplx, or click 'Install Engine'.")
    path = os.path.expanduser(python)
    if not os.path.isfile(path):
        raise WorkerError(f"Worker Python '{path}' not found: fix the path in Preferences > Add-ons > "
                          "FATE Avatar, or click 'Install Engine'.")
    if not os.access(path, os.X_OK):
        raise WorkerError(f"Worker Python '{path}' is not executable: choose the interpreter itself "
                          "(e.g. .../bin/python or ...\\python.exe).")
    return path


class Job:
    """A running worker job; see the module doc.

    Attributes:
        kind: the job verb ("train", "bake", "install", ...).
        state: "running", "done", "error" or "cancelled".
        result: payload of the ``done`` event.
        error: payload of the ``error`` event (``message``, ``traceback``) or a synthesised one.
        checkpoint: checkpoint path from the ``cancelled`` event, if any.
        last_progress: the latest ``progress`` event.
        log_path: the file that receives the worker's stderr.
        returncode: the exit code once the process has ended.
    """

    def __init__(self, kind: str, argv: list[str], *, env: dict[str, str] | None = None,
                 cwd: str | Path | None = None, log_path: Path | None = None,
                 python: str = "", extension_dir: Path | None = None):
        self.kind = kind
        self.argv = list(argv)
        self.log_path = Path(log_path) if log_path else None
        self.python = python or argv[0]
        self.extension_dir = extension_dir
        self.state = "running"
        self.result: dict = {}
        self.error: dict = {}
        self.checkpoint: str | None = None
        self.last_progress: dict = {}
        self.returncode: int | None = None
        self.cancel_requested = False
        self.started = time.time()
        self._callbacks: dict[str, list[Callback]] = {}
        self._queue: "queue.Queue[dict]" = queue.Queue()
        self._terminal_seen = False
        self._exited = False
        self._timers: list[threading.Timer] = []
        self._stdin_lock = threading.Lock()

        log_file = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log_file = open(self.log_path, "ab")
            header = (f"# FATE {kind} job started {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                      f"# command: {subprocess.list2cmdline(self.argv)}\n")
            log_file.write(header.encode("utf-8"))
            log_file.flush()
        kwargs: dict[str, Any] = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True  # Ctrl-C in Blender's terminal does not hit the worker
        else:  # pragma: no cover - Windows
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
        try:
            self._proc = subprocess.Popen(
                self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log_file if log_file is not None else subprocess.DEVNULL,
                env=env, cwd=str(cwd) if cwd else None, **kwargs)
        except OSError as exc:
            raise WorkerError(f"Cannot start the worker '{self.argv[0]}': {exc}. Check the worker Python "
                              "in Preferences > Add-ons > FATE Avatar.") from exc
        finally:
            if log_file is not None:
                log_file.close()  # the child holds its own descriptor
        self.pid = self._proc.pid
        self._reader = threading.Thread(target=self._read_stdout, name=f"fate-{kind}-reader", daemon=True)
        self._reader.start()
        with _LIVE_LOCK:
            _LIVE.add(self)
        log.info("started %s worker (pid %d): %s", kind, self.pid, subprocess.list2cmdline(self.argv))

    # ------------------------------------------------------------------ reader thread

    def _read_stdout(self) -> None:
        """Reader thread: stdout lines → events; never touches bpy."""
        stream = self._proc.stdout
        assert stream is not None
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").strip()
                if not line:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if not isinstance(event, dict) or "type" not in event:
                    event = {"type": "log", "level": "info", "message": line, "raw": True}
                self._queue.put(event)
        except (OSError, ValueError):
            pass
        finally:
            rc = self._proc.wait()
            self._queue.put({"type": "_exit", "returncode": rc})

    # ------------------------------------------------------------------ main thread API

    def on(self, event_type: str, callback: Callback) -> "Job":
        """Registers ``callback(event)`` for an event type ("progress", "preview", "log", "done",
        "error", "cancelled", or "finished" = after any of the last three and process exit).
        Callbacks run on the thread that calls :meth:`poll`. Returns self for chaining."""
        self._callbacks.setdefault(event_type, []).append(callback)
        return self

    def _emit(self, event_type: str, event: dict) -> None:
        for cb in self._callbacks.get(event_type, ()):
            try:
                cb(event)
            except Exception:  # noqa: BLE001 - a UI callback must not break the job loop
                log.exception("FATE job callback for %r failed", event_type)

    @property
    def running(self) -> bool:
        """True until the process has exited and every event has been dispatched."""
        return not self._exited

    def poll(self, max_events: int = 1000) -> list[dict]:
        """Dispatches queued events to the callbacks (call on the main thread).

        Returns:
            the events handled by this call, in order (including a synthesised ``error`` or
            ``cancelled`` when the worker died without saying why).
        """
        handled = []
        for _ in range(max_events):
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                break
            etype = event.get("type")
            if etype == "_exit":
                self._on_exit(int(event["returncode"]), handled)
                continue
            self._handle(event)
            handled.append(event)
        return handled

    def _handle(self, event: dict) -> None:
        etype = event.get("type")
        if etype in TERMINAL_EVENTS:
            if self._terminal_seen:
                return
            self._terminal_seen = True
            if etype == "done":
                self.state, self.result = "done", {k: v for k, v in event.items() if k not in ("type",)}
            elif etype == "error":
                self.state = "error"
                self.error = {"message": str(event.get("message") or "the worker reported an error"),
                              "traceback": str(event.get("traceback") or ""),
                              "error_type": event.get("error_type")}
                hint = explain_failure(self.error["message"] + "\n" + self.error["traceback"],
                                       self.python, self.extension_dir)
                if hint:
                    self.error["hint"] = hint
                event = {**event, "log_path": str(self.log_path) if self.log_path else None}
            else:
                self.state, self.checkpoint = "cancelled", event.get("checkpoint")
        elif etype == "progress":
            self.last_progress = event
        self._emit(str(etype), event)

    def _on_exit(self, rc: int, handled: list[dict]) -> None:
        self.returncode = rc
        for t in self._timers:
            t.cancel()
        if not self._terminal_seen:
            if rc == EXIT_CANCELLED or (self.cancel_requested and rc != EXIT_OK):
                event = {"type": "cancelled", "checkpoint": None, "synthetic": True}
            else:
                event = {"type": "error", "message": self._died_message(rc), "traceback": "",
                         "synthetic": True}
            self._handle(event)
            handled.append(event)
        self._exited = True
        with _LIVE_LOCK:
            _LIVE.discard(self)
        log.info("%s worker (pid %d) exited with %s, state %s", self.kind, self.pid, rc, self.state)
        self._emit("finished", {"type": "finished", "state": self.state, "returncode": rc})

    def _died_message(self, rc: int) -> str:
        tail = _tail(self.log_path)
        hint = explain_failure(tail, self.python, self.extension_dir)
        if rc < 0:
            try:
                how = f"was killed by signal {signal.Signals(-rc).name}"
            except ValueError:
                how = f"was killed by signal {-rc}"
            if -rc == getattr(signal, "SIGKILL", 9):
                how += " (out of memory, or killed from outside)"
        elif rc == EXIT_OK:
            how = "exited without reporting a result"
        else:
            how = f"stopped with exit code {rc}"
        where = f" Full log: {self.log_path}" if self.log_path else ""
        msg = f"The {self.kind} worker {how}."
        if hint:
            msg += " " + hint
        elif tail:
            last = [ln for ln in tail.splitlines() if ln.strip() and not ln.startswith("# ")]
            if last:
                msg += f" Last log line: {last[-1].strip()[:300]}"
        return msg + where

    def cancel(self, grace_s: float = CANCEL_GRACE_S, kill_after_s: float = KILL_GRACE_S) -> None:
        """Asks the job to stop: a cancel line now, SIGTERM after ``grace_s``, SIGKILL after
        ``kill_after_s`` more. The job writes a checkpoint and reports ``cancelled``."""
        if self._exited or self.cancel_requested:
            return
        self.cancel_requested = True
        self._write_line({"type": "cancel"})
        t1 = threading.Timer(grace_s, self._signal, args=("terminate",))
        t2 = threading.Timer(grace_s + kill_after_s, self._signal, args=("kill",))
        for t in (t1, t2):
            t.daemon = True
            t.start()
            self._timers.append(t)

    def _write_line(self, message: dict) -> None:
        with self._stdin_lock:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write((json.dumps(message) + "\n").encode("utf-8"))
                self._proc.stdin.flush()
            except (OSError, ValueError, AssertionError):
                pass  # already gone

    def _signal(self, how: str) -> None:
        if self._proc.poll() is not None:
            return
        try:
            self._proc.terminate() if how == "terminate" else self._proc.kill()
        except OSError:
            pass

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stops the process now (shutdown path): cancel line, short wait, SIGTERM, wait, SIGKILL.

        Blocks at most about ``timeout_s`` seconds. Events are still queued for :meth:`poll`.
        """
        if self._proc.poll() is None:
            self.cancel_requested = True
            self._write_line({"type": "cancel"})
            steps = (("wait", timeout_s * 0.4), ("terminate", timeout_s * 0.4), ("kill", timeout_s * 0.2))
            for how, wait_s in steps:
                if how != "wait":
                    self._signal(how)
                try:
                    self._proc.wait(wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        with self._stdin_lock:
            try:
                if self._proc.stdin:
                    self._proc.stdin.close()
            except OSError:
                pass

    def wait(self, timeout: float | None = None, poll_interval: float = 0.02) -> str:
        """Polls until the job has finished (tests and scripts; the UI uses a timer).

        Returns:
            the final state.
        Raises:
            TimeoutError: not finished within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.poll()
            if self._exited:
                return self.state
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.kind} job still running after {timeout} s")
            time.sleep(poll_interval)

    @property
    def elapsed_s(self) -> float:
        """Seconds since the job started."""
        return time.time() - self.started


def live_jobs() -> list[Job]:
    """Jobs whose process has not been reaped yet."""
    with _LIVE_LOCK:
        return [j for j in _LIVE if not j._exited]


def stop_all(timeout_s: float = 5.0) -> int:
    """Stops every live worker (atexit, file load, unregister). Returns how many were running."""
    jobs = live_jobs()
    for job in jobs:
        try:
            job.stop(timeout_s)
        except Exception:  # noqa: BLE001 - shutting down; keep going
            log.exception("stopping %s worker failed", job.kind)
    return len(jobs)


class WorkerInfo(dict):
    """The JSON that ``python -m engine check`` prints (torch version, device, rasteriser...)."""

    def summary(self) -> str:
        """One line for the preferences: torch version, device, rasteriser, and how gsplat is
        installed (prebuilt wheel or JIT build) with what is missing when it cannot work."""
        torch_v = self.get("torch") or self.get("torch_version") or "?"
        device = self.get("device") or "?"
        name = self.get("device_name") or self.get("gpu") or ""
        rast = self.get("rasterizer") or self.get("rasteriser") or self.get("backend") or "?"
        dev = f"{device} ({name})" if name else str(device)
        return f"torch {torch_v}, device {dev}, rasteriser {rast}{self.gsplat_note()}"

    def gsplat_note(self) -> str:
        """", gsplat 1.5.3 (prebuilt wheel)", ", gsplat 1.5.3 (JIT build)", or the problem."""
        g = self.get("gsplat")
        if not isinstance(g, dict) or self.get("device") != "cuda":
            return ""
        if not g.get("installed"):
            return ", gsplat not installed (slower PyTorch rasteriser)"
        kind = {"prebuilt": "prebuilt wheel", "jit": "JIT build"}.get(g.get("kind"), "?")
        note = f", gsplat {g.get('version') or ''} ({kind})".replace("  ", " ")
        return note if g.get("usable") else f"{note}: {g.get('problem')}"


class WorkerClient:
    """Starts engine jobs with a given interpreter and the extension folder on PYTHONPATH.

    Args:
        python: the worker interpreter (has torch, gsplat, smplx...).
        extension_dir: folder that contains the ``engine`` package.
        extra_env: environment variables to add.
    """

    def __init__(self, python: str, extension_dir: Path, extra_env: dict[str, str] | None = None):
        self.python = python
        self.extension_dir = Path(extension_dir)
        self.extra_env = dict(extra_env or {})

    def env(self) -> dict[str, str]:
        """The worker's environment: Blender's Python settings removed, the extension on PYTHONPATH."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE")}
        env["PYTHONPATH"] = str(self.extension_dir)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONIOENCODING"] = "utf-8"
        env.update(self.extra_env)
        return env

    def command(self, verb: str, *args: str) -> list[str]:
        """``python -m engine <verb> <args>`` with the worker interpreter."""
        return [self.python, "-m", "engine", verb, *args]

    def start(self, verb: str, config: dict, job_dir: Path, *, stamp: str | None = None) -> Job:
        """Writes ``<job_dir>/jobs/<verb>-<time>.json`` and starts
        ``python -m engine <verb> --config that.json --events jsonl``.

        Args:
            verb: "train" or "bake".
            config: the job configuration (engine config keys; see :mod:`addon.jobs.config`).
            job_dir: the avatar folder; logs go to ``<job_dir>/logs/<verb>-<time>.log``.
            stamp: time stamp for the file names (default: now).
        Raises:
            WorkerError: bad interpreter path or the process could not start.
        """
        python = check_python_path(self.python)
        stamp = stamp or _now_stamp()
        job_dir = Path(job_dir)
        config_path = job_dir / "jobs" / f"{verb}-{stamp}.json"
        _atomic_write_json(config_path, config)
        log_path = job_dir / "logs" / f"{verb}-{stamp}.log"
        argv = [python, "-m", "engine", verb, "--config", str(config_path), "--events", "jsonl"]
        return Job(verb, argv, env=self.env(), cwd=job_dir, log_path=log_path, python=python,
                   extension_dir=self.extension_dir)

    def check(self, timeout_s: float = 180.0) -> WorkerInfo:
        """Runs ``python -m engine check`` and returns what it printed.

        Raises:
            WorkerError: with an actionable message (no torch, no engine, timeout, bad output).
        """
        python = check_python_path(self.python)
        try:
            proc = subprocess.run(self.command("check"), capture_output=True, env=self.env(),
                                  timeout=timeout_s, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise WorkerError(f"'{python} -m engine check' did not answer within {timeout_s:.0f} s") from exc
        except OSError as exc:
            raise WorkerError(f"Cannot run the worker Python '{python}': {exc}") from exc
        out = proc.stdout.decode("utf-8", "replace")
        err = proc.stderr.decode("utf-8", "replace")
        if proc.returncode != 0:
            hint = explain_failure(err + out, python, self.extension_dir)
            tail = "\n".join(err.strip().splitlines()[-3:])
            raise WorkerError(hint or f"'{python} -m engine check' failed (exit code {proc.returncode}): {tail}")
        for line in reversed(out.strip().splitlines()):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict):
                return WorkerInfo(data)
        raise WorkerError(f"'{python} -m engine check' printed no JSON: {out.strip()[-300:]!r}")


def _atomic_write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def python_in_venv(venv_dir: Path) -> Path:
    """The interpreter inside a virtual environment folder (platform-specific layout)."""
    venv_dir = Path(venv_dir)
    if sys.platform == "win32":  # pragma: no cover
        return venv_dir / "Scripts" / "python.exe"
    return venv_dir / "bin" / "python"
