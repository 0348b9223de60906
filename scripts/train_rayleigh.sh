#!/usr/bin/env bash
# How the block-Rayleigh model jscc-rayleigh-cbr1_384 is made: fine-tuned from the AWGN
# default weights on BSDS500 train+test, validated on BSDS500 val on the fading channel, in
# one CPU sitting of LIMIT seconds (cosine schedule over the sitting). The gates see
# [SNR_inst, SNR, |h|^2] (--csi-features zf_snr, the trainer's default for Rayleigh) with the
# two new columns at zero, so step 0 is the AWGN model fed the zero-forced frame's SNR; a low
# learning rate and frozen batch-norm statistics keep it close to that; the loss is the
# samples' mean PSNR (--loss psnr), the figure the comparison averages. Run it again to
# continue from RUN/checkpoint.pt. COPY=1 stores the best weights in python/diffjscc/weights/
# as their 4-bit difference from the AWGN weights (2.6 MB; diffjscc.jscc.delta; no ONNX file,
# for the weights budget: the transmitter encodes with torch): do that only when the Kodak
# comparison (benchmarks/kodak_rayleigh.py --rayleigh RUN/best.safetensors) shows it beats the AWGN model and the shipped one on the fading
# channel. The shipped jscc-rayleigh-cbr1_384 (docs/training.md) is one sitting of
#   DIFFJSCC_DATA=/path/to/data LIMIT=2900 THREADS=1 taskset -c 1 nice -n 5 scripts/train_rayleigh.sh
# On GPUs the same run scales out, e.g. accelerate launch --multi_gpu --num_processes 4
# -m diffjscc train-jscc ... (docs/training.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RUN=${RUN:-runs/rayleigh_cbr1_384}
mkdir -p "$(dirname "$RUN")"
"$PY" -m diffjscc train-jscc --model 1/384 --channel rayleigh \
    --init python/diffjscc/weights/jscc_awgn_cbr1_384.safetensors --out "$RUN" \
    --steps 0 --time-limit "${LIMIT:-2900}" --lr "${LR:-1e-4}" --min-lr "${MIN_LR:-1e-5}" --warmup 20 \
    --batch-size "${BATCH:-16}" --crop "${CROP:-128}" --threads "${THREADS:-1}" \
    --loss "${LOSS:-psnr}" --freeze-norm --val-every "${VAL_EVERY:-150}" --val-limit "${VAL_LIMIT:-20}" --ckpt-every 50 \
    --no-progress
if [ "${COPY:-0}" = 1 ]; then
    "$PY" - "$RUN/best.safetensors" python/diffjscc/weights/jscc_rayleigh_cbr1_384.safetensors <<'PY'
import sys, torch
from diffjscc.jscc.model import DeepJSCC
DeepJSCC.from_pretrained(sys.argv[1]).save_pretrained(
    sys.argv[2], delta_base="python/diffjscc/weights/jscc_awgn_cbr1_384.safetensors"
)
PY
    chmod 644 python/diffjscc/weights/jscc_rayleigh_cbr1_384.safetensors
fi
