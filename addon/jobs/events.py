"""The worker protocol's event lines (docs/PROTOCOL.md), written by the add-on's own jobs.

Standard library only and no relative imports, so a script run on its own (the Install Engine
job, :mod:`.install_engine`) can import it from its folder. The engine writes the same lines
(``engine/protocol.py``); :mod:`.worker` reads them.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

__all__ = ["EVENT_TYPES", "TERMINAL_EVENTS", "event", "emit"]

EVENT_TYPES = ("progress", "preview", "log", "done", "error", "cancelled")
"""Every event type of the protocol."""
TERMINAL_EVENTS = ("done", "error", "cancelled")
"""The event types that end a run (exactly one per run, then the process exits)."""


def event(type_: str, job: str, **fields) -> dict:
    """One event: ``{"type", "job", "time", **fields}``.

    Args:
        type_: one of :data:`EVENT_TYPES`.
        job: the job name (``"install"``, ``"demo-blender"``, ...).
        fields: the fields of the type (``progress``: stage, step, total, ...; ``done``: the
            result), JSON-serialisable.
    Returns:
        the event; ``time`` is Unix time in seconds, millisecond resolution.
    Raises:
        ValueError: ``type_`` is not an event type of the protocol.
    """
    if type_ not in EVENT_TYPES:
        raise ValueError(f"event type must be one of {EVENT_TYPES}, found {type_!r}")
    return {"type": type_, "job": job, "time": round(time.time(), 3), **fields}


def emit(type_: str, job: str, stream: TextIO | None = None, **fields) -> None:
    """Writes :func:`event` as one JSON line to ``stream`` (default: stdout) and flushes it."""
    out = stream if stream is not None else sys.stdout
    out.write(json.dumps(event(type_, job, **fields)) + "\n")
    out.flush()
