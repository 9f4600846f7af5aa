"""A fake ``engine`` package for worker-client tests (no torch needed, runs in well under a second).

``make_fake_extension(folder)`` writes ``folder/engine/{__init__,__main__}.py``. With ``folder``
on PYTHONPATH, ``python -m engine <verb> --config job.json --events jsonl`` follows the
``scenario`` key of the config:

- ``ok``: 5 progress events (loss, psnr, eta_s), a preview PNG, a log line, ``done``; exit 0.
- ``error``: 2 progress events, then ``error`` with a message and traceback; exit 1.
- ``slow``: progress every 20 ms for up to 30 s; a ``{"type":"cancel"}`` stdin line or SIGTERM
  makes it write ``checkpoints/last.json`` and emit ``cancelled``; exit 130.
- ``stubborn``: like slow but ignores cancel lines and SIGTERM (only SIGKILL stops it).
- ``die``: one progress event, a line on stderr, then SIGKILL to itself (a crash/OOM kill).
- ``garbage``: non-JSON stdout lines, then exits 3 without a terminal event.

``python -m engine check`` imports torch (so an interpreter without torch fails the way the real
engine does) and prints the check JSON.
"""

from __future__ import annotations

from pathlib import Path

FAKE_MAIN = r'''
import json, os, signal, struct, sys, threading, time, zlib

def emit(type_, **fields):
    sys.stdout.write(json.dumps({"type": type_, "job": VERB, "time": time.time(), **fields}) + "\n")
    sys.stdout.flush()

def png(path, w=4, h=3):
    rows = b"".join(b"\x00" + b"".join(bytes([(x * 60) % 256, (y * 80) % 256, 128]) for x in range(w)) for y in range(h))
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)

VERB = sys.argv[1] if len(sys.argv) > 1 else ""
if VERB == "check":
    import torch  # the real check needs torch too
    print(json.dumps({"torch": torch.__version__, "device": "cpu", "device_name": "CPU",
                      "rasterizer": "torch", "python": sys.version.split()[0]}))
    sys.exit(0)

args = sys.argv[2:]
cfg = json.load(open(args[args.index("--config") + 1]))
scenario = cfg.get("scenario", "ok")
out = cfg.get("output") or cfg.get("avatar") or os.getcwd()
print(f"fake engine {VERB} scenario={scenario}", file=sys.stderr, flush=True)

cancel = threading.Event()
def watch():
    for line in sys.stdin:
        if '"cancel"' in line:
            cancel.set()
            return
if scenario != "stubborn":
    threading.Thread(target=watch, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *a: cancel.set())
else:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

if scenario == "ok":
    total = 5
    for step in range(1, total + 1):
        emit("progress", stage=VERB, step=step, total=total, loss=1.0 / step, psnr=20.0 + step,
             eta_s=float(total - step), elapsed_s=0.01 * step)
        time.sleep(0.01)
    preview = os.path.join(out, "preview.png")
    png(preview)
    emit("preview", path=preview, step=total)
    emit("log", level="info", message="writing the avatar")
    emit("done", output=out, steps=total, metrics={"psnr": 25.0})
    sys.exit(0)
if scenario == "error":
    for step in (1, 2):
        emit("progress", stage=VERB, step=step, total=10, loss=0.5, psnr=21.0, eta_s=8.0)
    print("Traceback (most recent call last):\n  ...\nDatasetError: images/00003.png is missing", file=sys.stderr)
    emit("error", message="images/00003.png is missing (dataset folder)", traceback="", error_type="DatasetError")
    sys.exit(1)
if scenario in ("slow", "stubborn"):
    for step in range(1, 1501):
        if cancel.is_set():
            ckpt = os.path.join(out, "checkpoints", "last.json")
            os.makedirs(os.path.dirname(ckpt), exist_ok=True)
            with open(ckpt, "w") as f:
                json.dump({"step": step}, f)
            emit("cancelled", checkpoint=ckpt)
            sys.exit(130)
        emit("progress", stage=VERB, step=step, total=1500, loss=0.1, psnr=30.0, eta_s=(1500 - step) * 0.02)
        time.sleep(0.02)
    emit("done", output=out)
    sys.exit(0)
if scenario == "die":
    emit("progress", stage=VERB, step=1, total=100, loss=0.3, psnr=22.0, eta_s=99.0)
    print("allocating 80 GB of Gaussians", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
if scenario == "garbage":
    print("this is not json", flush=True)
    print("{broken", flush=True)
    sys.exit(3)
'''


def make_fake_extension(folder: Path) -> Path:
    """Writes the fake engine package into ``folder`` and returns ``folder``."""
    folder = Path(folder)
    pkg = folder / "engine"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text('"""Fake engine for worker tests."""\n')
    (pkg / "__main__.py").write_text(FAKE_MAIN)
    return folder
