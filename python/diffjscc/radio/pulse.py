"""Root raised cosine pulse shaping and matched filtering."""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import signal

from diffjscc.radio.config import FrameConfig


def rrc(t: np.ndarray, rolloff: float) -> np.ndarray:
    """Root raised cosine impulse response at times ``t`` in symbols (peak 1 - b + 4b/pi)."""
    t = np.asarray(t, dtype=np.float64)
    b = float(rolloff)
    out = np.empty_like(t)
    at_zero = np.abs(t) < 1e-9
    at_pole = np.abs(np.abs(t) - 1.0 / (4.0 * b)) < 1e-9
    rest = ~(at_zero | at_pole)
    tr = t[rest]
    out[rest] = (np.sin(math.pi * tr * (1 - b)) + 4 * b * tr * np.cos(math.pi * tr * (1 + b))) / (
        math.pi * tr * (1 - (4 * b * tr) ** 2)
    )
    out[at_zero] = 1 - b + 4 * b / math.pi
    out[at_pole] = (b / math.sqrt(2)) * (
        (1 + 2 / math.pi) * math.sin(math.pi / (4 * b))
        + (1 - 2 / math.pi) * math.cos(math.pi / (4 * b))
    )
    return out


def _tap_times(cfg: FrameConfig, frac: float = 0.0) -> np.ndarray:
    half = cfg.filter_span * cfg.sps
    return (np.arange(cfg.num_taps) - half - frac) / cfg.sps


def _unit_energy_scale(cfg: FrameConfig) -> float:
    return 1.0 / math.sqrt(float(np.sum(rrc(_tap_times(cfg), cfg.rolloff) ** 2)))


def tx_taps(cfg: FrameConfig) -> np.ndarray:
    """Transmit filter, scaled so that unit-energy symbols give unit power per sample."""
    return (
        rrc(_tap_times(cfg), cfg.rolloff) * _unit_energy_scale(cfg) * math.sqrt(cfg.sps)
    ).astype(np.float32)


# Fractional delays are rounded to 1/1024 sample: a timing error of 1/2048 sample
# costs nothing measurable, and the taps of every delay can then be cached.
FRACTION_STEPS = 1024


def rx_taps(cfg: FrameConfig, frac: float = 0.0) -> np.ndarray:
    """Matched filter of unit energy, delayed by ``frac`` samples (0 <= frac < 1).

    Evaluating the pulse at shifted times is how the receiver corrects a
    fractional timing offset: no interpolation of the samples is needed.
    """
    return _rx_taps_cached(cfg, int(round(frac * FRACTION_STEPS)))


@functools.lru_cache(maxsize=4096)
def _rx_taps_cached(cfg: FrameConfig, step: int) -> np.ndarray:
    taps = (
        rrc(_tap_times(cfg, step / FRACTION_STEPS), cfg.rolloff) * _unit_energy_scale(cfg)
    ).astype(np.float32)
    taps.flags.writeable = False
    return taps


def shape(symbols: np.ndarray, cfg: FrameConfig) -> np.ndarray:
    """Upsample by ``sps`` and filter: the whole convolution, tails included.

    Symbol ``i`` peaks at sample ``filter_span * sps + i * sps``.
    """
    symbols = np.asarray(symbols, dtype=np.complex64)
    return signal.upfirdn(tx_taps(cfg), symbols, up=cfg.sps)[
        : (symbols.size - 1) * cfg.sps + cfg.num_taps
    ].astype(np.complex64)


def matched_filter(
    samples: np.ndarray, start: float, count: int, cfg: FrameConfig, stride: int = 1
) -> np.ndarray:
    """Matched-filter outputs of ``count`` symbols of a burst that starts at sample ``start``.

    ``start`` (float) is where the burst's first sample lies in ``samples``
    (symbol ``i`` peaks at ``start + filter_span * sps + i * sps``). The caller
    guarantees ``0 <= start`` and enough samples after. With ``stride`` > 1 only
    every stride-th symbol is computed.
    """
    base = int(math.floor(start))
    frac = start - base
    taps = rx_taps(cfg, frac)
    stop = base + (count - 1) * cfg.sps + cfg.num_taps
    windows = np.lib.stride_tricks.sliding_window_view(samples[base:stop], cfg.num_taps)[
        :: cfg.sps * stride
    ]
    # einsum, not a matrix product: BLAS would start a thread pool that spins on
    # every core, stealing the CPU that GNU Radio's other blocks need.
    return np.einsum("ij,j->i", windows, taps)


def matched_filter_delays(
    samples: np.ndarray, start: float, count: int, delays, cfg: FrameConfig
) -> np.ndarray:
    """``matched_filter`` at several delays at once: shape (len(delays), count).

    Row ``j`` equals ``matched_filter(samples, start + delays[j], count, cfg)``,
    with the windows gathered once for every delay.
    """
    positions = start + np.asarray(delays, dtype=np.float64)
    bases = np.floor(positions).astype(np.int64)
    lo = int(bases.min())
    width = cfg.num_taps + int(bases.max()) - lo
    taps = np.zeros((positions.size, width), dtype=np.float32)
    for j, (pos, base) in enumerate(zip(positions, bases, strict=True)):
        k = int(base) - lo
        taps[j, k : k + cfg.num_taps] = rx_taps(cfg, float(pos - base))
    stop = lo + (count - 1) * cfg.sps + width
    windows = np.lib.stride_tricks.sliding_window_view(samples[lo:stop], width)[:: cfg.sps]
    # One einsum per delay (no BLAS: see matched_filter); einsum's fast path is
    # the matrix-vector one, several times faster than a matrix-matrix einsum.
    return np.stack([np.einsum("ij,j->i", windows, row) for row in taps])
