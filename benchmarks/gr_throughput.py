#!/usr/bin/env python3
"""Throughput of the deep-JSCC radio chain (TX -> channel -> RX, no neural decoder) on one core.

    python benchmarks/gr_throughput.py [--samples 20000000] [--core 0] [--json out.json]

Two flowgraphs of the same shape run in the same process, pinned to one CPU core
(every GNU Radio thread inherits the affinity), one after the other, ``--repeats``
times each:

- ours:  diffjscc.image_source (repeating one image) -> head -> channels.channel_model
         (AWGN at 7 dB, frequency offset) -> diffjscc.jscc_receiver (detection, timing,
         CFO, header, pilot CSI, equalisation; every frame delivered as a PDU);
- stock: blocks.vector_source_c (the same bursts, repeating) -> head ->
         channels.channel_model (same settings) -> digital.corr_est_cc (correlation
         with the same preamble: GNU Radio's own burst detector) -> null sink.

Both use the same stream buffer size (--buffer, 131072 items by default: what the
project's flowgraphs give the block feeding the receiver; with 32768 the receiver's
thread did 1.25-1.3x less per CPU second, being switched with the channel model's
blocks four times as often).

The source and ``channel_model`` share the core with the receiver and cap both
chains; so a second pair, unless ``--recorded-periods 0``, compares the receivers
alone on the same input: ``ours`` chain's channel output recorded once (that many
bursts with their gaps, not timed) and replayed by a repeating
``blocks.vector_source_c`` -> head -> diffjscc.jscc_receiver, beside the same
replay -> head -> digital.corr_est_cc -> null sink.

The image is encoded once (the source keeps the encoding when repeating), so the
encoder hardly counts; it is the stand-in codec of the QA tests, unless
--onnx asks for the real ONNX encoder (needs its weights). Reports samples per
second of each chain, and for ours the frames wholly inside the measured samples, the
frames delivered and the header CRC failures, and the CPU time of the receiver
block's own thread (``jscc_receiver.cpu_seconds``: its ``feed``, and the whole
block: DC removal, ``feed`` and making the PDUs) as samples per CPU second: the
rate the receiver keeps up with on the core, apart from the source and
``channel_model`` that share it; with the samples per ``work`` call and the
involuntary context switches of the process (``getrusage``) during each run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _module():
    import gnuradio

    source = str(ROOT / "gr-diffjscc" / "python")
    if source not in gnuradio.__path__:
        gnuradio.__path__.insert(0, source)


def default_image() -> Path:
    from diffjscc.datasets import data_root

    kodak = data_root() / "kodak" / "kodim23.png"
    if kodak.exists():
        return kodak
    from gnuradio.diffjscc.image_source import default_image_path

    return default_image_path()


def buffers(args, *blocks):
    """Larger stream buffers: the Python receiver then gets fewer, larger chunks."""
    if args.buffer:
        for block in blocks:
            block.set_min_output_buffer(args.buffer)


def channel(args, cfg):
    """The channel of both chains: AWGN at --snr and a frequency offset of --cfo."""
    from diffjscc.radio.config import noise_voltage
    from gnuradio import channels

    return channels.channel_model(
        noise_voltage=noise_voltage(args.snr, cfg),
        frequency_offset=args.cfo / args.sps,
        epsilon=1.0,
        taps=[1.0],
        noise_seed=1,
    )


def ours(args, encoder):
    from gnuradio import blocks, diffjscc, gr

    tb = gr.top_block()
    src = diffjscc.image_source(
        str(args.image), repeat=0, interval_s=0, encoder=encoder, sps=args.sps
    )
    head = blocks.head(gr.sizeof_gr_complex, args.samples)
    chan = channel(args, src.cfg)
    rx = diffjscc.jscc_receiver(sps=args.sps)
    buffers(args, src, head, chan)
    tb.connect(src, head, chan, rx)
    tb.blocks = (src, rx)
    return tb


def stock(args, encoder):
    from diffjscc.image import load_image
    from diffjscc.radio import FrameConfig, build_bursts
    from diffjscc.radio.pulse import shape
    from diffjscc.radio.sequences import preamble
    from gnuradio import blocks, digital, gr

    cfg = FrameConfig(sps=args.sps)
    enc = encoder.encode(load_image(args.image), snr_db=args.snr)
    gap = np.zeros(1000, np.complex64)
    samples = np.concatenate([np.concatenate([b, gap]) for b in build_bursts(enc, 0, cfg)])
    template = shape(preamble(), cfg)
    tb = gr.top_block()
    src = blocks.vector_source_c(samples.tolist(), repeat=True)
    head = blocks.head(gr.sizeof_gr_complex, args.samples)
    chan = channel(args, cfg)
    corr = digital.corr_est_cc(template.tolist(), 1, 0, 0.9, digital.THRESHOLD_ABSOLUTE)
    sink = blocks.null_sink(gr.sizeof_gr_complex)
    buffers(args, src, head, chan, corr)
    tb.connect(src, head, chan, corr, sink)
    return tb


def recorded(args, encoder) -> tuple[np.ndarray, int, int]:
    """``ours`` chain's channel output for --recorded-periods whole bursts and gaps:
    (samples, samples of a burst and its gap, samples of the leading gap)."""
    from diffjscc.image import load_image
    from diffjscc.radio import build_bursts
    from gnuradio import blocks, diffjscc, gr

    tb = gr.top_block()
    src = diffjscc.image_source(
        str(args.image), repeat=0, interval_s=0, encoder=encoder, sps=args.sps
    )
    # The source sends a gap, then each burst followed by a gap (one burst an image).
    enc = encoder.encode(load_image(args.image), snr_db=args.snr)
    (burst,) = build_bursts(enc, 0, src.cfg)
    count = src.gap_samples + args.recorded_periods * (burst.size + src.gap_samples)
    head = blocks.head(gr.sizeof_gr_complex, count)
    chan = channel(args, src.cfg)
    sink = blocks.vector_sink_c()
    tb.connect(src, head, chan, sink)
    tb.run()
    tape = np.asarray(sink.data(), dtype=np.complex64)
    return tape, burst.size + src.gap_samples, src.gap_samples


def replay_ours(args, samples):
    from gnuradio import blocks, diffjscc, gr

    tb = gr.top_block()
    src = blocks.vector_source_c(samples.tolist(), repeat=True)
    head = blocks.head(gr.sizeof_gr_complex, args.samples)
    rx = diffjscc.jscc_receiver(sps=args.sps)
    buffers(args, src, head)
    tb.connect(src, head, rx)
    tb.blocks = (rx,)
    return tb


def replay_stock(args, samples):
    from diffjscc.radio import FrameConfig
    from diffjscc.radio.pulse import shape
    from diffjscc.radio.sequences import preamble
    from gnuradio import blocks, digital, gr

    template = shape(preamble(), FrameConfig(sps=args.sps))
    tb = gr.top_block()
    src = blocks.vector_source_c(samples.tolist(), repeat=True)
    head = blocks.head(gr.sizeof_gr_complex, args.samples)
    corr = digital.corr_est_cc(template.tolist(), 1, 0, 0.9, digital.THRESHOLD_ABSOLUTE)
    sink = blocks.null_sink(gr.sizeof_gr_complex)
    buffers(args, src, head, corr)
    tb.connect(src, head, corr, sink)
    return tb


def _compiled() -> str:
    """Whether the receiver ran its numba kernels (diffjscc.radio._fast), and why not."""
    try:
        from diffjscc.radio import _fast
    except ImportError:  # a receiver from before the kernels
        return "numpy (no diffjscc.radio._fast)"
    return "numba" if _fast.AVAILABLE else f"numpy ({_fast.REASON})"


SWITCHES: list[int] = []  # involuntary context switches of the process, each timed run


def timed(tb) -> tuple[float, float]:
    """Wall-clock and CPU seconds (this process: every thread, all on the one
    pinned core) of one run; the CPU figure is what other jobs on a shared
    machine distort least."""
    switches = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
    t, c = time.perf_counter(), time.process_time()
    tb.run()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    SWITCHES.append(resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - switches)
    return wall, cpu


def block_cpu_seconds(rx) -> tuple[float, float]:
    """The receiver block's thread: (``feed``, the whole block). Blocks before the
    DC removal was timed apart, and the single carrier's since its DC remover writes
    into the receiver's buffer, count it in ``feed``."""
    parts = rx.cpu_seconds()
    return parts["feed"], sum(parts.values())


def samples_per_call(rx) -> float:
    stats = rx.stats()
    return stats["samples_in"] / stats["work_calls"] if stats.get("work_calls") else float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=20_000_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--core", type=int, default=0, help="CPU core to pin to")
    p.add_argument(
        "--image", type=Path, default=None, help="default: Kodak kodim23, else astronaut"
    )
    p.add_argument("--snr", type=float, default=7.0)
    p.add_argument("--cfo", type=float, default=0.01, help="fraction of the symbol rate")
    p.add_argument("--sps", type=int, default=2)
    p.add_argument(
        "--buffer", type=int, default=1 << 17, help="min output buffer, items (0: default)"
    )
    p.add_argument(
        "--recorded-periods",
        type=int,
        default=64,
        help="bursts of the recorded channel output replayed to both receivers (0: skip)",
    )
    p.add_argument("--onnx", action="store_true", help="use the real ONNX encoder")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    _module()
    os.sched_setaffinity(0, {args.core})
    args.image = args.image or default_image()
    if args.onnx:
        from diffjscc.onnx_codec import OnnxJSCCEncoder

        encoder = OnnxJSCCEncoder.from_pretrained("1/384")
    else:
        from gnuradio.diffjscc._fakes import BlockMeanCodec

        encoder = BlockMeanCodec()

    runs = {"ours": [], "stock": []}
    cpu = {"ours": [], "stock": []}
    frames = []
    receiver_cpu, receiver_block_cpu, chunks, switches = [], [], [], []
    replay = {k: [] for k in ("ours", "stock", "ours_cpu", "stock_cpu", "receiver_block_cpu")}
    replay["frames"], replay["chunks"], replay["switches"] = [], [], []
    tape = None
    if args.recorded_periods > 0:
        tape, period, lead = recorded(args, encoder)
        # Bursts wholly inside the replayed samples: each pass of the tape has
        # recorded_periods of them (the channel's delay keeps them inside a period).
        passes, rest = divmod(args.samples, tape.size)
        whole_replayed = passes * args.recorded_periods + max(rest - lead, 0) // period
    for _ in range(args.repeats):
        tb = ours(args, encoder)
        wall, used = timed(tb)
        runs["ours"].append(wall)
        cpu["ours"].append(used)
        src, rx = tb.blocks
        stats = rx.stats()
        # Bursts wholly inside the samples that pass head (one burst per image here):
        # the source runs ahead of head, so bursts_sent counts a few more.
        period = src._longest_burst + src.gap_samples
        whole = (args.samples - src.gap_samples) // period
        frames.append((whole, stats["frames_ok"], stats["header_crc_fail"]))
        # The receiver block's own thread: the whole chain shares the one core, so the
        # chain's rate is bounded by the source and channel_model too.
        feed, block = block_cpu_seconds(rx)
        receiver_cpu.append(feed)
        receiver_block_cpu.append(block)
        chunks.append(samples_per_call(rx))
        switches.append(SWITCHES[-1])
        wall, used = timed(stock(args, encoder))
        runs["stock"].append(wall)
        cpu["stock"].append(used)
        if tape is not None:
            tb = replay_ours(args, tape)
            wall, used = timed(tb)
            (rx,) = tb.blocks
            stats = rx.stats()
            replay["frames"].append((whole_replayed, stats["frames_ok"], stats["header_crc_fail"]))
            replay["ours"].append(wall)
            replay["ours_cpu"].append(used)
            replay["receiver_block_cpu"].append(block_cpu_seconds(rx)[1])
            replay["chunks"].append(samples_per_call(rx))
            replay["switches"].append(SWITCHES[-1])
            wall, used = timed(replay_stock(args, tape))
            replay["stock"].append(wall)
            replay["stock_cpu"].append(used)
    result = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, 1 core (#{args.core})",
        "python": sys.version.split()[0],
        "samples": args.samples,
        "image": str(args.image),
        "snr_db": args.snr,
        "cfo_symbol_rate": args.cfo,
        "min_output_buffer": args.buffer,
        "encoder": "onnx" if args.onnx else "stand-in (encoded once, cached)",
        "ours_msps": args.samples / statistics.median(runs["ours"]) / 1e6,
        "stock_msps": args.samples / statistics.median(runs["stock"]) / 1e6,
        "ours_msps_cpu": args.samples / statistics.median(cpu["ours"]) / 1e6,
        "stock_msps_cpu": args.samples / statistics.median(cpu["stock"]) / 1e6,
        "ours_seconds": runs["ours"],
        "stock_seconds": runs["stock"],
        "ours_cpu_seconds": cpu["ours"],
        "stock_cpu_seconds": cpu["stock"],
        # Samples per CPU second of the receiver block's thread inside our chain:
        # feed alone, and feed + making the PDUs (the whole block).
        "receiver_feed_msps_cpu": args.samples / statistics.median(receiver_cpu) / 1e6,
        "receiver_block_msps_cpu": args.samples / statistics.median(receiver_block_cpu) / 1e6,
        "receiver_feed_cpu_seconds": receiver_cpu,
        "receiver_block_cpu_seconds": receiver_block_cpu,
        "receiver_samples_per_work_call": chunks,
        "ours_involuntary_switches": switches,
        "compiled_kernels": _compiled(),
        "load_average": os.getloadavg(),
        "frames_whole_received_crcfail": frames,
    }
    result["ratio_ours_to_stock"] = result["ours_msps"] / result["stock_msps"]
    if tape is not None:
        med = {
            k: statistics.median(v)
            for k, v in replay.items()
            if k not in ("frames", "chunks", "switches")
        }
        result["replay"] = {
            "what": "recorded channel output -> receiver (ours) / corr_est_cc (stock)",
            "recorded_samples": int(tape.size),
            "ours_msps": args.samples / med["ours"] / 1e6,
            "stock_msps": args.samples / med["stock"] / 1e6,
            "ratio_ours_to_stock": med["stock"] / med["ours"],
            "ours_msps_cpu": args.samples / med["ours_cpu"] / 1e6,
            "stock_msps_cpu": args.samples / med["stock_cpu"] / 1e6,
            "receiver_block_msps_cpu": args.samples / med["receiver_block_cpu"] / 1e6,
            "receiver_block_cpu_seconds": replay["receiver_block_cpu"],
            "ours_seconds": replay["ours"],
            "stock_seconds": replay["stock"],
            "frames_whole_received_crcfail": replay["frames"],
            "receiver_samples_per_work_call": replay["chunks"],
            "ours_involuntary_switches": replay["switches"],
        }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        from diffjscc.io import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
