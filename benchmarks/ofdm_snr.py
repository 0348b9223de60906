#!/usr/bin/env python3
"""OFDM SNR estimate under multipath against the effective SNR of the true channel.

    python benchmarks/ofdm_snr.py --draws 40 --json /tmp/ofdm_snr.json

Frames of 3072 random JSCC-like symbols (a 768x512 image at CBR 1/384) through
static multipath (one Rayleigh realisation per draw of each profile, scaled to
unit energy), a random fractional delay, a frequency offset of 1 % of the
single carrier's symbol rate (0.005 cycles per sample) and AWGN. For each
frame the receiver's estimate is compared with the effective SNR computed by
the genie receiver from the true channel and noise (the definition: the SNR of
an AWGN channel giving the same mean squared error after equalisation,
``ofdm_receiver.effective_snr``), and with what the delivered symbols show
(the effective SNR of this receiver's own output, channel-estimate error
included: 1 / their mean squared error against the sent symbols).
Target: |estimate - symbols| <= 0.5 dB (``estimate_minus_measured_db``: the
estimate against the effective SNR of what the decoder gets). ``bias_db`` is
the estimate against the genie's effective SNR; the difference between the
two is the estimated receiver's loss against the genie (``loss_vs_genie_db``,
effective SNR of the symbols, both measured against the sent ones).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def _receive(rx, x):
    frames = []
    for i in range(0, x.size, 8192):
        frames += rx.feed(x[i : i + 8192])
    return frames + rx.flush()


def measured_snr_db(symbols, sent) -> float:
    mse = float(np.mean(np.abs(symbols - sent) ** 2))
    return 10 * np.log10(1 / max(mse, 1e-12))


def run(profiles, snrs, draws, seed=0, log=print) -> list[dict]:
    from diffjscc import channels
    from diffjscc.radio import image_symbol_count
    from diffjscc.radio.channel_presets import draw_taps, exponential_taps, rayleigh_taps
    from diffjscc.radio.ofdm import OfdmConfig, build_bursts, noise_voltage
    from diffjscc.radio.ofdm_receiver import GenieChannel, OfdmReceiver
    from diffjscc.radio.sim import fractional_delay, frequency_offset
    from diffjscc.symbols import EncodedImage

    cfg = OfdmConfig()
    shape = (512, 768)
    n = image_symbol_count(1, shape)
    rows = []
    for profile in profiles:
        for snr in snrs:
            bias, meas_gap, loss, missed = [], [], [], 0
            for d in range(draws):
                rng = np.random.default_rng([seed, d, int(snr * 10) + 1000, sum(map(ord, profile))])
                z = channels.normalise_power(rng.standard_normal(n) + 1j * rng.standard_normal(n))
                enc = EncodedImage(
                    z.astype(np.complex64), shape, (0, 0, 0), "jscc-awgn-cbr1_384", snr
                )
                burst = build_bursts(enc, d, cfg)[0]
                if profile.startswith("exp"):
                    taps = rayleigh_taps(exponential_taps(2.0 * float(profile[3:])), rng)
                else:
                    taps = draw_taps(profile, rng)
                delay = float(rng.uniform(0, 8))
                cfo = 0.005 * (1 if rng.random() < 0.5 else -1)
                sigma = noise_voltage(snr, cfg)
                x = np.concatenate(
                    [np.zeros(300, np.complex64), burst, np.zeros(4000, np.complex64)]
                )
                x = fractional_delay(np.convolve(x, taps).astype(np.complex64), delay)
                x = frequency_offset(x, cfo)
                noise = rng.standard_normal(x.size) + 1j * rng.standard_normal(x.size)
                x = (x + sigma / np.sqrt(2) * noise).astype(np.complex64)
                est = _receive(OfdmReceiver(cfg), x)
                genie = GenieChannel(tuple(taps), (300 + delay,), cfo, sigma)
                ref = _receive(OfdmReceiver(cfg, genie=genie), x)
                if not est or not ref:
                    missed += 1
                    continue
                bias.append(est[0].snr_db - ref[0].snr_db)
                m_est = measured_snr_db(est[0].symbols, enc.symbols)
                m_ref = measured_snr_db(ref[0].symbols, enc.symbols)
                meas_gap.append(est[0].snr_db - m_est)
                loss.append(m_ref - m_est)
            row = {
                "profile": profile,
                "snr_db": snr,
                "frames": draws,
                "missed": missed,
                "bias_db": float(np.mean(bias)) if bias else None,
                "rmse_db": float(np.sqrt(np.mean(np.square(bias)))) if bias else None,
                "estimate_minus_measured_db": float(np.mean(meas_gap)) if meas_gap else None,
                "loss_vs_genie_db": float(np.mean(loss)) if loss else None,
            }
            rows.append(row)
            log(json.dumps(row))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profiles", nargs="+", default=["awgn", "epa", "eva", "exp1", "exp3"])
    p.add_argument("--snr", type=float, nargs="+", default=[0.0, 3.0, 10.0, 20.0])
    p.add_argument("--draws", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    args = p.parse_args(argv)
    rows = run(
        args.profiles, args.snr, args.draws, args.seed, log=lambda m: print(m, file=sys.stderr)
    )
    if args.json:
        from diffjscc.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
