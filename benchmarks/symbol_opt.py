"""What transmitter-side symbol optimisation buys, step by step, and what it costs.

For the first ``--images`` Kodak images, each CBR and SNR: PSNR of the decoded image after
0 (the encoder's pass), then each of ``--steps`` optimisation steps, decoded through the same
``--noise-draws`` channel draws (drawn apart from the ones the optimisation uses); and the
time of one encode with symbol optimisation at the largest step count.

    .venv/bin/python benchmarks/symbol_opt.py --json results/symbol_opt.json

The JSON holds the per-image values, the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time

import numpy as np
import torch
from diffjscc.channels import awgn
from diffjscc.datasets import data_root
from diffjscc.image import list_images, load_image
from diffjscc.io import atomic_write_text
from diffjscc.metrics import psnr
from diffjscc.symbol_opt import SymbolOptConfig
from diffjscc.zoo import load_codec


def score(codec, image, symbols, noise, snr) -> float:
    """Mean PSNR of ``symbols`` decoded through the given channel draws."""
    shapes, snrs = [image.shape[:2]] * len(noise), [snr] * len(noise)
    decoded = codec.decode_batch([symbols + n for n in noise], shapes, snrs)
    return float(np.mean([psnr(image, d) for d in decoded]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="image folder (default: $DIFFJSCC_DATA/kodak)")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--cbr", nargs="+", default=["1/384", "1/96"])
    p.add_argument("--snr", nargs="+", type=float, default=[1.0, 13.0])
    p.add_argument("--steps", nargs="+", type=int, default=[5, 10, 30, 60])
    p.add_argument("--lr", type=float, default=SymbolOptConfig.lr)
    p.add_argument("--noise-draws", type=int, default=5)
    p.add_argument("--json", required=True)
    args = p.parse_args()
    folder = args.data or data_root() / "kodak"
    paths = list_images(folder)[: args.images]
    images = [load_image(path) for path in paths]
    started = time.time()
    table = {}
    for cbr in args.cbr:
        codec = load_codec(cbr)
        for snr in args.snr:
            rows = {0: []}
            seconds = []
            for i, image in enumerate(images):
                rng = np.random.default_rng([i, int(snr * 10), 7])
                plain = codec.encode(image, snr).symbols
                noise = [awgn(np.zeros_like(plain), snr, rng) for _ in range(args.noise_draws)]

                rows[0].append(score(codec, image, plain, noise, snr))
                for steps in args.steps:
                    config = SymbolOptConfig(steps=steps, lr=args.lr, seed=i)
                    t0 = time.perf_counter()
                    symbols = codec.encode(image, snr, optimise=config).symbols
                    if steps == max(args.steps):
                        seconds.append(time.perf_counter() - t0)
                    rows.setdefault(steps, []).append(score(codec, image, symbols, noise, snr))
            key = f"{cbr} @ {snr:g} dB"
            table[key] = {
                "psnr_by_steps": {str(k): round(float(np.mean(v)), 3) for k, v in rows.items()},
                "gain_by_steps": {
                    str(k): round(float(np.mean(v) - np.mean(rows[0])), 3) for k, v in rows.items()
                },
                "per_image": {str(k): [round(x, 3) for x in v] for k, v in rows.items()},
                "encode_s_at_max_steps": round(float(np.median(seconds)), 2),
            }
            print(key, table[key]["gain_by_steps"], f"{table[key]['encode_s_at_max_steps']} s")
    result = {
        "command": shlex.join(["python", "benchmarks/symbol_opt.py", *sys.argv[1:]]),
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "load_average_1min_end": round(os.getloadavg()[0], 2),
        },
        "images": [p.name for p in paths],
        "image_shapes": [list(img.shape[:2]) for img in images],
        "lr": args.lr,
        "noise_draws": args.noise_draws,
        "results": table,
        "wall_s": round(time.time() - started, 1),
    }
    atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
