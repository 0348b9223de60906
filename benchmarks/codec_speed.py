"""Speed of the JSCC codec on this CPU, and what channels-last and bfloat16 buy.

Measures, median of ``--repeats`` runs after one warm-up run:

- inference on a 768x512 image (a Kodak image, numpy in and out as a user calls it):
  torch encoder, ONNX encoder (onnxruntime), torch decoder; the torch paths in fp32 and
  bf16 autocast, each with the default (contiguous) and the channels-last memory format;
- one training step as ``diffjscc train-jscc`` runs it (batch of 16 crops of 128 px, the
  default widths ``diffjscc.train.jscc.DEFAULT_WIDTHS``, forward + backward + AdamW step),
  in the same four variants;
- the quality cost of bf16 inference: PSNR of fp32 vs bf16 encode + decode on a few Kodak
  images with the same channel noise.

    .venv/bin/python benchmarks/codec_speed.py --json results/codec_speed.json

The JSON holds every timing (all runs, not only the median), the machine and its load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffjscc.channels import complex_noise
from diffjscc.codec import JSCCCodec
from diffjscc.datasets import data_root
from diffjscc.image import list_images, load_image
from diffjscc.io import atomic_write_text
from diffjscc.metrics import psnr
from diffjscc.models.jscc import DeepJSCC, JSCCConfig
from diffjscc.onnx_codec import OnnxJSCCEncoder
from diffjscc.registry import get_model_spec
from diffjscc.train.jscc import DEFAULT_WIDTHS
from diffjscc.zoo import load_codec, load_jscc

VARIANTS = [
    ("fp32", False, False),
    ("fp32_channels_last", False, True),
    ("bf16", True, False),
    ("bf16_channels_last", True, True),
]


def timed(fn, repeats: int) -> dict:
    fn()  # warm-up: oneDNN picks and caches its kernels on the first call of each shape
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return {"median_s": round(statistics.median(runs), 4), "runs_s": [round(r, 4) for r in runs]}


def autocast(bf16: bool):
    if bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def inference(model_name: str, image: np.ndarray, repeats: int, snr_db: float) -> dict:
    out = {}
    onnx = OnnxJSCCEncoder.from_pretrained(model_name)
    out["onnx_encode"] = timed(lambda: onnx.encode(image, snr_db), repeats)
    for name, bf16, channels_last in VARIANTS:
        # The codec is channels-last unless told otherwise: the fp32 / bf16 variants ask.
        codec = JSCCCodec(load_jscc(model_name), model_name, channels_last=channels_last)
        enc = codec.encode(image, snr_db)
        with autocast(bf16):
            out[f"torch_encode_{name}"] = timed(lambda c=codec: c.encode(image, snr_db), repeats)
            out[f"torch_decode_{name}"] = timed(
                lambda c=codec, e=enc: c.decode(e.symbols, image.shape[:2], snr_db), repeats
            )
    out["symbols"] = int(enc.num_symbols)
    return out


def train_step(model_name: str, repeats: int, batch: int, crop: int) -> dict:
    spec = get_model_spec(model_name)
    out = {}
    for name, bf16, channels_last in VARIANTS:
        torch.manual_seed(0)
        model = DeepJSCC(JSCCConfig(latent_channels=spec.channels, **DEFAULT_WIDTHS)).train()
        x = torch.rand(batch, 3, crop, crop)
        if channels_last:
            model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        snr = torch.empty(batch).uniform_(0, 14)

        def step(model=model, opt=opt, x=x, bf16=bf16, snr=snr):
            with autocast(bf16):
                x_hat = model(x, snr)["x_hat"]
            loss = F.mse_loss(x_hat.float(), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        out[name] = timed(step, repeats)
    return out


def bf16_quality(model_name: str, images: list[np.ndarray], snrs) -> dict:
    """PSNR of fp32 and bf16 inference with the same noise realisation per image and SNR."""
    codec = load_codec(model_name)
    rows = []
    for i, image in enumerate(images):
        for snr in snrs:
            noise = complex_noise(
                (codec.num_symbols(image.shape[:2]),), snr, np.random.default_rng([i, int(snr)])
            )
            results = {}
            for bf16 in (False, True):
                with autocast(bf16):
                    enc = codec.encode(image, snr)
                    dec = codec.decode(enc.symbols + noise, image.shape[:2], snr)
                results[bf16] = psnr(image, dec)
            rows.append(
                dict(image=i, snr_db=snr, psnr_fp32=results[False], psnr_bf16=results[True])
            )
    diffs = [r["psnr_bf16"] - r["psnr_fp32"] for r in rows]
    return dict(
        rows=rows,
        mean_psnr_change_db=round(float(np.mean(diffs)), 4),
        worst_psnr_change_db=round(float(min(diffs)), 4),
    )


def machine() -> dict:
    flags = set()
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    import onnxruntime

    return dict(
        cpu=cpu,
        cpu_count=os.cpu_count(),
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
        torch_cpu_capability=torch.backends.cpu.get_cpu_capability(),
        onnxruntime=onnxruntime.__version__,
        avx512_bf16="avx512_bf16" in flags,
        amx_bf16="amx_bf16" in flags,
        platform=platform.platform(),
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", required=True, help="output file")
    p.add_argument("--models", nargs="+", default=["1/384", "1/96"])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--train-repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--quality-images", type=int, default=4)
    p.add_argument("--snr", type=float, default=7.0, help="SNR of the timed runs")
    p.add_argument("--data", help="image folder (default: $DIFFJSCC_DATA/kodak)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--skip-train", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = list_images(args.data or data_root() / "kodak")
    images = [load_image(q) for q in paths[: max(1, args.quality_images)]]
    landscape = next(img for img in images if img.shape[:2] == (512, 768))
    result = dict(
        command=" ".join([sys.executable, *sys.argv]),
        machine=machine(),
        load_average_start=os.getloadavg(),
        image_shape=list(landscape.shape[:2]),
        snr_db=args.snr,
        models={},
    )
    started = time.time()
    for model_name in args.models:
        entry = dict(inference=inference(model_name, landscape, args.repeats, args.snr))
        if not args.skip_train:
            entry["train_step"] = dict(
                batch=args.batch,
                crop=args.crop,
                widths=DEFAULT_WIDTHS,
                **train_step(model_name, args.train_repeats, args.batch, args.crop),
            )
        entry["bf16_quality"] = bf16_quality(model_name, images, [1.0, 7.0, 13.0])
        result["models"][get_model_spec(model_name).cbr_str] = entry
        print(json.dumps({model_name: entry}, indent=1)[:4000], flush=True)
    result["load_average_end"] = os.getloadavg()
    result["wall_s"] = round(time.time() - started, 1)
    atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
