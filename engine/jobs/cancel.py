"""Cancelling a job: SIGTERM, SIGINT or a ``{"type": "cancel"}`` line on stdin set a token the
job polls once per step (docs/PROTOCOL.md). End of stdin is *not* a cancel."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import sys
import threading
from typing import Any, TextIO

from engine.errors import CancelledError

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
