"""Worker protocol: JSONL events, throttling, ETA, cancel (SIGTERM / stdin line), exit codes."""

from __future__ import annotations

import io
import json
import logging
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine.errors import CancelledError, ConfigError, DatasetError
from engine.jobs.cancel import CancelToken, is_cancel_line
from engine.jobs.events import EventSink, JsonlEvents, TqdmEvents, make_sink
from engine.jobs.protocol import EXIT_CANCELLED, EXIT_ERROR, EXIT_OK, run_job

REPO = Path(__file__).resolve().parents[2]

# A tiny job: `steps` steps of `sleep` seconds, checkpointing on cancel.
_JOB_SCRIPT = r"""
import os, sys, time
from pathlib import Path
from engine.errors import CancelledError, DatasetError
from engine.jobs.protocol import run_job

mode, behaviour, ckpt = sys.argv[1:4]
steps, sleep = int(sys.argv[4]), float(sys.argv[5])

def job(sink, token):
    sink.log("starting")
    if behaviour == "busy":  # no loop with a checkpoint: a cancel interrupts it at once
        time.sleep(60)
    with token.deferred():  # a loop with a checkpoint: a cancel stops it at a step boundary
        for i in range(steps):
            try:
                token.raise_if_requested()
            except CancelledError:
                Path(ckpt).write_text("step %d" % i)
                token.checkpoint = ckpt
                raise
            if behaviour == "raise" and i == 3:
                raise RuntimeError("boom at step 3")
            if behaviour == "fate" and i == 3:
                raise DatasetError("transforms_train.json: missing key 'frames'")
            if behaviour == "noise":
                print("stray print from the job")
                sys.stdout.flush()
                os.write(1, b"raw write to fd 1\n")
            time.sleep(sleep)
            sink.progress("train", i + 1, steps, loss=1.0 / (i + 1), psnr=20.0 + i, n_gaussians=1000 + i)
    return {"avatar": str(Path(ckpt).parent), "psnr": 31.25}

sys.exit(run_job("train", job, mode))
"""


class _Worker:
    """A job subprocess whose stdout lines are collected by a reader thread."""

    def __init__(self, tmp_path: Path, behaviour: str, steps: int, sleep: float, mode: str = "jsonl"):
        self.ckpt = tmp_path / "last.safetensors"
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _JOB_SCRIPT, mode, behaviour, str(self.ckpt), str(steps), str(sleep)],
            cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr = ""
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def next_event(self, timeout: float = 10.0) -> dict:
        line = self.lines.get(timeout=timeout)
        assert line is not None, "stdout closed before the expected event"
        return json.loads(line)

    def finish(self, timeout: float = 10.0) -> tuple[int, list[dict]]:
        """Waits for exit; returns (exit code, the remaining events, all parsed as JSON)."""
        rc = self.proc.wait(timeout=timeout)
        self.stderr = self.proc.stderr.read()
        events = []
        while True:
            line = self.lines.get(timeout=timeout)
            if line is None:
                break
            events.append(json.loads(line))  # every stdout line must be one JSON object
        return rc, events

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def worker(tmp_path):
    made: list[_Worker] = []

    def start(behaviour: str, steps: int = 20, sleep: float = 0.01, mode: str = "jsonl") -> _Worker:
        w = _Worker(tmp_path, behaviour, steps, sleep, mode)
        made.append(w)
        return w

    yield start
    for w in made:
        w.kill()


def _assert_common(ev: dict) -> None:
    assert ev["job"] == "train"
    assert isinstance(ev["time"], float)
    assert abs(ev["time"] - time.time()) < 60.0  # unix seconds, stamped moments ago


# --------------------------------------------------------------------------- subprocess


def test_jsonl_success_events_and_exit_code(worker):
    w = worker("ok", steps=20, sleep=0.01)
    w.proc.stdin.close()  # EOF on stdin is not a cancel
    rc, events = w.finish()
    assert rc == EXIT_OK, w.stderr
    for ev in events:
        _assert_common(ev)
    types = [ev["type"] for ev in events]
    assert types[0] == "log" and events[0]["message"] == "starting" and events[0]["level"] == "info"
    assert types[-1] == "done"
    assert events[-1]["psnr"] == 31.25 and events[-1]["avatar"] == str(w.ckpt.parent)
    progress = [ev for ev in events if ev["type"] == "progress"]
    assert progress, "no progress event"
    for ev in progress:
        assert ev["stage"] == "train" and ev["total"] == 20
        assert 1 <= ev["step"] <= 20
        assert {"loss", "psnr", "n_gaussians", "eta_s", "elapsed_s"} <= set(ev)
    assert progress[-1]["step"] == 20  # the last step is never throttled away
    assert progress[-1]["eta_s"] == 0.0
    # 20 steps of >= 10 ms: throttled to ~10 events/s, so fewer events than steps.
    assert len(progress) < 20


def test_stdout_reserved_for_events(worker):
    w = worker("noise", steps=3, sleep=0.0)
    rc, events = w.finish()  # finish() fails if any stdout line is not JSON
    assert rc == EXIT_OK, w.stderr
    assert events[-1]["type"] == "done"
    assert "stray print from the job" in w.stderr
    assert "raw write to fd 1" in w.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM cannot be caught on Windows")
def test_sigterm_cancels_with_checkpoint(worker):
    w = worker("ok", steps=10_000, sleep=0.02)
    ev = w.next_event()
    while ev["type"] != "progress":
        ev = w.next_event()
    t0 = time.monotonic()
    w.proc.send_signal(signal.SIGTERM)
    rc, events = w.finish(timeout=5.0)
    elapsed = time.monotonic() - t0
    assert rc == EXIT_CANCELLED, w.stderr
    assert elapsed < 2.0  # stops at the next step (20 ms), not at the end
    assert events[-1]["type"] == "cancelled"
    _assert_common(events[-1])
    assert events[-1]["checkpoint"] == str(w.ckpt)
    assert w.ckpt.read_text().startswith("step ")


def test_cancel_line_on_stdin(worker):
    w = worker("ok", steps=10_000, sleep=0.02)
    ev = w.next_event()
    while ev["type"] != "progress":
        ev = w.next_event()
    t0 = time.monotonic()
    w.proc.stdin.write('{"type": "ping"}\n')  # unknown lines are ignored
    w.proc.stdin.write('{"type": "cancel"}\n')
    w.proc.stdin.flush()
    rc, events = w.finish(timeout=5.0)
    assert rc == EXIT_CANCELLED, w.stderr
    assert time.monotonic() - t0 < 2.0
    assert events[-1] == {**events[-1], "type": "cancelled", "checkpoint": str(w.ckpt)}


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM cannot be caught on Windows")
@pytest.mark.parametrize("how", ["sigterm", "stdin"])
def test_cancel_interrupts_a_job_outside_its_step_loop_at_once(worker, how):
    """A job busy outside a ``token.deferred()`` loop (here: a 60 s sleep, like loading frames)
    is interrupted at once: exit 130, ``cancelled`` without a checkpoint. On the old code the
    request only set a flag and the job ran on."""
    w = worker("busy", steps=10, sleep=0.0)
    ev = w.next_event()
    assert ev["type"] == "log"  # "starting": the job is in its sleep now
    time.sleep(0.2)
    t0 = time.monotonic()
    if how == "sigterm":
        w.proc.send_signal(signal.SIGTERM)
    else:
        w.proc.stdin.write('{"type": "cancel"}\n')
        w.proc.stdin.flush()
    rc, events = w.finish(timeout=10.0)
    assert rc == EXIT_CANCELLED, w.stderr
    assert time.monotonic() - t0 < 2.0
    assert events[-1]["type"] == "cancelled" and events[-1]["checkpoint"] is None
    assert not w.ckpt.exists()


def test_exception_gives_error_event_with_traceback(worker):
    w = worker("raise", steps=10, sleep=0.0)
    rc, events = w.finish()
    assert rc == EXIT_ERROR
    err = events[-1]
    assert err["type"] == "error"
    _assert_common(err)
    assert err["message"] == "RuntimeError: boom at step 3"
    assert err["error_type"] == "RuntimeError"
    assert "Traceback (most recent call last)" in err["traceback"]
    assert "boom at step 3" in err["traceback"] and "in job" in err["traceback"]
    assert "boom at step 3" in w.stderr  # also logged on stderr


def test_fate_error_message_without_noise(worker):
    w = worker("fate", steps=10, sleep=0.0)
    rc, events = w.finish()
    assert rc == EXIT_ERROR
    err = events[-1]
    assert err["type"] == "error"
    assert err["message"] == "transforms_train.json: missing key 'frames'"
    assert err["error_type"] == "DatasetError"
    assert err["traceback"] == ""


def test_tqdm_mode_writes_nothing_to_stdout(worker):
    w = worker("ok", steps=5, sleep=0.0, mode="tqdm")
    rc, events = w.finish()
    assert rc == EXIT_OK
    assert events == []
    assert "train/train" in w.stderr and "done" in w.stderr


# --------------------------------------------------------------------------- in-process


class _FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _events(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_progress_throttled_to_about_10_per_second():
    clock, buf = _FakeClock(), io.StringIO()
    sink = JsonlEvents("train", buf, clock=clock)
    for step in range(1, 1001):  # 1000 steps at 1 ms each = 1 s
        clock.t += 0.001
        sink.progress("train", step, 1000, loss=0.5)
    steps = [ev["step"] for ev in _events(buf)]
    assert 10 <= len(steps) <= 12  # first call + one per 100 ms + the last step
    assert steps[0] == 1 and steps[-1] == 1000
    # A new stage is emitted at once.
    clock.t += 0.001
    sink.progress("eval", 1, 5)
    assert _events(buf)[-1]["stage"] == "eval"


def test_eta_from_moving_average():
    clock, buf = _FakeClock(), io.StringIO()
    sink = JsonlEvents("train", buf, clock=clock, min_interval_s=0.0)
    sink.progress("train", 0, 100)
    assert _events(buf)[-1]["eta_s"] is None  # no rate yet
    for step in range(1, 41):  # constant 0.5 s/step
        clock.t += 0.5
        sink.progress("train", step, 100)
    ev = _events(buf)[-1]
    assert ev["eta_s"] == pytest.approx(60 * 0.5, abs=0.05)  # exact rate; 0.1 s rounding
    assert ev["elapsed_s"] == pytest.approx(20.0, abs=1e-6)
    for step in range(41, 91):  # slows down to 1 s/step for 50 s = 10 time constants
        clock.t += 1.0
        sink.progress("train", step, 100)
    # EMA with tau = 5 s after 50 s: within exp(-10) of the new rate.
    assert _events(buf)[-1]["eta_s"] == pytest.approx(10 * 1.0, rel=1e-3)
    # An explicit eta_s wins.
    clock.t += 1.0
    sink.progress("train", 91, 100, eta_s=123.0)
    assert _events(buf)[-1]["eta_s"] == 123.0


def test_event_payloads_are_plain_json(tmp_path):
    buf = io.StringIO()
    sink = JsonlEvents("bake", buf)
    sink.progress("bake", 1, 2, loss=float("nan"), psnr=np.float32(25.5), n=np.int64(7))
    sink.preview(tmp_path / "preview.png", step=1)
    sink.log("careful", "warning")
    sink.done(avatar=tmp_path, metrics={"psnr": np.float64(30.0), "lpips": None})
    sink.cancelled(None)
    sink.error("bad", "", error_type="MapsError")
    evs = _events(buf)
    assert [e["type"] for e in evs] == ["progress", "preview", "log", "done", "cancelled", "error"]
    assert evs[0]["loss"] is None and evs[0]["psnr"] == 25.5 and evs[0]["n"] == 7
    assert evs[1]["path"] == str((tmp_path / "preview.png").resolve()) and evs[1]["step"] == 1
    assert evs[2] == {**evs[2], "level": "warning", "message": "careful"}
    assert evs[3]["avatar"] == str(tmp_path) and evs[3]["metrics"] == {"psnr": 30.0, "lpips": None}
    assert evs[4]["checkpoint"] is None
    with pytest.raises(ValueError, match="type"):
        sink.progress("bake", 2, 2, type="x")


def test_broken_stream_requests_cancel():
    class Broken(io.StringIO):
        def write(self, s):
            raise BrokenPipeError

    sink = JsonlEvents("train", Broken())
    token = CancelToken(listen_stdin=False, handle_signals=False)
    sink.on_broken = lambda: token.request("events stream closed")
    sink.log("hello")
    assert sink.broken and token.requested and token.reason == "events stream closed"
    sink.log("dropped silently")  # no second exception


def test_make_sink_modes():
    assert isinstance(make_sink("jsonl", "j", io.StringIO()), JsonlEvents)
    assert isinstance(make_sink("tqdm", "j", io.StringIO()), TqdmEvents)
    none = make_sink("none", "j")
    assert type(none) is EventSink
    none.progress("s", 1, 1, loss=1.0)  # silently dropped
    with pytest.raises(ConfigError, match="'xml'"):
        make_sink("xml", "j")


@pytest.mark.parametrize(
    ("line", "expected"),
    [('{"type": "cancel"}\n', True), ("cancel\n", True), ('{"type":"ping"}', False), ("", False),
     ("not json", False), ("[1, 2]", False)],
)
def test_is_cancel_line(line, expected):
    assert is_cancel_line(line) is expected


def test_cancel_token_stdin_line_and_eof():
    r, w = os.pipe()
    with os.fdopen(r, "r") as rs, os.fdopen(w, "w") as ws:
        token = CancelToken(rs, handle_signals=False).install()
        ws.write("hello\n")
        ws.flush()
        assert not token.wait(0.2)
        ws.write('{"type": "cancel"}\n')
        ws.flush()
        assert token.wait(2.0)  # reader thread latency, generous for slow CI
        assert token.reason == "cancel line on stdin"
        with pytest.raises(CancelledError):
            token.raise_if_requested()
        token.uninstall()

    r, w = os.pipe()
    with os.fdopen(r, "r") as rs:
        token = CancelToken(rs, handle_signals=False).install()
        os.close(w)  # EOF
        assert not token.wait(0.3)
        token.uninstall()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM cannot be caught on Windows")
def test_cancel_token_sigterm_handler_installed_and_restored():
    before = signal.getsignal(signal.SIGTERM)
    token = CancelToken(listen_stdin=False).install()
    try:
        assert signal.getsignal(signal.SIGTERM) == token._on_sigterm  # else the kill would end pytest
        os.kill(os.getpid(), signal.SIGTERM)
        assert token.wait(2.0)
        assert token.reason == "SIGTERM"
    finally:
        token.uninstall()
    assert signal.getsignal(signal.SIGTERM) is before


def _run(fn, mode="jsonl"):
    buf = io.StringIO()
    rc = run_job("train", fn, mode, stream=buf, listen_stdin=False, handle_signals=False)
    return rc, _events(buf) if mode == "jsonl" else buf.getvalue()


def test_run_job_in_process_outcomes():
    def ok(sink, token):
        logging.getLogger("engine.some_module").info("loaded %d frames", 12)
        logging.getLogger("engine.some_module").debug("not forwarded")
        return {"n": 3}

    rc, evs = _run(ok)
    assert rc == EXIT_OK
    assert [e["type"] for e in evs] == ["log", "done"]
    assert evs[0]["message"] == "loaded 12 frames" and evs[1]["n"] == 3

    def cancelled(sink, token):
        token.request("test")
        token.raise_if_requested()

    rc, evs = _run(cancelled)
    assert rc == EXIT_CANCELLED and evs[-1] == {**evs[-1], "type": "cancelled", "checkpoint": None}

    def cancelled_with_attr(sink, token):
        err = CancelledError("stop")
        err.checkpoint = "/x/last.safetensors"
        raise err

    rc, evs = _run(cancelled_with_attr)
    assert rc == EXIT_CANCELLED and evs[-1]["checkpoint"] == "/x/last.safetensors"

    def fails(sink, token):
        raise DatasetError("images/00001.png: expected 512×512, found 256×256")

    rc, evs = _run(fails)
    assert rc == EXIT_ERROR
    assert evs[-1]["message"] == "images/00001.png: expected 512×512, found 256×256"

    def bad_result(sink, token):
        return {"time": 1}  # reserved field: reported as an error, not a crash

    rc, evs = _run(bad_result)
    assert rc == EXIT_ERROR and "time" in evs[-1]["message"]

    rc, text = _run(ok, mode="tqdm")
    assert rc == EXIT_OK


def test_run_job_rejects_unknown_mode():
    with pytest.raises(ConfigError):
        run_job("train", lambda s, t: {}, "yaml")


def test_protocol_does_not_import_torch():
    code = "import sys, engine.jobs.protocol; sys.exit(1 if 'torch' in sys.modules else 0)"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env).returncode == 0


def test_eta_none_never_nan():
    # Internal invariant: eta_s is either None or a finite number.
    buf = io.StringIO()
    sink = JsonlEvents("train", buf, min_interval_s=0.0)
    for step in range(5):
        sink.progress("train", step, 4)
    for ev in _events(buf):
        assert ev["eta_s"] is None or math.isfinite(ev["eta_s"])
