"""The AWGN and the block-Rayleigh JSCC models on the same block-Rayleigh channel draws.

Each Kodak image at each average SNR (1 / sigma^2, E|h|^2 = 1) is sent ``--draws`` times;
draw d of image i at SNR k has the same gain h ~ CN(0, 1) and noise for every model. The
transmitter knows the link's average SNR, not h: the AWGN encoder gets [SNR], the Rayleigh
encoder [SNR, 1, 0]. The receiver equalises (y / h) and decodes with one of these CSIs:

- ``inst``: the frame's own estimate, nothing kept across frames: the post-equalisation
  SNR |h|^2 / sigma^2 (AWGN model: [SNR_inst]; Rayleigh model: [SNR_inst, h / |h|]);
- ``link``: the link's average SNR kept across frames, with h scaled to it (AWGN model:
  [SNR_avg]; Rayleigh model: [SNR_avg, Re h, Im h], the form it was trained with).

    .venv/bin/python benchmarks/kodak_rayleigh.py --draws 4 --json results/kodak_rayleigh.json

PSNR of the uint8 output, averaged over draws and images. The JSON holds per-image values.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from diffjscc.datasets import data_root
from diffjscc.image import list_images, load_image
from diffjscc.io import atomic_write_text
from diffjscc.jscc.model import DeepJSCC
from diffjscc.metrics import psnr
from diffjscc.train.jscc import channel_draws, latent_shape

AWGN_WEIGHTS = "python/diffjscc/weights/jscc_awgn_cbr1_384.safetensors"
RAYLEIGH_WEIGHTS = "python/diffjscc/weights/jscc_rayleigh_cbr1_384.safetensors"


def send(
    model: DeepJSCC, x: torch.Tensor, snr_db: float, draws, choices=("inst", "link")
) -> dict[str, list[np.ndarray]]:
    """Decoded uint8 images per CSI choice, one per (h, noise) draw."""
    fading = model.config.channel_type == "rayleigh"
    snr = torch.tensor([snr_db])
    one = torch.ones(1, dtype=torch.complex64)
    symbols = model.encode(x, snr, one if fading else None)
    sigma = 10.0 ** (-snr_db / 20.0) / math.sqrt(2.0)
    out: dict[str, list[np.ndarray]] = {name: [] for name in choices}
    for h, noise in draws:
        received = symbols + torch.from_numpy(noise.astype(np.complex64))[None] * (sigma / h)
        h_t = torch.tensor([h], dtype=torch.complex64)
        snr_inst = torch.tensor([snr_db + 20.0 * math.log10(max(abs(h), 1e-6))])
        csi = {
            "inst": (snr_inst, h_t / abs(h) if fading else None),
            "link": (snr, h_t if fading else None),
        }
        for name in choices:
            csi_snr, csi_h = csi[name]
            y = model.decode(received, csi_snr, csi_h)[..., : x.shape[-2], : x.shape[-1]]
            out[name].append(
                (y[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            )
    return out


@torch.no_grad()
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="image folder (default: $DIFFJSCC_DATA/kodak)")
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--awgn", default=AWGN_WEIGHTS)
    p.add_argument("--rayleigh", default=RAYLEIGH_WEIGHTS, help="the Rayleigh model's .safetensors")
    p.add_argument("--snr", nargs="+", type=float, default=[1.0, 4.0, 7.0, 10.0, 13.0])
    p.add_argument("--draws", type=int, default=1, help="channel draws per image and SNR")
    p.add_argument(
        "--awgn-csi",
        nargs="+",
        choices=["inst", "link"],
        default=["inst"],
        help="the AWGN model's decoder CSI choices (inst: its best)",
    )
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", required=True)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = list_images(args.data or data_root() / "kodak")[: args.images]
    models = {
        "awgn": DeepJSCC.from_pretrained(args.awgn).eval(),
        "rayleigh": DeepJSCC.from_pretrained(args.rayleigh).eval(),
    }
    if models["rayleigh"].config.channel_type != "rayleigh":
        p.error(f"{args.rayleigh} is not a Rayleigh model")
    started = time.time()
    rows: dict[str, dict[str, list[float]]] = {}
    for i, path in enumerate(paths):
        image = load_image(path)
        x = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float().div(255.0)
        m = 16
        x_pad = F.pad(x, (0, (-x.shape[-1]) % m, 0, (-x.shape[-2]) % m), mode="replicate")
        shape = latent_shape(models["awgn"].config, *x_pad.shape[-2:])
        for k, snr in enumerate(args.snr):
            draws = [
                channel_draws(np.random.default_rng([args.seed, i, k, d]), shape)
                for d in range(args.draws)
            ]
            for name, model in models.items():
                choices = args.awgn_csi if name == "awgn" else ("inst", "link")
                decoded = send(model, x_pad, snr, draws, choices)
                for csi, images in decoded.items():
                    key = f"{name}_{csi}"
                    value = float(
                        np.mean(
                            [psnr(image, y[: image.shape[0], : image.shape[1]]) for y in images]
                        )
                    )
                    rows.setdefault(f"{snr:g}", {}).setdefault(key, []).append(value)
        print(f"{path.name}: {time.time() - started:.0f} s", flush=True)
    table = {
        snr: {key: round(float(np.mean(v)), 3) for key, v in per.items()}
        for snr, per in rows.items()
    }
    for snr, per in table.items():
        print(f"{snr} dB", per)
    result = {
        "command": shlex.join(["python", "benchmarks/kodak_rayleigh.py", *sys.argv[1:]]),
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
        },
        "channel": "block Rayleigh, one h ~ CN(0,1) per image, zero-forcing; SNR = 1/sigma^2",
        "images": [path.name for path in paths],
        "draws_per_image": args.draws,
        "psnr_db": table,
        "per_image": {
            snr: {key: [round(v, 3) for v in vals] for key, vals in per.items()}
            for snr, per in rows.items()
        },
        "wall_s": round(time.time() - started, 1),
    }
    atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
