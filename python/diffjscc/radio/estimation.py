"""Data-aided channel estimation from known symbols (pilots, preamble, header).

Model of the matched-filter output at known symbol ``s_k`` sent at symbol time ``t_k``:

    y_k = h * exp(2j*pi*f*t_k) * s_k + n_k,   n_k ~ CN(0, sigma^2),   |s_k| = 1

``h`` is the complex gain, ``f`` the frequency offset left after coarse
correction (cycles per symbol). Estimates are maximum likelihood: ``f`` maximises
|sum_k y_k s_k* exp(-2j*pi*f*t_k)| (grid search, then a parabola through the
best three points, twice), ``h`` is the least-squares gain at that ``f``, and the
SNR is |h|^2 / sigma^2 with sigma^2 from the residuals. The SNR is corrected for
the degrees of freedom spent on h and f and for the bias of a ratio, so it is
unbiased in the linear domain; its variance is close to the Cramer-Rao bound
``snr_crb``. Blind M-PSK estimators would be wrong here: the JSCC payload is
Gaussian-like, which is why only known symbols are used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from diffjscc.radio import _fast


def cis(angle: np.ndarray) -> np.ndarray:
    """exp(1j * angle) for real angles, several times faster than numpy's complex exp."""
    angle = np.asarray(angle, dtype=np.float64)
    out = np.empty(angle.shape, dtype=np.complex128)
    np.cos(angle, out=out.real)
    np.sin(angle, out=out.imag)
    return out


def phasor(freq: float, count: int, start: float = 0.0, dtype=np.complex64) -> np.ndarray:
    """exp(2j pi freq (start + n)) for n < count, from two short tables (an outer
    product): one exp per 64 samples instead of one each."""
    block = 64
    rows = -(-count // block)
    lo = cis(2 * np.pi * freq * np.arange(block)).astype(dtype, copy=False)
    hi = cis(2 * np.pi * freq * (start + block * np.arange(rows))).astype(dtype, copy=False)
    return np.multiply(hi[:, None], lo[None, :]).reshape(-1)[:count]


@dataclass(frozen=True)
class ChannelEstimate:
    h: complex  # gain at symbol time t_ref
    freq: float  # residual frequency offset, cycles per symbol
    t_ref: float  # symbol time at which h is given
    noise_var: float  # sigma^2 of the matched-filter output
    snr: float  # |h|^2 / sigma^2, linear
    num_known: int

    @property
    def snr_db(self) -> float:
        return 10.0 * math.log10(max(self.snr, 1e-12))

    def gain(self, t: np.ndarray) -> np.ndarray:
        """h(t) = h * exp(2j*pi*f*(t - t_ref)) at symbol times t."""
        t = np.asarray(t, dtype=np.float64)
        return (self.h * cis(2 * np.pi * self.freq * (t - self.t_ref))).astype(np.complex64)

    def gain_at_symbols(self, start: int, count: int) -> np.ndarray:
        """h(t) at the consecutive symbol times start, start + 1, ..., without one exp each."""
        turns = phasor(self.freq, count, start - self.t_ref, np.complex128)
        return (self.h * turns).astype(np.complex64)


def _periodogram(z: np.ndarray, t: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """|sum_k z_k exp(-2j pi f t_k)|^2 at each frequency f."""
    return np.abs(np.einsum("ij,j->i", cis(-2 * np.pi * np.outer(freqs, t)), z)) ** 2


def _parabola_peak(values: np.ndarray, i: int) -> float:
    """Offset in (-0.5, 0.5) of the vertex of the parabola through values[i-1..i+1]."""
    a, b, c = values[i - 1], values[i], values[i + 1]
    denom = a - 2.0 * b + c
    if denom >= 0.0:
        return 0.0
    return min(max(0.5 * float(a - c) / float(denom), -0.5), 0.5)


def estimate_frequency(z: np.ndarray, t: np.ndarray, center: float, halfwidth: float) -> float:
    """ML frequency (cycles/symbol) of z_k = h exp(2j pi f t_k) + noise, |f - center| <= halfwidth."""
    t = np.asarray(t, dtype=np.float64)
    if _fast.AVAILABLE and z.dtype == np.complex128 and z.size:
        return float(_fast.frequency_search(z, t, float(center), float(halfwidth)))
    span = max(float(t.max() - t.min()), 1.0)
    # Half the main lobe's half width: a grid point falls within 0.25/span of
    # the peak, where the periodogram is still above 80 % of it.
    step = 0.5 / span
    count = int(math.ceil(halfwidth / step))
    grid = np.arange(-count - 1, count + 2)
    power = _grid_power(z, t, center, step, grid)
    i = int(np.argmax(power[1:-1])) + 1
    best = center + step * grid[i] + step * _parabola_peak(power, i)
    # A second, narrower parabola removes the bias of the first (the peak is not a parabola).
    fine = step / 4.0
    power = _grid_power(z, t, best, fine, np.array([-1, 0, 1]))
    return float(best + fine * _parabola_peak(power, 1))


def _grid_power(z: np.ndarray, t: np.ndarray, center: float, step: float, grid: np.ndarray):
    """The periodogram at the frequencies center + step * grid (consecutive integers)."""
    if _fast.AVAILABLE and z.dtype == np.complex128 and t.dtype == np.float64:
        out = np.empty(grid.size)
        _fast.periodogram_grid(z, t, center + step * float(grid[0]), step, grid.size, out)
        return out
    return _periodogram(z, t, center + step * grid)


def estimate_channel(
    y: np.ndarray,
    known: np.ndarray,
    t: np.ndarray,
    freq_center: float = 0.0,
    freq_halfwidth: float = 0.0,
) -> ChannelEstimate:
    """Estimate h, the residual frequency offset and the SNR from known symbols.

    ``y``: matched-filter outputs at the known symbols ``known`` (|known| = 1),
    sent at symbol times ``t``. With ``freq_halfwidth`` 0 the frequency is taken
    as ``freq_center`` and not estimated.
    """
    y = np.asarray(y, dtype=np.complex128)
    z = y * np.conj(np.asarray(known, dtype=np.complex128))
    t = np.asarray(t, dtype=np.float64)
    n = z.size
    if freq_halfwidth > 0.0:
        freq = estimate_frequency(z, t, freq_center, freq_halfwidth)
        free_params = 3  # Re h, Im h, f
    else:
        freq = float(freq_center)
        free_params = 2
    t_ref = float(np.mean(t))
    if _fast.AVAILABLE:
        h, energy = _fast.derotated_fit(z, t, freq, t_ref)
        h = complex(h)
    else:
        derotated = z * cis(-2 * np.pi * freq * (t - t_ref))
        h = complex(np.mean(derotated))
        energy = np.sum(np.abs(derotated - h) ** 2)
    return _estimate(h, freq, t_ref, float(energy), n, free_params)


def _estimate(
    h: complex, freq: float, t_ref: float, energy: float, n: int, free_params: int
) -> ChannelEstimate:
    """The estimate from the fit's gain and residual energy over ``n`` known symbols."""
    dof = n - free_params / 2.0  # complex degrees of freedom left in the residuals
    noise_var = float(energy / max(dof, 1.0))
    # |h_hat|^2 carries sigma^2/n of noise; E[1/sigma_hat^2] = (1/sigma^2) dof/(dof-1).
    signal = max(abs(h) ** 2 - noise_var / n, 0.0)
    snr = (
        signal / max(noise_var, 1e-30) * (dof - 1.0) / dof
        if dof > 1.0
        else signal / max(noise_var, 1e-30)
    )
    return ChannelEstimate(h=h, freq=freq, t_ref=t_ref, noise_var=noise_var, snr=snr, num_known=n)


def estimate_channel_at(
    y: np.ndarray,
    t: np.ndarray,
    known: np.ndarray,
    freq_center: float = 0.0,
    freq_halfwidth: float = 0.0,
) -> ChannelEstimate:
    """``estimate_channel(y[t], known, t, ...)``: ``y`` the matched-filter outputs of a
    frame, ``t`` the known symbols' indices in it (integers). One compiled call where
    numba is in use (the gathering, frequency search and fit)."""
    if _fast.AVAILABLE and y.dtype == np.complex64 and t.dtype == np.int64 and t.size:
        h, freq, t_ref, energy = _fast.channel_fit(
            y, t, known, float(freq_center), float(freq_halfwidth)
        )
        free_params = 3 if freq_halfwidth > 0.0 else 2  # Re h, Im h (, f)
        return _estimate(complex(h), float(freq), float(t_ref), float(energy), t.size, free_params)
    return estimate_channel(y[t], known, t, freq_center, freq_halfwidth)


def track_phase(
    y: np.ndarray,
    known: np.ndarray,
    t: np.ndarray,
    est: ChannelEstimate,
    window: int,
    t_out: np.ndarray,
) -> np.ndarray:
    """Slow phase left after the linear model, at times ``t_out`` (radians).

    The residual phasors of the pilots are averaged over ``window`` pilots
    (enough to keep the tracker's own noise small at low SNR) and their phase is
    interpolated linearly between pilots.
    """
    if window <= 1 or np.size(y) < 2 * window:
        return np.zeros(np.size(t_out), dtype=np.float64)
    return np.interp(t_out, t, pilot_phase(y, known, t, est, window))


def pilot_phase(
    y: np.ndarray, known: np.ndarray, t: np.ndarray, est: ChannelEstimate, window: int
) -> np.ndarray:
    """``track_phase``'s phase at the pilots themselves (radians, unwrapped)."""
    if _fast.AVAILABLE and y.dtype == np.complex64 and t.dtype == np.int64:
        phase = np.empty(t.size)
        _fast.pilot_residual_phase(
            y, known, t, complex(est.h), float(est.freq), float(est.t_ref), int(window), phase
        )
        return phase
    z = np.asarray(y, dtype=np.complex128) * np.conj(known) / est.gain(t)
    if _fast.AVAILABLE:
        phase = np.empty(z.size)
        _fast.smoothed_phase(z, int(window), phase)
        return phase
    kernel = np.ones(window)
    smooth = np.convolve(z, kernel, mode="same") / np.convolve(
        np.ones_like(z.real), kernel, mode="same"
    )
    # Unwrapped by summing the phase steps between neighbours (np.unwrap's rule,
    # steps taken within +-pi) at a third of its cost.
    phase = np.empty(smooth.size)
    phase[0] = np.angle(smooth[0])
    np.cumsum(np.angle(smooth[1:] * np.conj(smooth[:-1])), out=phase[1:])
    phase[1:] += phase[0]
    return phase


def snr_crb(snr: float, num_known: int) -> float:
    """Cramer-Rao bound on the variance of an unbiased data-aided estimate of the
    linear SNR from ``num_known`` unit-modulus known symbols: (2 snr + snr^2) / N.
    (Unknown phase and frequency offset do not change it: their information is
    orthogonal to that of |h| and sigma^2.)"""
    return (2.0 * snr + snr * snr) / num_known


def snr_crb_db(snr_db: float, num_known: int) -> float:
    """Standard deviation (dB) that the CRB allows, to first order: 10/ln10 * sqrt(CRB)/snr."""
    snr = 10.0 ** (snr_db / 10.0)
    return 10.0 / math.log(10.0) * math.sqrt(snr_crb(snr, num_known)) / snr
