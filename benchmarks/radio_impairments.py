#!/usr/bin/env python3
"""Both waveforms against a radio front end's impairments: phase noise, IQ imbalance, DC offset.

    python benchmarks/radio_impairments.py --snr 10 --frames 12 --json /tmp/radio_impairments.json

One image (scikit-image's astronaut, centre crop 256x384: 768 JSCC symbols at
CBR 1/384, one frame) is encoded once and sent ``--frames`` times, with gaps of
500 to 3000 samples, through GNU Radio's ``channels.channel_model`` (AWGN at the
waveform's own SNR convention, frequency offset 0.005 cycles per sample: 1 % of
the single carrier's symbol rate at sps 2) and then ``channels.impairments``
(``diffjscc.radio.channel_presets.gnuradio_channel``: the impairments act after
the noise, as in a receiver's front end). The receiver core (numpy/numba, no GNU
Radio block) takes the stream; every frame delivered is decoded by the JSCC
decoder (torch, CPU) with the receiver's SNR estimate.

What each setting means physically (``channels.impairments`` of GNU Radio 3.10):

- ``phase_noise_mag`` (dB): Gaussian noise of that amplitude through a one-pole
  low-pass (alpha 0.01) is the phase, so its rms is 10^(mag/20) * sqrt(0.01 / 1.99)
  radians, correlated over about 100 samples; reported as ``phase_rms_deg``. It is
  always there: 0 dB (the block's default) is 4 degrees rms, so the other rows set
  it to -300 dB.
- ``magbal`` (dB) and ``phasebal`` (degrees): IQ imbalance; reported as the image
  rejection ratio ``irr_db`` (the power of the mirror image against the signal).
- ``i_ofs``, ``q_ofs``: DC offset, reported as ``dc_db`` against the signal's power.
- ``epsilon``: the channel model's sample-rate ratio (a clock offset), in ppm.

Per row and waveform: frames delivered of those sent, the mean SNR estimate, and
the mean PSNR over the frames sent (a frame lost counts as an image of zeros, as the
receiver's erasures would), against the row without impairments. ``--dc-remover``
puts ``diffjscc.radio.frontend.DcRemover`` (a running mean subtracted) ahead of the
receiver, as the GNU Radio receiver block's ``dc_removal`` option does.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time

import numpy as np

# channels.impairments always has its phase noise: phase_noise_mag 0 is 0 dB (4 degrees
# rms), not off. The other rows turn it down to nothing.
_QUIET = -300.0

# name, channels.impairments keywords, sample-rate offset in ppm
ROWS = [
    ("none", {}, 0.0),
    ("phase noise -6 dB", {"phase_noise_mag": -6.0}, 0.0),
    ("phase noise 0 dB", {"phase_noise_mag": 0.0}, 0.0),
    ("phase noise 6 dB", {"phase_noise_mag": 6.0}, 0.0),
    ("IQ 0.5 dB / 3 deg", {"phase_noise_mag": _QUIET, "magbal": 0.5, "phasebal": 3.0}, 0.0),
    ("IQ 1 dB / 5 deg", {"phase_noise_mag": _QUIET, "magbal": 1.0, "phasebal": 5.0}, 0.0),
    ("IQ 2 dB / 10 deg", {"phase_noise_mag": _QUIET, "magbal": 2.0, "phasebal": 10.0}, 0.0),
    ("DC -20 dB", {"phase_noise_mag": _QUIET, "i_ofs": 0.1, "q_ofs": 0.0}, 0.0),
    ("DC -10 dB", {"phase_noise_mag": _QUIET, "i_ofs": 0.3, "q_ofs": 0.1}, 0.0),
    ("DC -3 dB", {"phase_noise_mag": _QUIET, "i_ofs": 0.5, "q_ofs": 0.5}, 0.0),
    ("clock 20 ppm", {}, 20.0),
    ("clock 100 ppm", {}, 100.0),
]


def _image():
    import skimage.data

    return skimage.data.astronaut()[128:384, 64:448].copy()


def phase_rms_deg(mag_db: float) -> float:
    return math.degrees(10.0 ** (mag_db / 20.0) * math.sqrt(0.01 / 1.99))


def image_rejection_db(magbal_db: float, phasebal_deg: float) -> float:
    """Mirror-image power against the signal for GNU Radio's iqbal_gen (transmitter mode,
    the one ``channels.impairments`` uses): I' = g cos(phi) I, Q' = Q + g sin(phi) I with
    g = 10^(mag/20), i.e. y = a x + b conj(x), a = (1 + g e^{j phi}) / 2, b = (g e^{j phi} - 1) / 2."""
    rot = 10.0 ** (magbal_db / 20.0) * complex(
        math.cos(math.radians(phasebal_deg)), math.sin(math.radians(phasebal_deg))
    )
    a, b = (1.0 + rot) / 2.0, (rot - 1.0) / 2.0
    return 10.0 * math.log10(max(abs(b) ** 2, 1e-30) / abs(a) ** 2)


def _channel_output(stream, blocks_list) -> np.ndarray:
    from gnuradio import blocks, gr

    tb = gr.top_block()
    src = blocks.vector_source_c(stream.tolist(), False)
    sink = blocks.vector_sink_c()
    chain = [src, *blocks_list, sink]
    for a, b in zip(chain, chain[1:], strict=False):
        tb.connect(a, b)
    tb.run()
    return np.asarray(sink.data(), dtype=np.complex64)


def run(snr_db: float, frames: int, seed: int = 0, rows=ROWS, dc_remover=False, log=print) -> dict:
    from diffjscc.metrics import psnr
    from diffjscc.radio.channel_presets import gnuradio_channel
    from diffjscc.radio.frontend import DcRemover
    from diffjscc.radio.waveform import get_waveform
    from diffjscc.zoo import load_codec

    codec = load_codec("1/384", device="cpu")
    image = _image()
    shape = image.shape[:2]
    enc = codec.encode(image, snr_db=snr_db)
    out = []
    for name in ("sc", "ofdm"):
        wf = get_waveform(name)
        burst = np.concatenate(wf.build_bursts(enc, image_id=1))
        signal_power = float(np.mean(np.abs(burst) ** 2))
        rng = np.random.default_rng(seed)
        parts = [np.zeros(1000, np.complex64)]
        for _ in range(frames):
            parts += [burst, np.zeros(int(rng.integers(500, 3000)), np.complex64)]
        parts.append(np.zeros(6000, np.complex64))
        stream = np.concatenate(parts).astype(np.complex64)
        baseline = None
        for label, imp, ppm in rows:
            blocks_list = gnuradio_channel(
                "awgn",
                noise_voltage=wf.noise_voltage(snr_db),
                frequency_offset=0.005,
                epsilon=1.0 + ppm * 1e-6,
                seed=seed + 1,
                impairments=dict(imp) if imp else None,
            )
            t = time.perf_counter()
            x = _channel_output(stream, blocks_list)
            rx = wf.make_receiver()
            dc = DcRemover() if dc_remover else None
            got = []
            for i in range(0, x.size, 8192):
                chunk = x[i : i + 8192]
                got += rx.feed(chunk if dc is None else dc.process(chunk))
            got += rx.flush()
            got = [f for f in got if f.image_shape == tuple(shape)]
            images = (
                codec.decode_batch(
                    [f.symbols for f in got], [shape] * len(got), [f.snr_db for f in got]
                )
                if got
                else []
            )
            values = [psnr(image, im) for im in images]
            zeros = psnr(image, np.zeros_like(image))
            values += [zeros] * max(frames - len(got), 0)
            row = {
                "waveform": name,
                "impairment": label,
                "settings": imp,
                "clock_ppm": ppm,
                "frames": f"{min(len(got), frames)}/{frames}",
                "delivered": min(len(got), frames),
                "snr_estimate_db": float(np.mean([f.snr_db for f in got])) if got else None,
                "psnr_db": float(np.mean(values)),
                "seconds": time.perf_counter() - t,
            }
            if imp.get("phase_noise_mag", _QUIET) > _QUIET:
                row["phase_rms_deg"] = phase_rms_deg(imp["phase_noise_mag"])
            if "magbal" in imp:
                row["irr_db"] = image_rejection_db(imp["magbal"], imp.get("phasebal", 0.0))
            if "i_ofs" in imp:
                dc = abs(complex(imp.get("i_ofs", 0.0), imp.get("q_ofs", 0.0))) ** 2
                row["dc_db"] = 10.0 * math.log10(dc / signal_power)
            if baseline is None:
                baseline = row["psnr_db"]
            row["psnr_loss_db"] = baseline - row["psnr_db"]
            out.append(row)
            est = "-" if row["snr_estimate_db"] is None else f"{row['snr_estimate_db']:.2f}"
            log(
                f"{name:4s} {label:20s} frames {row['frames']:>6s} SNR est {est:>6s} dB "
                f"PSNR {row['psnr_db']:.2f} dB (loss {row['psnr_loss_db']:+.2f})"
            )
    return {
        "snr_db": snr_db,
        "frames": frames,
        "seed": seed,
        "dc_remover": bool(dc_remover),
        "rows": out,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--snr", type=float, default=10.0)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--dc-remover",
        action="store_true",
        help="put diffjscc.radio.frontend.DcRemover ahead of the receiver",
    )
    p.add_argument("--json")
    args = p.parse_args(argv)
    t = time.time()
    report = run(
        args.snr,
        args.frames,
        args.seed,
        dc_remover=args.dc_remover,
        log=lambda m: print(m, file=sys.stderr),
    )
    report["seconds"] = time.time() - t
    report["machine"] = f"{platform.machine()} python {platform.python_version()}"
    report["command"] = " ".join(["python", *sys.argv])
    text = json.dumps(report, indent=1)
    if args.json:
        from diffjscc.io import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
