"""``diffjscc eval`` / ``python -m diffjscc.eval``: the command line of the evaluation."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from diffjscc.baselines import (
    AVIF_BYTES,
    SCALES,
)
from diffjscc.errors import DiffJSCCError
from diffjscc.eval.plot import plot_results
from diffjscc.eval.records import CODECS, markdown_table
from diffjscc.eval.run import evaluate
from diffjscc.io import atomic_write_text


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="diffjscc eval",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", help="image folder (default: $DIFFJSCC_DATA/kodak)")
    p.add_argument("--cbr", nargs="+", default=["1/384", "1/96"], help="models, by CBR or name")
    p.add_argument("--snr", nargs="+", type=float, default=[1, 4, 7, 10, 13], help="dB")
    p.add_argument("--noise-draws", type=int, default=5, help="AWGN draws per image (JSCC)")
    p.add_argument("--seed", type=int, default=0, help="seed of the channel noise")
    p.add_argument(
        "--methods",
        nargs="+",
        default=["jscc", *CODECS],
        choices=["jscc", *CODECS],
        help="best_separation is added when both codecs run",
    )
    p.add_argument("--scales", nargs="+", type=int, default=list(SCALES), help="downscalings")
    p.add_argument("--avif-speed", type=int, default=6, help="libavif speed 0 (slow) .. 10")
    p.add_argument(
        "--avif-bytes",
        choices=AVIF_BYTES,
        default="payload",
        help="count the AV1 bitstream (payload) or the whole AVIF file",
    )
    p.add_argument("--weights", help="folder of JSCC weights (default: the packaged ones)")
    p.add_argument("--limit", type=int, default=0, help="first N images only (0: all)")
    p.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="processes for the codec baselines",
    )
    tx_opt = p.add_argument_group("symbol optimisation at the transmitter (the jscc_tx_opt column)")
    tx_opt.add_argument(
        "--tx-opt-steps",
        type=int,
        default=0,
        help="gradient steps on each image's symbols (0: no jscc_tx_opt column)",
    )
    tx_opt.add_argument(
        "--tx-opt-lr", type=float, default=None, help="first step size (default: 0.03)"
    )
    refine = p.add_argument_group("diffusion refiner (the jscc_refined column)")
    refine.add_argument("--refiner", help="refiner folder (DiffJSCCRefiner.from_pretrained)")
    refine.add_argument("--refine-steps", type=int, default=None, help="default: the refiner's")
    refine.add_argument("--refine-sampler", default=None, help="ddpm, ddim or dpm-solver")
    refine.add_argument("--refine-seed", type=int, default=0, help="seed of image i: this + i")
    refine.add_argument("--caption", default=None, help="fixed caption (default: the refiner's)")
    refine.add_argument("--device", default="auto", help="refiner device: auto, cpu, cuda")
    refine.add_argument(
        "--reproduce-official",
        action="store_true",
        help="refine as official inference does: x_hat upsized to a short side of 512, zero "
        "padding to 64, uint8 truncation, Lanczos back to the image size (docs/refiner.md)",
    )
    p.add_argument("--json", help="write the results here (JSON)")
    p.add_argument("--plot", help="write PSNR vs SNR here (.png, .svg or .pdf)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = setup_args().parse_args(argv)
    try:
        result = evaluate(args, argv)
        # Both outputs are complete or absent: the plot is drawn before the JSON is renamed.
        if args.plot:
            plot_results(result, args.plot)
        if args.json:
            atomic_write_text(args.json, json.dumps(result, separators=(",", ":")) + "\n")
    except DiffJSCCError as exc:
        print(f"diffjscc eval: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an output that cannot be written: a full disk, no permission
        print(
            f"diffjscc eval: error: cannot write {exc.filename or 'output'}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    print(markdown_table(result))
    t = result["timing"]
    print(f"\n{result['num_images']} images, wall time {t['wall_s']:.0f} s", file=sys.stderr)
    return 0
