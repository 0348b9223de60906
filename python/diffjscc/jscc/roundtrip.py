"""``diffjscc roundtrip``: encode one image, send it over a simulated channel, decode it.

Prints one JSON line (symbols, CBR, SNR, PSNR, MS-SSIM, timings) and writes the
received image as PNG when ``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from diffjscc import channels
from diffjscc.image import load_image, save_png
from diffjscc.io import check_output_path
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the received image here (PNG)")
    return p


def default_image() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def main(argv: list[str] | None = None) -> int:
    parser = setup_args()
    args = parser.parse_args(argv)
    if args.tx_opt_steps < 0:
        parser.error(f"--tx-opt-steps must be 0 or positive, not {args.tx_opt_steps}")
    if args.tx_opt_steps and args.encoder == "onnx":
        parser.error("--tx-opt-steps needs gradients through the decoder: use --encoder torch")
    args.encoder = args.encoder or ("torch" if args.tx_opt_steps else "onnx")
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
    if args.channel == "awgn":
        received, h = channels.awgn(sent.symbols, args.snr, rng), 1.0 + 0.0j
    else:
        received, h = channels.rayleigh_block_fading(sent.symbols, args.snr, rng=rng)
        received = channels.zf_equalise(received, h)
    t3 = time.perf_counter()
    decoded = codec.decode(received, sent.image_shape, args.snr, h)
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
