#!/usr/bin/env bash
# GPU path in one command (issue 13): autocast training steps, tiled bf16 inference of a 1 GiB
# OME-Zarr, correctness against the CPU. Under 5 minutes on one modern CUDA GPU.
#   bash benchmarks/gpu/run.sh                      # results in $OUT (if set) or benchmarks/gpu/
#   bash benchmarks/gpu/run.sh --device cpu --small # smoke test without a GPU (seconds)
# Python: $PYTHON, else .venv/bin/python, else python3 (needs torch + the project's
# dependencies; the source tree is used through PYTHONPATH, no install needed).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
exec "$PY" benchmarks/gpu/run.py "$@"
