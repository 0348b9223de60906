"""``diffjscc train-jscc``: train the SNR-adaptive deep JSCC codec on an image folder.

Random crops and flips, SNR uniform in [snr-min, snr-max] dB per image, MSE loss,
AdamW with a cosine schedule. One process, or data-parallel under ``accelerate launch``
/ ``torchrun`` (see docs/training.md): ``--batch-size`` is the global batch. The run
folder holds ``checkpoint.pt`` (model, optimiser, step, samples consumed: a run
continues where it stopped, under any number of processes), ``log.jsonl`` (loss and
validation PSNR) and ``best.safetensors`` (best validation PSNR so far).
``--time-limit`` ends a sitting cleanly with a checkpoint.

Rayleigh models (``--channel rayleigh``) are trained as they are used: the transmitter
does not know the block's gain, so the encoder's CSI is [SNR, 1, 0]; the receiver
equalises (y / h) and the decoder's CSI is [SNR, Re h, Im h], with SNR the link's
average 1 / sigma^2 and h ~ CN(0, 1). ``--init`` may be an AWGN model of the same
widths: its SNR gates get two more CSI inputs. By default a Rayleigh model's gates see
[SNR_inst, SNR, |h|^2] (``--csi-features zf_snr``) and those two inputs start at zero, so
that training starts from the AWGN model fed the zero-forced frame's SNR.
``--freeze-norm`` keeps the batch norms' statistics (fine-tuning in small batches);
``--loss psnr`` trains for the mean PSNR rather than the mean MSE.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffjscc import channels as ch
from diffjscc.datasets import InMemoryImages, collect_images, data_root
from diffjscc.errors import ConfigError
from diffjscc.io import atomic_path
from diffjscc.jscc.model import DeepJSCC, JSCCConfig
from diffjscc.registry import DEFAULT_MODEL, DOWNSAMPLING, get_model_spec
from diffjscc.train.distributed import (
    BatchPlan,
    add_batch_args,
    add_precision_arg,
    agree_elapsed,
    autocast,
    check_precision,
    make_accelerator,
    mean_over_processes,
    resolve_precision,
    sample_rng,
)

# The default width of the shipped models: small enough for 2-core CPUs and the
# repository's size budget, see README "Default weights".
DEFAULT_WIDTHS = dict(
    base_width=32, max_width_encoder=128, max_width_decoder=192, encoder_blocks=2, decoder_blocks=3
)
VAL_SEED = 1234


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffjscc train-jscc", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data", nargs="+", help="training image folders (default: bsds500 train/ + test/)"
    )
    p.add_argument("--val", help="validation image folder (default: bsds500 val/)")
    p.add_argument(
        "--model", default=DEFAULT_MODEL, help="registry name or CBR of the model to train"
    )
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
        help="total optimiser steps of the run; 0: as many as --time-limit allows",
    )
    add_batch_args(p, batch=16)
    add_precision_arg(p, "bf16")
    p.add_argument(
        "--sync-bn",
        action="store_true",
        help="batch-norm statistics over all processes' micro-batches (GPUs only)",
    )
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
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (a process's own GPU)")
    # Both 2.5x faster together on a CPU with AVX-512 BF16, and on GPUs, without a measurable
    # loss of quality (benchmarks/codec_speed.py): bf16 by default.
    p.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="same as --mixed-precision bf16 (--no-bf16: no)",
    )
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--csi-features",
        choices=["raw", "zf_snr"],
        default=None,
        help="what a Rayleigh model's gates see (default zf_snr; AWGN models: raw)",
    )
    p.add_argument(
        "--loss",
        choices=["mse", "psnr"],
        default="mse",
        help="mse: the batch's MSE; psnr: minus the mean of the samples' PSNRs (dB)",
    )
    p.add_argument(
        "--freeze-norm",
        action="store_true",
        help="batch norms use and keep their running statistics (fine-tuning)",
    )
    p.add_argument("--no-progress", action="store_true")
    for key, value in DEFAULT_WIDTHS.items():
        p.add_argument("--" + key.replace("_", "-"), type=int, default=value)
    p.add_argument(
        "--norm",
        choices=["batch", "instance", "none"],
        default="batch",
        help="normalisation layers (the shipped models: batch)",
    )
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


class SimulatedLink(nn.Module):
    """Encoder -> channel -> (zero-forcing) -> decoder, with the channel's randomness
    given: a sample's noise and gain come from its own stream, whichever process draws it.

    The transmitter does not know h, so a Rayleigh model's encoder gets h = 1 as CSI, as
    the codec and the ONNX transmitter give it; the decoder gets the block's h.
    """

    def __init__(self, model: DeepJSCC):
        super().__init__()
        self.model = model

    def forward(self, image, snr_db, h, noise, csi_snr_db=None, csi_h=None):
        model = self.model
        fading = model.config.channel_type == "rayleigh"
        symbols = model.encode(image, snr_db, torch.ones_like(h) if fading else None)
        sigma = ch.noise_std(snr_db.float()).reshape(-1, 1, 1, 1) / math.sqrt(2.0)
        if fading:
            gain = h.reshape(-1, 1, 1, 1)
            received = (symbols * gain + noise * sigma) / gain
        else:
            received = symbols + noise * sigma
        csi_snr = snr_db if csi_snr_db is None else csi_snr_db
        return model.decode(received, csi_snr, (h if csi_h is None else csi_h) if fading else None)


def latent_shape(config: JSCCConfig, height: int, width: int) -> tuple[int, int, int]:
    m = config.downsampling_factor
    return (config.latent_channels // 2, height // m, width // m)


def channel_draws(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[complex, np.ndarray]:
    """One block gain h ~ CN(0, 1) and unit-variance complex noise of ``shape`` (times
    sqrt 2: the link scales it by sigma / sqrt 2), drawn for every model alike."""
    h = complex(rng.standard_normal(), rng.standard_normal()) / math.sqrt(2.0)
    noise = rng.standard_normal((2, *shape)).astype(np.float32)
    return h, noise[0] + 1j * noise[1]


def draw_batch(images: InMemoryImages, indices: range, args, config: JSCCConfig, device):
    """The samples of ``indices``: crops, SNRs, gains and noise, each from its own stream."""
    crops, snrs, gains, noises = [], [], [], []
    shape = latent_shape(config, args.crop, args.crop)
    for index in indices:
        rng = sample_rng(args.seed, index)
        crops.append(images.random_batch(1, args.crop, rng))
        snrs.append(rng.uniform(args.snr_min, args.snr_max))
        h, noise = channel_draws(rng, shape)
        gains.append(h)
        noises.append(noise)
    x = torch.cat(crops).to(device, non_blocking=True)
    snr = torch.tensor(snrs, dtype=torch.float32, device=device)
    h = torch.tensor(gains, dtype=torch.complex64, device=device)
    noise = torch.from_numpy(np.stack(noises).astype(np.complex64)).to(device)
    return x, snr, h, noise


@torch.no_grad()
def validate(
    model: DeepJSCC, images: list[np.ndarray], snrs=(1.0, 7.0, 13.0), device="cpu"
) -> dict:
    """PSNR per SNR on whole images (padded to a multiple of 16); the noise (and gain)
    of image i at an SNR is the same for every model and every run."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    link = SimulatedLink(model)
    out = {}
    m = model.config.downsampling_factor
    for k, snr in enumerate(snrs):
        psnrs = []
        for i, img in enumerate(images):
            x = torch.tensor(img).permute(2, 0, 1)[None].float().div(255).to(device)
            h, w = x.shape[-2:]
            x_pad = F.pad(x, (0, (-w) % m, 0, (-h) % m), mode="replicate")
            rng = sample_rng(VAL_SEED + k, i)
            gain, noise = channel_draws(rng, latent_shape(model.config, *x_pad.shape[-2:]))
            y = link(
                x_pad,
                torch.full((1,), snr, device=device),
                torch.tensor([gain], dtype=torch.complex64, device=device),
                torch.from_numpy(noise.astype(np.complex64))[None].to(device),
            )[..., :h, :w].clamp(0, 1)
            y = torch.round(y * 255) / 255
            mse = F.mse_loss(y.float(), x).item()
            psnrs.append(10 * math.log10(1.0 / max(mse, 1e-12)))
        out[f"psnr_{snr:g}dB"] = float(np.mean(psnrs))
    out["psnr_mean"] = float(np.mean([out[f"psnr_{s:g}dB"] for s in snrs]))
    for module, training in modes:  # as found: frozen norms stay frozen
        module.training = training
    return out


def training_loss(x_hat: torch.Tensor, x: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """``mse``: the batch's MSE. ``psnr``: minus the mean per-sample PSNR in dB, the figure
    the evaluations average; the batch MSE lets a few deep-faded samples, whose MSE is
    many times the others', outweigh the rest of the batch."""
    if kind == "mse":
        return F.mse_loss(x_hat.float(), x)
    mse = (x_hat.float() - x).pow(2).flatten(1).mean(dim=1)
    return (10.0 * torch.log10(mse.clamp_min(1e-10))).mean()


def train_mode(model: nn.Module, freeze_norm: bool = False) -> None:
    """``model.train()``; with ``freeze_norm`` the batch norms normalise with, and keep,
    their running statistics, so training sees the network that inference runs."""
    model.train()
    if freeze_norm:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def load_init(model: DeepJSCC, path: str) -> None:
    """Weights of ``path`` into ``model``. An AWGN model may start a Rayleigh one of the
    same widths: the SNR gates' first layers keep their SNR and feature columns. With
    ``csi_features="zf_snr"`` the two new columns start at zero, so the model starts as
    the AWGN one fed the zero-forced SNR; with raw CSI [SNR, Re h, Im h] the two h columns
    keep this model's random initialisation (zeros would be a saddle: by the phase
    symmetry of h, their gradient vanishes on average)."""
    init = DeepJSCC.from_pretrained(path)
    ignored = {"channel_type": None, "csi_features": None}
    mine = {**model.config.to_dict(), **ignored}
    theirs = {**init.config.to_dict(), **ignored}
    if mine != theirs:
        raise ConfigError(f"--init {path} has config {init.config}, this run needs {model.config}")
    state = model.state_dict()
    for key, value in init.state_dict().items():
        target = state[key]
        if value.shape == target.shape:
            target.copy_(value)
        elif value.dim() == 2 and target.shape[0] == value.shape[0]:
            # SNRGate first Linear: in = features + CSI, the CSI columns last.
            target[:, : value.shape[1]].copy_(value)
            if model.config.csi_features == "zf_snr":
                target[:, value.shape[1] :].zero_()
        else:
            raise ConfigError(f"--init {path}: {key} has shape {tuple(value.shape)}")


def main(argv: list[str] | None = None) -> int:
    parser = setup_args()
    args = parser.parse_args(argv)
    if args.steps <= 0 and args.time_limit <= 0:
        parser.error("--steps 0 needs a --time-limit")
    for name in ("batch_size", "grad_accum", "val_every", "ckpt_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    # The decoder's output is the crop's size only when the encoder's strides divide it.
    if args.crop < DOWNSAMPLING or args.crop % DOWNSAMPLING:
        parser.error(f"--crop must be a positive multiple of {DOWNSAMPLING}, not {args.crop}")
    if args.snr_min > args.snr_max:
        parser.error(f"--snr-min {args.snr_min:g} is above --snr-max {args.snr_max:g}")
    if args.bf16 is not None and args.mixed_precision is None:
        args.mixed_precision = "bf16" if args.bf16 else "no"
    precision = resolve_precision(args)
    spec = get_model_spec(args.model)
    channel_type = args.channel or spec.channel_type
    csi_features = args.csi_features or ("zf_snr" if channel_type == "rayleigh" else "raw")
    if csi_features == "zf_snr" and channel_type != "rayleigh":
        parser.error("--csi-features zf_snr is for Rayleigh models (--channel rayleigh)")
    root = data_root() / "bsds500"
    train_dirs = args.data or [root / "train", root / "test"]
    val_dir = args.val or root / "val"
    acc = make_accelerator(args.device)
    # After the accelerator: on CPUs without OMP_NUM_THREADS it sets its own thread count.
    if args.threads:
        torch.set_num_threads(args.threads)
    device = acc.device
    main_process = acc.is_main_process
    check_precision(precision, device.type)
    plan = BatchPlan(args.batch_size, acc.num_processes, args.grad_accum)
    if args.sync_bn and acc.num_processes > 1 and device.type != "cuda":
        raise ConfigError("--sync-bn works on GPUs only (torch's SyncBatchNorm)")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    out = Path(args.out)
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"

    config = JSCCConfig(
        latent_channels=spec.channels,
        channel_type=channel_type,
        norm=args.norm,
        csi_features=csi_features,
        **{k: getattr(args, k) for k in DEFAULT_WIDTHS},
    )
    torch.manual_seed(args.seed)  # the same initial weights on every process
    model = DeepJSCC(config)
    step, samples, best = 0, 0, -1.0
    ckpt = None
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        # Through from_dict: a checkpoint from before a config field existed gets its default.
        if JSCCConfig.from_dict(ckpt["config"]).to_dict() != config.to_dict():
            raise ConfigError(
                f"{ckpt_path} was made for config {ckpt['config']}, not {config.to_dict()}"
            )
        model.load_state_dict(ckpt["model"])
        step, best = ckpt["step"], ckpt["best"]
        # Checkpoints from before samples were counted: each step was one batch.
        samples = ckpt.get("samples", step * ckpt.get("args", {}).get("batch_size", 0))
    elif args.init:
        load_init(model, args.init)
    if args.sync_bn and acc.num_processes > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
        if main_process:
            print(f"resumed from {ckpt_path} at step {step} ({samples} samples)")
    del ckpt
    link = SimulatedLink(model)
    ddp_link = acc.prepare_model(link)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    train = InMemoryImages(collect_images(train_dirs), min_side=args.crop)
    val_set = InMemoryImages(collect_images([val_dir])) if main_process else None
    val = val_set.images[: args.val_limit or None] if main_process else []
    if main_process:
        print(
            f"{len(train)} training images, {len(val)} validation images, "
            f"{acc.num_processes} process(es) on {device}, global batch {plan.global_batch} = "
            f"{plan.micro_batch} x {plan.processes} x {plan.accumulation} accumulation, "
            f"precision {precision}, config {config}"
        )
        unreadable = train.skipped + val_set.skipped
        if unreadable:
            print(f"skipped {len(unreadable)} unreadable files, the first: {unreadable[0]}")

    def save_checkpoint():
        if main_process:
            with atomic_path(ckpt_path) as tmp:
                torch.save(
                    {
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        "step": step,
                        "samples": samples,
                        "best": best,
                        "config": config.to_dict(),
                        "processes": acc.num_processes,
                        "args": vars(args),
                    },
                    tmp,
                )
        acc.wait_for_everyone()

    def log(record: dict):
        if main_process:
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def validate_and_keep_best() -> dict | None:
        nonlocal best
        metrics = None
        if main_process:
            metrics = validate(model, val, device=device)
            log({"step": step, "samples": samples, "val": metrics})
            if metrics["psnr_mean"] > best:
                best = metrics["psnr_mean"]
                model.save_pretrained(
                    out / "best.safetensors", {"step": step, "val_psnr": f"{best:.3f}"}
                )
        acc.wait_for_everyone()
        return metrics

    from tqdm import tqdm

    bar = tqdm(
        total=args.steps or None,
        initial=step,
        disable=args.no_progress or not main_process,
        dynamic_ncols=True,
    )
    start = time.monotonic()
    running = None
    train_mode(model, args.freeze_norm)
    stopped_early = False
    while not args.steps or step < args.steps:
        elapsed = time.monotonic() - start
        if args.time_limit:
            elapsed = agree_elapsed(acc, elapsed)
            if elapsed > args.time_limit:
                stopped_early = True
                break
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args, elapsed)
        opt.zero_grad(set_to_none=True)
        step_loss = torch.zeros((), device=device)
        for micro in range(plan.accumulation):
            indices = plan.sample_indices(samples, micro, acc.process_index)
            x, snr, h, noise = draw_batch(train, indices, args, config, device)
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            # Gradients are summed locally and averaged over processes on the last micro-step.
            last = micro == plan.accumulation - 1
            with acc.no_sync(ddp_link) if not last else nullcontext():
                with autocast(device.type, precision):
                    x_hat = ddp_link(x, snr, h, noise)
                loss = training_loss(x_hat, x, args.loss) / plan.accumulation
                scaler.scale(loss).backward()
            step_loss += loss.detach()
        scaler.step(opt)
        scaler.update()
        step += 1
        samples += plan.global_batch
        if step % 10 == 0 or step < 10:
            value = mean_over_processes(acc, float(step_loss))
            running = value if running is None else 0.95 * running + 0.05 * value
            bar.set_postfix(
                loss=f"{running:.5f}",
                psnr=f"{-running if args.loss == 'psnr' else -10 * math.log10(max(running, 1e-12)):.2f}",
            )
        bar.update(1)
        if step % 100 == 0:
            log(
                {
                    "step": step,
                    "samples": samples,
                    "loss": running,
                    "lr": opt.param_groups[0]["lr"],
                    "time": time.monotonic() - start,
                }
            )
        if step % args.val_every == 0 or step == args.steps:
            metrics = validate_and_keep_best()
            if main_process:
                bar.write(f"step {step}: validation {json.dumps(metrics)}")
        if step % args.ckpt_every == 0:
            save_checkpoint()
    bar.close()
    if stopped_early:
        metrics = validate_and_keep_best()
        if main_process:
            print(f"time limit: stopped at step {step}: validation {json.dumps(metrics)}")
    save_checkpoint()
    if main_process:
        model.save_pretrained(out / "last.safetensors", {"step": step})
        print(json.dumps({"step": step, "best_val_psnr_mean": best, "out": str(out)}))
    acc.wait_for_everyone()
    if acc.num_processes > 1:
        acc.end_training()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
