"""What both trainers share to run data-parallel under ``accelerate launch`` or ``torchrun``.

One process, several GPUs or several nodes run the same optimisation: the global batch
is a setting, and each of the P processes computes B / (P x A) samples per micro-step
over A accumulation steps. Every sample's randomness comes from its index in the
run's stream of samples (``sample_rng``), so which process draws it does not matter:
a run continues under another number of processes from the same samples, and its
checkpoints hold the position in the stream as a count of global samples.
"""

from __future__ import annotations

import argparse
import os
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from diffjscc.errors import ConfigError

PRECISIONS = ("no", "bf16", "fp16")


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of sample ``index`` of a run: the same on any process."""
    return np.random.default_rng([int(seed), int(index)])


@dataclass(frozen=True)
class BatchPlan:
    """The global batch, split over processes and accumulation steps."""

    global_batch: int
    processes: int
    accumulation: int

    def __post_init__(self):
        if self.global_batch < 1 or self.accumulation < 1 or self.processes < 1:
            raise ConfigError("batch size, processes and accumulation steps must be at least 1")
        if self.global_batch % (self.processes * self.accumulation):
            raise ConfigError(
                f"global batch {self.global_batch} does not split into {self.processes} "
                f"process(es) x {self.accumulation} accumulation step(s): choose a multiple "
                f"of {self.processes * self.accumulation}"
            )

    @property
    def micro_batch(self) -> int:
        """Samples one process computes per forward pass."""
        return self.global_batch // (self.processes * self.accumulation)

    def sample_indices(self, first: int, micro_step: int, rank: int) -> range:
        """Global indices of one micro-batch of the step whose first sample is ``first``
        (the samples consumed before it): micro-step after micro-step, process after
        process, so that P processes x 1 micro-step see the same micro-batches as 1 process
        x P micro-steps."""
        start = first + (micro_step * self.processes + rank) * self.micro_batch
        return range(start, start + self.micro_batch)


def add_batch_args(p: argparse.ArgumentParser, batch: int) -> None:
    p.add_argument(
        "--batch-size",
        type=int,
        default=batch,
        help="GLOBAL batch per optimiser step, over all processes and accumulation steps "
        "(per-process micro-batch = batch-size / (processes x grad-accum))",
    )
    p.add_argument(
        "--grad-accum", type=int, default=1, help="micro-steps accumulated per optimiser step"
    )


def add_precision_arg(p: argparse.ArgumentParser, precision: str) -> None:
    p.add_argument(
        "--mixed-precision",
        choices=PRECISIONS,
        default=None,
        help=f"autocast dtype (default: $ACCELERATE_MIXED_PRECISION, else {precision}); "
        "fp16 adds a gradient scaler and needs a GPU",
    )
    p.set_defaults(default_precision=precision)


def resolve_precision(args) -> str:
    precision = args.mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION")
    precision = precision or args.default_precision
    if precision not in PRECISIONS:
        raise ConfigError(f"mixed precision must be one of {PRECISIONS}, not {precision!r}")
    return precision


def make_accelerator(device: str = "auto"):
    """An ``accelerate.Accelerator`` for this process: one process, or one of a
    ``torchrun`` / ``accelerate launch`` group (gloo on CPUs, NCCL on GPUs).

    Precision is the trainer's (``autocast``), not accelerate's: its state is one per
    process and refuses a second setting, which in-process tests and sittings need.
    """
    import torch

    try:
        from accelerate import Accelerator
    except ImportError as exc:
        raise ConfigError(
            "training needs accelerate: pip install 'diffjscc[torch]' (or pip install accelerate)"
        ) from exc
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, not {device!r}")
    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if not cpu and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device here")
    return Accelerator(cpu=cpu, mixed_precision="no")


def autocast(device_type: str, precision: str):
    import torch

    if precision == "no":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type, dtype=dtype)


def check_precision(precision: str, device_type: str) -> None:
    if precision == "fp16" and device_type != "cuda":
        raise ConfigError("--mixed-precision fp16 needs a GPU; use bf16 or no on the CPU")


def agree_elapsed(accelerator, elapsed: float) -> float:
    """The main process's clock, on every process: time-limited runs stop at one step."""
    if accelerator.num_processes == 1:
        return elapsed
    import torch

    value = torch.tensor([elapsed], dtype=torch.float64, device=accelerator.device)
    torch.distributed.broadcast(value, src=0)
    return float(value.item())


def mean_over_processes(accelerator, value: float) -> float:
    if accelerator.num_processes == 1:
        return value
    import torch

    t = torch.tensor([value], dtype=torch.float64, device=accelerator.device)
    torch.distributed.all_reduce(t)
    return float(t.item()) / accelerator.num_processes


def average_gradients(accelerator, params) -> None:
    """All-reduce the gradients of ``params`` to their mean over processes, in one
    flat buffer (for modules that are not wrapped in DistributedDataParallel)."""
    if accelerator.num_processes == 1:
        return
    import torch

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= accelerator.num_processes
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
