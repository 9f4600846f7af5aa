"""Cancelling a job: SIGTERM, SIGINT or a ``{"type": "cancel"}`` line on stdin (docs/PROTOCOL.md).
End of stdin is *not* a cancel.

A request always sets the token's flag. What else happens depends on where the job is:

- inside :meth:`CancelToken.interruptible` (``run_job`` runs the whole job function there) the
  request also raises :class:`~engine.errors.CancelInterrupt` in the main thread at once, so a
  job that is loading, decoding frames or rendering stops within a second whatever it is doing
  (its outputs are staged or written atomically, so nothing half-written is left);
- inside an :class:`engine.io.atomic.uninterruptible` block (:meth:`CancelToken.deferred` is
  one) only the flag is set: training and baking loops see it at the next step boundary, write
  their checkpoint and raise :class:`~engine.errors.CancelledError`; a rename that publishes
  files is never cut in half. When such a block ends normally with the request still pending,
  the interruption happens right there.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any, TextIO

from engine.errors import CancelInterrupt, CancelledError
from engine.io.atomic import (
    in_uninterruptible,
    on_uninterruptible_exit,
    uninterruptible,
)

logger = logging.getLogger(__name__)


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
        self._interruptible = False
        self._interrupted = False
        self._signals_installed = False
        self._signals_lock = threading.Lock()  # the stdin reader never signals after uninstall()
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
            self._interrupted = True  # the job stops through this error: no CancelInterrupt on top
            raise CancelledError(f"job cancelled ({self.reason})")

    def wait(self, timeout: float) -> bool:
        """Sleeps up to ``timeout`` seconds, waking early on a cancel; returns :attr:`requested`."""
        return self._event.wait(timeout)

    # ------------------------------------------------------------------ modes

    @contextlib.contextmanager
    def interruptible(self) -> Iterator["CancelToken"]:
        """Within this block a request raises :class:`CancelInterrupt` in the main thread at once
        (module doc); a request made before the block raises on entry."""
        prev, self._interruptible = self._interruptible, True
        try:
            self._maybe_interrupt()
            yield self
        finally:
            self._interruptible = prev

    def deferred(self) -> uninterruptible:
        """A block in which a request only sets the flag (the job polls it at step boundaries):
        an :class:`engine.io.atomic.uninterruptible` block."""
        return uninterruptible()

    def _maybe_interrupt(self) -> None:
        """Raises CancelInterrupt (once) when a request is pending and the main thread may be
        interrupted here."""
        if (self._event.is_set() and self._interruptible and not self._interrupted
                and not in_uninterruptible() and threading.current_thread() is threading.main_thread()):
            self._interrupted = True
            raise CancelInterrupt(self.reason or "cancelled")

    # ------------------------------------------------------------------ sources

    def install(self) -> "CancelToken":
        """Installs the signal handlers and starts the stdin reader (see the class doc)."""
        self._active = True
        on_uninterruptible_exit(self._maybe_interrupt)
        if self._handle_signals and threading.current_thread() is threading.main_thread():
            for sig, handler in ((signal.SIGTERM, self._on_sigterm), (signal.SIGINT, self._on_sigint)):
                try:
                    self._prev_handlers[sig] = signal.signal(sig, handler)
                except (ValueError, OSError):  # pragma: no cover - platform without the signal
                    pass
            self._signals_installed = signal.SIGTERM in self._prev_handlers
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
        on_uninterruptible_exit(self._maybe_interrupt, add=False)
        with self._signals_lock:
            self._signals_installed = False
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
        self._maybe_interrupt()

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._sigint_count += 1
        if self._sigint_count > 1:
            raise KeyboardInterrupt
        self.request("SIGINT")
        self._maybe_interrupt()

    def _on_line(self, line: str) -> bool:
        """Handles one stdin line; returns False once the token is uninstalled."""
        if not self._active:
            return False
        if is_cancel_line(line):
            self.request("cancel line on stdin")
            with self._signals_lock:
                if self._signals_installed and self._interruptible:
                    self._signal_main_thread()
        elif line.strip():
            logger.debug("ignored stdin line: %r", line.strip()[:80])
        return True

    @staticmethod
    def _signal_main_thread() -> None:
        """Runs the SIGTERM handler in the main thread (which interrupts it there): a real signal
        to the main thread where POSIX allows (it also wakes a blocking sleep or read), else
        Python's simulated one."""
        with contextlib.suppress(Exception):
            if hasattr(signal, "pthread_kill"):
                signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
            else:  # pragma: no cover - Windows
                import _thread

                _thread.interrupt_main(signal.SIGTERM)

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
