#!/usr/bin/env bash
# How the default weights were made: both models side by side on one GPU, in sittings of
# LIMIT seconds each. Run it again to continue (each run resumes from RUNS/*/checkpoint.pt;
# its cosine schedule restarts at LR). Copies float16 weights into python/diffjscc/weights/
# only when asked (COPY=1): commit them only when the evaluation shows they are better.
#   DIFFJSCC_DATA=/path/to/data LIMIT=470 LR=1e-3 scripts/train_default_weights.sh   # sitting 1
#   LIMIT=480 LR=5e-4 scripts/train_default_weights.sh                                  # sitting 2
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RUNS=${RUNS:-runs}
LIMIT=${LIMIT:-470}
LR=${LR:-1e-3}
for m in 1_384 1_96; do
    "$PY" -m diffjscc train-jscc --model "jscc-awgn-cbr$m" --out "$RUNS/cbr$m" --steps 0 \
        --time-limit "$LIMIT" --lr "$LR" --batch-size 32 --crop 256 --bf16 --channels-last \
        --val-every 2000 --no-progress >"$RUNS/train_cbr$m.txt" 2>&1 &
done
wait
for m in 1_384 1_96; do
    tail -n 2 "$RUNS/train_cbr$m.txt"
    if [ "${COPY:-0}" = 1 ]; then
        "$PY" - "$RUNS/cbr$m/best.safetensors" "python/diffjscc/weights/jscc_awgn_cbr$m.safetensors" <<'PY'
import sys, torch
from diffjscc.models.jscc import DeepJSCC
DeepJSCC.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2], dtype=torch.float16)
PY
        "$PY" -m diffjscc export-onnx --model "jscc-awgn-cbr$m"
    fi
done
