"""``diffjscc refine``: refine a JSCC image with the diffusion refiner.

By default the input is the received JSCC image x_hat. With ``--simulate`` the
input is an original image: it is sent through the JSCC codec over an AWGN
channel at ``--snr`` first, and the JSCC and refined images are both written
and scored against the original.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

from diffjscc.errors import ConfigError

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


GUIDANCE_PRESETS = ("none", "paper")


def guidance_from_args(args):
    """The Guidance of the --guidance preset with the explicit --guidance-* values over it."""
    from diffjscc.refiner.pipeline import GUIDANCE_PRESETS as presets

    overrides = {
        field: value
        for field, value in (
            ("scale", args.guidance_scale),
            ("repeat", args.guidance_repeat),
            ("t_start", args.guidance_t_start),
            ("t_stop", args.guidance_t_stop),
            ("target", args.guidance_target),
        )
        if value is not None
    }
    return presets[args.guidance](**overrides)


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
    g = p.add_argument_group(
        "MSE guidance towards x_hat's latent (official MSEGuidance: s (target - x0) / (C H W))"
    )
    g.add_argument(
        "--guidance",
        choices=sorted(GUIDANCE_PRESETS),
        default="none",
        help="preset: paper = the official README's guided run (s 100, repeat 1, all steps)",
    )
    g.add_argument("--guidance-scale", type=float, default=None, help="s (official --Lambda)")
    g.add_argument("--guidance-repeat", type=int, default=None, help="official --g_repeat")
    g.add_argument("--guidance-t-start", type=int, default=None, help="official --g_t_start")
    g.add_argument("--guidance-t-stop", type=int, default=None, help="official --g_t_stop")
    g.add_argument(
        "--guidance-target",
        choices=["sample", "mode"],
        default=None,
        help="VAE posterior sample per repeat (official) or its mode",
    )
    p.add_argument(
        "--preprocess",
        choices=["default", "official"],
        default="default",
        help="official = reproduce official inference: upsize to a short side of 512, "
        "zero padding to 64, uint8 truncation, Lanczos back to the input size",
    )
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
    from diffjscc.refiner.pipeline import DiffJSCCRefiner, to_uint8
    from diffjscc.refiner.preprocess import (
        get_preprocessing,
        resize_to,
        upsize_short_side,
        zero_pad,
    )
    from diffjscc.refiner.train import load_jscc

    if not math.isfinite(args.snr):
        raise ConfigError("--snr must be finite")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-file loading bars are noise on a command line
    device = (
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
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

    prep = get_preprocessing(args.preprocess)
    guidance = guidance_from_args(args)
    in_height, in_width = image.shape[:2]
    work = upsize_short_side(image, prep.resize_short_side)
    original = None
    refine_input = work
    if args.simulate:
        original = image
        sent = zero_pad(work, prep.pad_multiple)  # official: JSCC runs on the padded image
        x = torch.from_numpy(np.array(sent)).permute(2, 0, 1)[None].float().div(255).to(device)
        m = jscc.config.downsampling_factor
        pad_h, pad_w = (-x.shape[2]) % m, (-x.shape[3]) % m
        x_in = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        with torch.no_grad():
            x_hat = jscc(x_in, torch.full((1,), args.snr, device=device))["x_hat"][
                ..., : x.shape[2], : x.shape[3]
            ].clamp(0, 1)
        # official inference refines the JSCC output as it is, before any quantisation
        refine_input = x_hat[0].float().cpu() if prep.pad_multiple else None
        jscc_u8 = to_uint8(x_hat[0].permute(1, 2, 0).cpu().numpy(), prep.quantize)
        image = resize_to(jscc_u8[: work.shape[0], : work.shape[1]], in_height, in_width)
        if refine_input is None:
            refine_input = jscc_u8
        save_png(Path(args.out).with_name(Path(args.out).stem + "_jscc.png"), image)

    result = refiner.refine(
        refine_input,
        args.snr,
        h=args.h,
        steps=args.steps,
        sampler=args.sampler,
        seed=args.seed,
        guidance=guidance,
        color_fix=args.color_fix,
        tile_size=args.tile,
        progress=args.progress,
        padding=prep.padding,
        quantize=prep.quantize,
    )
    result.image = resize_to(result.image[: work.shape[0], : work.shape[1]], in_height, in_width)
    save_png(args.out, result.image)
    summary = {k: v for k, v in result.to_dict().items() if k != "image"}
    summary["preprocess"] = args.preprocess
    summary["guidance"] = dataclasses.asdict(guidance)
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
