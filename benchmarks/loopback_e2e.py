#!/usr/bin/env python3
"""End-to-end time of the headless loopback: from starting the command to the written PNG.

    python benchmarks/loopback_e2e.py                      # Kodak kodim23 (768x512), CBR 1/384
    python benchmarks/loopback_e2e.py --mode inprocess     # decode in the loopback's process
    python benchmarks/loopback_e2e.py --stand-in           # no weights: radio and plumbing only
    python benchmarks/loopback_e2e.py --json results/e2e.json

Runs ``examples/loopback.py`` as a fresh process (``--repeats`` times) exactly as a user
would, and reports the wall time from starting it to the moment the received PNG was
written (the file's modification time), with the breakdown that the loopback prints:
start-up (interpreter, imports, encoder load), encode, radio chain (TX -> channel -> RX
until the image is assembled), decode (including waiting for the worker to come up).

Modes: ``worker`` (default: the loopback starts its own decoding worker process, whose
start-up overlaps the encoding and the radio chain) and ``inprocess`` (``--no-worker``).
``--stand-in`` replaces the JSCC codec by the QA tests' block-mean stand-in, in process:
it measures everything but the neural networks, and needs no weights.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = ROOT / "examples" / "loopback.py"
# diffjscc from this checkout, whether or not it is installed.
sys.path.insert(0, str(ROOT / "python"))


def default_image() -> Path:
    from diffjscc.datasets import data_root

    return data_root() / "kodak" / "kodim23.png"


def run_command(args, out: Path) -> dict:
    cmd = [
        sys.executable,
        str(LOOPBACK),
        "--image",
        str(args.image),
        "--cbr",
        args.cbr,
        "--snr",
        str(args.snr),
        "--output",
        str(out),
        "--quiet",
        "--seed",
        "1",
    ]
    if args.mode == "inprocess":
        cmd.append("--no-worker")
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    wall = time.time() - t0
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(
            f"loopback failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}\n"
            "The real codec needs its weights (see the README); --stand-in runs without them."
        )
    summary = json.loads(lines[-1])
    png = out / "received.png"
    return {
        "command_to_png_s": png.stat().st_mtime - t0,
        "command_total_s": wall,
        "timing": summary["timing"],
        "psnr": summary["psnr"],
        "ms_ssim": summary["ms_ssim"],
        "snr_est_db": summary["snr_est_db"],
        "frames_sent": summary["frames_sent"],
        "frames_decoded": summary["frames_decoded"],
        "served_by": summary["served_by"],
    }


def run_stand_in(args, out: Path) -> dict:
    """In process, with the stand-in codec: the loopback minus the neural networks."""
    import importlib.util

    import gnuradio

    gnuradio.__path__.insert(0, str(ROOT / "gr-diffjscc" / "python"))
    from gnuradio.diffjscc._fakes import BlockMeanCodec

    spec = importlib.util.spec_from_file_location("loopback_example", LOOPBACK)
    loopback = importlib.util.module_from_spec(spec)
    t0 = time.time()
    spec.loader.exec_module(loopback)
    codec = BlockMeanCodec()
    cli = ["--image", str(args.image), "--snr", str(args.snr), "--output", str(out), "--quiet"]
    summary = loopback.run(loopback.setup_args().parse_args(cli), encoder=codec, decoder=codec)
    return {
        "command_to_png_s": (out / "received.png").stat().st_mtime - t0,
        "timing": summary["timing"],
        "psnr": summary["psnr"],
        "frames_sent": summary["frames_sent"],
        "frames_decoded": summary["frames_decoded"],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", type=Path, default=None, help="default: Kodak kodim23 (768x512)")
    p.add_argument("--cbr", default="1/384")
    p.add_argument("--snr", type=float, default=7.0)
    p.add_argument("--mode", choices=("worker", "inprocess"), default="worker")
    p.add_argument("--stand-in", action="store_true", help="no neural codec (no weights needed)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    args.image = args.image or default_image()
    if not args.image.exists():
        raise SystemExit(f"{args.image}: no such image (set DIFFJSCC_DATA or pass --image)")
    runs = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out"
            runs.append(run_stand_in(args, out) if args.stand_in else run_command(args, out))
    to_png = [r["command_to_png_s"] for r in runs]
    result = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
        "image": str(args.image),
        "cbr": args.cbr,
        "snr_db": args.snr,
        "mode": "stand-in codec, in process" if args.stand_in else args.mode,
        "command_to_png_s_median": statistics.median(to_png),
        "command_to_png_s": to_png,
        "target_s": 8.0,
        "runs": runs,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        from diffjscc.io import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
