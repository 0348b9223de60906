#!/usr/bin/env python3
"""Live soak of the no_gui loopback: does it keep up, stay current, stay small and stop fast?

    python benchmarks/live_soak.py                      # 10 min at the source's default pacing,
                                                        # then 10 min with the source 10x faster
    python benchmarks/live_soak.py --minutes 1 --json results/live_soak.json
    python benchmarks/live_soak.py --scenarios fast     # only the fast source
    python benchmarks/live_soak.py --scenarios fast --waveform ofdm --channel epa --doppler 1e-4

Each scenario runs the loopback in a fresh process, as a no_gui flowgraph would run:
image source (the 768x512 Kodak images, repeating) -> channel (AWGN at 7 dB; ``--channel``
a preset, ``--doppler`` its taps fading, ``--epsilon`` a clock offset) ->
JSCC receiver -> image sink (policy ``latest``, the local CPU decoder, CBR 1/384), with
the signal handler that grcc writes for a no_gui flowgraph (SIGINT/SIGTERM: stop, wait,
exit 0). After ``--minutes`` the process gets SIGTERM. Reported per scenario: images
decoded per second, latency (first frame received -> PNG written) p50 / p95, images
dropped (stale, by the latest policy), peak RSS and its growth (last minute against the
first minute after the first image), the time from SIGTERM to the process's exit and
its exit status. Targets: p95 < 3 s whatever the source rate, RSS growth < 50 MB,
stop < 2 s, exit status 0.

"Default pacing" is the image source's default interval; "10x faster" is a tenth of the
median decode time measured in the first scenario (or of 1 s without it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))  # diffjscc from this checkout
TARGETS = {"latency_p95_s": 3.0, "rss_growth_mb": 50.0, "stop_s": 2.0}


def landscape_kodak(folder: Path) -> Path:
    """A temporary folder of links to the 768x512 (landscape) Kodak images."""
    from PIL import Image

    out = Path(tempfile.mkdtemp(prefix="soak-kodak-"))
    for path in sorted(folder.glob("*.png")):
        with Image.open(path) as img:
            if img.size == (768, 512):
                (out / path.name).symlink_to(path.resolve())
    if not any(out.iterdir()):
        raise SystemExit(f"{folder}: no 768x512 PNG images (set DIFFJSCC_DATA)")
    return out


# -- the flowgraph process -------------------------------------------------------------------


def serve(args) -> int:
    """The child: the no_gui loopback, stopped by SIGINT/SIGTERM as grcc's scripts are."""
    import gnuradio

    source_tree = ROOT / "gr-diffjscc" / "python"
    if str(source_tree) not in gnuradio.__path__:
        gnuradio.__path__.insert(0, str(source_tree))
    import pmt
    from diffjscc.radio.channel_presets import gnuradio_channel, signal_spectrum
    from gnuradio import diffjscc, gr

    class Collector(gr.basic_block):
        """Keeps what the sink reports per image (small numbers only)."""

        def __init__(self):
            gr.basic_block.__init__(self, name="soak_collector", in_sig=None, out_sig=None)
            self.rows = []
            self.message_port_register_in(pmt.intern("in"))
            self.set_msg_handler(pmt.intern("in"), self.handle)

        def handle(self, msg):
            r = pmt.to_python(msg)
            self.rows.append(
                [r.get("latency_s"), r.get("decode_s"), bool(r.get("partial")), r.get("error")]
            )

    tb = gr.top_block("live soak")
    kwargs = {} if args.interval is None else {"interval_s": args.interval}
    source = diffjscc.image_source(
        str(args.images),
        model="1/384",
        design_snr_db=7.0,
        repeat=0,
        waveform=args.waveform,
        **kwargs,
    )
    # AWGN at 7 dB by default; --channel, --doppler and --epsilon as examples/loopback.py
    # (a static draw of the preset without a Doppler, fading taps with one).
    stages = gnuradio_channel(
        args.channel,
        noise_voltage=source.waveform.noise_voltage(7.0),
        epsilon=args.epsilon,
        seed=7,
        doppler=args.doppler,
        normalise="band",
        spectrum=signal_spectrum(source.waveform) if args.channel != "awgn" else None,
    )
    receiver = diffjscc.jscc_receiver(waveform=args.waveform)
    sink = diffjscc.image_sink(
        output_dir=str(args.output), policy="latest", name_template="{kind}.png"
    )
    collector = Collector()
    tb.connect(source, *stages, receiver)
    tb.msg_connect(receiver, "pdus", sink, "pdus")
    tb.msg_connect(source, "tx_info", sink, "tx_info")
    tb.msg_connect(sink, "images", collector, "in")

    def write_summary():
        summary = {
            "interval_s": source.interval_s,
            "rows": collector.rows,
            "sink": sink.stats(),
            "source": source.stats(),
            "receiver": receiver.stats(),
        }
        tmp = args.summary.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary, default=str))
        os.replace(tmp, args.summary)

    # What grcc generates for a no_gui flowgraph, plus the summary for the parent.
    def sig_handler(sig=None, frame=None):
        t0 = time.monotonic()
        tb.stop()
        tb.wait()
        print(f"soak: signal {sig}: flowgraph stopped in {time.monotonic() - t0:.3f} s", flush=True)
        write_summary()
        sys.exit(0)

    signal.signal(signal.SIGINT, sig_handler)
    signal.signal(signal.SIGTERM, sig_handler)
    tb.start()
    print(f"soak: flowgraph started, source interval {source.interval_s:g} s", flush=True)
    tb.wait()
    write_summary()
    return 0


# -- the parent: run, watch, stop, measure ---------------------------------------------------


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_scenario(name: str, args, interval: float | None, workdir: Path) -> dict:
    out = workdir / name
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / "summary.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--serve",
        "--images",
        str(args.images),
        "--output",
        str(out / "png"),
        "--summary",
        str(summary_path),
        "--waveform",
        args.waveform,
        "--channel",
        args.channel,
        "--doppler",
        repr(args.doppler),
        "--epsilon",
        repr(args.epsilon),
    ]
    if interval is not None:
        cmd += ["--interval", repr(interval)]
    log = open(out / "log.txt", "w")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    t0 = time.monotonic()
    samples = []  # (seconds since start, RSS MB)
    first_png = None
    png = out / "png" / "received.png"
    duration = args.minutes * 60
    while time.monotonic() - t0 < duration and proc.poll() is None:
        rss = rss_mb(proc.pid)
        now = time.monotonic() - t0
        if rss is not None:
            samples.append((now, rss))
        if first_png is None and png.exists():
            first_png = now
        time.sleep(1.0)
    if proc.poll() is not None:
        log.close()
        raise SystemExit(
            f"{name}: the flowgraph exited early ({proc.returncode}); see {out}/log.txt"
        )
    t_signal = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        status = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        status = proc.wait()
    stop_s = time.monotonic() - t_signal
    log.close()
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    # The child's own figure: tb.stop() + tb.wait(); the rest of stop_s is the exit (which
    # waits for a decode still running: a decode cannot be interrupted).
    flowgraph_stop_s = None
    for line in (out / "log.txt").read_text(errors="replace").splitlines():
        if line.startswith("soak: signal") and "stopped in" in line:
            flowgraph_stop_s = float(line.split("stopped in")[1].split()[0])
    rows = [r for r in summary.get("rows", []) if r[0] is not None]
    # The first image also waits for torch and the model to load: reported apart.
    first_latency = rows[0][0] if rows else None
    latencies = sorted(r[0] for r in rows[1:])
    decodes = [r[1] for r in rows[1:]]
    sink = summary.get("sink", {})
    # Growth: the last minute against the first minute after the first image (torch and the
    # model are loaded by then).
    warm = first_png or 0.0
    early = [m for t, m in samples if warm <= t < warm + 60]
    late = [m for t, m in samples if t >= samples[-1][0] - 60] if samples else []
    run_s = (samples[-1][0] - warm) if samples else 0.0

    def q(p):
        return (
            latencies[min(len(latencies) - 1, math.ceil(p * len(latencies)) - 1)]
            if latencies
            else None
        )

    result = {
        "scenario": name,
        "source_interval_s": summary.get("interval_s"),
        "minutes": args.minutes,
        "images_sent": summary.get("source", {}).get("images_sent"),
        "images_decoded": len(rows),
        "images_per_s": len(latencies) / run_s if run_s > 0 else None,
        "first_image_latency_s": first_latency,
        "latency_p50_s": q(0.50),
        "latency_p95_s": q(0.95),
        "latency_max_s": latencies[-1] if latencies else None,
        "decode_s_median": statistics.median(decodes) if decodes else None,
        "images_dropped_stale": sink.get("images_dropped_stale"),
        "images_dropped_queue_full": sink.get("images_dropped_queue_full"),
        "images_partial": sink.get("images_partial"),
        "images_cancelled_at_stop": sink.get("images_cancelled"),
        "frames_dropped_queue_full": sink.get("frames_dropped_queue_full"),
        "decode_errors": sink.get("decode_errors"),
        "internal_errors": sink.get("internal_errors"),
        "first_png_s": first_png,
        "rss_peak_mb": max((m for _, m in samples), default=None),
        "rss_first_minute_mb": statistics.mean(early) if early else None,
        "rss_last_minute_mb": statistics.mean(late) if late else None,
        "stop_s": stop_s,
        "flowgraph_stop_s": flowgraph_stop_s,
        "exit_status": status,
    }
    if early and late:
        result["rss_growth_mb"] = result["rss_last_minute_mb"] - result["rss_first_minute_mb"]
    result["targets_met"] = {
        "latency_p95": result["latency_p95_s"] is not None
        and result["latency_p95_s"] < TARGETS["latency_p95_s"],
        "rss_growth": result.get("rss_growth_mb") is not None
        and result["rss_growth_mb"] < TARGETS["rss_growth_mb"],
        "stop": stop_s < TARGETS["stop_s"] and status == 0,
    }
    print(json.dumps(result), flush=True)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0, help="length of each scenario")
    p.add_argument(
        "--scenarios",
        default="default,fast",
        help="comma-separated: default (source's default pacing), fast (10x the decoder)",
    )
    p.add_argument(
        "--images", type=Path, default=None, help="image folder (default: Kodak 768x512)"
    )
    p.add_argument("--waveform", choices=["sc", "ofdm"], default="sc", help="sc (default) or ofdm")
    p.add_argument(
        "--channel",
        default="awgn",
        help="channel preset (diffjscc.radio.channel_presets: awgn, rayleigh, indoor, epa, eva)",
    )
    p.add_argument(
        "--doppler", type=float, default=0.0, help="normalised fD*Ts: fading taps (default static)"
    )
    p.add_argument("--epsilon", type=float, default=1.0, help="channel_model's clock offset")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--keep", type=Path, help="keep the logs and PNGs in this folder")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--summary", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--interval", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        return serve(args)
    from diffjscc.datasets import data_root

    args.images = args.images or landscape_kodak(data_root() / "kodak")
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if not set(scenarios) <= {"default", "fast"} or not scenarios:
        raise SystemExit(f"--scenarios: default and/or fast, not {args.scenarios!r}")
    results = []
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        workdir = args.keep or Path(tmp)
        decode_s = None
        for name in scenarios:
            interval = None
            if name == "fast":
                interval = (decode_s or 1.0) / 10
            result = run_scenario(name, args, interval, workdir)
            decode_s = decode_s or result["decode_s_median"]
            results.append(result)
    report = {
        "benchmark": "live_soak",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
        "targets": TARGETS,
        "results": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        from diffjscc.io import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
