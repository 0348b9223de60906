"""``diffjscc roundtrip``: encode one image, send it over a simulated channel, decode it.

Prints one JSON line (symbols, CBR, SNR, PSNR, MS-SSIM, timings) and writes the
received image as PNG when ``--out`` is given.

By default the channel acts on the JSCC symbols themselves. ``--waveform sc|ofdm``
sends them through the radio core instead (numpy, no GNU Radio): the waveform's bursts,
the channel on the samples (noise at the waveform's own SNR convention, so that an SNR
means the same in both cases; for ``rayleigh`` one gain for the whole image), the
waveform's receiver and the frame assembler, and the decoder gets the receiver's SNR
estimate and gain, as the image sink does. ``--fft-size --cp-length --used-carriers
--pilot-spacing --pilot-stagger`` set the waveform's layout (``diffjscc.radio.layout_args``;
e.g. ``--waveform ofdm --fft-size 512 --used-carriers 256 --pilot-spacing 16``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from diffjscc import channels
from diffjscc.errors import ConfigError
from diffjscc.image import load_image, save_png
from diffjscc.io import check_output_path
from diffjscc.radio.layout_args import add_layout_options, layout_settings
from diffjscc.radio.waveform import WAVEFORMS
from diffjscc.registry import DEFAULT_MODEL, get_model_spec


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffjscc roundtrip", description=__doc__.split("\n\n")[0])
    p.add_argument("image", nargs="?", help="image file (default: scikit-image's astronaut)")
    p.add_argument(
        "--model", "--cbr", dest="model", default=DEFAULT_MODEL, help="registry name or CBR"
    )
    p.add_argument("--snr", type=float, default=4.0, help="channel SNR in dB")
    p.add_argument("--channel", choices=["awgn", "rayleigh"], default="awgn")
    p.add_argument(
        "--encoder",
        choices=["torch", "onnx"],
        default=None,
        help="transmitter back end (default: onnx; torch with --tx-opt-steps)",
    )
    p.add_argument(
        "--tx-opt-steps",
        type=int,
        default=0,
        help="gradient steps on the symbols at the transmitter (diffjscc.jscc.symbol_opt; torch)",
    )
    p.add_argument(
        "--waveform",
        choices=sorted(WAVEFORMS),
        default=None,
        help="send the symbols as bursts of this waveform through its receiver "
        "(default: the channel on the symbols directly)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the received image here (PNG)")
    add_layout_options(p)
    return p


def default_image() -> np.ndarray:
    from skimage import data

    return data.astronaut()


# Silence before, between and after the bursts, in samples: the receiver's detector
# needs a quiet stretch to find the next burst's start.
_GAP_SAMPLES = 1000


def over_the_radio(sent, waveform, channel: str, snr_db: float, rng) -> dict:
    """Bursts of ``waveform`` (a name or a ``Waveform``) -> channel on the samples -> its
    receiver -> assembler.

    Returns the assembled image (``None`` when no frame arrived) under ``image`` and
    what the link reports: frames sent and decoded, the receiver's SNR estimate."""
    from diffjscc.radio.assembler import ImageAssembler
    from diffjscc.radio.waveform import get_waveform

    wave = get_waveform(waveform)
    bursts = wave.build_bursts(sent, image_id=0)
    gap = np.zeros(_GAP_SAMPLES, np.complex64)
    x = np.concatenate([gap, *(np.concatenate([b, gap]) for b in bursts), gap])
    # Block fading as in training (diffjscc.channels): one CN(0, 1) gain, the noise at
    # the average SNR.
    h = 1.0 + 0.0j
    if channel == "rayleigh":
        h = complex(rng.standard_normal(), rng.standard_normal()) / np.sqrt(2.0)
    sigma = wave.noise_voltage(snr_db)
    noise = np.array([1.0, 1j]) @ rng.standard_normal((2, x.size)) * (sigma / np.sqrt(2.0))
    rx = wave.make_receiver()
    frames = rx.feed((h * x + noise).astype(np.complex64)) + rx.flush()
    assembler = ImageAssembler()
    images = [img for f in frames for img in assembler.add(f)] + assembler.flush()
    image = images[0] if images else None
    return {
        "image": image,
        "frames_sent": len(bursts),
        "frames_decoded": len(frames),
        "partial": None if image is None else bool(image.partial),
        "snr_est_db": None if image is None else round(float(image.snr_db), 3),
        "channel_gain": [round(h.real, 4), round(h.imag, 4)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = setup_args()
    args = parser.parse_args(argv)
    if args.tx_opt_steps < 0:
        parser.error(f"--tx-opt-steps must be 0 or positive, not {args.tx_opt_steps}")
    if args.tx_opt_steps and args.encoder == "onnx":
        parser.error("--tx-opt-steps needs gradients through the decoder: use --encoder torch")
    args.encoder = args.encoder or ("torch" if args.tx_opt_steps else "onnx")
    wave = None
    settings = layout_settings(args.waveform or "", args)
    if args.waveform:
        from diffjscc.radio.waveform import waveform_from_block_params

        wave = waveform_from_block_params(args.waveform, **settings)  # ConfigError: exit 2
    elif settings:
        flag = "--" + next(iter(settings)).replace("_", "-")
        raise ConfigError(f"{flag} sets a waveform's layout: add --waveform sc or ofdm")
    spec = get_model_spec(args.model)
    if args.out:
        check_output_path(args.out, "--out")
    image = load_image(args.image) if args.image else default_image()
    rng = np.random.default_rng(args.seed)

    t0 = time.perf_counter()
    from diffjscc.zoo import load_codec

    codec = load_codec(spec)
    if args.encoder == "onnx":
        from diffjscc.jscc.onnx_encoder import OnnxJSCCEncoder

        encoder = OnnxJSCCEncoder.from_pretrained(spec)
    else:
        encoder = codec
    t1 = time.perf_counter()
    sent = (
        codec.encode(image, args.snr, optimise=args.tx_opt_steps)
        if args.tx_opt_steps
        else encoder.encode(image, args.snr)
    )
    t2 = time.perf_counter()
    radio = None
    if args.waveform:
        radio = over_the_radio(sent, wave, args.channel, args.snr, rng)
        image_rx = radio.pop("image")
        if image_rx is None:
            print(json.dumps({"model": spec.name, "waveform": args.waveform, **radio}))
            print("diffjscc roundtrip: no frame of the image was received", file=sys.stderr)
            return 1
        received, snr_dec, h = image_rx.symbols, image_rx.snr_db, image_rx.h
    elif args.channel == "awgn":
        received, snr_dec, h = channels.awgn(sent.symbols, args.snr, rng), args.snr, 1.0 + 0.0j
    else:
        received, h = channels.rayleigh_block_fading(sent.symbols, args.snr, rng=rng)
        received, snr_dec = channels.zf_equalise(received, h), args.snr
    t3 = time.perf_counter()
    decoded = codec.decode(received, sent.image_shape, snr_dec, h)
    t4 = time.perf_counter()

    from diffjscc.metrics import ms_ssim, psnr

    record = {
        "model": spec.name,
        "cbr": spec.cbr_str,
        "image_shape": list(sent.image_shape),
        "symbols": sent.num_symbols,
        "channel": args.channel,
        "snr_db": args.snr,
        "encoder": args.encoder,
        "tx_opt_steps": args.tx_opt_steps,
        "waveform": args.waveform,
        **({"waveform_settings": wave.settings()} if wave is not None else {}),
        **(radio or {}),
        "psnr": round(float(psnr(image, decoded)), 3),
        "ms_ssim": round(float(ms_ssim(image, decoded)), 4),
        "time_s": {
            "load": round(t1 - t0, 3),
            "encode": round(t2 - t1, 3),
            "decode": round(t4 - t3, 3),
        },
    }
    if args.out:
        save_png(args.out, decoded)
        record["out"] = args.out
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
