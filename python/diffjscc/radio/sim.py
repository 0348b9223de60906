"""Channel impairments for tests and benchmarks: delay, frequency offset, noise.

The noise comes from ``diffjscc.channels`` so that an SNR means the same as in
training: ``add_noise(x, snr_db, cfg)`` gives the payload symbols an Es/N0 of
``snr_db`` after matched filtering.
"""

from __future__ import annotations

import math

import numpy as np

from diffjscc import channels
from diffjscc.radio.config import FrameConfig, sample_snr_db


def fractional_delay(samples: np.ndarray, delay: float) -> np.ndarray:
    """Delay by ``delay`` samples (any real value >= 0), exactly for band-limited
    signals: a linear phase in the frequency domain. The output grows by
    ceil(delay) samples and is zero-padded so that nothing wraps around."""
    samples = np.asarray(samples, dtype=np.complex64)
    whole = int(math.floor(delay))
    frac = delay - whole
    pad = 64
    n = samples.size + 2 * pad + 1
    size = 1 << (n - 1).bit_length()
    spec = np.fft.fft(samples, size)
    freqs = np.fft.fftfreq(size)
    shifted = np.fft.ifft(spec * np.exp(-2j * np.pi * freqs * frac))[: samples.size + 1]
    return np.concatenate([np.zeros(whole, np.complex64), shifted.astype(np.complex64)])


def frequency_offset(samples: np.ndarray, cfo: float, phase: float = 0.0) -> np.ndarray:
    """Rotate by ``cfo`` cycles per sample, starting at ``phase`` radians."""
    n = np.arange(np.size(samples), dtype=np.float64)
    return (np.asarray(samples) * np.exp(1j * (2 * np.pi * cfo * n + phase))).astype(np.complex64)


def add_noise(samples: np.ndarray, snr_db: float, cfg: FrameConfig, rng=None) -> np.ndarray:
    """AWGN such that the payload's Es/N0 after matched filtering is ``snr_db``."""
    return channels.awgn(np.asarray(samples, dtype=np.complex64), sample_snr_db(snr_db, cfg), rng)


def impair(
    samples: np.ndarray,
    snr_db: float,
    cfg: FrameConfig,
    cfo: float = 0.0,
    delay: float = 0.0,
    gain: complex = 1.0,
    rng=None,
) -> np.ndarray:
    """delay -> gain -> frequency offset -> noise, the order of a real link.

    ``snr_db`` is the SNR at the receiver: the noise is scaled with |gain|.
    """
    x = fractional_delay(samples, delay) if delay else np.asarray(samples, dtype=np.complex64)
    if cfo:
        x = frequency_offset(x, cfo)
    x = add_noise(x, snr_db, cfg, rng)
    return (x * np.complex64(gain)).astype(np.complex64)


def resample(samples: np.ndarray, ratio: float) -> np.ndarray:
    """Sample-rate offset: the receiver's clock runs ``ratio`` times the transmitter's
    (output sample k is input time k / ratio), by band-limited (windowed sinc)
    interpolation. 1 + 1e-6 * ppm for a clock offset of ``ppm``."""
    samples = np.asarray(samples, dtype=np.complex64)
    half = 16
    count = int(math.floor((samples.size - 1) * ratio)) + 1
    times = np.arange(count) / ratio
    base = np.floor(times).astype(np.int64)
    frac = times - base
    padded = np.concatenate(
        [np.zeros(half, np.complex64), samples, np.zeros(half + 1, np.complex64)]
    )
    offsets = np.arange(-half + 1, half + 1)
    out = np.zeros(count, dtype=np.complex128)
    for k in offsets:  # 32 vectorised passes, not a loop over samples
        x = k - frac
        w = np.sinc(x) * (0.5 + 0.5 * np.cos(np.pi * x / half))
        out += w * padded[base + k + half]
    return out.astype(np.complex64)
