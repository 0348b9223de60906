#!/usr/bin/env python3
"""PAPR of both waveforms, clip-and-filter, and PSNR through a Rapp amplifier.

    python benchmarks/ofdm_papr.py --json /tmp/ofdm_papr.json
    python benchmarks/ofdm_papr.py --fft-size 512 --used-carriers 256 --pilot-spacing 16 --ibo 0 3 6

``--fft-size --used-carriers --cp-length --pilot-spacing --pilot-stagger`` set the
OFDM layout (``OfdmConfig``'s fields; default its own), as in ``ofdm_robustness.py``.

Part 1: peak-to-average power of the bursts of one image (astronaut, centre crop
256x384, CBR 1/384, the real encoder): the 99.9th percentile of instantaneous
power and the maximum, for the single carrier (sps 2) and for OFDM with and
without clipping (``clip_ratio_db``), and the SNR that clipping alone leaves
(no amplifier, no noise: the effective SNR of the received symbols).

Part 2: the bursts (scaled to an input back-off IBO below the amplifier's
saturation) go through a Rapp amplifier (smoothness p = 2, output saturating at
amplitude 1), then AWGN whose level is fixed against the saturation power
(``--snr-sat``: the SNR a unit-power signal would have, in each waveform's own
convention, ``noise_voltage``), then the receiver and
the JSCC decoder. Small IBO: distortion; large IBO: a weak signal. The best IBO
is the amplitude to give a USRP sink whose DAC or amplifier clips at 1
(p = 20 is close to a hard limit, like a DAC's full scale).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def _image():
    import skimage.data

    return skimage.data.astronaut()[128:384, 64:448].copy()


def _rx(kind, cfg, x):
    from diffjscc.radio import BurstReceiver
    from diffjscc.radio.ofdm_receiver import OfdmReceiver

    rx = BurstReceiver(cfg) if kind == "sc" else OfdmReceiver(cfg)
    frames = []
    for i in range(0, x.size, 8192):
        frames += rx.feed(x[i : i + 8192])
    return frames + rx.flush()


def run(clips, ibos, snr_sat, draws, smoothness=(2.0,), layout=None, log=print) -> dict:
    from diffjscc.metrics import psnr
    from diffjscc.radio import FrameConfig, build_bursts
    from diffjscc.radio.config import noise_voltage as sc_noise
    from diffjscc.radio.ofdm import OfdmConfig
    from diffjscc.radio.ofdm import build_bursts as ofdm_bursts
    from diffjscc.radio.ofdm import noise_voltage as ofdm_noise
    from diffjscc.radio.ofdm_papr import papr_db, rapp
    from diffjscc.zoo import load_codec

    codec = load_codec("1/384", device="cpu")
    image = _image()
    enc = codec.encode(image, snr_db=10.0)
    variants = {"sc": (FrameConfig(), None)}
    for c in clips:
        cfg = OfdmConfig(**(layout or {}), clip_ratio_db=c)
        variants["ofdm" if c == 0 else f"ofdm_clip{c:g}"] = (cfg, c)
    bursts = {}
    for name, (cfg, _) in variants.items():
        b = build_bursts(enc, 1, cfg)[0] if name == "sc" else ofdm_bursts(enc, 1, cfg)[0]
        bursts[name] = b
    papr = []
    for name, (cfg, _) in variants.items():
        b = bursts[name]
        row = {"waveform": name, "papr_999_db": papr_db(b), "papr_max_db": papr_db(b, None)}
        # What clipping alone costs: the effective SNR of the symbols without noise.
        x = np.concatenate([np.zeros(300, np.complex64), b, np.zeros(4000, np.complex64)])
        x = x + (1e-4 * np.random.default_rng(0).standard_normal(x.size)).astype(np.complex64)
        frames = _rx("sc" if name == "sc" else "ofdm", cfg, x)
        if frames:
            mse = float(np.mean(np.abs(frames[0].symbols - enc.symbols) ** 2))
            row["snr_ceiling_db"] = 10 * np.log10(1 / mse)
        papr.append(row)
        log(json.dumps(row))
    rows = []
    for (name, (cfg, _)), p in ((v, p) for p in smoothness for v in variants.items()):
        for ibo in ibos:
            syms, ests = [], []
            for d in range(draws):
                rng = np.random.default_rng([d, int(ibo * 10) + 100])
                x = np.concatenate(
                    [np.zeros(300, np.complex64), bursts[name], np.zeros(4000, np.complex64)]
                )
                x = rapp(x * 10 ** (-ibo / 20), 1.0, p)
                power = float(np.mean(np.abs(x[300 : 300 + bursts[name].size]) ** 2))
                # The waveform's own convention (sps 2; OFDM fft_size / used_carriers, 2.08
                # at the default layout) for a unit-power signal.
                sigma = (sc_noise if name == "sc" else ofdm_noise)(snr_sat, cfg)
                x = x + (
                    sigma
                    / np.sqrt(2)
                    * (rng.standard_normal(x.size) + 1j * rng.standard_normal(x.size))
                )
                frames = _rx("sc" if name == "sc" else "ofdm", cfg, x.astype(np.complex64))
                if frames:
                    syms.append(frames[0].symbols)
                    ests.append(frames[0].snr_db)
                else:
                    syms.append(np.zeros(enc.symbols.size, np.complex64))
                    ests.append(snr_sat - ibo)
            imgs = codec.decode_batch(syms, [image.shape[:2]] * draws, ests, [None] * draws)
            row = {
                "waveform": name,
                "rapp_p": p,
                "ibo_db": ibo,
                "output_power_db": 10 * np.log10(power),
                "snr_est_db": float(np.mean(ests)),
                "psnr": float(np.mean([psnr(image, im) for im in imgs])),
            }
            rows.append(row)
            log(json.dumps(row))
    return {"papr": papr, "amplifier": rows, "snr_sat_db": snr_sat, "layout": layout or {}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=float, nargs="+", default=[0, 6, 4, 3])
    p.add_argument("--ibo", type=float, nargs="+", default=[-3, 0, 3, 6, 9])
    p.add_argument("--snr-sat", type=float, default=16.0)
    p.add_argument("--draws", type=int, default=2)
    p.add_argument(
        "--smoothness", type=float, nargs="+", default=[2.0, 20.0], help="Rapp p (20: a hard limit)"
    )
    p.add_argument("--json")
    layout_options = ("fft_size", "used_carriers", "cp_length", "pilot_spacing", "pilot_stagger")
    for name in layout_options:
        p.add_argument("--" + name.replace("_", "-"), type=int, help="OfdmConfig; default its own")
    args = p.parse_args(argv)
    from diffjscc.errors import ConfigError
    from diffjscc.radio.ofdm import OfdmConfig

    layout = {k: getattr(args, k) for k in layout_options if getattr(args, k) is not None}
    try:
        OfdmConfig(**layout)
    except ConfigError as exc:
        p.error(str(exc))
    report = run(
        args.clips,
        args.ibo,
        args.snr_sat,
        args.draws,
        smoothness=args.smoothness,
        layout=layout,
        log=lambda m: print(m, file=sys.stderr),
    )
    if args.json:
        from diffjscc.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
