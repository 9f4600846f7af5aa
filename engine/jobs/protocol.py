"""Worker protocol: events from a running job, cancellation, exit codes.

Long jobs run as ``python -m engine <job> --config job.json --events jsonl``. The job
function reports through an :class:`EventSink` and checks a :class:`CancelToken`;
:func:`run_job` wires both up, turns the outcome into a final event and an exit code.
docs/PROTOCOL.md is the user-facing description (event fields, units, cancel semantics).

Event sinks (``--events``) are in :mod:`engine.jobs.events`; in ``jsonl`` mode stdout carries
nothing but events: :func:`run_job` points file descriptor 1 at stderr for the duration of the job,
so stray prints (ours, third-party, compilers) cannot corrupt the stream. Cancellation
(:mod:`engine.jobs.cancel`): the job function runs inside ``token.interruptible()``, so a cancel
stops it at once (:class:`~engine.errors.CancelInterrupt`) unless it is in a ``token.deferred()``
loop, which checks the token once per step, writes a checkpoint and raises
:class:`~engine.errors.CancelledError`; either way :func:`run_job` emits ``cancelled`` and returns
130.

This module imports no torch (the worker's first event must not wait for it).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
import traceback as _tb
from collections.abc import Callable, Iterator
from typing import TextIO

from engine.errors import CancelInterrupt, CancelledError, ConfigError, FateError
from engine.jobs.cancel import CancelToken
from engine.jobs.events import (
    EVENTS_MODES,
    EventSink,
    EventsMode,
    JsonlEvents,
    level_name,
    make_sink,
)

logger = logging.getLogger(__name__)


EXIT_OK = 0
"""Exit code of a job that finished (``done`` was emitted)."""
EXIT_ERROR = 1
"""Exit code of a job that failed (``error`` was emitted)."""
EXIT_CANCELLED = 130
"""Exit code of a cancelled job (``cancelled`` was emitted), as after SIGINT in a shell."""


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
            self._sink.log(record.getMessage(), level_name(record.levelno))
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

    ``fn(sink, token)`` does the work, reporting through ``sink``; it runs inside
    ``token.interruptible()`` (a cancel raises :class:`CancelInterrupt` at once) and wraps loops
    with state worth saving in ``token.deferred()``, calling ``token.raise_if_requested()`` once
    per step. Its returned dict (paths, metrics) becomes
    the ``done`` event. A :class:`CancelledError` or :class:`CancelInterrupt` becomes ``cancelled`` (with the checkpoint
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
            with token.interruptible():
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
        except CancelInterrupt as exc:
            if say:
                logger.info("%s cancelled (%s); checkpoint: %s", job_name, exc, token.checkpoint, extra=quiet)
            sink.cancelled(token.checkpoint)
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
