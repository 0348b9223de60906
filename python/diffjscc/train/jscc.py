"""``diffjscc train-jscc``: train the SNR-adaptive deep JSCC codec on an image folder.

Random crops and flips, SNR uniform in [snr-min, snr-max] dB per image, MSE loss,
AdamW with a cosine schedule. The run folder holds ``checkpoint.pt`` (model,
optimiser, schedule, step, random state: a run continues where it stopped),
``log.jsonl`` (loss and validation PSNR) and ``best.safetensors`` (best
validation PSNR so far). ``--time-limit`` ends a sitting cleanly with a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from diffjscc.datasets import InMemoryImages, collect_images, data_root
from diffjscc.errors import ConfigError
from diffjscc.io import atomic_path
from diffjscc.models.jscc import DeepJSCC, JSCCConfig
from diffjscc.registry import DOWNSAMPLING, get_model_spec

# The default width of the shipped models: small enough for 2-core CPUs and the
# repository's size budget, see README "Default weights".
DEFAULT_WIDTHS = dict(
    base_width=32, max_width_encoder=128, max_width_decoder=192, encoder_blocks=2, decoder_blocks=3
)


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffjscc train-jscc", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data", nargs="+", help="training image folders (default: bsds500 train/ + test/)"
    )
    p.add_argument("--val", help="validation image folder (default: bsds500 val/)")
    p.add_argument("--model", default="1/384", help="registry name or CBR of the model to train")
    p.add_argument(
        "--channel", choices=["awgn", "rayleigh"], default=None, help="default: the model's"
    )
    p.add_argument("--out", required=True, help="run folder (checkpoint, log, best weights)")
    p.add_argument(
        "--init", help="start from these weights (.safetensors) when no checkpoint exists"
    )
    p.add_argument(
        "--steps",
        type=int,
        default=20000,
        help="total steps of the run; 0: as many as --time-limit allows",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr", type=float, default=1e-5)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--snr-min", type=float, default=0.0)
    p.add_argument("--snr-max", type=float, default=14.0)
    p.add_argument("--val-every", type=int, default=1000)
    p.add_argument(
        "--val-limit", type=int, default=0, help="validate on the first N images (0: all)"
    )
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--time-limit", type=float, default=0, help="seconds; stop cleanly after this")
    p.add_argument("--device", default="auto")
    # Both 2.5x faster together on a CPU with AVX-512 BF16, and on GPUs, without a measurable
    # loss of quality (benchmarks/codec_speed.py): on by default.
    p.add_argument(
        "--bf16", action=argparse.BooleanOptionalAction, default=True, help="bfloat16 autocast"
    )
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    for key, value in DEFAULT_WIDTHS.items():
        p.add_argument("--" + key.replace("_", "-"), type=int, default=value)
    return p


def lr_at(step: int, args, elapsed: float = 0.0) -> float:
    """Linear warm-up, then cosine decay over the steps, or over the time limit when
    ``--steps 0``: a sitting of fixed length then ends with a fully decayed rate."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    if args.steps:
        t = (step - args.warmup) / max(1, args.steps - args.warmup)
    else:
        t = elapsed / args.time_limit
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


@torch.no_grad()
def validate(
    model: DeepJSCC, images: list[np.ndarray], snrs=(1.0, 7.0, 13.0), device="cpu"
) -> dict:
    """PSNR per SNR on whole images (padded to a multiple of 16), fixed noise seed."""
    model.eval()
    gen_state = torch.random.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    torch.manual_seed(1234)
    out = {}
    m = model.config.downsampling_factor
    for snr in snrs:
        psnrs = []
        for img in images:
            x = torch.tensor(img).permute(2, 0, 1)[None].float().div(255).to(device)
            h, w = x.shape[-2:]
            x_pad = F.pad(x, (0, (-w) % m, 0, (-h) % m), mode="replicate")
            s = torch.full((1,), snr, device=device)
            y = model(x_pad, s)["x_hat"][..., :h, :w].clamp(0, 1)
            y = torch.round(y * 255) / 255
            mse = F.mse_loss(y.float(), x).item()
            psnrs.append(10 * math.log10(1.0 / max(mse, 1e-12)))
        out[f"psnr_{snr:g}dB"] = float(np.mean(psnrs))
    out["psnr_mean"] = float(np.mean([out[f"psnr_{s:g}dB"] for s in snrs]))
    torch.random.set_rng_state(gen_state)
    if cuda_state is not None:
        torch.cuda.set_rng_state_all(cuda_state)
    model.train()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = setup_args()
    args = parser.parse_args(argv)
    if args.steps <= 0 and args.time_limit <= 0:
        parser.error("--steps 0 needs a --time-limit")
    for name in ("batch_size", "val_every", "ckpt_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    # The decoder's output is the crop's size only when the encoder's strides divide it.
    if args.crop < DOWNSAMPLING or args.crop % DOWNSAMPLING:
        parser.error(f"--crop must be a positive multiple of {DOWNSAMPLING}, not {args.crop}")
    if args.snr_min > args.snr_max:
        parser.error(f"--snr-min {args.snr_min:g} is above --snr-max {args.snr_max:g}")
    spec = get_model_spec(args.model)
    root = data_root() / "bsds500"
    train_dirs = args.data or [root / "train", root / "test"]
    val_dir = args.val or root / "val"
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"

    config = JSCCConfig(
        latent_channels=spec.channels,
        channel_type=args.channel or spec.channel_type,
        **{k: getattr(args, k) for k in DEFAULT_WIDTHS},
    )
    model = DeepJSCC(config)
    if args.init and not ckpt_path.exists():
        init = DeepJSCC.from_pretrained(args.init)
        if init.config != config:
            raise ConfigError(
                f"--init {args.init} has config {init.config}, this run needs {config}"
            )
        model.load_state_dict(init.state_dict())
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    step, best = 0, -1.0
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt["config"] != config.to_dict():
            raise ConfigError(
                f"{ckpt_path} was made for config {ckpt['config']}, not {config.to_dict()}"
            )
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step, best = ckpt["step"], ckpt["best"]
        rng.bit_generator.state = ckpt["numpy_rng"]
        torch.random.set_rng_state(ckpt["torch_rng"])
        print(f"resumed from {ckpt_path} at step {step}")

    train = InMemoryImages(collect_images(train_dirs), min_side=args.crop)
    val_set = InMemoryImages(collect_images([val_dir]))
    val = val_set.images[: args.val_limit or None]
    print(
        f"{len(train)} training images, {len(val)} validation images, device {device}, config {config}"
    )
    unreadable = train.skipped + val_set.skipped
    if unreadable:
        print(f"skipped {len(unreadable)} unreadable files, the first: {unreadable[0]}")

    def save_checkpoint():
        with atomic_path(ckpt_path) as tmp:
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "step": step,
                    "best": best,
                    "config": config.to_dict(),
                    "numpy_rng": rng.bit_generator.state,
                    "torch_rng": torch.random.get_rng_state(),
                    "args": vars(args),
                },
                tmp,
            )

    def log(record: dict):
        with open(out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def validate_and_keep_best() -> dict:
        nonlocal best
        metrics = validate(model, val, device=device)
        log({"step": step, "val": metrics})
        if metrics["psnr_mean"] > best:
            best = metrics["psnr_mean"]
            model.save_pretrained(
                out / "best.safetensors", {"step": step, "val_psnr": f"{best:.3f}"}
            )
        return metrics

    from tqdm import tqdm

    bar = tqdm(total=args.steps or None, initial=step, disable=args.no_progress, dynamic_ncols=True)
    start = time.monotonic()
    running = None
    model.train()
    stopped_early = False
    while not args.steps or step < args.steps:
        if args.time_limit and time.monotonic() - start > args.time_limit:
            stopped_early = True
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args, time.monotonic() - start)
        x = train.random_batch(args.batch_size, args.crop, rng, device)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        snr = torch.empty(x.shape[0], device=device).uniform_(args.snr_min, args.snr_max)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            x_hat = model(x, snr)["x_hat"]
        loss = F.mse_loss(x_hat.float(), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        value = loss.item() if step % 10 == 0 or step < 10 else None
        if value is not None:
            running = value if running is None else 0.95 * running + 0.05 * value
            bar.set_postfix(
                loss=f"{running:.5f}", psnr=f"{-10 * math.log10(max(running, 1e-12)):.2f}"
            )
        bar.update(1)
        if step % 100 == 0:
            log(
                {
                    "step": step,
                    "loss": running,
                    "lr": opt.param_groups[0]["lr"],
                    "time": time.monotonic() - start,
                }
            )
        if step % args.val_every == 0 or step == args.steps:
            metrics = validate_and_keep_best()
            bar.write(f"step {step}: validation {json.dumps(metrics)}")
        if step % args.ckpt_every == 0:
            save_checkpoint()
    bar.close()
    if stopped_early:
        metrics = validate_and_keep_best()
        print(f"time limit: stopped at step {step}: validation {json.dumps(metrics)}")
    save_checkpoint()
    model.save_pretrained(out / "last.safetensors", {"step": step})
    print(json.dumps({"step": step, "best_val_psnr_mean": best, "out": str(out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
