#!/usr/bin/env python3
"""Make the SigMF recordings shipped in examples/recordings/, through GNU Radio.

    .venv/bin/python scripts/make_recordings.py            # all, into examples/recordings/
    .venv/bin/python scripts/make_recordings.py --only awgn_7db --out /tmp/rec

Each recording is what a receiver would have heard: the project's own
transmitter (the ``image_source`` block, ONNX encoder) sends small images of
scikit-image's sample photographs (public domain / CC0) through GNU Radio's
``channels.channel_model`` (noise, frequency offset, clock offset, a complex
gain) after a fractional-free delay; a ``jscc_receiver`` listens to the
channel's output and its frames annotate the ``sigmf_recorder`` beside it,
which also learns the originals from the source's ``tx_info``. The originals
are written first, as PNGs under ``originals/<name>/``, so the recordings
name them by a path relative to themselves (with their SHA-256), and
``diffjscc replay`` can report the PSNR.

Runs are seeded: on the same versions of GNU Radio and onnxruntime the samples
are the same from run to run (with a clock offset, to within float rounding of
the channel's resampler); the capture's datetime changes.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Spec:
    name: str
    images: tuple[tuple[str, int, int], ...]  # scikit-image sample, height, width
    model: str
    snr_db: float  # payload Es/N0 at the receiver; also the encoder's design SNR
    cfo: float  # cycles per sample
    epsilon: float  # channel_model's sample-rate ratio (clock offset)
    gain: complex  # one flat tap
    delay: int  # samples
    sample_rate: float
    sps: int = 2
    max_payload_symbols: int = 0  # 0: the default
    seed: int = 1


RECORDINGS = (
    Spec(
        name="awgn_7db",
        images=(("astronaut", 128, 128), ("coffee", 128, 192), ("chelsea", 128, 192)),
        model="jscc-awgn-cbr1_384",
        snr_db=7.0,
        cfo=0.002,
        epsilon=1.0,
        gain=1.0,
        delay=37,
        sample_rate=1e6,
        seed=1,
    ),
    Spec(
        name="drift_3db",
        images=(("rocket", 128, 192), ("astronaut", 128, 128)),
        model="jscc-awgn-cbr1_384",
        snr_db=3.0,
        cfo=-0.004,
        epsilon=1.0 + 20e-6,
        gain=0.8 * np.exp(1.1j),
        delay=211,
        sample_rate=1e6,
        max_payload_symbols=64,  # several frames per image
        seed=2,
    ),
    Spec(
        name="cbr96_sps4_10db",
        images=(("coffee", 96, 144),),
        model="jscc-awgn-cbr1_96",
        snr_db=10.0,
        cfo=0.001,
        epsilon=1.0,
        gain=1.0,
        delay=5,
        sample_rate=2e6,
        sps=4,
        seed=3,
    ),
)


def _use_module_from_checkout() -> None:
    import gnuradio

    source = ROOT / "gr-diffjscc" / "python"
    if (source / "diffjscc" / "__init__.py").exists() and str(source) not in gnuradio.__path__:
        gnuradio.__path__.insert(0, str(source))


def _write_originals(spec: Spec, folder: Path) -> list[Path]:
    """The spec's images, resized, as PNGs in ``folder`` (named in send order)."""
    from diffjscc.image import save_png
    from PIL import Image
    from skimage import data

    paths = []
    for k, (sample, h, w) in enumerate(spec.images):
        image = Image.fromarray(getattr(data, sample)()).convert("RGB")
        small = np.asarray(image.resize((w, h), Image.Resampling.LANCZOS))
        paths.append(save_png(folder / f"{k:02d}_{sample}_{h}x{w}.png", small))
    for stale in set(folder.glob("*.png")) - set(paths):
        stale.unlink()
    return paths


def make(spec: Spec, out: Path) -> dict:
    from gnuradio import blocks, channels, gr

    _use_module_from_checkout()
    from diffjscc.radio import noise_voltage
    from gnuradio import diffjscc

    originals = out / "originals" / spec.name
    _write_originals(spec, originals)
    source_kwargs = {}
    if "interval_s" in inspect.signature(diffjscc.image_source.__init__).parameters:
        source_kwargs["interval_s"] = 0.0  # as fast as the flowgraph runs: no idle gaps
    tb = gr.top_block()
    src = diffjscc.image_source(
        str(originals),
        model=spec.model,
        design_snr_db=spec.snr_db,
        repeat=False,
        sps=spec.sps,
        max_payload_symbols=spec.max_payload_symbols,
        gap_samples=1000,
        **source_kwargs,
    )
    delay = blocks.delay(gr.sizeof_gr_complex, spec.delay)
    channel = channels.channel_model(
        noise_voltage=noise_voltage(spec.snr_db, src.cfg, amplitude=abs(spec.gain)),
        frequency_offset=spec.cfo,
        epsilon=spec.epsilon,
        taps=[complex(spec.gain)],
        noise_seed=spec.seed,
        block_tags=False,
    )
    rx = diffjscc.jscc_receiver(sps=spec.sps)
    rec = diffjscc.sigmf_recorder(
        str(out / spec.name),
        sample_rate=spec.sample_rate,
        center_freq=2.45e9,
        hw=(
            f"simulated: gr-diffjscc image_source -> GNU Radio {gr.version()} "
            "channels.channel_model (noise, frequency offset, clock offset, gain)"
        ),
        description=(
            f"{len(spec.images)} images, {spec.model}, {spec.snr_db:g} dB, CFO {spec.cfo:g} "
            f"cycles/sample, epsilon {spec.epsilon:.6f}, gain {complex(spec.gain):.3f}, "
            f"delay {spec.delay} samples (scripts/make_recordings.py)"
        ),
        sps=spec.sps,
    )
    tb.connect(src, delay, channel, rx)
    tb.connect(channel, rec)
    tb.msg_connect(rx, "pdus", rec, "frames")
    tb.msg_connect(src, "tx_info", rec, "tx_info")
    tb.run()
    stats = rec.stats()
    frames_sent = src.stats()["bursts_sent"]
    if stats["annotations"] != frames_sent:
        raise SystemExit(
            f"{spec.name}: the receiver annotated {stats['annotations']} of {frames_sent} frames"
        )
    return {
        "recording": str(rec.meta_path),
        "samples": stats["samples_written"],
        "bytes": (out / f"{spec.name}.sigmf-data").stat().st_size,
        "frames": stats["annotations"],
        "images": len(spec.images),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "examples" / "recordings"), help="output folder")
    p.add_argument("--only", action="append", choices=[s.name for s in RECORDINGS])
    args = p.parse_args(argv)
    out = Path(args.out)
    for spec in RECORDINGS:
        if not args.only or spec.name in args.only:
            print(json.dumps(make(spec, out)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
