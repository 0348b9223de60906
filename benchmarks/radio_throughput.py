"""Throughput of the numpy radio chain on one core: transmitter, channel, receiver.

Images of random JSCC-like symbols (768x512 at CBR 1/96 by default: 3 frames
each) are framed and pulse shaped, sent through a simulated channel (noise,
1 % frequency offset, fractional delay, optionally a clock offset) and received
in chunks of --chunk samples, as a GNU Radio block would get them. Reported:
samples per second of each stage and of the whole chain, by the wall clock and
per second of this process's CPU time (the figure for one core that other jobs
on a shared machine do not distort). BLAS threads are limited to one before
numpy is imported.

    python benchmarks/radio_throughput.py --json /tmp/radio_throughput.json
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from diffjscc import channels  # noqa: E402
from diffjscc.io import atomic_write_text  # noqa: E402
from diffjscc.radio import (  # noqa: E402
    BurstReceiver,
    FrameConfig,
    ReceiverTuning,
    _fast,  # noqa: E402
    build_bursts,
    image_symbol_count,
)
from diffjscc.radio.sim import impair, resample  # noqa: E402
from diffjscc.registry import get_model_spec  # noqa: E402
from diffjscc.symbols import EncodedImage  # noqa: E402


def run(
    images: int,
    model: str,
    chunk: int,
    snr_db: float,
    sro_ppm: float,
    seed: int,
    track_ppm=200.0,
    header_version: int = FrameConfig().header_version,
) -> dict:
    rng = np.random.default_rng(seed)
    cfg = FrameConfig(header_version=header_version)
    tuning = ReceiverTuning(max_sample_rate_offset_ppm=track_ppm)
    shape = (512, 768)
    spec = get_model_spec(model)
    n = image_symbol_count(spec.rate_code, shape)
    encs = []
    for _ in range(images):
        z = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)
        encs.append(EncodedImage(channels.normalise_power(z), shape, (0, 0, 0), spec.name, 1.0))
    # Warm caches (pilot sequence, filter taps) outside the timed part.
    warm = BurstReceiver(cfg, tuning)
    warm.feed(np.concatenate(build_bursts(encs[0], image_id=0, cfg=cfg)))

    t0, c0 = time.perf_counter(), time.process_time()
    bursts = [b for i, enc in enumerate(encs) for b in build_bursts(enc, image_id=i, cfg=cfg)]
    stream = np.concatenate(bursts)
    t1, c1 = time.perf_counter(), time.process_time()
    if sro_ppm:
        stream = resample(stream, 1.0 + sro_ppm * 1e-6)
    x = impair(stream, snr_db, cfg, cfo=0.01 / cfg.sps, delay=17.3, rng=rng)
    t2, c2 = time.perf_counter(), time.process_time()
    rx = BurstReceiver(cfg, tuning)
    frames = []
    for i in range(0, x.size, chunk):
        frames += rx.feed(x[i : i + chunk])
    frames += rx.flush()
    t3, c3 = time.perf_counter(), time.process_time()
    samples = int(stream.size)
    return {
        "model": spec.name,
        "images": images,
        "frames_sent": len(bursts),
        "frames_received": len(frames),
        "samples": samples,
        "chunk": chunk,
        "snr_db": snr_db,
        "sro_ppm": sro_ppm,
        "track_ppm": track_ppm,
        "header_version": header_version,
        "channel_uses_per_jscc_symbol": samples / cfg.sps / (images * n),
        "compiled_kernels": _fast.AVAILABLE,
        "tx_msps": samples / (t1 - t0) / 1e6,
        "channel_msps": samples / (t2 - t1) / 1e6,
        "rx_msps": samples / (t3 - t2) / 1e6,
        "chain_msps": samples / (t3 - t0) / 1e6,
        "tx_plus_rx_msps": samples / ((t1 - t0) + (t3 - t2)) / 1e6,
        # CPU time of this process: what one core does, whatever else the machine runs.
        "tx_msps_cpu": samples / max(c1 - c0, 1e-9) / 1e6,
        "rx_msps_cpu": samples / max(c3 - c2, 1e-9) / 1e6,
        "tx_plus_rx_msps_cpu": samples / max((c1 - c0) + (c3 - c2), 1e-9) / 1e6,
        "receiver_stats": dict(rx.stats),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--model", default="jscc-awgn-cbr1_96")
    parser.add_argument("--chunk", type=int, default=8192, help="samples per feed() call")
    parser.add_argument("--snr", type=float, default=10.0)
    parser.add_argument("--sro-ppm", type=float, default=0.0, help="clock offset in the channel")
    parser.add_argument(
        "--track-ppm",
        type=float,
        default=200.0,
        help="receiver's max_sample_rate_offset_ppm (0: no clock-offset tracking)",
    )
    parser.add_argument(
        "--header-version",
        type=int,
        default=FrameConfig().header_version,
        choices=(1, 2),
        help="header code sent (default: FrameConfig's)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="JSON report to write")
    args = parser.parse_args(argv)
    runs = [
        run(
            args.images,
            args.model,
            args.chunk,
            args.snr,
            args.sro_ppm,
            args.seed + r,
            args.track_ppm,
            args.header_version,
        )
        for r in range(args.repeat)
    ]
    best = max(runs, key=lambda r: r["rx_msps_cpu"])
    best["machine"] = {
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cores_used": 1,
    }
    print(
        f"{best['samples']} samples, {best['frames_received']}/{best['frames_sent']} frames: "
        f"TX {best['tx_msps']:.1f} Msps, channel (numpy sim) {best['channel_msps']:.1f} Msps, "
        f"RX {best['rx_msps']:.1f} Msps, TX+channel+RX {best['chain_msps']:.1f} Msps, "
        f"TX+RX {best['tx_plus_rx_msps']:.1f} Msps (best of {args.repeat}, wall clock); "
        f"per CPU second: TX {best['tx_msps_cpu']:.1f}, RX {best['rx_msps_cpu']:.1f}, "
        f"TX+RX {best['tx_plus_rx_msps_cpu']:.1f} Msps; header version {args.header_version}, "
        f"{best['channel_uses_per_jscc_symbol']:.3f} samples/sps per JSCC symbol, "
        f"kernels: {'numba' if best['compiled_kernels'] else 'numpy'}"
    )
    if args.json:
        atomic_write_text(args.json, json.dumps({"best": best, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
