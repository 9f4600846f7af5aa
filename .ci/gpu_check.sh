#!/usr/bin/env bash
# The GPU check of issue 21, as ONE device call (see /work/.library/device/README.md):
#
#   bash .ci/gpu_wheels.sh                       # here, once: the wheels the device image lacks -> .whl/
#   device run, carry [".whl"], timeout_s 560:
#     bash .ci/gpu_check.sh
#
# On the device (Python 3.12, torch 2.11 + CUDA 13 preinstalled, no network) it installs the
# carried wheels, builds gsplat's kernels once for Hopper only (TORCH_CUDA_ARCH_LIST=9.0,
# MAX_JOBS=16; timed), then runs the CUDA parity test, the raster / render / train / bake
# benchmarks at 512² and a shortened train → bake → eval of the demo's cuda preset on a 512²
# synthetic sequence (the demo's Blender stages need bpy, which the device image lacks). Every
# table and log lands in $OUT (at most 8 files come back).
#
# Rehearsal on a CPU machine (no device time): GPU_CHECK_CPU=1 bash .ci/gpu_check.sh
# runs the same steps with the CUDA parts skipped and tiny sizes, so typos cost nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
CPU=${GPU_CHECK_CPU:-0}
PY=${GPU_CHECK_PYTHON:-python3}
[ "$CPU" = 1 ] && [ -x .venv/bin/python ] && PY=.venv/bin/python
LOG="$OUT/gpu_check.log"
: >"$LOG"
say() { echo "[gpu_check $(date +%T)] $*" | tee -a "$LOG"; }
run() {  # run NAME CMD...: logs the command, its output and its wall time; never stops the script
  local name=$1; shift
  say "$name: $*"
  local t0=$SECONDS
  "$@" >>"$LOG" 2>&1
  local rc=$?
  say "$name: exit $rc in $((SECONDS - t0)) s"
  return $rc
}

if [ "$CPU" != 1 ]; then
  if [ -d .whl ]; then
    run wheels "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || { say "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD
  else
    export PYTHONPATH=$PWD
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.txt" 2>&1
  export TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
  run gsplat_build "$PY" -c "import time; t=time.time(); from gsplat.cuda._backend import _C; \
assert _C is not None, 'gsplat kernels did not build'; print('gsplat build seconds', round(time.time()-t, 1))"
  DEVICE=cuda RES=512 STEPS=3000 BAKE_STEPS=1500 GAUSS=50000 FRAMES=150
else
  export PYTHONPATH=$PWD
  say "CPU rehearsal: CUDA parts skipped, tiny sizes"
  DEVICE=cpu RES=32 STEPS=8 BAKE_STEPS=4 GAUSS=500 FRAMES=10
fi

run check "$PY" -m engine check
"$PY" -m engine check >"$OUT/check.json" 2>>"$LOG"
if [ "$CPU" != 1 ]; then
  run parity "$PY" -m pytest tests/engine/test_raster_cuda.py -q -p no:cacheprovider
else
  run parity_collect "$PY" -m pytest tests/engine/test_raster_cuda.py -q -p no:cacheprovider
fi
run bench "$PY" -m engine bench --suite raster,render,train,bake --device "$DEVICE" --resolution "$RES" \
  --frames "$FRAMES" --steps "$STEPS" --bake_steps "$BAKE_STEPS" --bake_resolution $((RES >= 512 ? 512 : 32)) \
  --bake_channels $((RES >= 512 ? 32 : 8)) --gaussians "$GAUSS" --workdir /tmp/gpu_bench --out "$OUT/bench.json" \
  --events none
"$PY" - "$OUT/bench.json" >"$OUT/bench.md" 2>>"$LOG" <<'PYEOF'
import json, sys
from engine.bench.suites import format_tables
print(format_tables(json.load(open(sys.argv[1]))))
PYEOF
# the demo's cuda preset, shortened: train + bake + eval on the bench's synthetic sequence
run profile "$PY" -c "
import json, time, torch
from engine.device import resolve_device
from engine.train.config import TrainConfig
from engine.train.trainer import Trainer
from engine.model.resolve import resolve_head_model
from pathlib import Path
ds = Path('/tmp/gpu_bench/synthetic_$RES')
cfg = TrainConfig(dataset=str(ds), output='/tmp/gpu_bench/profile_avatar', steps=min($STEPS, 300), device='$DEVICE',
                  uv_resolution=256 if '$DEVICE' == 'cuda' else 16, preview_every=0, checkpoint_every=0)
tr = Trainer(cfg, resolve_head_model('demo'))
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if torch.cuda.is_available() else [])) as prof:
    t = time.time(); tr.run(); print('profiled steps/s', cfg.steps / (time.time() - t))
open('$OUT/profile.txt', 'w').write(prof.key_averages().table(sort_by='self_cuda_time_total' if torch.cuda.is_available() else 'self_cpu_time_total', row_limit=40))
"
say "done; files in $OUT:"
ls -la "$OUT" | tee -a "$LOG"
