#!/usr/bin/env python3
"""The GNU Radio loopback over EPA against the flat channel and a genie OFDM receiver.

    python benchmarks/ofdm_loopback.py --seeds 0 1 2 3 --snr 10 --json /tmp/ofdm_loopback.json

For each seed, ``examples/loopback.py --waveform ofdm --channel epa --snr 10
--seed S --no-worker`` (the default image, scikit-image's astronaut 512x512:
2048 JSCC symbols at CBR 1/384, one frame) and the same with ``--channel awgn``.
The genie: the same image through the radio core in numpy, with the EPA taps of
that loopback run (reported in its summary), the genie receiver (true channel,
start and noise) and the same decoder. Done when every frame decodes, the EPA
PSNR is within 0.5 dB of the genie's and within 1 dB of the flat run's.

The static draw is scaled as ``--normalise`` says (default ``band``: unit mean
|H(f)|^2 over the OFDM signal's band, the same average received SNR as the flat
run; ``energy``: unit tap energy over the whole sample band; ``none``: the raw
draw). Each row reports the draw's in-band gain (``band_gain_db``) and the
receivers' SNR estimates, the effective SNR after equalisation.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def loopback(extra, out) -> dict:
    sys.path.insert(0, str(ROOT / "examples"))
    import loopback as lb

    args = lb.setup_args().parse_args([*extra, "--no-worker", "--quiet", "--output", str(out)])
    return lb.run(args, log=lambda m: print(m, file=sys.stderr))


def genie(taps, snr, seed, codec, image, enc) -> dict:
    from diffjscc.metrics import psnr
    from diffjscc.radio.ofdm_receiver import GenieChannel, OfdmReceiver
    from diffjscc.radio.sim import fractional_delay
    from diffjscc.radio.waveform import get_waveform

    wave = get_waveform("ofdm")  # the loopback's: its defaults, whatever they are
    rng = np.random.default_rng([seed, 77])
    (burst,) = wave.build_bursts(enc, 1)
    delay = 500.0 + float(rng.uniform(0, 8))
    x = np.concatenate([burst, np.zeros(4000, np.complex64)])
    x = fractional_delay(np.convolve(x, taps).astype(np.complex64), delay)
    sigma = wave.noise_voltage(snr)
    cfg = wave.cfg
    x = (
        x + sigma / np.sqrt(2) * (rng.standard_normal(x.size) + 1j * rng.standard_normal(x.size))
    ).astype(np.complex64)
    rx = OfdmReceiver(cfg, genie=GenieChannel(tuple(taps), (delay,), 0.0, sigma))
    frames = rx.feed(x) + rx.flush()
    out = codec.decode(frames[0].symbols, image_shape=image.shape[:2], snr_db=frames[0].snr_db)
    return {"psnr": psnr(image, out), "snr_db": frames[0].snr_db}


def main(argv=None) -> int:
    import tempfile

    from diffjscc.image import load_image
    from diffjscc.zoo import load_codec, load_transmitter

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--snr", type=float, default=10.0)
    p.add_argument("--preset", default="epa")
    p.add_argument("--normalise", choices=["band", "energy", "none"], default="band")
    p.add_argument("--json")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "examples"))
    import loopback as lb

    lb._use_module_from_checkout()
    from gnuradio.diffjscc.image_source import default_image_path

    image = load_image(default_image_path())
    codec = load_codec("1/384", device="cpu")
    enc = load_transmitter("1/384", 0).encode(image, snr_db=args.snr)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            row = {"seed": seed}
            for channel in (args.preset, "awgn"):
                common = ["--waveform", "ofdm", "--snr", str(args.snr), "--seed", str(seed)]
                common += ["--normalise", args.normalise]
                s = loopback([*common, "--channel", channel], Path(tmp) / f"{channel}{seed}")
                row[channel] = {
                    "psnr": s["psnr"],
                    "snr_est_db": s["snr_est_db"],
                    "band_gain_db": s["band_gain_db"],
                    "frames": [s["frames_sent"], s["frames_decoded"]],
                }
                if channel == args.preset:
                    taps = np.array([complex(t) for t in s["taps"]])
            row["genie"] = genie(taps, args.snr, seed, codec, image, enc)
            row["epa_minus_genie_db"] = row[args.preset]["psnr"] - row["genie"]["psnr"]
            row["epa_minus_flat_db"] = row[args.preset]["psnr"] - row["awgn"]["psnr"]
            frames = row[args.preset]["frames"]
            row["all_frames"] = frames[0] == frames[1]
            row["win"] = (
                row["all_frames"]
                and row["epa_minus_genie_db"] >= -0.5
                and row["epa_minus_flat_db"] >= -1.0
            )
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    summary = {
        "snr_db": args.snr,
        "preset": args.preset,
        "normalise": args.normalise,
        "wins": sum(r["win"] for r in rows),
        "rows": rows,
        "mean_epa_minus_genie_db": float(np.mean([r["epa_minus_genie_db"] for r in rows])),
        "mean_epa_minus_flat_db": float(np.mean([r["epa_minus_flat_db"] for r in rows])),
    }
    print(json.dumps(summary))
    if args.json:
        from diffjscc.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
