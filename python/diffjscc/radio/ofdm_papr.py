"""Peak-to-average power: measurement, clip-and-filter, and an amplifier model.

OFDM samples are close to complex Gaussian, and so are the pulse-shaped JSCC
symbols of the single carrier: both peak about 10 dB above their mean power
(``papr_db``). A power amplifier driven near saturation compresses those peaks
(``rapp``: the Rapp model of a solid-state amplifier); ``clip_and_filter`` at
the transmitter trades in-band distortion for a lower peak, so the amplifier
can be driven harder (measured in ``benchmarks/ofdm_papr.py``).
"""

from __future__ import annotations

import numpy as np


def papr_db(samples: np.ndarray, percentile: float | None = 99.9) -> float:
    """Peak (or the given percentile of instantaneous power) over mean power, in dB."""
    p = np.abs(np.asarray(samples)) ** 2
    mean = float(np.mean(p))
    if mean <= 0.0:
        return 0.0
    peak = float(np.max(p)) if percentile is None else float(np.percentile(p, percentile))
    return 10.0 * np.log10(peak / mean)


def clip_and_filter(time: np.ndarray, cfg, iterations: int = 2) -> np.ndarray:
    """Clip [symbols, fft_size] OFDM symbols (no prefix yet) at ``cfg.clip_ratio_db``
    above the RMS amplitude, then remove what clipping put outside the used
    subcarriers; repeated, since filtering lets some peaks grow back. The result
    is scaled back to the input's mean power."""
    x = np.asarray(time, dtype=np.complex128)
    power = float(np.mean(np.abs(x) ** 2))
    if power <= 0.0:
        return x
    limit = np.sqrt(power) * 10.0 ** (cfg.clip_ratio_db / 20.0)
    n = cfg.fft_size
    lay = cfg.layout
    keep = np.zeros(n, dtype=bool)
    keep[lay.used] = True
    pilots = lay.pilots[lay.rows(x.shape[0])]
    for _ in range(iterations):
        mag = np.abs(x)
        x = np.where(mag > limit, x * (limit / np.maximum(mag, 1e-30)), x)
        spec = np.fft.fft(x, axis=1)
        spec[:, ~keep] = 0.0
        # Pilots keep their exact values: the receiver's channel estimate relies on them.
        ref = np.fft.fft(time, axis=1)
        np.put_along_axis(spec, pilots, np.take_along_axis(ref, pilots, axis=1), axis=1)
        x = np.fft.ifft(spec, axis=1)
    return x * np.sqrt(power / max(float(np.mean(np.abs(x) ** 2)), 1e-30))


def rapp(samples: np.ndarray, saturation: float, smoothness: float = 2.0) -> np.ndarray:
    """Rapp AM/AM model: |y| = |x| / (1 + (|x| / saturation)^(2p))^(1/(2p)), phase kept.

    ``saturation``: the output amplitude the amplifier saturates at, in the units
    of the samples (unit RMS input: 10^(IBO/20) for an input back-off IBO in dB).
    """
    x = np.asarray(samples)
    mag = np.abs(x)
    p = float(smoothness)
    gain = 1.0 / (1.0 + (mag / float(saturation)) ** (2.0 * p)) ** (1.0 / (2.0 * p))
    return (x * gain).astype(np.complex64)
