"""Events of a running job (docs/PROTOCOL.md): the sinks a job reports through.

- ``jsonl`` (:class:`JsonlEvents`): one JSON object per stdout line, flushed — what the Blender
  add-on reads (:func:`parse_event_line` reads one back).
- ``tqdm`` (:class:`TqdmEvents`): progress bars and log lines on stderr, for people.
- ``none`` (:class:`EventSink`): progress is dropped; logging still goes to stderr.

This module imports no torch.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from engine.errors import ConfigError

logger = logging.getLogger(__name__)

EventsMode = Literal["jsonl", "tqdm", "none"]
EVENTS_MODES: tuple[str, ...] = ("jsonl", "tqdm", "none")
EVENT_TYPES: tuple[str, ...] = ("progress", "preview", "log", "done", "error", "cancelled")
RESERVED_FIELDS: frozenset[str] = frozenset({"type", "job", "time"})
"""Fields every event carries; payloads may not use these names."""


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


def level_name(levelno: int) -> str:
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


def parse_event_line(line: str) -> dict | None:
    """The event on one line of a worker's stdout, or None when the line is not an event.

    An event is a JSON object with a ``type`` from :data:`EVENT_TYPES` (docs/PROTOCOL.md); any
    other line (a stray print, a log line) is not one.
    """
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        event = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(event, dict) or event.get("type") not in EVENT_TYPES:
        return None
    return event


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
