#!/usr/bin/env python3
"""Send an image through the GNU Radio deep-JSCC loopback and decode it.

    python examples/loopback.py                       # astronaut sample, 7 dB, CBR 1/384
    python examples/loopback.py --image kodim23.png --snr 3 --cfo 0.01 --fading
    python examples/loopback.py --waveform ofdm --channel epa --snr 10   # OFDM over 3GPP EPA
    python examples/loopback.py --waveform ofdm --fft-size 512 --used-carriers 256 \
        --pilot-spacing 16 --channel epa --doppler 1e-4    # the layout for mobile links

The flowgraph (``Loopback``, a gr.top_block) is the chain of
grc/loopback_sim_no_gui.grc: image source (ONNX JSCC encoder, pilot-aided
bursts) -> delay -> channel model (noise, frequency offset, sample-rate
offset, optional Rayleigh block fading, multipath taps of a --channel preset or
--taps, fading taps with --doppler; a static --channel draw is scaled to unit
gain over the waveform's band by default, --normalise) -> JSCC receiver (pilot-based CSI)
-> image sink (decoding through a worker), which writes received.png itself.
Unless --worker names one, a local decoding worker process (`diffjscc
worker`, started by diffjscc.worker.local.LocalWorker) comes up meanwhile;
if it does not, decoding runs in this process.

Writes original.png, received.png, refined.png (with --refine, when a refiner
is available) and comparison.png to the output folder, and prints one line of
JSON: frames_sent, frames_decoded, snr_db, snr_est_db, h, h_est, psnr, ms_ssim, timing.
"""

from __future__ import annotations

import time

_T_START = time.monotonic()  # the command's start, for the timing breakdown

import argparse  # noqa: E402
import concurrent.futures  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from diffjscc.errors import DiffJSCCError  # noqa: E402
from gnuradio import gr  # noqa: E402

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
        "--cfo",
        type=float,
        default=0.0,
        help="frequency offset, a fraction of the occupied band (the single carrier's symbol "
        "rate; OFDM: used carriers / FFT size of the sample rate), as the GRC loopbacks' cfo",
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
    p.add_argument(
        "--waveform", choices=["sc", "ofdm"], default="sc", help="single carrier or OFDM (sc)"
    )
    p.add_argument(
        "--header-version",
        type=int,
        choices=[1, 2],
        default=2,
        help="frame header code: 2 (convolutional, 240 symbols; default) or 1 (RM(1,5), 608 "
        "symbols: decodes about 2 dB lower, for links below 0 dB)",
    )
    p.add_argument(
        "--channel",
        default="awgn",
        help="multipath preset: awgn, rayleigh, indoor, epa, eva (one static realisation per "
        "run, from --seed; diffjscc.radio.channel_presets)",
    )
    p.add_argument(
        "--normalise",
        choices=["band", "energy", "none"],
        default="band",
        help="scaling of the --channel draw: band (default; mean |H|^2 over the signal's band "
        "= 1, so --snr is the received in-band SNR, as on a flat channel), energy (unit tap "
        "energy over the whole sample band) or none (the raw draw)",
    )
    p.add_argument(
        "--taps", default="", help="static complex taps at the sample rate, e.g. '1, 0.3-0.2j'"
    )
    p.add_argument(
        "--doppler",
        type=float,
        default=0.0,
        help="fading taps of --channel with this normalised Doppler fD*Ts (0: static)",
    )
    p.add_argument(
        "--phase-noise",
        type=float,
        default=None,
        metavar="DB",
        help="front-end phase noise of GNU Radio's channels.impairments (its phase_noise_mag: "
        "0 dB is about 4 degrees rms; default none)",
    )
    p.add_argument(
        "--iq-imbalance",
        default="",
        metavar="DB,DEG",
        help="front-end IQ imbalance: amplitude (dB) and phase (degrees), e.g. '1,5'",
    )
    p.add_argument(
        "--dc-offset",
        default="",
        metavar="I,Q",
        help="front-end DC offset added to the samples, e.g. '0.1,0.05' (the receiver "
        "removes DC unless --no-dc-removal)",
    )
    p.add_argument(
        "--no-dc-removal",
        action="store_true",
        help="turn off the receiver's DC removal (jscc_receiver dc_removal=False)",
    )
    p.add_argument("--seed", type=int, default=None, help="seed of noise, delay and fading")
    p.add_argument("--sps", type=int, default=2, help="samples per symbol (default 2)")
    from diffjscc.radio.layout_args import add_layout_options

    add_layout_options(p)  # --fft-size --cp-length --used-carriers --pilot-spacing --pilot-stagger
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


# -- decoding: the local worker, or this process -------------------------------------------


class WorkerOrLocal:
    """The decoder interface over a local worker that starts meanwhile; in this process
    as soon as that worker has died (or never came up).

    The worker takes a few seconds to start (torch, model), which overlaps the
    encoding and the radio chain: ``LocalWorker.start`` runs on a thread and
    requests wait in ZMQ's queue. Should the worker exit instead (no weights, no
    memory), waiting out the client's timeout would be pointless, so its death
    sends what is pending to the in-process decoder at once.
    """

    def __init__(self, worker, timeout_s: float):
        from diffjscc.worker.client import LocalDecoder, WorkerClient

        self.worker = worker
        self.local = LocalDecoder(timeout_s=timeout_s)
        self.client = WorkerClient(
            worker.address, timeout_s=timeout_s, retries=0, fallback=self.local
        )
        self.start_error: str | None = None
        self._lock = threading.Lock()
        self._routes: dict = {}  # our future -> (request, the client's or the local future)
        self._closed = threading.Event()
        self._starter = threading.Thread(target=self._start_worker, name="loopback-worker")
        self._starter.start()
        self._watcher = threading.Thread(target=self._watch, name="loopback-decode")
        self._watcher.start()

    @property
    def budget_s(self) -> float:
        return self.client.budget_s + self.local.budget_s

    def _start_worker(self) -> None:
        try:
            self.worker.start()
        except Exception as exc:  # WorkerError with the worker's output; decoding goes on here
            self.start_error = str(exc).splitlines()[0]

    def submit(self, request) -> concurrent.futures.Future:
        outer: concurrent.futures.Future = concurrent.futures.Future()
        outer.set_running_or_notify_cancel()
        local = self._dead()
        inner = (self.local if local else self.client).submit(request)
        with self._lock:
            self._routes[outer] = (request, inner, local)
        return outer

    def cancel(self, future) -> bool:
        from diffjscc.worker.client import cancelled_reply

        with self._lock:
            route = self._routes.pop(future, None)
        if route is None:
            return False
        request, inner, local = route
        (self.local if local else self.client).cancel(inner)
        future.set_result(cancelled_reply(request, "loopback"))
        return True

    def _dead(self) -> bool:
        return self.start_error is not None or (
            self.worker.process is not None and not self.worker.alive
        )

    def _watch(self) -> None:
        while not self._closed.wait(0.05):
            with self._lock:
                routes = list(self._routes.items())
            dead = self._dead()
            for outer, (request, inner, local) in routes:
                if not inner.done():
                    if dead and not local:
                        self.client.cancel(inner)  # resolves it; a late reply is ignored
                        rerouted = (request, self.local.submit(request), True)
                        with self._lock:
                            if outer in self._routes:
                                self._routes[outer] = rerouted
                    continue
                with self._lock:
                    if self._routes.pop(outer, None) is None:
                        continue  # cancelled meanwhile
                reply = inner.result()
                if local and reply.ok:
                    reply.metrics["fallback"] = "the local worker exited"
                outer.set_result(reply)

    def close(self, timeout_s: float = 2.0) -> None:
        """Resolve what is pending, close both decoders, stop the worker (started or not)."""
        self._closed.set()
        self._watcher.join(timeout_s)
        self.client.close(timeout_s)
        self.local.close(timeout_s)
        self.worker.stop(timeout_s)
        self._starter.join()  # returns: the worker it waits for is gone
        self.worker.stop(timeout_s)  # in case it was started while we stopped it
        with self._lock:
            routes, self._routes = list(self._routes.items()), {}
        from diffjscc.worker.client import cancelled_reply

        for outer, (request, _, _) in routes:
            if not outer.done():
                outer.set_result(cancelled_reply(request, "loopback"))


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


class Loopback(gr.top_block):
    """Image source -> (fractional) delay -> channel model -> JSCC receiver -> image sink.

    The sink writes ``received.png`` (and ``refined.png``) into ``output_dir`` itself.
    The source sends the image once; the run ends when the sink has decoded what it
    received (its drain at the end of the stream, within ``args.timeout``).
    """

    def __init__(self, args, image_path, encoder, decoder, worker_address, output_dir):
        from diffjscc.radio.channel_presets import (
            band_gain,
            draw_taps,
            front_end,
            gnuradio_channel,
            parse_taps,
            signal_spectrum,
        )
        from gnuradio import blocks, channels, diffjscc, filter

        gr.top_block.__init__(self, "deep-JSCC loopback", catch_exceptions=True)
        rng = np.random.default_rng(args.seed)
        delay = float(rng.uniform(0, 64)) if args.timing_offset is None else args.timing_offset
        h = complex(*rng.standard_normal(2)) / math.sqrt(2) if args.fading else 1.0 + 0j
        self.source = diffjscc.image_source(
            str(image_path),
            model=args.cbr,
            design_snr_db=args.snr if args.design_snr is None else args.design_snr,
            sps=args.sps,
            tx_opt_steps=args.tx_opt_steps,
            repeat=1,
            interval_s=0,
            encoder=encoder,
            waveform=args.waveform,
            header_version=args.header_version,
            **args.waveform_settings,
        )
        whole = int(math.floor(delay))
        stages = [self.source]
        if whole:
            stages.append(blocks.delay(gr.sizeof_gr_complex, whole))
        if delay - whole > 1e-6:
            # mmse resampler at ratio 1 with a phase shift: a fractional delay.
            stages.append(filter.mmse_resampler_cc(delay - whole, 1.0))
        noise_seed = int(rng.integers(1, 2**31 - 1))
        # Multipath: static taps (--taps, or one realisation of --channel drawn from the
        # seed), or with --doppler GNU Radio's fading model ahead of the channel model.
        # A static draw is scaled over the band this waveform's bursts occupy ("band":
        # the same average received SNR as the flat channel; channel_presets).
        spectrum = signal_spectrum(self.source.waveform)
        taps = (
            parse_taps(args.taps)
            if args.taps
            else draw_taps(
                args.channel, rng=noise_seed, normalise=args.normalise, spectrum=spectrum
            )
        )
        if args.doppler:
            fading = gnuradio_channel(args.channel, seed=noise_seed, doppler=args.doppler)[:-1]
            stages += fading
            taps = np.ones(1)
        self.channel = channels.channel_model(
            noise_voltage=self.source.waveform.noise_voltage(args.snr),
            # As the GRC loopbacks (band_ratio): sample rate over the occupied band, the
            # waveform's noise convention, sps for the single carrier.
            frequency_offset=args.cfo / self.source.waveform.noise_voltage(0.0) ** 2,
            epsilon=args.epsilon,
            taps=[complex(t) * h for t in taps],
            noise_seed=noise_seed,
            block_tags=False,
        )
        # A receiver's front end after the channel: channels.impairments (phase noise,
        # IQ imbalance, DC offset), only what was asked for (gnuradio_channel).
        impairments = front_end(args.impairments)
        # The same layout at both ends: the frame header does not carry it.
        self.receiver = diffjscc.jscc_receiver(
            sps=args.sps,
            waveform=args.waveform,
            dc_removal=not args.no_dc_removal,
            **args.waveform_settings,
        )
        self.sink = diffjscc.image_sink(
            output_dir=str(output_dir),
            worker_address=worker_address,
            refine=args.refine,
            decoder=decoder,
            policy="all",
            print_stats=False,
            name_template="{kind}.png",
            drain_timeout_s=args.timeout,
            decode_timeout_s=args.timeout,
        )
        # Larger chunks for the receiver: its thread then switches with the channel's
        # blocks less often (jscc_receiver.INPUT_BUFFER).
        (impairments[-1] if impairments else self.channel).set_min_output_buffer(
            self.receiver.INPUT_BUFFER
        )
        self.connect(*stages, self.channel, *impairments, self.receiver)
        self.msg_connect(self.receiver, "pdus", self.sink, "pdus")
        # No tx_info -> sink: in a run that ends by itself GNU Radio would end the sink when
        # the source ends, before the last frames arrive. PSNR is computed here instead.
        self.channel_info = {
            "delay_samples": delay,
            "h": h,
            "taps": [complex(t) for t in taps],
            # received over transmitted signal power of the static taps (dB; 0 for "band")
            "band_gain_db": 10 * math.log10(max(band_gain(taps, spectrum), 1e-30)),
        }


def _pair(text: str, option: str) -> tuple[float, float]:
    parts = [t.strip() for t in str(text).split(",")]
    try:
        values = [float(t) for t in parts]
    except ValueError:
        values = []
    if len(values) != 2 or not all(math.isfinite(v) for v in values):
        raise DiffJSCCError(f"{option} takes two numbers 'A,B', got {str(text)[:40]!r}")
    return values[0], values[1]


def front_end_impairments(args) -> dict | None:
    """channels.impairments keywords from --phase-noise, --iq-imbalance, --dc-offset
    (None: none asked for)."""
    out = {}
    if args.phase_noise is not None:
        if not -300.0 <= args.phase_noise <= 20.0:
            raise DiffJSCCError(f"--phase-noise must be in [-300, 20] dB, got {args.phase_noise}")
        out["phase_noise_mag"] = float(args.phase_noise)
    if args.iq_imbalance:
        mag, phase = _pair(args.iq_imbalance, "--iq-imbalance")
        if not (abs(mag) <= 6.0 and abs(phase) <= 45.0):
            raise DiffJSCCError("--iq-imbalance: amplitude within 6 dB, phase within 45 degrees")
        out["magbal"], out["phasebal"] = mag, phase
    if args.dc_offset:
        i_ofs, q_ofs = _pair(args.dc_offset, "--dc-offset")
        if not (abs(i_ofs) <= 10.0 and abs(q_ofs) <= 10.0):
            raise DiffJSCCError("--dc-offset: each part within +-10")
        out["i_ofs"], out["q_ofs"] = i_ofs, q_ofs
    return out or None


def build_flowgraph(args, image_path, encoder, decoder, worker_address, output_dir):
    return Loopback(args, image_path, encoder, decoder, worker_address, output_dir)


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
    from diffjscc.radio.layout_args import layout_settings
    from diffjscc.radio.waveform import waveform_from_block_params

    # The blocks' settings of the layout options, built once here (what the blocks do) so
    # that a layout which does not fit is one line now, not a failure inside GNU Radio.
    args.waveform_settings = layout_settings(args.waveform, args)
    waveform_from_block_params(
        args.waveform,
        sps=args.sps,
        header_version=args.header_version,
        **args.waveform_settings,
    )
    from diffjscc.radio.channel_presets import get_preset, parse_taps

    get_preset(args.channel)  # ConfigError naming the presets
    if args.taps:
        parse_taps(args.taps)
        if args.channel != "awgn" or args.doppler:
            raise DiffJSCCError("--taps replaces --channel and --doppler: give one of them")
    if not 0.0 <= args.doppler <= 0.01:
        raise DiffJSCCError(f"--doppler must be in [0, 0.01] (fD*Ts), got {args.doppler}")
    args.impairments = front_end_impairments(args)
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

    for stale in ("received.png", "refined.png", "comparison.png"):
        (output_dir / stale).unlink(missing_ok=True)  # never a false image from an earlier run
    worker_address = args.worker  # the sink makes its own client for a given address
    if decoder is None and not worker_address and not args.no_worker:
        from diffjscc.worker.local import LocalWorker

        options = ["--model", spec.name] + (
            ["--refiner", str(args.refiner)] if args.refiner else []
        )
        worker = LocalWorker(options, name="loopback-worker", log_path=output_dir / "worker.log")
        decoder = WorkerOrLocal(worker, timeout_s=args.timeout)
    try:
        if encoder is None:
            from diffjscc.zoo import load_transmitter

            encoder = load_transmitter(spec.name, args.tx_opt_steps)
        timed = TimedEncoder(encoder)
        tb = build_flowgraph(args, image_path, timed, decoder, worker_address, output_dir)
        t_ready = time.monotonic()
        with Progress(tb, enabled=not args.quiet and sys.stderr.isatty()):
            with _quiet_flattening():
                tb.start()
            finished = threading.Event()
            waiter = threading.Thread(target=lambda: (tb.wait(), finished.set()), daemon=True)
            waiter.start()
            try:
                if not finished.wait(args.timeout):
                    tb.stop()
                    tb.wait()
                    raise DiffJSCCError(f"loopback did not finish within {args.timeout:.0f} s")
            except KeyboardInterrupt:
                tb.stop()  # no GNU Radio thread may outlive the interpreter
                tb.wait()
                raise
        t_done = time.monotonic()
    finally:
        if isinstance(decoder, WorkerOrLocal):
            decoder.close()
            if decoder.start_error and decoder.worker.log_path:
                log(
                    f"loopback: the local worker did not start; decoded in this process "
                    f"(see {decoder.worker.log_path})"
                )

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
        "waveform": args.waveform,
        "waveform_settings": tb.source.waveform.settings(),
        "header_version": args.header_version,
        "channel": args.channel if not args.taps else "taps",
        "doppler": args.doppler,
        "taps": tb.channel_info["taps"],
        "normalise": None if args.taps or args.doppler else args.normalise,
        "band_gain_db": None if args.doppler else round(tb.channel_info["band_gain_db"], 3),
        "impairments": args.impairments,
        "dc_removal": not args.no_dc_removal,
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
        summary["outputs"]["received"] = decoded["path"]
        panels = [("original", original), (f"JSCC, est. SNR {decoded['snr_db']:.1f} dB", received)]
        if decoded.get("refined_path"):
            refined = load_image(decoded["refined_path"])
            summary["outputs"]["refined"] = decoded["refined_path"]
            summary["psnr_refined"] = psnr(original, refined)
            panels.append(("refined", refined))
        side_by_side(panels, output_dir / "comparison.png")
        summary["outputs"]["comparison"] = str(output_dir / "comparison.png")
        summary["ms_ssim"] = ms_ssim(original, received)
        if len(panels) == 3:
            summary["ms_ssim_refined"] = ms_ssim(original, panels[2][1])
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


@contextlib.contextmanager
def _quiet_flattening():
    """GNU Radio logs, on stdout, one info line for every block inside a hier block
    (channel_model) that inherits its min output buffer when the flowgraph starts:
    noise around the job's one line of JSON."""
    logging_ = gr.logging()
    level = logging_.default_level()
    logging_.set_default_level(gr.log_levels.warn)
    try:
        yield
    finally:
        logging_.set_default_level(level)


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
