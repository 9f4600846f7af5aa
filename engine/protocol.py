"""Worker protocol: events from a running job, cancellation, exit codes.

Long jobs run as ``python -m engine <job> --config job.json --events jsonl``. The job
function reports through an :class:`EventSink` and checks a :class:`CancelToken`;
:func:`run_job` wires both up, turns the outcome into a final event and an exit code.
docs/PROTOCOL.md is the user-facing description (event fields, units, cancel semantics).

Event sinks (``--events``):

- ``jsonl`` (:class:`JsonlEvents`): one JSON object per stdout line, flushed — what the
  Blender add-on reads. stdout carries nothing else: :func:`run_job` points file
  descriptor 1 at stderr for the duration of the job, so stray prints (ours, third-party,
  compilers) cannot corrupt the stream; logging goes to stderr.
- ``tqdm`` (:class:`TqdmEvents`): progress bars and log lines on stderr, for people.
- ``none`` (:class:`EventSink`): progress is dropped; logging still goes to stderr.

Cancellation: SIGTERM, SIGINT (a second SIGINT interrupts at once) or a ``{"type": "cancel"}``
line on stdin sets the token; the job checks it once per step, writes a checkpoint and
raises :class:`~engine.errors.CancelledError`; :func:`run_job` emits ``cancelled`` and
returns 130. End of stdin is *not* a cancel (a job may run with stdin closed).

This module imports no torch (the worker's first event must not wait for it).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import traceback as _tb
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from .errors import CancelledError, ConfigError, FateError

logger = logging.getLogger(__name__)

EventsMode = Literal["jsonl", "tqdm", "none"]
EVENTS_MODES: tuple[str, ...] = ("jsonl", "tqdm", "none")
EVENT_TYPES: tuple[str, ...] = ("progress", "preview", "log", "done", "error", "cancelled")
RESERVED_FIELDS: frozenset[str] = frozenset({"type", "job", "time"})
"""Fields every event carries; payloads may not use these names."""

EXIT_OK = 0
"""Exit code of a job that finished (``done`` was emitted)."""
EXIT_ERROR = 1
"""Exit code of a job that failed (``error`` was emitted)."""
EXIT_CANCELLED = 130
"""Exit code of a cancelled job (``cancelled`` was emitted), as after SIGINT in a shell."""

PROGRESS_MIN_INTERVAL_S = 0.1
"""Progress events are throttled to at most one per this many seconds per stage (~10/s)."""
ETA_TAU_S = 5.0
"""Time constant, seconds, of the exponential moving average of seconds-per-step behind ETAs."""

LOG_LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _level_name(levelno: int) -> str:
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warning"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


def _jsonable(obj: Any) -> Any:
    """Plain JSON value of ``obj``: non-finite floats → None, paths → str, arrays/tensors → lists."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "detach"):  # torch tensor, without importing torch
        obj = obj.detach().cpu()
    if hasattr(obj, "tolist"):  # numpy array / scalar, torch tensor
        return _jsonable(obj.tolist())
    return str(obj)


@dataclass
class _StageTimer:
    """Per-stage state for throttling and the ETA."""

    start_t: float
    last_t: float
    last_step: int
    sec_per_step: float | None = None
    last_emit_t: float | None = None


class EventSink:
    """Receives a job's events; this base class is the silent ``none`` sink.

    Subclasses override the ``_emit_progress`` hook and the event methods. The base class
    throttles progress (at most one event per :data:`PROGRESS_MIN_INTERVAL_S` per stage; the
    first call of a stage and ``step >= total`` always pass) and computes the ETA from an
    exponential moving average of seconds per step (time constant :data:`ETA_TAU_S`).

    Args:
        job: job name carried by every event (e.g. ``"train"``).
        min_interval_s: throttle interval, seconds.
        eta_tau_s: ETA moving-average time constant, seconds.
        clock: monotonic clock in seconds (injectable for tests).
    """

    mode: str = "none"

    def __init__(
        self,
        job: str,
        *,
        min_interval_s: float = PROGRESS_MIN_INTERVAL_S,
        eta_tau_s: float = ETA_TAU_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.job = job
        self.min_interval_s = min_interval_s
        self.eta_tau_s = eta_tau_s
        self._clock = clock
        self._stages: dict[str, _StageTimer] = {}
        self._current_stage: str | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ events

    def progress(self, stage: str, step: int, total: int, **metrics: Any) -> None:
        """Reports that ``step`` of ``total`` steps of ``stage`` are done (throttled).

        Args:
            stage: stage name, e.g. ``"train"``, ``"bake"``, ``"eval"``.
            step: steps completed so far, 0..total.
            total: steps in the stage.
            **metrics: scalars to show, e.g. ``loss``, ``psnr`` (dB), ``n_gaussians``; an
                ``eta_s`` given here replaces the computed one.
        """
        bad = RESERVED_FIELDS.intersection(metrics)
        if bad:
            raise ValueError(f"progress metrics may not be named {sorted(bad)}")
        now = self._clock()
        step, total = int(step), int(total)
        with self._lock:
            timer = self._stages.get(stage)
            new_stage = stage != self._current_stage
            if timer is None or step < timer.last_step:
                timer = _StageTimer(start_t=now, last_t=now, last_step=step)
                self._stages[stage] = timer
            else:
                self._update_rate(timer, now, step)
            due = (
                new_stage
                or timer.last_emit_t is None
                or step >= total
                or now - timer.last_emit_t >= self.min_interval_s
            )
            if not due:
                return
            timer.last_emit_t = now
            self._current_stage = stage
            eta = None
            if timer.sec_per_step is not None:
                eta = round(timer.sec_per_step * max(total - step, 0), 1)
            elapsed = round(now - timer.start_t, 3)
        if "eta_s" in metrics:
            eta = metrics.pop("eta_s")
        self._emit_progress(stage, step, total, eta, elapsed, metrics)

    def preview(self, path: Path | str, **info: Any) -> None:
        """Reports an image file written for display (e.g. a render of the current step).

        Args:
            path: the image file (PNG); sent as an absolute path.
            **info: optional context, e.g. ``step``, ``view``.
        """

    def log(self, message: str, level: str = "info") -> None:
        """A message for the user. ``level``: ``debug``, ``info``, ``warning`` or ``error``."""
        logger.log(LOG_LEVELS.get(level, logging.INFO), "%s", message, extra={"fate_no_event": True})

    def done(self, **result: Any) -> None:
        """The job finished; ``result`` holds its outputs (paths, metrics), JSON-able."""

    def error(self, message: str, traceback: str, error_type: str | None = None) -> None:
        """The job failed.

        Args:
            message: one-line human message (for :class:`FateError`, its text only).
            traceback: full traceback text for unexpected errors, ``""`` for FateErrors.
            error_type: exception class name, e.g. ``"DatasetError"``.
        """

    def cancelled(self, checkpoint: str | None) -> None:
        """The job stopped on request; ``checkpoint`` is the state written for ``--resume``."""

    def close(self) -> None:
        """Releases resources (bars, streams). Idempotent."""

    # ------------------------------------------------------------------ hooks

    def _emit_progress(
        self, stage: str, step: int, total: int, eta_s: float | None, elapsed_s: float, metrics: dict
    ) -> None:
        """Writes one (already throttled) progress event; the base class drops it."""

    def _update_rate(self, timer: _StageTimer, now: float, step: int) -> None:
        dt = now - timer.last_t
        ds = step - timer.last_step
        if ds <= 0 or dt < 0:
            return
        inst = dt / ds
        if timer.sec_per_step is None:
            timer.sec_per_step = inst
        else:
            alpha = 1.0 - math.exp(-dt / self.eta_tau_s)
            timer.sec_per_step += alpha * (inst - timer.sec_per_step)
        timer.last_t, timer.last_step = now, step


class JsonlEvents(EventSink):
    """Machine-readable events: one JSON object per line on ``stream``, flushed per event.

    Every event is ``{"type": ..., "job": ..., "time": unix seconds, ...payload}``; see
    docs/PROTOCOL.md. Non-finite floats are sent as ``null``. If the stream breaks (the reader
    is gone), further events are dropped and :attr:`on_broken` is called once (``run_job``
    uses it to cancel the job, so no worker outlives its reader).

    Args:
        job: job name.
        stream: text stream to write to (default ``sys.stdout``).
        **kwargs: see :class:`EventSink`.
    """

    mode = "jsonl"

    def __init__(self, job: str, stream: TextIO | None = None, **kwargs: Any) -> None:
        super().__init__(job, **kwargs)
        self._stream = stream if stream is not None else sys.stdout
        self._write_lock = threading.Lock()
        self.broken = False
        self.on_broken: Callable[[], None] | None = None

    def emit(self, type_: str, **fields: Any) -> None:
        """Writes one event line.

        Args:
            type_: one of :data:`EVENT_TYPES`.
            **fields: payload; may not use :data:`RESERVED_FIELDS`.
        """
        bad = RESERVED_FIELDS.intersection(fields)
        if bad:
            raise ValueError(f"event fields may not be named {sorted(bad)}")
        event = {"type": type_, "job": self.job, "time": round(time.time(), 3), **fields}
        line = json.dumps(_jsonable(event), allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        notify = False
        with self._write_lock:
            if self.broken:
                return
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (BrokenPipeError, OSError, ValueError):
                self.broken = True
                notify = True
        if notify:
            logger.warning("%s: events stream closed; cancelling the job", self.job,
                           extra={"fate_no_event": True})
            if self.on_broken is not None:
                self.on_broken()

    def _emit_progress(self, stage, step, total, eta_s, elapsed_s, metrics):  # noqa: D102
        self.emit("progress", stage=stage, step=step, total=total, eta_s=eta_s, elapsed_s=elapsed_s,
                  **metrics)

    def preview(self, path: Path | str, **info: Any) -> None:  # noqa: D102
        self.emit("preview", path=str(Path(path).resolve()), **info)

    def log(self, message: str, level: str = "info") -> None:  # noqa: D102
        self.emit("log", level=level if level in LOG_LEVELS else "info", message=str(message))

    def done(self, **result: Any) -> None:  # noqa: D102
        self.emit("done", **result)

    def error(self, message: str, traceback: str, error_type: str | None = None) -> None:  # noqa: D102
        self.emit("error", message=message, traceback=traceback, error_type=error_type)

    def cancelled(self, checkpoint: str | None) -> None:  # noqa: D102
        self.emit("cancelled", checkpoint=None if checkpoint is None else str(checkpoint))


def _format_metric(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class TqdmEvents(EventSink):
    """Human-readable events: one tqdm bar per stage on stderr, messages through logging.

    Args:
        job: job name (prefix of the bar descriptions).
        stream: where bars go (default ``sys.stderr``).
        **kwargs: see :class:`EventSink`.
    """

    mode = "tqdm"

    def __init__(self, job: str, stream: TextIO | None = None, **kwargs: Any) -> None:
        super().__init__(job, **kwargs)
        self._file = stream if stream is not None else sys.stderr
        self._bars: dict[str, Any] = {}

    def _emit_progress(self, stage, step, total, eta_s, elapsed_s, metrics):  # noqa: D102
        from tqdm import tqdm

        bar = self._bars.get(stage)
        if bar is None:
            self._close_bars()
            bar = tqdm(
                total=total, initial=step, desc=f"{self.job}/{stage}", file=self._file,
                dynamic_ncols=True, leave=True, mininterval=0.0,
            )
            self._bars[stage] = bar
        if bar.total != total:
            bar.total = total
        if metrics:
            bar.set_postfix({k: _format_metric(v) for k, v in metrics.items()}, refresh=False)
        if step < bar.n:  # the stage restarted
            bar.reset(total=total)
        if step > bar.n:
            bar.update(step - bar.n)  # redraws; keeps tqdm's own rate estimate right
        else:
            bar.refresh()

    def _close_bars(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()

    def preview(self, path: Path | str, **info: Any) -> None:  # noqa: D102
        logger.debug("preview written: %s", path)

    def done(self, **result: Any) -> None:  # noqa: D102
        self._close_bars()
        summary = ", ".join(f"{k}={_format_metric(v)}" for k, v in result.items())
        logger.info("%s done%s", self.job, f": {summary}" if summary else "")

    def error(self, message: str, traceback: str, error_type: str | None = None) -> None:  # noqa: D102
        self._close_bars()
        logger.error("%s failed: %s%s", self.job, message, f"\n{traceback}" if traceback else "")

    def cancelled(self, checkpoint: str | None) -> None:  # noqa: D102
        self._close_bars()
        if checkpoint:
            logger.warning("%s cancelled; checkpoint written to %s (continue with --resume)",
                           self.job, checkpoint)
        else:
            logger.warning("%s cancelled; no checkpoint was written", self.job)

    def close(self) -> None:  # noqa: D102
        self._close_bars()


def make_sink(mode: EventsMode, job: str, stream: TextIO | None = None) -> EventSink:
    """The event sink for an ``--events`` mode.

    Args:
        mode: ``"jsonl"``, ``"tqdm"`` or ``"none"``.
        job: job name carried by the events.
        stream: output stream (default stdout for jsonl, stderr for tqdm).
    Raises:
        ConfigError: unknown mode.
    """
    if mode == "jsonl":
        return JsonlEvents(job, stream)
    if mode == "tqdm":
        return TqdmEvents(job, stream)
    if mode == "none":
        return EventSink(job)
    raise ConfigError(f"--events: expected one of {list(EVENTS_MODES)}, found {mode!r}")


def is_cancel_line(line: str) -> bool:
    """Whether a stdin line asks to cancel: ``{"type": "cancel"}`` (or the bare word ``cancel``)."""
    text = line.strip()
    if text == "cancel":
        return True
    try:
        msg = json.loads(text)
    except ValueError:
        return False
    return isinstance(msg, dict) and msg.get("type") == "cancel"


class CancelToken:
    """Set when the user asks the job to stop; the job polls it once per step.

    Sources, active between :meth:`install` and :meth:`uninstall`: SIGTERM; SIGINT (a second
    SIGINT raises ``KeyboardInterrupt`` at once); a cancel line on ``stdin`` read by a daemon
    thread (see :func:`is_cancel_line`; other lines are ignored, EOF is not a cancel). Signal
    handlers can only be installed from the main thread; elsewhere only stdin and
    :meth:`request` work.

    A job that stops on a cancel writes its checkpoint, stores its path in
    :attr:`checkpoint` (or sets ``checkpoint`` on the raised error) and lets
    :class:`CancelledError` propagate to :func:`run_job`.

    Args:
        stdin: stream to watch for cancel lines (default ``sys.stdin``).
        listen_stdin: start the stdin reader on :meth:`install`.
        handle_signals: install the SIGTERM/SIGINT handlers on :meth:`install`.
    """

    def __init__(
        self, stdin: TextIO | None = None, *, listen_stdin: bool = True, handle_signals: bool = True
    ) -> None:
        self._event = threading.Event()
        self._stdin = stdin
        self._listen_stdin = listen_stdin
        self._handle_signals = handle_signals
        self._prev_handlers: dict[int, Any] = {}
        self._active = False
        self._sigint_count = 0
        self.reason: str | None = None
        self.checkpoint: str | None = None

    @property
    def requested(self) -> bool:
        """Whether a cancel was requested."""
        return self._event.is_set()

    def request(self, reason: str = "requested") -> None:
        """Asks the job to stop (thread- and signal-safe)."""
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def raise_if_requested(self) -> None:
        """Raises :class:`CancelledError` when a cancel was requested; call once per step."""
        if self._event.is_set():
            raise CancelledError(f"job cancelled ({self.reason})")

    def wait(self, timeout: float) -> bool:
        """Sleeps up to ``timeout`` seconds, waking early on a cancel; returns :attr:`requested`."""
        return self._event.wait(timeout)

    # ------------------------------------------------------------------ sources

    def install(self) -> "CancelToken":
        """Installs the signal handlers and starts the stdin reader (see the class doc)."""
        self._active = True
        if self._handle_signals and threading.current_thread() is threading.main_thread():
            for sig, handler in ((signal.SIGTERM, self._on_sigterm), (signal.SIGINT, self._on_sigint)):
                try:
                    self._prev_handlers[sig] = signal.signal(sig, handler)
                except (ValueError, OSError):  # pragma: no cover - platform without the signal
                    pass
        if self._listen_stdin:
            stream = self._stdin if self._stdin is not None else sys.stdin
            if stream is not None and not getattr(stream, "closed", False):
                try:
                    # A private duplicate of the descriptor, read with os.read: the daemon thread
                    # then holds no lock of sys.stdin's buffered reader (which could block
                    # interpreter shutdown) and never competes with other readers of sys.stdin.
                    source: Any = os.dup(stream.fileno())
                    target = self._read_fd
                except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
                    source, target = stream, self._read_lines
                thread = threading.Thread(target=target, args=(source,), name="fate-cancel-reader", daemon=True)
                thread.start()
        return self

    def uninstall(self) -> None:
        """Restores the previous signal handlers; the stdin reader stops acting on lines."""
        self._active = False
        for sig, prev in self._prev_handlers.items():
            try:
                signal.signal(sig, prev)
            except (ValueError, OSError, TypeError):  # pragma: no cover
                pass
        self._prev_handlers.clear()

    def __enter__(self) -> "CancelToken":
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.request("SIGTERM")

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._sigint_count += 1
        if self._sigint_count > 1:
            raise KeyboardInterrupt
        self.request("SIGINT")

    def _on_line(self, line: str) -> bool:
        """Handles one stdin line; returns False once the token is uninstalled."""
        if not self._active:
            return False
        if is_cancel_line(line):
            self.request("cancel line on stdin")
        elif line.strip():
            logger.debug("ignored stdin line: %r", line.strip()[:80])
        return True

    def _read_fd(self, fd: int) -> None:
        pending = b""
        try:
            while True:
                chunk = os.read(fd, 4096)
                if not chunk:  # EOF: the parent closed stdin; not a cancel
                    return
                pending += chunk
                while b"\n" in pending:
                    raw, pending = pending.split(b"\n", 1)
                    if not self._on_line(raw.decode("utf-8", errors="replace")):
                        return
        except OSError:  # closed or unreadable stdin
            return
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _read_lines(self, stream: TextIO) -> None:
        try:
            while True:
                line = stream.readline()
                if not line:  # EOF: the parent closed stdin; not a cancel
                    return
                if not self._on_line(line):
                    return
        except (OSError, ValueError):  # closed or unreadable stdin
            return


class _EventLogHandler(logging.Handler):
    """Forwards ``engine.*`` log records of level ≥ INFO to a JSONL sink as ``log`` events."""

    def __init__(self, sink: EventSink) -> None:
        super().__init__(logging.INFO)
        self._sink = sink
        self._busy = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "fate_no_event", False) or getattr(self._busy, "on", False):
            return
        self._busy.on = True
        try:
            self._sink.log(record.getMessage(), _level_name(record.levelno))
        except Exception:  # pragma: no cover - never let logging kill the job
            pass
        finally:
            self._busy.on = False


class _TqdmLogHandler(logging.StreamHandler):
    """Writes log lines through ``tqdm.write`` so they do not break progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # pragma: no cover
            self.handleError(record)


@contextlib.contextmanager
def _reserved_stdout() -> Iterator[TextIO]:
    """Yields a stream on the real stdout while everything else written to stdout goes to stderr.

    At the file-descriptor level when stdout/stderr are real files (catches C extensions and
    child processes too); otherwise (e.g. captured streams) by swapping ``sys.stdout``.
    """
    try:
        out_fd = sys.stdout.fileno()
        err_fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        real = sys.stdout
        sys.stdout = sys.stderr
        try:
            yield real
        finally:
            sys.stdout = real
        return
    sys.stdout.flush()
    saved = os.dup(out_fd)
    events = os.fdopen(os.dup(saved), "w", encoding="utf-8", newline="\n")
    os.dup2(err_fd, out_fd)
    try:
        yield events
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        with contextlib.suppress(Exception):
            events.close()
        os.dup2(saved, out_fd)
        os.close(saved)


def _error_payload(exc: BaseException) -> tuple[str, str]:
    """(message, traceback text) of an exception as sent in ``error`` events."""
    if isinstance(exc, FateError):
        return (str(exc) or type(exc).__name__), ""
    text = str(exc)
    message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return message, "".join(_tb.format_exception(type(exc), exc, exc.__traceback__))


def run_job(
    job_name: str,
    fn: Callable[[EventSink, CancelToken], dict | None],
    events_mode: EventsMode = "jsonl",
    *,
    stdin: TextIO | None = None,
    listen_stdin: bool = True,
    handle_signals: bool = True,
    stream: TextIO | None = None,
    log_level: int = logging.INFO,
) -> int:
    """Runs a job function under the worker protocol and returns the process exit code.

    ``fn(sink, token)`` does the work, reporting through ``sink`` and calling
    ``token.raise_if_requested()`` once per step. Its returned dict (paths, metrics) becomes
    the ``done`` event. A :class:`CancelledError` becomes ``cancelled`` (with the checkpoint
    from the error's ``checkpoint`` attribute or ``token.checkpoint``), a :class:`FateError`
    an ``error`` with its message only, any other exception an ``error`` with
    ``"Type: message"`` and the full traceback text.

    Logging goes to stderr for the duration (at ``log_level``; a stderr handler is added to the
    root logger unless the caller configured one already); in ``jsonl`` mode stdout is
    reserved for events (see :func:`_reserved_stdout`) and ``engine.*`` log records of level
    ≥ INFO are also sent as ``log`` events.

    Args:
        job_name: name carried by every event, e.g. ``"train"``.
        fn: the job.
        events_mode: ``"jsonl"``, ``"tqdm"`` or ``"none"``.
        stdin: stream watched for cancel lines (default ``sys.stdin``).
        listen_stdin: watch stdin at all (off for in-process tests).
        handle_signals: install SIGTERM/SIGINT handlers (main thread only).
        stream: events stream instead of stdout/stderr (no stdout redirection then).
        log_level: level of the stderr logging handler.
    Returns:
        :data:`EXIT_OK` (0), :data:`EXIT_ERROR` (1) or :data:`EXIT_CANCELLED` (130).
    """
    if events_mode not in EVENTS_MODES:
        raise ConfigError(f"--events: expected one of {list(EVENTS_MODES)}, found {events_mode!r}")
    with contextlib.ExitStack() as stack:
        out = stream
        if events_mode == "jsonl" and stream is None:
            out = stack.enter_context(_reserved_stdout())
        sink = make_sink(events_mode, job_name, out)
        stack.callback(sink.close)

        root = logging.getLogger()
        if not root.handlers:  # respect a logging setup made by the caller
            handler: logging.Handler = (
                _TqdmLogHandler(sys.stderr) if events_mode == "tqdm" else logging.StreamHandler(sys.stderr)
            )
            handler.setLevel(log_level)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            root.addHandler(handler)
            stack.callback(root.removeHandler, handler)
        if root.level == logging.NOTSET or root.level > log_level:
            old_level = root.level
            root.setLevel(log_level)
            stack.callback(root.setLevel, old_level)
        if events_mode == "jsonl":
            forward = _EventLogHandler(sink)
            engine_logger = logging.getLogger("engine")
            engine_logger.addHandler(forward)
            stack.callback(engine_logger.removeHandler, forward)

        token = CancelToken(stdin, listen_stdin=listen_stdin, handle_signals=handle_signals)
        if isinstance(sink, JsonlEvents):
            sink.on_broken = lambda: token.request("events stream closed")
        token.install()
        stack.callback(token.uninstall)

        quiet = {"fate_no_event": True}
        # TqdmEvents logs outcomes itself; the other sinks get a line on stderr from here.
        say = events_mode != "tqdm"
        try:
            result = fn(sink, token)
            if result is None:
                result = {}
            elif not isinstance(result, dict):
                result = {"result": result}
            sink.done(**result)
            return EXIT_OK
        except CancelledError as exc:
            checkpoint = getattr(exc, "checkpoint", None) or token.checkpoint
            if say:
                logger.info("%s cancelled (%s); checkpoint: %s", job_name, token.reason or exc,
                            checkpoint, extra=quiet)
            sink.cancelled(None if checkpoint is None else str(checkpoint))
            return EXIT_CANCELLED
        except KeyboardInterrupt:
            if say:
                logger.info("%s interrupted", job_name, extra=quiet)
            sink.cancelled(token.checkpoint)
            return EXIT_CANCELLED
        except Exception as exc:  # noqa: BLE001 - the protocol's purpose is to report it
            message, trace = _error_payload(exc)
            if say:
                logger.error("%s failed: %s%s", job_name, message, f"\n{trace}" if trace else "", extra=quiet)
            if not trace:
                logger.debug("traceback:\n%s", "".join(_tb.format_exception(exc)), extra=quiet)
            sink.error(message, trace, error_type=type(exc).__name__)
            return EXIT_ERROR
