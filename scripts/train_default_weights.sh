#!/usr/bin/env bash
# How the default weights were made: both models side by side on one GPU, in sittings of
# LIMIT seconds each. Run it again to continue: each run resumes from RUNS/cbr*/checkpoint.pt,
# or, where that checkpoint did not survive, starts from the committed default weights
# (INIT=0: from scratch); its cosine schedule restarts at LR. Copies float16 weights into
# python/diffjscc/weights/ only when asked (COPY=1): commit them only when the evaluation shows
# they are better.
#   DIFFJSCC_DATA=/path/to/data LIMIT=470 LR=1e-3 INIT=0 scripts/train_default_weights.sh  # sitting 1
#   LIMIT=480 LR=5e-4 scripts/train_default_weights.sh                                     # sitting 2
# On a CPU, one model per core: BATCH=8 THREADS=1 (about 1.3 steps/s each on the dev VM).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RUNS=${RUNS:-runs}
LIMIT=${LIMIT:-470}
LR=${LR:-1e-3}
BATCH=${BATCH:-32}
mkdir -p "$RUNS"
for m in 1_384 1_96; do
    init=()
    if [ "${INIT:-1}" = 1 ]; then
        init=(--init "python/diffjscc/weights/jscc_awgn_cbr$m.safetensors")
    fi
    "$PY" -m diffjscc train-jscc --model "jscc-awgn-cbr$m" --out "$RUNS/cbr$m" --steps 0 \
        --time-limit "$LIMIT" --lr "$LR" --batch-size "$BATCH" --crop 256 --bf16 --channels-last \
        --threads "${THREADS:-0}" --val-every 2000 --no-progress "${init[@]}" \
        >"$RUNS/train_cbr$m.txt" 2>&1 &
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
