#!/usr/bin/env python3
"""PSNR against delay spread: single carrier, OFDM, and OFDM with a genie receiver.

    python benchmarks/ofdm_delay_spread.py --draws 6 --json /tmp/ofdm_delay_spread.json \\
        --plot docs/figures/ofdm_delay_spread.png

One image (scikit-image's astronaut, centre crop 256x384: 768 JSCC symbols at
CBR 1/384, one frame) is encoded at each SNR and sent through the radio core
(numpy, no GNU Radio): bursts -> static multipath (one Rayleigh realisation of
an exponential power delay profile per draw) -> random fractional delay ->
AWGN -> receiver -> JSCC decoder (torch, CPU) with the receiver's SNR estimate.
Each draw is scaled for each waveform to unit mean gain over that waveform's
band (``--normalise band``, the default, as ``examples/loopback.py`` and the
other benchmarks do: the nominal SNR is the received in-band SNR on average);
``--normalise energy`` scales it to unit tap energy instead (the first
version of this benchmark), which leaves the in-band gain to chance.
Both waveforms run at about 2 samples per channel use (single carrier: sps 2;
OFDM: the default 492 of 1024 subcarriers, 2.08), so a delay spread of one
symbol is about 2 samples for both.
The genie OFDM receiver is given the true burst start, channel and noise.
A frame that is not received decodes as zeros (the receiver's erasures).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np


def _image():
    import skimage.data

    return skimage.data.astronaut()[128:384, 64:448].copy()  # 256x384


def _stream(burst, taps, delay, sigma, rng, lead=300):
    from diffjscc.radio.sim import fractional_delay

    x = np.concatenate([np.zeros(lead, np.complex64), burst, np.zeros(4000, np.complex64)])
    x = np.convolve(x, taps).astype(np.complex64)
    x = fractional_delay(x, delay)
    noise = sigma / np.sqrt(2) * (rng.standard_normal(x.size) + 1j * rng.standard_normal(x.size))
    return (x + noise).astype(np.complex64)


def _receive(rx, x):
    frames = []
    for i in range(0, x.size, 8192):
        frames += rx.feed(x[i : i + 8192])
    return frames + rx.flush()


def run(rms_symbols, snrs, draws, seed=0, normalise="band", log=print) -> dict:
    from diffjscc.metrics import psnr
    from diffjscc.radio import BurstReceiver, FrameConfig, build_bursts
    from diffjscc.radio.channel_presets import (
        exponential_taps,
        normalise_taps,
        rayleigh_taps,
        signal_spectrum,
    )
    from diffjscc.radio.config import noise_voltage as sc_noise
    from diffjscc.radio.ofdm import OfdmConfig, OfdmWaveform
    from diffjscc.radio.ofdm import build_bursts as ofdm_bursts
    from diffjscc.radio.ofdm import noise_voltage as ofdm_noise
    from diffjscc.radio.ofdm_receiver import GenieChannel, OfdmReceiver
    from diffjscc.radio.waveform import SingleCarrier
    from diffjscc.zoo import load_codec

    codec = load_codec("1/384", device="cpu")
    image = _image()
    shape = image.shape[:2]
    sc_cfg, of_cfg = FrameConfig(), OfdmConfig()
    # "band": each waveform's draw scaled over the band its own bursts occupy.
    spectra = {
        "sc": signal_spectrum(SingleCarrier(sc_cfg)),
        "ofdm": signal_spectrum(OfdmWaveform(of_cfg)),
    }
    rows = []
    for snr in snrs:
        enc = codec.encode(image, snr_db=snr)
        sc_burst = build_bursts(enc, 1, sc_cfg)[0]
        of_burst = ofdm_bursts(enc, 1, of_cfg)[0]
        for rms in rms_symbols:
            results = {"sc": [], "ofdm": [], "genie": []}
            syms, snr_est = [], []
            for d in range(draws):
                rng = np.random.default_rng([seed, d, int(rms * 100), int(snr * 10)])
                raw = rayleigh_taps(exponential_taps(2.0 * rms), rng, normalise=False)
                delay = float(rng.uniform(0, 8))
                for kind in results:
                    spectrum = spectra["sc" if kind == "sc" else "ofdm"]
                    taps = normalise_taps(raw, normalise, spectrum)
                    if kind == "sc":
                        sigma = sc_noise(snr, sc_cfg)
                        x = _stream(sc_burst, taps, delay, sigma, rng)
                        frames = _receive(BurstReceiver(sc_cfg), x)
                    else:
                        sigma = ofdm_noise(snr, of_cfg)
                        x = _stream(of_burst, taps, delay, sigma, rng)
                        genie = None
                        if kind == "genie":
                            genie = GenieChannel(tuple(taps), (300 + delay,), 0.0, sigma)
                        frames = _receive(OfdmReceiver(of_cfg, genie=genie), x)
                    if frames:
                        syms.append(frames[0].symbols)
                        snr_est.append(frames[0].snr_db)
                    else:
                        syms.append(np.zeros(enc.symbols.size, np.complex64))
                        snr_est.append(float(snr))
                    results[kind].append(bool(frames))
            images = codec.decode_batch(syms, [shape] * len(syms), snr_est, [None] * len(syms))
            row = {"snr_db": snr, "rms_symbols": rms}
            i = 0
            values = {k: [] for k in results}
            ests = {k: [] for k in results}
            for _ in range(draws):
                for kind in results:
                    values[kind].append(psnr(image, images[i]))
                    ests[kind].append(snr_est[i])
                    i += 1
            for kind in results:
                row[f"psnr_{kind}"] = float(np.mean(values[kind]))
                row[f"received_{kind}"] = int(sum(results[kind]))
                row[f"snr_est_{kind}"] = float(np.mean(ests[kind]))
            rows.append(row)
            log(
                f"{snr:4.1f} dB rms {rms:4.1f} sym: PSNR sc {row['psnr_sc']:.2f} "
                f"ofdm {row['psnr_ofdm']:.2f} genie {row['psnr_genie']:.2f} "
                f"(frames {row['received_sc']}/{row['received_ofdm']}/{row['received_genie']} of {draws})"
            )
    return {
        "rows": rows,
        "draws": draws,
        "normalise": normalise,
        "image": "astronaut 256x384 centre crop",
    }


def plot(report, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    styles = {"sc": ("single carrier", "C0"), "ofdm": ("OFDM", "C1"), "genie": ("OFDM genie", "C2")}
    for snr, ls in zip(
        sorted({r["snr_db"] for r in report["rows"]}), ("--", "-", ":"), strict=False
    ):
        rows = [r for r in report["rows"] if r["snr_db"] == snr]
        x = [r["rms_symbols"] for r in rows]
        for kind, (label, color) in styles.items():
            ax.plot(
                x,
                [r[f"psnr_{kind}"] for r in rows],
                ls,
                color=color,
                marker="o",
                ms=3,
                label=f"{label}, {snr:g} dB",
            )
    # The prefix less the receiver's back-off (24 samples) holds all but 1 % (-20 dB) of an
    # exponential profile's energy up to an rms of 24 / 4.6 samples, 2.6 symbols.
    covered = (32 - 8) / 4.6 / 2
    ax.axvline(covered, color="grey", lw=0.6)
    ax.text(covered + 0.1, ax.get_ylim()[0] + 0.3, "prefix covers 99 %", fontsize=7, color="grey")
    ax.set_xlabel("rms delay spread (symbols; exponential profile)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("astronaut 256x384, CBR 1/384 (dashed: 4 dB, solid: 10 dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rms", type=float, nargs="+", default=[0, 0.5, 1, 2, 3, 4, 6, 8])
    p.add_argument("--snr", type=float, nargs="+", default=[4.0, 10.0])
    p.add_argument("--draws", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--normalise",
        choices=["band", "energy"],
        default="band",
        help="scale each draw to unit mean gain over the waveform's band (default) or to "
        "unit tap energy (the first version)",
    )
    p.add_argument("--json")
    p.add_argument("--plot")
    p.add_argument("--replot", help="only draw --plot from this JSON report")
    args = p.parse_args(argv)
    if args.replot:
        with open(args.replot) as f:
            plot(json.load(f), args.plot)
        return 0
    t = time.time()
    report = run(
        args.rms,
        args.snr,
        args.draws,
        args.seed,
        args.normalise,
        log=lambda m: print(m, file=sys.stderr),
    )
    report["seconds"] = time.time() - t
    report["machine"] = (
        f"{platform.machine()} {platform.processor()} python {platform.python_version()}"
    )
    if args.json:
        from diffjscc.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=1))
    if args.plot:
        plot(report, args.plot)
    print(json.dumps(report["rows"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
