"""Hostile sample streams for the receiver: bursts cut short, colliding, absurdly
loud or quiet, and a way to score what the receiver made of them.

Each generator returns a ``HostileStream``: the samples (noise everywhere, at
the payload SNR of the weakest burst), the JSCC symbols each image id carried,
and which ids were damaged on the air. ``score`` compares received frames with
that truth: a damaged frame delivered as complete, or a delivered frame whose
reported SNR is off from the SNR of its delivered symbols, is what the receiver
must never do. Used by ``tests/test_fault_receiver.py`` and
``benchmarks/radio_faults.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from diffjscc import channels
from diffjscc.radio.config import FrameConfig, noise_voltage
from diffjscc.radio.frame import build_bursts, frame_slice, image_symbol_count
from diffjscc.radio.sim import fractional_delay, frequency_offset

KINDS = ("clean", "cut", "cut_payload", "overlap", "strong", "loud", "quiet")
SHAPE = (512, 768)  # 3072 symbols at CBR 1/384: one frame
MODEL = "jscc-awgn-cbr1_384"


@dataclass
class HostileStream:
    kind: str
    samples: np.ndarray
    sent: dict[int, np.ndarray]  # image id -> the image's JSCC symbols
    damaged: set[int] = field(default_factory=set)  # ids whose frame was damaged on the air
    snr_db: float = 0.0


def _encoded(rng: np.random.Generator):
    from diffjscc.symbols import EncodedImage

    n = image_symbol_count(1, SHAPE)
    z = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    # Like a JSCC latent flattened map by map: each map at its own power.
    maps = 4
    z *= np.repeat(np.sqrt(rng.uniform(0.2, 2.0, maps)), -(-n // maps))[:n]
    z = channels.normalise_power(z)
    return EncodedImage(z.astype(np.complex64), SHAPE, (0, 0, 0), MODEL, 5.0)


def hostile_stream(
    kind: str,
    snr_db: float,
    rng: np.random.Generator,
    cfg: FrameConfig | None = None,
    fraction: float | None = None,
) -> HostileStream:
    """One stream of ``kind`` (``KINDS``): two images of one frame each, 0 and 1.

    - clean: both bursts, a gap between;
    - cut: burst 0 ends at ``fraction`` of its length (random in 0.3..0.95), then noise;
    - cut_payload: the same, then burst 1 after a gap;
    - overlap: burst 1 starts at ``fraction`` (random 0.3..0.8) of burst 0;
    - strong: burst 0 is 80 dB louder, burst 1 follows after a gap of 3000 samples;
    - loud, quiet: the whole stream scaled by 1e18, 1e-20.
    """
    cfg = FrameConfig() if cfg is None else cfg
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    encs = [_encoded(rng), _encoded(rng)]
    b0, b1 = (build_bursts(e, i, cfg)[0] for i, e in enumerate(encs))
    size = b0.size
    lead = np.zeros(int(rng.integers(500, 3000)), np.complex64)
    gap = np.zeros(int(rng.integers(3000, 6000)), np.complex64)
    tail = np.zeros(size + 4000, np.complex64)
    damaged: set[int] = set()
    if kind in ("cut", "cut_payload"):
        f = float(rng.uniform(0.3, 0.95)) if fraction is None else fraction
        cut = b0[: int(f * size)]
        rest = np.zeros(size - cut.size, np.complex64)
        parts = [lead, cut, rest, gap] + ([b1] if kind == "cut_payload" else []) + [tail]
        x = np.concatenate(parts)
        damaged.add(0)
    elif kind == "overlap":
        f = float(rng.uniform(0.3, 0.8)) if fraction is None else fraction
        start = int(f * size)
        x = np.zeros(lead.size + start + size + tail.size, np.complex64)
        x[lead.size : lead.size + size] += b0
        x[lead.size + start : lead.size + start + size] += b1
        damaged |= {0, 1}
    elif kind == "strong":
        x = np.concatenate([lead, b0 * np.float32(1e4), np.zeros(3000, np.complex64), b1, tail])
    else:
        x = np.concatenate([lead, b0, gap, b1, tail])
    x = fractional_delay(x, float(rng.uniform(0, 1)))
    x = frequency_offset(x, float(rng.uniform(-0.01, 0.01)) / cfg.sps, float(rng.uniform(0, 6.3)))
    sigma = noise_voltage(snr_db, cfg)
    noise = rng.standard_normal((x.size, 2)).astype(np.float32) @ np.array([1, 1j], np.complex64)
    x = x + noise * np.float32(sigma / math.sqrt(2))
    if kind == "loud":
        x = x * np.float32(1e18)
    elif kind == "quiet":
        x = (x.astype(np.complex128) * 1e-20).astype(np.complex64)
    return HostileStream(
        kind, x.astype(np.complex64), {0: encs[0].symbols, 1: encs[1].symbols}, damaged, snr_db
    )


def back_to_back(
    images: int, snr_db: float, rng: np.random.Generator, cfg: FrameConfig | None = None
) -> HostileStream:
    """Clean bursts of ``images`` images (ids 0, 1, ...) as the image source sends
    them when it runs ahead of the air: each followed by its gap of 1,000 zeros,
    at integer sample timing, then noise at ``snr_db`` everywhere. Nothing is damaged:
    every frame must come out complete."""
    cfg = FrameConfig() if cfg is None else cfg
    gap = np.zeros(1000, np.complex64)
    parts, sent = [gap], {}
    for i in range(images):
        enc = _encoded(rng)
        sent[i] = enc.symbols
        for b in build_bursts(enc, i, cfg):
            parts += [b, gap]
    parts.append(np.zeros(40_000, np.complex64))
    x = np.concatenate(parts)
    sigma = noise_voltage(snr_db, cfg)
    noise = rng.standard_normal((x.size, 2)).astype(np.float32) @ np.array([1, 1j], np.complex64)
    x = x + noise * np.float32(sigma / math.sqrt(2))
    return HostileStream("back_to_back", x.astype(np.complex64), sent, set(), snr_db)


def delivered_snr_db(frame, sent: np.ndarray) -> float:
    """SNR of a frame's delivered (received, unmasked) symbols against what was sent,
    in the training convention: the image's average symbol energy over the mean
    squared error of the delivered symbols (a stretch of louder or quieter
    symbols does not change the SNR the decoder should be told)."""
    start, stop = frame_slice(sent.size, frame.frame_count, frame.frame_index)
    ref = sent[start:stop]
    mask = frame.mask()
    err = float(np.mean(np.abs(frame.symbols[mask] - ref[mask]) ** 2))
    return 10.0 * math.log10(float(np.mean(np.abs(sent) ** 2)) / max(err, 1e-30))


def score(stream: HostileStream, frames) -> dict:
    """What the receiver did with a stream, against the truth."""
    out = {"delivered": 0, "complete": 0, "partial": 0, "damaged_as_complete": 0, "snr_errors": []}
    for frame in frames:
        sent = stream.sent.get(frame.image_id)
        if sent is None:
            continue
        out["delivered"] += 1
        out["complete" if frame.complete else "partial"] += 1
        if frame.complete and frame.image_id in stream.damaged:
            out["damaged_as_complete"] += 1
        out["snr_errors"].append(float(frame.snr_db) - delivered_snr_db(frame, sent))
    return out
