"""``diffjscc train-refiner``: stage-2 training of the DiffJSCC control module.

Frozen: the JSCC codec, the VAE, the text encoder and the UNet. Trained: the
control module, with the latent diffusion loss ||eps - eps_theta(z_t, t | x_hat,
text, SNR)||^2 where x_hat is the JSCC reconstruction of a random crop sent at
an SNR drawn uniformly from [snr-min, snr-max] dB. A fresh control module is
initialised from the UNet as the official ``make_stage2_init_weight`` does.

One process, or data-parallel under ``accelerate launch`` / ``torchrun`` (see
docs/training.md): ``--batch-size`` is the global batch, split over processes and
``--grad-accum`` micro-steps; each sample's crop, SNR and channel draws come from its
index in the run's stream, and each micro-batch's diffusion noise and timesteps from
its first sample's index, so P processes step exactly as one process with P
accumulation steps. The run folder holds ``checkpoint.pt`` (control module,
optimiser, gradient scaler, step, samples consumed: ``--resume`` continues where a
run stopped, under any number of processes), ``log.jsonl`` and ``refiner/`` (the
whole refiner, loadable with ``DiffJSCCRefiner.from_pretrained``; later checkpoints
replace its ``control/``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from diffjscc.errors import ConfigError, WeightsNotFoundError
from diffjscc.io import atomic_path
from diffjscc.refiner._deps import require
from diffjscc.train.distributed import BatchPlan, add_batch_args, average_gradients

PRECISIONS = ("fp32", "bf16", "fp16")


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffjscc train-refiner", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--sd", help="Stable Diffusion 2.1-base: local diffusers folder or cached model id"
    )
    src.add_argument(
        "--init", help="start from this refiner folder (e.g. a converted official checkpoint)"
    )
    p.add_argument(
        "--jscc",
        help="JSCC weights (.safetensors) or registry name; default: <init>/jscc.safetensors",
    )
    p.add_argument(
        "--data", nargs="+", help="training image folders (default: bsds500 train/ + test/)"
    )
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--steps", type=int, default=10000, help="optimiser steps")
    add_batch_args(p, batch=4)
    p.add_argument(
        "--crop", type=int, default=256, help="training crop side (a multiple of 64 for SD)"
    )
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (official: 1e-4)")
    p.add_argument("--snr-min", type=float, default=0.0)
    p.add_argument("--snr-max", type=float, default=14.0)
    p.add_argument(
        "--caption", default="none", help="none | fixed:<text> | blip2[:<model>] | blip[:<model>]"
    )
    p.add_argument(
        "--use-channel-gain", action="store_true", help="condition on h too (fresh modules only)"
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="bf16/fp16: autocast on GPU (default: $ACCELERATE_MIXED_PRECISION, else fp32)",
    )
    p.add_argument(
        "--grad-checkpointing", action="store_true", help="recompute activations to save memory"
    )
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (a process's own GPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p


def load_jscc(spec: str | None, init: str | None, device: str):
    """The frozen JSCC codec (``diffjscc.jscc.model.DeepJSCC``)."""
    from diffjscc.jscc.model import DeepJSCC

    if spec is None and init is not None and (Path(init) / "jscc.safetensors").is_file():
        spec = str(Path(init) / "jscc.safetensors")
    if spec is None:
        raise ConfigError("no JSCC codec: pass --jscc (weights file or registry name)")
    if spec.endswith(".safetensors") or Path(spec).is_file():
        model = DeepJSCC.from_pretrained(spec)
    else:
        try:
            from diffjscc.zoo import load_codec
        except ImportError as exc:
            raise WeightsNotFoundError(f"cannot resolve JSCC model {spec!r}: {exc}") from exc
        model = load_codec(spec, device="cpu").model
    return model.to(device).eval().requires_grad_(False)


class RefinerTrainer:
    """One optimiser step at a time on the control module; everything else frozen."""

    def __init__(
        self,
        refiner,
        lr: float = 1e-4,
        precision: str = "fp32",
        grad_checkpointing: bool = False,
        accelerator=None,
    ):
        torch = require("torch")
        # With several processes, gradients are averaged over them before each step
        # (the control module stays inside the pipeline, so not in DistributedDataParallel).
        self.accelerator = accelerator
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}")
        self.refiner = refiner
        self.device = refiner.device
        on_gpu = self.device.type == "cuda"
        self.autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[
            precision
        ]
        if self.autocast_dtype is not None and not on_gpu:
            raise ConfigError(f"--precision {precision} needs a GPU; use fp32 on the CPU")
        # Weights stay fp32 (the saved refiner keeps one dtype); autocast runs the maths in bf16/fp16.
        refiner.control.float().train().requires_grad_(True)
        if grad_checkpointing:
            refiner.control.enable_gradient_checkpointing()
            refiner.unet.enable_gradient_checkpointing()
        self.params = [p for p in refiner.control.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
        self.step_count = 0

    def _autocast(self):
        torch = require("torch")
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def step(
        self, clean, x_hat, snr_db, captions: list[str], channel_gain=None, generator=None
    ) -> float:
        """One optimiser step on one batch; returns its loss."""
        return self.accumulated_step([(clean, x_hat, snr_db, captions, channel_gain, generator)])

    def accumulated_step(self, micro_batches) -> float:
        """One optimiser step on the mean loss of several micro-batches, each a tuple
        (clean, x_hat, snr_db, captions, channel_gain, generator); returns that loss
        (this process's)."""
        torch = require("torch")
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for clean, x_hat, snr_db, captions, channel_gain, generator in micro_batches:
            context = self.refiner.encode_text(captions)
            with self._autocast():
                loss = self.refiner.training_loss(
                    clean, x_hat, snr_db, context, channel_gain, generator
                )
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at step {self.step_count}")
            self.scaler.scale(loss / len(micro_batches)).backward()
            total += float(loss.detach()) / len(micro_batches)
        if self.accelerator is not None:
            average_gradients(self.accelerator, self.params)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step_count += 1
        return total

    def state_dict(self) -> dict:
        return {
            "control": self.refiner.control.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step_count,
        }

    def load_state_dict(self, state: dict) -> None:
        self.refiner.control.load_state_dict(state["control"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step_count = int(state["step"])


def _build_refiner(args, device: str):
    from diffjscc.refiner.pipeline import DiffJSCCRefiner

    if args.init:
        refiner = DiffJSCCRefiner.from_pretrained(args.init)
        if args.use_channel_gain and refiner.control.gain_embedding is None:
            raise ConfigError(
                "--use-channel-gain needs a control module built with it; start from --sd"
            )
    else:
        refiner = DiffJSCCRefiner.from_stable_diffusion(
            args.sd, use_channel_gain=args.use_channel_gain
        )
    return refiner.to(device)


def _save(trainer: RefinerTrainer, out: Path, samples: int, processes: int) -> None:
    torch = require("torch")
    from diffjscc.refiner.pipeline import CONFIG_NAME

    state = trainer.state_dict()
    state["samples"] = samples
    state["processes"] = processes
    with atomic_path(out / "checkpoint.pt") as tmp:
        torch.save(state, tmp)
    folder = out / "refiner"
    if (folder / CONFIG_NAME).is_file():
        # Only the control module changes: rewrite it alone, not gigabytes of frozen weights.
        tmp_dir = Path(tempfile.mkdtemp(prefix=".control.", dir=folder))
        try:
            trainer.refiner.control.save_pretrained(tmp_dir)
            old = folder / ".control.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder / "control", old)
            os.replace(tmp_dir, folder / "control")
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    else:
        trainer.refiner.save_pretrained(folder, overwrite=True)


def _micro_batch_generator(seed: int, first_sample: int):
    """The diffusion noise and timesteps of a micro-batch, from its first sample's index."""
    torch = require("torch")
    state = np.random.SeedSequence([int(seed), int(first_sample), 1]).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def _precision(args) -> str:
    if args.precision:
        return args.precision
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    return {"no": "fp32"}.get(launcher, launcher)


def main(argv: list[str] | None = None) -> int:
    args = setup_args().parse_args(argv)
    torch = require("torch")
    from tqdm import tqdm

    from diffjscc.datasets import InMemoryImages, collect_images, data_root
    from diffjscc.refiner.captioner import make_captioner
    from diffjscc.train.distributed import make_accelerator, mean_over_processes
    from diffjscc.train.jscc import SimulatedLink, draw_batch

    if args.snr_min > args.snr_max:
        raise ConfigError("--snr-min is above --snr-max")
    for name in ("batch_size", "grad_accum", "ckpt_every", "log_every"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    precision = _precision(args)
    out = Path(args.out)
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.exists() and not args.resume:
        raise ConfigError(
            f"{ckpt_path} exists: pass --resume to continue that run, or choose another --out"
        )
    if args.resume and not ckpt_path.exists():
        raise ConfigError(f"--resume: no checkpoint at {ckpt_path}")
    acc = make_accelerator(args.device)
    device = acc.device
    main_process = acc.is_main_process
    plan = BatchPlan(args.batch_size, acc.num_processes, args.grad_accum)

    refiner = _build_refiner(args, device)
    if args.crop % refiner.size_multiple:
        raise ConfigError(f"--crop must be a multiple of {refiner.size_multiple}")
    jscc = load_jscc(args.jscc, args.init, device)
    link = SimulatedLink(jscc)
    folders = args.data or [data_root() / "bsds500" / "train", data_root() / "bsds500" / "test"]
    images = InMemoryImages(collect_images(folders), min_side=args.crop)
    captioner = make_captioner(
        args.caption, device=device, replace_words=refiner.config.caption_replace
    )
    trainer = RefinerTrainer(refiner, args.lr, precision, args.grad_checkpointing, acc)
    samples = 0
    if args.resume:
        state = torch.load(ckpt_path, map_location=device, weights_only=True)
        trainer.load_state_dict(state)
        # Checkpoints from before samples were counted: each step was one batch.
        samples = int(state.get("samples", trainer.step_count * args.batch_size))
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
        print(
            f"train-refiner: {acc.num_processes} process(es) on {device}, global batch "
            f"{plan.global_batch} = {plan.micro_batch} x {plan.processes} x "
            f"{plan.accumulation} accumulation, precision {precision}"
        )
    acc.wait_for_everyone()
    use_gain = refiner.control.gain_embedding is not None and jscc.config.channel_type == "rayleigh"

    bar = tqdm(
        total=args.steps,
        initial=trainer.step_count,
        desc="train-refiner",
        disable=args.no_progress or not main_process,
        unit="step",
    )
    log = (out / "log.jsonl").open("a") if main_process else None
    start = time.perf_counter()
    try:
        while trainer.step_count < args.steps:
            micro_batches = []
            for micro in range(plan.accumulation):
                indices = plan.sample_indices(samples, micro, acc.process_index)
                clean, snr, h, noise = draw_batch(images, indices, args, jscc.config, device)
                with torch.no_grad():
                    x_hat = link(clean, snr, h, noise).float().clamp(0, 1)
                if args.caption in ("none", ""):
                    captions = [""] * len(indices)
                else:
                    u8 = (x_hat.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
                    captions = captioner(list(u8))
                generator = _micro_batch_generator(args.seed, indices.start)
                micro_batches.append(
                    (clean, x_hat, snr, captions, h if use_gain else None, generator)
                )
            loss = trainer.accumulated_step(micro_batches)
            samples += plan.global_batch
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if trainer.step_count % args.log_every == 0 or trainer.step_count == args.steps:
                loss = mean_over_processes(acc, loss)
                if log is not None:
                    record = {
                        "step": trainer.step_count,
                        "samples": samples,
                        "loss": loss,
                        "elapsed_s": time.perf_counter() - start,
                    }
                    log.write(json.dumps(record) + "\n")
                    log.flush()
            if trainer.step_count % args.ckpt_every == 0 or trainer.step_count == args.steps:
                if main_process:
                    _save(trainer, out, samples, acc.num_processes)
                acc.wait_for_everyone()
    finally:
        bar.close()
        if log is not None:
            log.close()
    if main_process:
        print(f"train-refiner: {trainer.step_count} steps; refiner in {out / 'refiner'}")
    if acc.num_processes > 1:
        acc.end_training()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
