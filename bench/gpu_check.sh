#!/usr/bin/env bash
# GPU readiness: on a machine with one GPU and PyTorch installed, in < 8 minutes,
# train two tiny architectures in bf16, measure them with megatron-core's dynamic engine and NVML
# energy, export one, write one JSON (default bench/results/gpu_check.json).
#
#   bench/gpu_check.sh [OUT_JSON]
#   WHEELS=dir bench/gpu_check.sh   # install packages the machine lacks from wheels carried in
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench/results/gpu_check.json}"
if [[ -n "${WHEELS:-}" ]]; then
    python -m pip install --no-index --find-links "$WHEELS" -e . >&2
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "gpu_check: no GPU visible to torch")'
exec timeout 480 python bench/gpu_check.py --out "$out"
