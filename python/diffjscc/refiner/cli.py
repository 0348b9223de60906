"""``diffjscc refine``: refine a JSCC image with the diffusion refiner.

By default the input is the received JSCC image x_hat. With ``--simulate`` the
input is an original image: it is sent through the JSCC codec over an AWGN
channel at ``--snr`` first, and the JSCC and refined images are both written
and scored against the original.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from diffjscc.errors import ConfigError

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def setup_args() -> argparse.ArgumentParser:
    from diffjscc.refiner.schedulers import SAMPLERS

    p = argparse.ArgumentParser(prog="diffjscc refine", description=__doc__.split("\n\n")[0])
    p.add_argument("input", help="JSCC image (or, with --simulate, the original image)")
    p.add_argument("--refiner", required=True, help="refiner folder (trained or converted)")
    p.add_argument("--out", required=True, help="output PNG of the refined image")
    p.add_argument("--snr", type=float, required=True, help="channel SNR in dB (the CSI)")
    p.add_argument(
        "--h", type=complex, default=None, help="channel gain, e.g. 0.6+0.3j (models that use it)"
    )
    p.add_argument(
        "--steps", type=int, default=None, help="sampling steps (default: the refiner's, 100)"
    )
    p.add_argument("--sampler", choices=SAMPLERS, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--caption", default="none", help="none | fixed:<text> | blip2[:<model>] | blip[:<model>]"
    )
    p.add_argument(
        "--prompt", default=None, help="use this text as the caption (overrides --caption)"
    )
    p.add_argument(
        "--guidance-scale", type=float, default=0.0, help="MSE guidance towards x_hat's latent"
    )
    p.add_argument("--guidance-repeat", type=int, default=5)
    p.add_argument("--color-fix", choices=["wavelet", "adain", "none"], default=None)
    p.add_argument(
        "--tile", type=int, default=None, help="tile side in latent pixels for large images"
    )
    p.add_argument(
        "--simulate", action="store_true", help="input is the original: send it through JSCC first"
    )
    p.add_argument(
        "--jscc",
        default=None,
        help="JSCC weights for --simulate (default: <refiner>/jscc.safetensors)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--dtype", choices=sorted(DTYPES), default=None, help="default: fp16 on GPU, fp32 on CPU"
    )
    p.add_argument(
        "--json", default=None, help="write the result fields (and metrics) to this JSON file"
    )
    p.add_argument("--progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = setup_args().parse_args(argv)
    import numpy as np
    import torch

    from diffjscc.image import load_image, save_png
    from diffjscc.io import atomic_write_text
    from diffjscc.refiner.captioner import FixedCaptioner, make_captioner
    from diffjscc.refiner.metrics import image_metrics, metric_status
    from diffjscc.refiner.pipeline import DiffJSCCRefiner
    from diffjscc.refiner.train import _device, load_jscc

    if not math.isfinite(args.snr):
        raise ConfigError("--snr must be finite")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-file loading bars are noise on a command line
    device = _device(args.device)
    dtype_name = args.dtype or ("fp16" if device.startswith("cuda") else "fp32")
    dtype = getattr(torch, DTYPES[dtype_name])
    image = load_image(args.input)
    captioner = (
        FixedCaptioner(args.prompt)
        if args.prompt is not None
        else make_captioner(args.caption, device)
    )
    # The small JSCC model first: a missing one fails before the refiner takes its time to load.
    jscc = load_jscc(args.jscc, args.refiner, device) if args.simulate else None
    refiner = DiffJSCCRefiner.from_pretrained(args.refiner, captioner=captioner).to(device, dtype)

    original = None
    if args.simulate:
        original = image
        x = torch.from_numpy(np.array(original)).permute(2, 0, 1)[None].float().div(255).to(device)
        m = jscc.config.downsampling_factor
        pad_h, pad_w = (-x.shape[2]) % m, (-x.shape[3]) % m
        x_in = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        with torch.no_grad():
            x_hat = jscc(x_in, torch.full((1,), args.snr, device=device))["x_hat"][
                ..., : x.shape[2], : x.shape[3]
            ]
        image = (x_hat[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
        save_png(Path(args.out).with_name(Path(args.out).stem + "_jscc.png"), image)

    result = refiner.refine(
        image,
        args.snr,
        h=args.h,
        steps=args.steps,
        sampler=args.sampler,
        seed=args.seed,
        guidance_scale=args.guidance_scale,
        guidance_repeat=args.guidance_repeat,
        color_fix=args.color_fix,
        tile_size=args.tile,
        progress=args.progress,
    )
    save_png(args.out, result.image)
    summary = {k: v for k, v in result.to_dict().items() if k != "image"}
    if original is not None:
        summary["metrics"] = {
            "jscc": image_metrics(original, image),
            "refined": image_metrics(original, result.image),
        }
        summary["metrics_skipped"] = metric_status()
    line = f"refined {args.input} -> {args.out} ({result.sampler}, {result.steps} steps, seed {result.seed}, "
    print(line + f"{result.timing['sample_s']:.2f} s on {result.device})")
    if original is not None:
        for name in ("jscc", "refined"):
            m = summary["metrics"][name]
            shown = {k: "n/a" if m[k] is None else f"{m[k]:.4f}" for k in ("ms_ssim", "lpips")}
            print(
                f"  {name:8s} PSNR {m['psnr']:.2f} dB  MS-SSIM {shown['ms_ssim']}  LPIPS {shown['lpips']}"
            )
        for metric, reason in summary["metrics_skipped"].items():
            print(f"  {metric}: not computed: {reason}")
    if args.json:
        atomic_write_text(args.json, json.dumps(summary, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
