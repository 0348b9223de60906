#!/usr/bin/env python3
"""Throughput of the OFDM chain beside the single carrier and a stock chain, one core.

    python benchmarks/ofdm_throughput.py --samples 10000000 --repeats 3 --core 0 --json /tmp/ofdm_tp.json

In one process pinned to one CPU core (GNU Radio's threads inherit it), one after
the other, ``--repeats`` times each:

- ofdm:  diffjscc.image_source(waveform="ofdm", repeating one image) -> head ->
         channels.channel_model (AWGN at 10 dB, frequency offset 0.005 cycles/sample)
         -> diffjscc.jscc_receiver(waveform="ofdm") (every frame a PDU);
- sc:    the same with the single carrier;
- stock: blocks.vector_source_c (the same OFDM bursts, repeating) -> head ->
         channels.channel_model -> digital.corr_est_cc (GNU Radio's burst detector,
         correlating with the OFDM sync) -> null sink;
- numpy: the OFDM receiver core alone on a recorded stream (CPU time of this
         process), chunks of 8192 samples: 40 frames back to back (1000-sample gaps),
         best of repeated passes (warm: its caches hold every delay prior and noise
         level after the first), the same with its caches forgotten before every pass
         (cold), 300 frames each with its own noise draw in one pass from empty caches
         (fresh: what the chain's channel_model gives it), and noise alone (idle); its
         kernels compiled where numba is (``_fast_ofdm``).

``--link-frames 1000`` adds ``fresh_link``: one receiver over a steady flat link's first
1,000 frames of fresh noise (1 % frequency offset), Msps per CPU second for each 100, the
distinct delay priors and the interpolator caches' misses; ``--core-only`` runs the core-alone
figures without the chains:

    python benchmarks/ofdm_throughput.py --core-only --core 1 --link-frames 1000

The image is the astronaut sample encoded once by the QA tests' stand-in codec
(768x512 after resizing: 3072 JSCC symbols, one frame), so the encoder hardly counts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Min output buffer of the chains' blocks, items: the flowgraphs' advice for the block
# feeding the receiver (gr_throughput.py: 1.25-1.3x more per CPU second than 32768).
CHAIN_BUFFER = 1 << 17


def _module():
    import gnuradio

    source = str(ROOT / "gr-diffjscc" / "python")
    if source not in gnuradio.__path__:
        gnuradio.__path__.insert(0, source)


def _image(tmp: Path) -> Path:
    import skimage.data
    from PIL import Image

    path = tmp / "astronaut_768x512.png"
    Image.fromarray(skimage.data.astronaut()).resize((768, 512)).save(path)
    return path


def _channel(noise_voltage: float):
    from gnuradio import channels

    return channels.channel_model(
        noise_voltage=noise_voltage, frequency_offset=0.005, epsilon=1.0, taps=[1.0], noise_seed=1
    )


def chain(kind, args, encoder, image):
    from gnuradio import blocks, diffjscc, gr

    tb = gr.top_block()
    src = diffjscc.image_source(
        str(image), repeat=0, interval_s=0, encoder=encoder, waveform=kind, gap_samples=1000
    )
    head = blocks.head(gr.sizeof_gr_complex, args.samples)
    chan = _channel(src.waveform.noise_voltage(10.0))
    rx = diffjscc.jscc_receiver(waveform=kind)
    for b in (src, head, chan):
        b.set_min_output_buffer(CHAIN_BUFFER)
    tb.connect(src, head, chan, rx)
    tb.keep = (src, rx)
    return tb


def stock(args, bursts):
    from diffjscc.radio.ofdm import OfdmConfig, noise_voltage, sync_preamble
    from gnuradio import blocks, digital, gr

    cfg = OfdmConfig()
    gap = np.zeros(1000, np.complex64)
    samples = np.concatenate([np.concatenate([b, gap]) for b in bursts])
    template = sync_preamble(cfg.fft_size, cfg.used_carriers)
    tb = gr.top_block()
    src = blocks.vector_source_c(samples.tolist(), repeat=True)
    head = blocks.head(gr.sizeof_gr_complex, args.samples)
    chan = _channel(noise_voltage(10.0, cfg))
    corr = digital.corr_est_cc(template.tolist(), 1, 0, 0.9, digital.THRESHOLD_ABSOLUTE)
    sink = blocks.null_sink(gr.sizeof_gr_complex)
    for b in (src, head, chan, corr):
        b.set_min_output_buffer(CHAIN_BUFFER)
    tb.connect(src, head, chan, corr, sink)
    return tb


def fresh_rx(bursts, frames=300, passes=4) -> float:
    """Samples per CPU second of the OFDM receiver core on ``frames`` frames, each with
    its own noise draw, from empty caches (best of ``passes``): the steady state of a
    link whose noise estimate and delay profile move from frame to frame."""
    from diffjscc.radio.ofdm import OfdmConfig, noise_voltage
    from diffjscc.radio.ofdm_receiver import OfdmReceiver, clear_caches
    from diffjscc.radio.sim import frequency_offset

    cfg = OfdmConfig()
    rng = np.random.default_rng(9)
    gap = np.zeros(1000, np.complex64)
    one = np.concatenate([np.concatenate([b, gap]) for b in bursts])
    x = frequency_offset(np.tile(one, frames // len(bursts)), 0.005)
    sigma = noise_voltage(10.0, cfg)
    x = (
        x + sigma / np.sqrt(2) * (rng.standard_normal(x.size) + 1j * rng.standard_normal(x.size))
    ).astype(np.complex64)
    best = 0.0
    for _ in range(passes):
        clear_caches()
        rx = OfdmReceiver(cfg)
        t = time.process_time()
        for i in range(0, x.size, 8192):
            rx.feed(x[i : i + 8192])
        rx.flush()
        best = max(best, x.size / (time.process_time() - t))
        assert rx.stats["frames_ok"] == frames // len(bursts) * len(bursts), rx.stats
    return best


def fresh_link(bursts, frames=1000, per=100, cfo=0.01, snr_db=10.0, seed=9) -> dict:
    """One receiver over ``frames`` frames of a steady flat link, each with its own noise
    draw, from empty caches (a link's first ``frames`` frames; GNU Radio's channel_model
    gives the chain the same): Msps per CPU second for each ``per`` frames in turn, and
    what the caches saw: distinct delay priors (``_prior_delays`` entries), the misses of
    the interpolators' caches, and the frames delivered."""
    from diffjscc.radio import ofdm_receiver as orx
    from diffjscc.radio.ofdm import OfdmConfig, noise_voltage
    from diffjscc.radio.sim import frequency_offset

    cfg = OfdmConfig()
    rng = np.random.default_rng(seed)
    gap = np.zeros(1000, np.complex64)
    one = np.concatenate([np.concatenate([b, gap]) for b in bursts])
    block = np.tile(one, max(per // len(bursts), 1))
    sigma = noise_voltage(snr_db, cfg)
    orx.clear_caches()
    rx = orx.OfdmReceiver(cfg)
    rates, done = [], 0
    for b in range(frames // (block.size // one.size)):
        phase = 2.0 * np.pi * cfo * b * block.size
        noise = rng.standard_normal((2, block.size)) * (sigma / np.sqrt(2))
        x = (frequency_offset(block, cfo, phase) + noise[0] + 1j * noise[1]).astype(np.complex64)
        t = time.process_time()
        for i in range(0, x.size, 8192):
            done += len(rx.feed(x[i : i + 8192]))
        rates.append(x.size / (time.process_time() - t) / 1e6)
    done += len(rx.flush())
    caches = {
        name: getattr(orx, name).cache_info()
        for name in ("_prior_delays", "_used_phasors", "_comb_basis", "_comb_interpolator")
        + ("_known_basis", "_known_factor", "_known_interpolator", "_known_row_error")
        if hasattr(orx, name)
    }
    return {
        "msps_cpu_per_block": [round(r, 2) for r in rates],
        "frames_per_block": block.size // one.size * len(bursts),
        "frames_ok": done,
        "distinct_delay_priors": caches["_prior_delays"].currsize,
        "cache_misses": {k: v.misses for k, v in caches.items()},
        "cache_entries": {k: v.currsize for k, v in caches.items()},
        "restarts": getattr(getattr(rx, "delay_prior", None), "restarts", None),
    }


def numpy_rx(bursts, seconds=3.0, idle=False, cold=False) -> float:
    """Samples per CPU second of the OFDM receiver core on a noisy stream of frames, or
    on noise alone (``idle``: what the receiver costs between frames); ``cold``: its
    cached delay priors and interpolators forgotten before every pass (a new link, or a
    channel and noise level that keep changing: every frame's estimate solves anew)."""
    from diffjscc.radio.ofdm import OfdmConfig, noise_voltage
    from diffjscc.radio.ofdm_receiver import OfdmReceiver, clear_caches
    from diffjscc.radio.sim import frequency_offset

    cfg = OfdmConfig()
    rng = np.random.default_rng(0)
    gap = np.zeros(1000, np.complex64)
    x = np.concatenate([np.concatenate([b, gap]) for b in bursts] * 40)
    x = np.zeros_like(x) if idle else frequency_offset(x, 0.005)
    sigma = noise_voltage(10.0, cfg)
    x = (
        x + sigma / np.sqrt(2) * (rng.standard_normal(x.size) + 1j * rng.standard_normal(x.size))
    ).astype(np.complex64)
    best = 0.0
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end or best == 0.0:
        rx = OfdmReceiver(cfg)
        if cold:
            clear_caches()
        t = time.process_time()
        for i in range(0, x.size, 8192):
            rx.feed(x[i : i + 8192])
        rx.flush()
        best = max(best, x.size / (time.process_time() - t))
        assert rx.stats["frames_ok"] == (0 if idle else 40 * len(bursts)), rx.stats
    return best


def _compiled() -> bool:
    from diffjscc.radio import _fast_ofdm

    return _fast_ofdm.load()


def main(argv=None) -> int:
    import tempfile

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=10_000_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--core", type=int, default=0, help="CPU core to pin to")
    p.add_argument("--json", type=Path)
    p.add_argument(
        "--core-only",
        action="store_true",
        help="only the receiver core alone (warm, cold, fresh, idle, and --link-frames)",
    )
    p.add_argument(
        "--link-frames",
        type=int,
        default=0,
        help="also one receiver over this many fresh-noise frames, per 100 (fresh_link)",
    )
    args = p.parse_args(argv)
    _module()
    os.sched_setaffinity(0, {args.core})
    from diffjscc.image import load_image
    from diffjscc.radio.ofdm import build_bursts
    from gnuradio.diffjscc._fakes import BlockMeanCodec

    encoder = BlockMeanCodec()
    load_start = os.getloadavg()
    runs = {"ofdm": [], "sc": [], "stock": []}
    frames = {"ofdm": [], "sc": []}
    block_cpu = {"ofdm": [], "sc": []}
    feed_cpu = {"ofdm": [], "sc": []}
    chunks = {"ofdm": [], "sc": []}
    with tempfile.TemporaryDirectory() as tmp:
        image = _image(Path(tmp))
        bursts = build_bursts(encoder.encode(load_image(image), snr_db=10.0), 0)
        if args.core_only:
            return _core_only(args, bursts, load_start)
        for _ in range(args.repeats):
            for kind in ("ofdm", "sc"):
                tb = chain(kind, args, encoder, image)
                t = time.perf_counter()
                tb.run()
                runs[kind].append(time.perf_counter() - t)
                frames[kind].append(tb.keep[1].stats()["frames_ok"])
                cpu = tb.keep[1].cpu_seconds()  # the receiver block's own thread
                block_cpu[kind].append(sum(cpu.values()))  # DC removal, feed, PDUs
                feed_cpu[kind].append(cpu["feed"])
                stats = tb.keep[1].stats()
                calls = stats.get("work_calls")  # absent before the block counted them
                chunks[kind].append(stats["samples_in"] / calls if calls else float("nan"))
            tb = stock(args, bursts)
            t = time.perf_counter()
            tb.run()
            runs["stock"].append(time.perf_counter() - t)
    msps = {k: args.samples / statistics.median(v) / 1e6 for k, v in runs.items()}
    result = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, 1 core (#{args.core})",
        "load_average_start": load_start,
        "load_average": os.getloadavg(),
        "samples": args.samples,
        "msps": msps,
        "ratio_ofdm_to_stock": msps["ofdm"] / msps["stock"],
        "ratio_sc_to_stock": msps["sc"] / msps["stock"],
        "frames_ok": frames,
        # The receiver block's CPU time in work() (receiving and making PDUs), same runs.
        "receiver_block_msps_cpu": {
            k: args.samples / statistics.median(v) / 1e6 for k, v in block_cpu.items()
        },
        # Samples per work() call of the receiver block, each run.
        "receiver_samples_per_work_call": chunks,
        # The same, receiving alone (feed), without making and posting the PDUs.
        "receiver_block_feed_msps_cpu": {
            k: args.samples / statistics.median(v) / 1e6 for k, v in feed_cpu.items()
        },
        "numpy_ofdm_rx_msps_cpu": numpy_rx(bursts) / 1e6,
        "numpy_ofdm_rx_cold_msps_cpu": numpy_rx(bursts, cold=True) / 1e6,
        "numpy_ofdm_rx_fresh_msps_cpu": fresh_rx(bursts) / 1e6,
        "numpy_ofdm_rx_idle_msps_cpu": numpy_rx(bursts, idle=True) / 1e6,
        "compiled_sync_metric": _compiled(),
        "seconds": runs,
    }
    if args.link_frames:
        result["fresh_link"] = fresh_link(bursts, args.link_frames)
    return _report(args, result)


def _core_only(args, bursts, load_start) -> int:
    result = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, 1 core (#{args.core})",
        "load_average_start": load_start,
        "numpy_ofdm_rx_msps_cpu": numpy_rx(bursts) / 1e6,
        "numpy_ofdm_rx_cold_msps_cpu": numpy_rx(bursts, cold=True) / 1e6,
        "numpy_ofdm_rx_fresh_msps_cpu": fresh_rx(bursts) / 1e6,
        "numpy_ofdm_rx_idle_msps_cpu": numpy_rx(bursts, idle=True) / 1e6,
        "compiled_sync_metric": _compiled(),
    }
    if args.link_frames:
        result["fresh_link"] = fresh_link(bursts, args.link_frames)
    result["load_average"] = os.getloadavg()
    return _report(args, result)


def _report(args, result) -> int:
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        from diffjscc.io import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
