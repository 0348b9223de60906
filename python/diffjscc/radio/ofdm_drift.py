"""Sample-rate offset of an OFDM frame: its FFT windows' timing drift, from the pilots.

A receiver clock running ``1 + e`` times the transmitter's moves each OFDM symbol's FFT
window by ``e * symbol_length`` samples against the symbol, a phase ramp
``exp(2 pi j k l d / N)`` over subcarrier k that grows with the symbol index l (``d``
samples a symbol). The channel estimator's time smoother follows such a ramp only in part:
at 200 ppm the 1,024-point layout lost 1.4 dB of PSNR at 10 dB SNR and 4 dB of the symbols'
SNR at 20 dB. Symbols ``stagger`` apart carry their pilots on the same subcarriers, so the
products of their pilots' least-squares estimates, ``|H(k)|^2 exp(2 pi j k stagger d / N)``
with the channel and the residual frequency offset gone, show the ramp alone; ``d`` is where
their coherent sum over a grid of drifts peaks (the maximum-likelihood linear phase),
refined between grid points by a parabola. A link's frames share its clock: ``LinkClock``
averages their drifts and says when the mean is worth correcting.
"""

from __future__ import annotations

import collections
import functools
import math

import numpy as np

from diffjscc.radio import _fast_ofdm
from diffjscc.radio.ofdm import OfdmConfig, pilot_values

GRID_STEPS = 40  # grid points over the range searched: far finer than the peak's lobe
MIN_FRAME_DRIFT = 0.02  # samples a frame's last symbol must have moved to be worth correcting


@functools.lru_cache(maxsize=32)
def _plan(cfg: OfdmConfig, m: int, limit: float) -> tuple:
    """For a frame of m symbols: the pilots' flat indices and the conjugates of their
    values, the drift grid and its phasors [drifts, rows with a pair, pilots], the guard
    bins, and the spread sum (f - mean f)^2 of the pairs' subcarriers."""
    lay = cfg.layout
    s = cfg.pilot_stagger
    rows = lay.rows(m)
    flat = (np.arange(m)[:, None] * cfg.fft_size + lay.pilots[rows]).astype(np.int64)
    conj_pilots = np.conj(pilot_values(m, cfg)).astype(np.complex128)
    have = min(m - s, s)  # rows that have a pair
    freqs = lay.pilot_freqs[:have].astype(np.float64)  # [rows, pilots]
    grid = np.linspace(-limit, limit, 2 * GRID_STEPS + 1)
    phasors = np.exp(-2j * np.pi * s * grid[:, None, None] * freqs[None] / cfg.fft_size)
    noise_bins = np.array(lay.noise, dtype=np.int64)  # a copy: the layout's stays as it is
    arrays = tuple(np.ascontiguousarray(a) for a in (flat, conj_pilots, grid, phasors))
    for a in (*arrays, noise_bins):
        a.flags.writeable = False
    return (*arrays, noise_bins, float(((freqs - freqs.mean()) ** 2).sum()))


def estimate_drift(y: np.ndarray, cfg: OfdmConfig, max_ppm: float) -> tuple[float, float]:
    """(drift d in samples per OFDM symbol, its standard error) of ``y`` ([symbols,
    fft_size], FFT outputs at unit subcarrier energy), searched within 1.25 ``max_ppm`` of
    clock offset; (0, inf) for a frame too short to tell."""
    m = y.shape[0]
    s = cfg.pilot_stagger
    if m <= s or not max_ppm > 0:
        return 0.0, math.inf
    limit = round(1.25 * max_ppm * 1e-6 * cfg.symbol_length, 6)
    flat, conj_pilots, grid, phasors, noise_bins, spread = _plan(cfg, m, limit)
    score = np.empty(grid.size)
    power, noise = _fast_ofdm.drift_scores(y, flat, conj_pilots, s, phasors, noise_bins, score)
    i = int(np.argmax(score))
    d = float(grid[i])
    if 0 < i < grid.size - 1:  # the peak between grid points: a parabola through three
        left, mid, right = score[i - 1], score[i], score[i + 1]
        curve = left - 2.0 * mid + right
        if curve < 0:
            d += 0.5 * (grid[1] - grid[0]) * (left - right) / curve
    # Standard error of a linear phase fitted to the products: each is |H|^2 times the
    # ramp, plus noise of variance 2 |H|^2 v + v^2 (v: a pilot estimate's noise, the
    # guard band's per subcarrier at this scale), ``count`` of them in each row's sum.
    signal = max(power - noise, 1e-30)
    count = (m - s) / phasors.shape[1]
    var_slope = (2.0 * signal * noise + noise**2) / (2.0 * count * signal**2 * spread)
    if not math.isfinite(var_slope) or not math.isfinite(d):
        return 0.0, math.inf
    return d, math.sqrt(var_slope) * cfg.fft_size / (2.0 * math.pi * s)


def correct_drift(y: np.ndarray, cfg: OfdmConfig, drift: float) -> None:
    """Take the ramp of ``drift`` samples per symbol out of the used subcarriers of ``y``
    in place (symbol 0, the header's, is the reference: its estimate and the sync's timing
    are unchanged; the guard band's power, the noise estimate, is not affected)."""
    lay = cfg.layout
    step = np.exp((-2j * np.pi * drift / cfg.fft_size) * lay.used_freqs)
    ramp = np.ones_like(step)
    for row in y[1:]:
        ramp *= step
        row[lay.used] *= ramp


class LinkClock:
    """A link's clock offset, from the drift of its delivered frames.

    One frame's drift is not enough to act on: under Doppler (EPA at fD*Ts = 1e-4) the
    paths' own phase changes between a frame's symbols show as a drift of +-100-250 ppm,
    differently in every frame, while a clock offset is the same in all. So the receiver
    keeps the last ``window`` frames' drifts and corrects by their mean once there are
    ``min_frames`` of them and the mean stands ``sigmas`` standard errors (their own
    spread) clear of zero: a fading channel's scatter averages out, and a clock offset's
    mean is found even at 0 dB, where one frame's drift errs by 0.08 samples a symbol.

    A frame whose drift lies outside the window's spread (``sigmas`` standard deviations
    and ``CHANGE_FLOOR``) is not corrected and does not join the window; ``RESTART`` such
    frames in a row are a new clock (another transmitter): the window starts again from
    them."""

    CHANGE_FLOOR = 0.05  # samples a symbol (47 ppm at the defaults) a change must exceed
    RESTART = 3

    def __init__(self, window: int = 32, min_frames: int = 8, sigmas: float = 6.0):
        self._drifts: collections.deque[float] = collections.deque(maxlen=int(window))
        self._outliers: list[float] = []
        self.min_frames = int(min_frames)
        self.sigmas = float(sigmas)
        self.restarts = 0
        self._cached: tuple[int, float, float] | None = None  # _stats until the window moves

    def reset(self) -> None:
        self._drifts.clear()
        self._outliers.clear()
        self._cached = None

    def _stats(self) -> tuple[int, float, float]:
        """(frames, mean, variance) of the window; an infinite variance below min_frames.
        Each frame asks twice (``drift`` then ``add``): computed once per window."""
        if self._cached is None:
            n = len(self._drifts)
            if n < max(self.min_frames, 2):
                self._cached = (n, 0.0, math.inf)
            else:
                mean = math.fsum(self._drifts) / n
                var = math.fsum((d - mean) ** 2 for d in self._drifts) / (n - 1)
                self._cached = (n, mean, var)
        return self._cached

    def _outside(self, drift: float, mean: float, var: float) -> bool:
        return abs(drift - mean) > self.sigmas * math.sqrt(var) + self.CHANGE_FLOOR

    def add(self, drift: float) -> None:
        """Count a delivered frame's measured drift (samples per symbol)."""
        if not math.isfinite(drift):
            return
        n, mean, var = self._stats()
        if math.isfinite(var) and self._outside(drift, mean, var):
            self._outliers.append(float(drift))
            if len(self._outliers) >= self.RESTART:
                self._drifts.clear()
                self._drifts.extend(self._outliers)
                self._outliers.clear()
                self._cached = None
                self.restarts += 1
            return
        self._outliers.clear()
        self._drifts.append(float(drift))
        self._cached = None

    def drift(self, symbols: int, measured: float = math.nan) -> float:
        """The drift to correct a frame of ``symbols`` OFDM symbols for, given its own
        ``measured`` drift: the mean, where it is clear of zero, moves the frame's last
        symbol far enough to matter and the frame agrees with it; else 0."""
        n, mean, var = self._stats()
        if not math.isfinite(var):
            return 0.0
        too_small = abs(mean) * (symbols - 1) < MIN_FRAME_DRIFT
        if too_small or abs(mean) < self.sigmas * math.sqrt(var / n):
            return 0.0
        if math.isfinite(measured) and self._outside(measured, mean, var):
            return 0.0  # a changed clock, or a frame the window does not describe
        return mean
