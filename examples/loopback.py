#!/usr/bin/env python3
"""Send an image through the GNU Radio deep-JSCC loopback and decode it.

    python examples/loopback.py                       # astronaut sample, 7 dB, CBR 1/384
    python examples/loopback.py --image kodim23.png --snr 3 --cfo 0.01 --fading

The chain is the one of grc/loopback_sim_no_gui.grc: image source (ONNX JSCC
encoder, pilot-aided bursts) -> delay -> channel model (noise, frequency
offset, sample-rate offset, optional Rayleigh block fading) -> JSCC receiver
(pilot-based CSI) -> image sink (decoding through a worker). Unless --worker
names one, a local decoding worker process (`diffjscc worker`) is started
for the run; if it does not come up, decoding runs in this process.

Writes original.png, received.png, refined.png (with --refine, when a refiner
is available) and comparison.png to the output folder, and prints one line of
JSON: frames_sent, frames_decoded, snr_db, snr_est_db, h, h_est, psnr, ms_ssim, timing.
"""

from __future__ import annotations

import time

_T_START = time.monotonic()  # the command's start, for the timing breakdown

import argparse  # noqa: E402
import concurrent.futures  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from diffjscc.errors import DiffJSCCError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _use_module_from_checkout() -> None:
    """Make ``gnuradio.diffjscc`` importable from this checkout when it is not installed."""
    import gnuradio

    source = ROOT / "gr-diffjscc" / "python"
    if (source / "diffjscc" / "__init__.py").exists() and str(source) not in gnuradio.__path__:
        gnuradio.__path__.insert(0, str(source))


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="loopback.py",
        description="Deep-JSCC image transmission through a simulated GNU Radio channel.",
    )
    p.add_argument("--image", default="", help="image file (default: scikit-image's astronaut)")
    p.add_argument(
        "--snr", type=float, default=7.0, help="channel SNR per symbol in dB (default 7)"
    )
    p.add_argument("--cbr", default="1/384", help="model name or channel bandwidth ratio (1/384)")
    p.add_argument(
        "--design-snr",
        type=float,
        default=None,
        help="SNR the encoder is told (default: the channel SNR)",
    )
    p.add_argument(
        "--cfo", type=float, default=0.0, help="frequency offset, fraction of symbol rate"
    )
    p.add_argument(
        "--timing-offset",
        type=float,
        default=None,
        help="delay in samples, fractional allowed (default: random in [0, 64))",
    )
    p.add_argument(
        "--tx-opt-steps",
        type=int,
        default=0,
        help="optimise the symbols at the transmitter with this many steps (torch; 0: off)",
    )
    p.add_argument("--epsilon", type=float, default=1.0, help="sample rate ratio (drift; 1 = none)")
    p.add_argument("--fading", action="store_true", help="Rayleigh block fading (one gain per run)")
    p.add_argument("--seed", type=int, default=None, help="seed of noise, delay and fading")
    p.add_argument("--sps", type=int, default=2, help="samples per symbol (default 2)")
    p.add_argument("--output", default="out/loopback", help="output folder (default out/loopback)")
    p.add_argument("--worker", default="", help="address of a running worker, tcp://host:port")
    p.add_argument(
        "--no-worker",
        action="store_true",
        help="decode in this process instead of starting a local worker",
    )
    p.add_argument(
        "--refine",
        action="store_true",
        help="also run the diffusion refiner (needs --refiner, or a --worker that has one)",
    )
    p.add_argument(
        "--refiner",
        metavar="PATH",
        help="refiner folder for the local worker (diffjscc worker --refiner); implies --refine",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="give up after this many seconds")
    p.add_argument(
        "--quiet", action="store_true", help="no progress display (shown only on a terminal)"
    )
    return p


# -- the local worker ----------------------------------------------------------------------


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalWorker:
    """A `diffjscc worker` subprocess for the duration of the run."""

    def __init__(self, model: str, log_path: Path, refiner: str | None = None):
        self.address = f"tcp://127.0.0.1:{_free_tcp_port()}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115  (closed in stop())
        cmd = [sys.executable, "-m", "diffjscc", "worker", "--bind", self.address, "--model", model]
        if refiner:
            cmd += ["--refiner", str(refiner)]
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        self._log.close()


class WorkerOrLocal:
    """Decodes through the local worker; in this process as soon as that worker has died.

    The worker takes a few seconds to start (torch, model), which overlaps the
    encoding and the radio chain; requests wait for it in ZMQ's queue. Should it
    exit instead (no weights, no memory), waiting out the client's timeout
    would be pointless, so its death switches to in-process decoding at once.
    """

    def __init__(self, worker: LocalWorker, timeout_s: float):
        from diffjscc.worker.client import LocalDecoder, WorkerClient

        self.worker = worker
        self.local = LocalDecoder()
        self.client = WorkerClient(
            worker.address, timeout_s=timeout_s, retries=0, fallback=self.local
        )

    def submit(self, request) -> concurrent.futures.Future:
        result: concurrent.futures.Future = concurrent.futures.Future()

        def wait_for_reply():
            pending = self.client.submit(request)
            while True:
                try:
                    reply = pending.result(timeout=0.2)
                    break
                except concurrent.futures.TimeoutError:
                    if not self.worker.alive():
                        reply = self.local.decode(request)
                        reply.metrics["fallback"] = "the local worker exited"
                        break
            result.set_result(reply)

        threading.Thread(target=wait_for_reply, name="loopback-decode", daemon=True).start()
        return result

    def close(self) -> None:
        self.client.close()


# -- the flowgraph -------------------------------------------------------------------------


class TimedEncoder:
    """Wraps an encoder to record how long encoding took."""

    def __init__(self, encoder):
        self.encoder = encoder
        self.seconds = 0.0

    def encode(self, image, snr_db, **options):
        t = time.monotonic()
        try:
            return self.encoder.encode(image, snr_db=snr_db, **options)
        finally:
            self.seconds += time.monotonic() - t


def build_flowgraph(args, image_path, encoder, decoder, worker_address, output_dir):
    from diffjscc.radio.config import noise_voltage
    from gnuradio import blocks, channels, diffjscc, filter, gr

    rng = np.random.default_rng(args.seed)
    delay = float(rng.uniform(0, 64)) if args.timing_offset is None else float(args.timing_offset)
    h = complex(*rng.standard_normal(2)) / math.sqrt(2) if args.fading else 1.0 + 0j
    tb = gr.top_block("deep-JSCC loopback")
    source = diffjscc.image_source(
        str(image_path),
        model=args.cbr,
        design_snr_db=args.snr if args.design_snr is None else args.design_snr,
        sps=args.sps,
        tx_opt_steps=args.tx_opt_steps,
        encoder=encoder,
    )
    whole = int(math.floor(delay))
    stages = [source]
    if whole:
        stages.append(blocks.delay(gr.sizeof_gr_complex, whole))
    if delay - whole > 1e-6:
        # mmse resampler at ratio 1 with a phase shift: a fractional delay.
        stages.append(filter.mmse_resampler_cc(delay - whole, 1.0))
    channel = channels.channel_model(
        noise_voltage=noise_voltage(args.snr, source.cfg),
        frequency_offset=args.cfo / args.sps,
        epsilon=args.epsilon,
        taps=[h],
        noise_seed=int(rng.integers(1, 2**31 - 1)),
        block_tags=False,
    )
    receiver = diffjscc.jscc_receiver(sps=args.sps)
    sink = diffjscc.image_sink(
        output_dir=str(output_dir / "frames"),
        worker_address=worker_address,
        refine=args.refine,
        decoder=decoder,
        drain_timeout_s=args.timeout,
        decode_timeout_s=args.timeout,
    )
    stages += [channel, receiver]
    tb.connect(*stages)
    tb.msg_connect(receiver, "pdus", sink, "pdus")
    # No tx_info -> sink: in a run that ends by itself GNU Radio would end the sink when the
    # source ends, before the last frames arrive. PSNR is computed here instead.
    tb.source, tb.receiver, tb.sink = source, receiver, sink
    tb.channel_info = {"delay_samples": delay, "h": h}
    return tb


class Progress:
    """Frames sent / received on stderr while the flowgraph runs."""

    def __init__(self, tb, enabled: bool):
        self.tb = tb
        self.enabled = enabled
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)

    def _run(self):
        from tqdm import tqdm

        fmt = "{desc}: {n_fmt}/{total_fmt} frames |{bar}| {elapsed} {postfix}"
        with tqdm(total=1, desc="loopback", bar_format=fmt, file=sys.stderr, leave=False) as bar:
            while not self._stop.wait(0.1):
                queued = self.tb.source.stats()["bursts_queued"]
                received = self.tb.receiver.stats().get("pdus_sent", 0)
                decoded = len(self.tb.sink.results())
                if queued == 0:
                    stage = "encoding"
                elif received < queued:
                    stage = "radio"
                elif decoded == 0:
                    stage = "decoding"
                else:
                    stage = "done"
                bar.total = max(queued, received, 1)
                bar.n = received
                bar.set_postfix_str(stage, refresh=False)
                bar.refresh()


# -- outputs -------------------------------------------------------------------------------


def side_by_side(panels: list[tuple[str, np.ndarray]], path: Path) -> None:
    """One PNG with the images next to each other, each with its caption above."""
    from diffjscc.io import atomic_path
    from PIL import Image, ImageDraw

    pad, text_h = 8, 18
    h = max(img.shape[0] for _, img in panels)
    w = sum(img.shape[1] for _, img in panels) + pad * (len(panels) + 1)
    canvas = Image.new("RGB", (w, h + text_h + 2 * pad), "white")
    draw = ImageDraw.Draw(canvas)
    x = pad
    for caption, img in panels:
        draw.text((x, pad // 2), caption, fill="black")
        canvas.paste(Image.fromarray(img), (x, text_h + pad))
        x += img.shape[1] + pad
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


def ms_ssim(reference: np.ndarray, image: np.ndarray) -> float | None:
    """MS-SSIM of the five standard scales; None when torch or pytorch-msssim is absent, or
    the image is too small for five scales (fewer would not compare with published values)."""
    from diffjscc.metrics import MS_SSIM_WEIGHTS, ms_ssim_scales
    from diffjscc.metrics import ms_ssim as _ms_ssim

    if ms_ssim_scales(*reference.shape[:2])[0] < len(MS_SSIM_WEIGHTS):
        return None
    try:
        return _ms_ssim(reference, image)
    except ImportError:
        return None


# -- the run -------------------------------------------------------------------------------


def run(args, encoder=None, decoder=None, log=print) -> dict:
    """Runs the loopback and writes the outputs; returns the summary dict."""
    _use_module_from_checkout()
    from diffjscc.image import load_image, save_png
    from diffjscc.metrics import psnr
    from diffjscc.registry import get_model_spec

    # Checked before a worker starts or an encoder loads; GNU Radio would fail deep inside.
    if args.sps < 2:
        raise DiffJSCCError(f"--sps must be at least 2, got {args.sps}")
    if args.timing_offset is not None and not args.timing_offset >= 0:
        raise DiffJSCCError(f"--timing-offset must be >= 0, got {args.timing_offset}")
    if not args.epsilon > 0:
        raise DiffJSCCError(f"--epsilon must be > 0, got {args.epsilon}")
    if not args.timeout > 0:
        raise DiffJSCCError(f"--timeout must be > 0, got {args.timeout}")
    if args.tx_opt_steps < 0:
        raise DiffJSCCError(f"--tx-opt-steps must be >= 0, got {args.tx_opt_steps}")
    if args.refiner:
        if not Path(args.refiner).is_dir():
            raise DiffJSCCError(f"--refiner {args.refiner}: no such folder")
        if args.worker or args.no_worker:
            raise DiffJSCCError("--refiner is for the local worker: drop --worker / --no-worker")
        args.refine = True
    elif args.refine and not args.worker and decoder is None:
        raise DiffJSCCError(
            "--refine needs a refiner: --refiner PATH (for the local worker), "
            "or --worker ADDRESS of a worker started with one"
        )
    spec = get_model_spec(args.cbr)
    output_dir = Path(args.output)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DiffJSCCError(f"cannot create output folder {output_dir}: {exc}") from exc
    if args.image:
        image_path = Path(args.image)
    else:
        from gnuradio.diffjscc.image_source import default_image_path

        image_path = default_image_path()
    original = load_image(image_path)  # a clear error now rather than inside the flowgraph

    worker = None
    worker_address = args.worker  # the sink makes its own client for a given address
    if decoder is None and not worker_address and not args.no_worker:
        try:
            worker = LocalWorker(spec.name, output_dir / "worker.log", refiner=args.refiner)
            decoder = WorkerOrLocal(worker, timeout_s=args.timeout)
        except OSError as exc:
            log(f"loopback: cannot start a local worker ({exc}); decoding in this process")
    try:
        if encoder is None:
            from diffjscc.zoo import load_transmitter

            encoder = load_transmitter(spec.name, args.tx_opt_steps)
        timed = TimedEncoder(encoder)
        tb = build_flowgraph(args, image_path, timed, decoder, worker_address, output_dir)
        t_ready = time.monotonic()
        with Progress(tb, enabled=not args.quiet and sys.stderr.isatty()):
            tb.start()
            finished = threading.Event()
            waiter = threading.Thread(target=lambda: (tb.wait(), finished.set()), daemon=True)
            waiter.start()
            if not finished.wait(args.timeout):
                tb.stop()
                tb.wait()
                raise DiffJSCCError(f"loopback did not finish within {args.timeout:.0f} s")
        t_done = time.monotonic()
    finally:
        if isinstance(decoder, WorkerOrLocal):
            decoder.close()
        if worker is not None:
            worker.stop()

    results = tb.sink.results()
    rx_stats = tb.receiver.stats()
    tx_stats = tb.source.stats()
    summary = {
        "image": str(image_path),
        "model": spec.name,
        "cbr": spec.cbr_str,
        "snr_db": args.snr,
        "tx_opt_steps": args.tx_opt_steps,
        "frames_sent": tx_stats["bursts_sent"],
        "frames_decoded": rx_stats.get("pdus_sent", 0),
        "images_decoded": sum(1 for r in results if r.get("path")),
        "snr_est_db": None,
        "h_est": None,
        "psnr": None,
        "ms_ssim": None,
        "psnr_refined": None,
        "ms_ssim_refined": None,
        "partial": None,
        "cfo": args.cfo,
        "delay_samples": tb.channel_info["delay_samples"],
        "h": [tb.channel_info["h"].real, tb.channel_info["h"].imag],
        "served_by": None,
        "error": None,
        "receiver": rx_stats,
        "sink": tb.sink.stats(),
        "outputs": {},
    }
    save_png(output_dir / "original.png", original)
    summary["outputs"]["original"] = str(output_dir / "original.png")
    decoded = next((r for r in results if r.get("path")), None)
    t_png = None
    if decoded is None:
        errors = [r.get("error") for r in results if r.get("error")]
        summary["error"] = errors[0] if errors else "no frame of the image was received"
        log(f"loopback: no image decoded: {summary['error']}")
    else:
        t_png = decoded["written_at"]
        received = load_image(decoded["path"])
        h_est = complex(decoded.get("h", complex("nan")))
        summary.update(
            snr_est_db=decoded["snr_db"],
            h_est=[h_est.real, h_est.imag],
            partial=decoded["partial"],
            served_by=decoded.get("served_by"),
            psnr=psnr(original, received),
        )
        os.replace(decoded["path"], output_dir / "received.png")
        summary["outputs"]["received"] = str(output_dir / "received.png")
        panels = [("original", original), (f"JSCC, est. SNR {decoded['snr_db']:.1f} dB", received)]
        if decoded.get("refined_path"):
            refined = load_image(decoded["refined_path"])
            os.replace(decoded["refined_path"], output_dir / "refined.png")
            summary["outputs"]["refined"] = str(output_dir / "refined.png")
            summary["psnr_refined"] = psnr(original, refined)
            panels.append(("refined", refined))
        side_by_side(panels, output_dir / "comparison.png")
        summary["outputs"]["comparison"] = str(output_dir / "comparison.png")
        summary["ms_ssim"] = ms_ssim(original, received)
        if len(panels) == 3:
            summary["ms_ssim_refined"] = ms_ssim(original, panels[2][1])
    try:
        (output_dir / "frames").rmdir()  # the sink's folder, empty once its files are moved
    except OSError:
        pass
    decode_s = decoded["decode_s"] if decoded else None
    radio_s = None
    if decoded is not None:
        radio_s = max(0.0, decoded["submitted_at"] - t_ready - timed.seconds)
    summary["timing"] = {
        "startup_s": t_ready - _T_START,
        "encode_s": timed.seconds,
        "radio_s": radio_s,
        "decode_s": decode_s,
        "flowgraph_s": t_done - t_ready,
        "png_written_s": None if t_png is None else t_png - _T_START,
        "total_s": time.monotonic() - _T_START,
    }
    return summary


def _jsonable(value):
    """Plain JSON values: complex as [re, im], non-finite floats as None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, complex):
        return [_jsonable(value.real), _jsonable(value.imag)]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(argv: list[str] | None = None) -> int:
    args = setup_args().parse_args(argv)
    try:
        summary = run(args, log=lambda msg: print(msg, file=sys.stderr))
    except DiffJSCCError as exc:
        print(f"loopback: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(_jsonable(summary), allow_nan=False))
    return 0 if summary["images_decoded"] else 1


if __name__ == "__main__":
    sys.exit(main())
