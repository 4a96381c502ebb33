#!/usr/bin/env bash
# Everything that needs a GPU, in one prepared run (the device tool gives ~15 minutes a session):
#   1. training (pipelines/gpu_train.sh: SRResNet then SRGAN, eval on the held-out source)
#   2. the GPU tests (CUDA paths of the engine)
#   3. the benchmarks on CUDA (model throughput fp32 vs tuned, end-to-end restore vs I/O floor)
#
#   bash pipelines/gpu_check.sh OUTDIR            # carry: .whl (wheels) and .gpu/pack (make gpu-kit)
#   SKIP_TRAIN=1 bash pipelines/gpu_check.sh OUT  # tests + benchmarks only (< 3 minutes)
#
# Output, flat in OUTDIR (at most 8 files): train.log, log.csv, checkpoint.json,
# srresnet.safetensors, srgan.safetensors, eval.json (from training), check.log, bench.json.
set -uo pipefail
OUTDIR=${1:?usage: bash pipelines/gpu_check.sh OUTDIR}
mkdir -p "$OUTDIR"
t0=$SECONDS
if [ -z "${SKIP_TRAIN:-}" ]; then
  bash pipelines/gpu_train.sh "$OUTDIR" || echo "gpu_check: training exited non-zero (see train.log)"
fi
{
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl 2>/dev/null
  export PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1
  echo "== device"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  echo "== GPU tests"
  timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_engine.py 2>&1 | tail -15
  echo "== benchmarks (cuda)"
  timeout 240 python3 -m pipelines.bench --device cuda --compile --json "$OUTDIR/bench.json" 2>&1 | grep -v "^\[" | tail -20
  echo "gpu_check.sh: total $((SECONDS - t0)) s"
} 2>&1 | tee "$OUTDIR/check.log"
