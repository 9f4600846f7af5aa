"""``python -m addon.demo <stage> --config X.json``: runs one Blender stage of the main job and
reports its result as the worker protocol's ``done`` event (``error`` if it fails)."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from ..jobs.events import emit
from .cycles import stage_cycles
from .final import stage_final
from .relight import stage_relight_cycles, stage_relight_splats
from .scene import JOB

STAGES = {"cycles": stage_cycles, "final": stage_final, "relight_cycles": stage_relight_cycles,
          "relight_splats": stage_relight_splats}


def main(argv: list[str] | None = None) -> int:
    """Parses ``<stage> --config X.json``, runs the stage; exit code 0 (done) or 1 (error)."""
    parser = argparse.ArgumentParser(prog="python -m addon.demo",
                                     description="Blender stages of the main job (engine/demo.py)")
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--config", required=True, type=Path, help="stage config JSON")
    args = parser.parse_args(argv)
    cfg = json.loads(args.config.read_text(encoding="utf-8"))
    try:
        result = STAGES[args.stage](cfg)
    except Exception as exc:  # noqa: BLE001 - reported as the protocol's error event, exit 1
        text = traceback.format_exc()
        sys.stderr.write(text)
        emit("error", JOB, message=f"{type(exc).__name__}: {exc}", traceback=text,
             error_type=type(exc).__name__)
        return 1
    emit("done", JOB, **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
