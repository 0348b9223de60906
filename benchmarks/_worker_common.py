"""Shared by the worker benchmarks: a codec for timing, requests, a worker process.

Run as a script it is ``diffjscc worker`` whose codec comes from
:func:`make_codec` (trained weights when present, else a random model of the
same config), so the benchmarks run before weights exist:

    python benchmarks/_worker_common.py --bind tcp://127.0.0.1:5555 --threads 1
"""

from __future__ import annotations

import sys

import numpy as np
from diffjscc.image import padded_shape
from diffjscc.registry import DOWNSAMPLING, get_model_spec
from diffjscc.worker.local import free_tcp_address
from diffjscc.worker.protocol import DecodeRequest


def free_port() -> int:
    return int(free_tcp_address().rsplit(":", 1)[1])


def make_codec(model: str, device: str = "cpu", half: bool = False):
    """(codec, "trained weights" or "random init: ...") for timing."""
    from diffjscc.errors import WeightsNotFoundError
    from diffjscc.zoo import load_codec

    try:
        codec = load_codec(model, device=device)
        weights = "trained weights"
    except WeightsNotFoundError as exc:
        codec = random_codec(model, device)
        weights = f"random init of the default config (weights absent: {str(exc).splitlines()[0]})"
    if half:
        codec.model.half()
    return codec, weights


def random_codec(model: str, device: str = "cpu"):
    import torch
    from diffjscc.codec import JSCCCodec
    from diffjscc.models.jscc import DeepJSCC, JSCCConfig

    spec = get_model_spec(model)
    torch.manual_seed(0)
    net = DeepJSCC(JSCCConfig(latent_channels=spec.channels, channel_type=spec.channel_type))
    return JSCCCodec(net.eval().to(device), spec)


def random_request(
    model: str, height: int, width: int, seed: int = 0, request_id=None
) -> DecodeRequest:
    spec = get_model_spec(model)
    n = spec.num_symbols(*padded_shape(height, width, DOWNSAMPLING))
    rng = np.random.default_rng(seed)
    symbols = ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) / np.sqrt(2)).astype(
        np.complex64
    )
    return DecodeRequest(
        request_id=seed if request_id is None else request_id,
        image_shape=(height, width),
        snr_db=1.0,
        symbols=symbols,
        model=spec.name,
    )


def run_worker(argv: list[str]) -> int:
    from diffjscc.worker.engine import CodecEngine
    from diffjscc.worker.server import build_parser, serve

    args = build_parser().parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    device = "cpu" if args.device == "auto" else args.device
    engine = CodecEngine(
        device=device, codec_loader=lambda name: make_codec(name, device)[0], half=False
    )
    for name in args.model or [get_model_spec("1/384").name]:
        engine.codec(get_model_spec(name).name)
    return serve(args, engine)


def write_report(path: str, report: dict) -> None:
    """Write the benchmark's JSON atomically and echo it."""
    import json

    from diffjscc.io import atomic_write_text

    atomic_write_text(path, json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(run_worker(sys.argv[1:]))


def rss_kib(pid: int) -> int | None:
    """Resident memory of a process in KiB (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None
