"""The streaming OFDM receiver: samples in, equalised frames with CSI out.

1. **Detection** on every sample: the samples are correlated with one sync
   block; products of correlations one block apart, signed by the Barker cover,
   add up only at the burst start. Their sum's magnitude over the preamble's
   energy (about s / (1 + s) for a per-sample SNR s) is compared with the
   threshold; the burst starts at the highest metric within a preamble length of
   the first crossing, and the sum's angle is the frequency offset.
2. **OFDM symbols**: the frequency offset is refined on the cyclic prefixes
   (each against the end of its symbol that it copies: unambiguous to half a
   subcarrier spacing and several times finer than the sync's estimate) and
   removed, and each symbol's FFT window starts ``timing_backoff`` samples into
   its cyclic prefix, so that an early path or a timing error of that much costs
   nothing (it is a phase slope across subcarriers, which the estimate absorbs).
3. **Channel estimate**: the noise variance is measured on the guard band
   (inner half, free of signal); the residual frequency offset from the pilots'
   phase between symbols that carry the same comb. Each comb's least-squares
   estimates are smoothed along time (and interpolated to the symbols between),
   with the window chosen per frame by leave-one-out cross-validation among
   local-linear fits of a few widths and constant or linear fits over the frame
   (a static channel gets the whole frame's average, a Doppler-spread one a
   short window); then interpolated across frequency from the combs together by
   a Wiener filter whose prior spreads evenly over the delays where the pilots'
   delay profile stands out of the noise. The header is decoded first from the
   estimate over its own symbol (then, if its CRC fails, over a full comb's
   symbols; both header versions), its fields validated; then the whole frame
   is estimated, with the decoded header and the padding as known symbols: a
   symbol holding them gets a Wiener estimate of every comb subcarrier from
   them and its pilots, which joins the time smoothing, weighted by its error.
4. **Equalisation**: MMSE weights per subcarrier scaled to keep the symbols'
   mean gain (default; zero forcing on a flat channel, faded subcarriers shrunk
   towards erasures), or zero forcing; the payload de-interleaved. Each JSCC
   symbol gets its error variance against the sent one (noise and channel
   estimation error; the shrinking's bias), and the frame's SNR is the
   **effective SNR**: the SNR of an AWGN channel that gives the same mean
   squared error, 1 / mean(error variance), the training convention
   (x_hat = x + n, SNR = 1 / var(n)). On a flat channel it is the SNR.

A genie mode (``GenieChannel``, for benchmarks) replaces synchronisation and
estimation by the true burst start, frequency offset, channel and noise.
"""

from __future__ import annotations

import cmath
import functools
import logging
import math
from dataclasses import dataclass

import numpy as np
import scipy.fft

from diffjscc.errors import ConfigError
from diffjscc.radio import _fast, _fast_ofdm
from diffjscc.radio import header as hdr
from diffjscc.radio._blas import single_threaded
from diffjscc.radio.config import MAX_IMAGE_SYMBOLS, MAX_PAYLOAD_SYMBOLS
from diffjscc.radio.frame import FrameError, ReceivedFrame, header_payload_slice
from diffjscc.radio.ofdm import (
    SYNC_BLOCKS,
    SYNC_LENGTH,
    SYNC_PERIOD,
    OfdmConfig,
    frame_slots,
    header_symbol_count,
    ofdm_symbol_count,
    padding_values,
    pilot_values,
    sync_block,
)
from diffjscc.radio.ofdm_drift import LinkClock, correct_drift, estimate_drift
from diffjscc.radio.sequences import BARKER_7, COVER_SIGNS, header_scrambler
from diffjscc.radio.waveform import RECEIVER_STAT_KEYS

log = logging.getLogger(__name__)

EQUALISERS = ("mmse", "zf")
_PASS_SAMPLES = 8192  # samples gathered before a pass (a pass has a fixed cost)
_CORR_FFT = 4096  # overlap-save block of the sync correlation
# Right after a frame: the next sync is likely within a gap's length, and searching the
# next frame's body (thrown away when the sync is found) costs the FFTs and the metric.
_AFTER_FRAME_FFT = 2048
_MIN_RHO = 1e-4  # smallest pilot noise (relative to the channel) the Wiener filter assumes
_LAGS = 16  # neighbouring lags of the sync metric summed (multipath energy)
_SIGNS = np.asarray(BARKER_7, dtype=np.float64)


@dataclass(frozen=True)
class OfdmTuning:
    """How the OFDM receiver works; nothing here has to match the transmitter."""

    # On the normalised sync metric (about s / (1 + s) at a per-sample SNR s; a
    # per-subcarrier SNR of 0 dB is s = 0.5 with the default half-band occupancy).
    # Pure noise stays below 0.14 over 4e6 samples; 0 dB gives about 0.3, -3 dB 0.19.
    detection_threshold: float = 0.16
    equaliser: str = "mmse"
    timing_backoff: int = -1  # samples the FFT window starts early; -1: cp_length // 4
    max_image_symbols: int = MAX_IMAGE_SYMBOLS
    # The largest clock offset a frame's drift is searched for (ofdm_drift); 0: none.
    max_sample_rate_offset_ppm: float = 200.0

    def __post_init__(self) -> None:
        if not 0.0 < float(self.detection_threshold) < 1.0:
            raise ConfigError(
                f"detection_threshold must be in (0, 1), got {self.detection_threshold!r}"
            )
        if self.equaliser not in EQUALISERS:
            raise ConfigError(f"equaliser must be one of {EQUALISERS}, got {self.equaliser!r}")
        if int(self.timing_backoff) < -1:
            raise ConfigError(f"timing_backoff must be >= 0 (or -1), got {self.timing_backoff}")
        if not 0.0 <= float(self.max_sample_rate_offset_ppm) <= 2000.0:
            raise ConfigError(
                "max_sample_rate_offset_ppm must be in [0, 2000], "
                f"got {self.max_sample_rate_offset_ppm!r}"
            )


@dataclass(frozen=True)
class GenieChannel:
    """The true channel, for a genie receiver (benchmarks): static ``taps`` at the
    sample rate applied after a delay of ``burst_starts[i]`` samples (the burst's
    first sample, fractional allowed), then ``cfo`` (cycles per sample, phase 0 at
    stream sample 0), then noise of ``noise_voltage`` per sample."""

    taps: tuple
    burst_starts: tuple
    cfo: float = 0.0
    noise_voltage: float = 0.0


@dataclass
class ChannelGrid:
    """Channel over a frame's data subcarriers, and what the estimate is worth."""

    h: np.ndarray  # [symbols, data] complex
    error_var: np.ndarray  # [symbols, data] variance of the estimate's error (0: genie)
    noise_var: float  # per-subcarrier noise variance (1 / SNR of a unit channel)
    cfo_residual: float  # cycles per sample, found after the coarse correction
    smoother: str = ""
    # The link's delay prior with this frame's profile folded in (``LinkDelayPrior``),
    # held once the receiver accepts the frame; None without a link or for a genie.
    delay_profile: tuple | None = None


# -- channel estimation, plain functions -------------------------------------------------


def _shape(name: str, stagger: int) -> tuple[float, bool]:
    """(half-width in symbols, straight line or mean) of a named time smoother."""
    if name in ("single", "constant"):
        return math.inf, False
    if name == "linear":
        return math.inf, True
    return int(name[5:]) * stagger, True  # "local<w>": w observations either side


@functools.lru_cache(maxsize=256)
def time_smoothers(m: int, stagger: int = 1, row: int = 0) -> tuple[tuple[str, np.ndarray], ...]:
    """Candidate smoothers along time for the pilots of layout row ``row``: [m, n]
    matrices from the n symbols that carry them (row, row + stagger, ...) to every
    one of the frame's m symbols. The candidates (names) depend on m and the stagger
    only, so that every row offers the same ones."""
    t_obs = np.arange(row, m, stagger)
    n_min = m // stagger
    names = ["single"] if t_obs.size == 1 or n_min <= 1 else ["constant"]
    if n_min >= 3:
        names.append("linear")
    names += [f"local{w}" for w in (1, 2, 3, 5, 8, 13) if n_min > 1 and 2 * w + 1 <= n_min]
    out = []
    for name in names:
        s = _local_linear(t_obs, m, *_shape(name, stagger))
        s.flags.writeable = False
        out.append((name, s))
    return tuple(out)


def _local_linear(
    t_obs: np.ndarray, m: int, half: float, fit: bool = True, weight: np.ndarray | None = None
) -> np.ndarray:
    """[m, n]: at each of m symbols, a straight line (weighted least squares) through the
    observations at times ``t_obs`` within ``half`` symbols (through 2 when they lie on
    either side; their weighted mean when fewer, or when ``fit`` is False; the nearest
    when none is that close)."""
    return _fast_ofdm.local_linear(t_obs, m, half, fit, weight)


@functools.lru_cache(maxsize=256)
def _loo_parts(m: int, stagger: int, row: int) -> tuple:
    """For the candidates of ``time_smoothers(m, stagger, row)``: their rows at the
    symbols that carry the pilots [candidates, n, n], the leave-one-out divisors
    [candidates, n] (1 - own weight), and per candidate the noise in the leave-one-out
    residuals in units of the pilots' noise (the left-out pilot's own, plus that of the
    prediction from the others), summed over the symbols."""
    rows, keeps, noise = [], [], []
    for _, full in time_smoothers(m, stagger, row):
        s = full[row::stagger]
        diag = np.diag(s)
        keep = np.maximum(1.0 - diag, 1e-3)
        others = (np.sum(s * s, axis=1) - diag**2) / keep**2
        rows.append(s)
        keeps.append(keep)
        noise.append(float(np.sum(1.0 + others)))
    out = (np.stack(rows), np.stack(keeps), tuple(noise))
    out[0].flags.writeable = False
    out[1].flags.writeable = False
    return out


def _pilot_comb(cfg: OfdmConfig, rows: int) -> np.ndarray:
    """Signed subcarriers of the pilots of the first ``rows`` layout rows, ascending."""
    return np.sort(cfg.layout.pilot_freqs[:rows].reshape(-1))


def channel_delays(cfg: OfdmConfig, hs: np.ndarray, nu: float, rows: int | None = None):
    """Delays (samples, relative to the FFT window) where the channel has energy, from
    the smoothed pilot estimates ``hs`` [symbols, comb] of noise variance ``nu`` on the
    comb of the first ``rows`` layout rows (default: all).

    A comb of p pilots every c subcarriers resolves delays on a grid of fft_size /
    (c p) samples over fft_size / c samples (circularly; the last eighth counts as
    early paths). Grid points whose mean power stands out of the noise are kept with
    their neighbours, and the delay prior spreads evenly over every sample they cover;
    the whole cyclic prefix when none stands out."""
    return _delay_prior(cfg, hs, nu, rows)[0]


def _delay_prior(cfg: OfdmConfig, hs: np.ndarray, nu: float, rows: int | None = None):
    """``channel_delays``, with the delays as a cache key (a tuple of whole samples) and
    as an int64 array."""
    rows = cfg.pilot_stagger if rows is None else rows
    p = hs.shape[1]
    span = cfg.fft_size * rows / cfg.pilot_spacing
    grid = np.fft.ifft(hs, axis=1)  # [m, q]: g at delay q span / p, times a phase
    floor = nu / p
    keep = _fast_ofdm.delay_keep(grid, floor)  # points whose mean power stands out
    if not keep.any() or floor <= 0:
        return _whole_prefix(cfg.cp_length)
    return _prior_delays(keep.tobytes(), span)


def _delay_forms(delays: np.ndarray) -> tuple:
    delays.flags.writeable = False
    whole = np.ascontiguousarray(np.round(delays), dtype=np.int64)
    whole.flags.writeable = False
    return delays, tuple(whole.tolist()), whole


@functools.lru_cache(maxsize=16)
def _whole_prefix(cp_length: int) -> tuple:
    """The delay prior over the whole cyclic prefix, in ``_delay_prior``'s forms."""
    return _delay_forms(np.arange(max(cp_length, 1), dtype=np.float64))


@functools.lru_cache(maxsize=1024)
def _prior_delays(keep_bytes: bytes, span: float) -> tuple:
    """The delays (samples) that the kept points of the pilots' delay grid and their
    neighbours cover; cached by the pattern (a steady link repeats it). Plain Python:
    a few dozen values, where numpy's calls cost more (the same roundings as np.round)."""
    size = len(keep_bytes)
    res = span / size
    reach = math.ceil(res / 2)
    fine = set()
    for i in range(size):
        if keep_bytes[i] or keep_bytes[i - 1] or keep_bytes[(i + 1) % size]:
            centre = i * res
            if centre >= span - span / 8:
                centre -= span
            fine.update(round(centre + o) for o in range(-reach, reach + 1))
    return _delay_forms(np.asarray(sorted(fine), dtype=np.float64))


def wiener_interpolator(
    cfg: OfdmConfig, rho: float, delays: np.ndarray | None = None, rows: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """[used, comb] Wiener interpolation weights from the pilot comb of the first
    ``rows`` layout rows (default: all) to every used subcarrier, for pilot noise
    ``rho`` (relative to the channel's power) and a delay prior over ``delays``
    (default: the cyclic prefix), and each used subcarrier's relative error variance.

    Cached: the delays are whole samples and rho is rounded to 0.25 dB, so frames of a
    steady link reuse one solution (a solve costs more than the rest of a frame)."""
    if delays is None:
        delays = np.arange(max(cfg.cp_length, 1))
    rows = cfg.pilot_stagger if rows is None else rows
    key = tuple(
        np.round(np.asarray(delays, dtype=np.float64)).astype(np.int64).reshape(-1).tolist()
    )
    return _wiener_cached(cfg, rows, key, _rho_db10(rho))


@functools.lru_cache(maxsize=512)
def _wiener_cached(cfg: OfdmConfig, rows: int, delays: tuple, rho_db10: float):
    comb = _pilot_comb(cfg, rows)
    w, mse = _wiener_weights(cfg.layout.used_freqs, comb, cfg.fft_size, delays, 10.0**rho_db10)
    w.flags.writeable = False
    mse.flags.writeable = False
    return w, mse


@functools.lru_cache(maxsize=512)
def _comb_interpolator(cfg: OfdmConfig, rows: int, delays: tuple, rho_db10: float) -> tuple:
    """The interpolator of ``wiener_interpolator`` in the smaller of two forms:
    (None, W [used, comb], mse) when the prior has at least twice as many delays as the
    comb has pilots; else (the delays modulo N, X [delays, comb], mse) with W = E_t X, X = G^-1
    E_o^H, G = E_o^H E_o + rho D I (push-through, as ``_wiener_weights``): a fifth of
    the memory or less (the cache held up to 120 MB of W). Its error is rho [E_t G^-1
    E_t^H]_kk (``_wiener_weights``: 1 - [W R_ot]_kk, the same to rounding), the FFT of
    G'^-1 summed along its lags. G'^-1 comes from the eigenvectors of E_o^H E_o,
    cached per delay prior (``_comb_basis``), so a new noise level costs two small
    products and an FFT, not a solve."""
    comb = _pilot_comb(cfg, rows)
    rho = 10.0**rho_db10
    d = np.asarray(delays, dtype=np.int64).reshape(-1)
    # The delay form holds for any number of delays (G' = G + rho D I is invertible even
    # where G, of rank comb at most, is not); up to twice the comb's size it is also the
    # cheaper: a one-symbol header estimate's prior often has 15-30 delays for 15 pilots.
    if d.size >= 2 * comb.size or d.size == 0:
        w, mse = _wiener_weights(cfg.layout.used_freqs, comb, cfg.fft_size, delays, rho)
        # C order once here (a solve's transpose is Fortran-ordered: a copy every frame).
        out = (None, np.ascontiguousarray(w), np.ascontiguousarray(mse))
    else:
        n = cfg.fft_size
        at, lam, v, b, lags = _comb_basis(cfg, rows, delays)
        scaled = v / (lam + rho * d.size)  # V diag(g)
        x = _fast_ofdm.product_bt(scaled, np.ascontiguousarray(b.T))  # G'^-1 E_o^H
        inverse = _fast_ofdm.product_bt(scaled, v.conj()).reshape(-1)  # G'^-1
        # diag(E_t G'^-1 E_t^H): G'^-1 summed along its lags, at each subcarrier (an FFT).
        summed = np.bincount(lags, inverse.real, n) + 1j * np.bincount(lags, inverse.imag, n)
        spectrum = np.fft.fft(summed)[_used_bins(cfg)]
        out = (at, x, np.clip(rho * spectrum.real, 0.0, 1.0))
    for a in out:
        if a is not None:
            a.flags.writeable = False
    return out


@single_threaded
def _eigen_basis(observed: np.ndarray, targets: np.ndarray, d: np.ndarray, n: int) -> tuple:
    """For G = E_o^H E_o over the delays d: its eigenvalues and eigenvectors V, E_t V
    [targets, delays] and |E_t V|^2, so that for any rho, with g = 1 / (eigenvalues + rho
    D), G'^-1 = V diag(g) V^H and rho [E_t G'^-1 E_t^H]_kk = rho sum_e |E_t V|^2_ke g_e
    (G' = G + rho D I)."""
    lam, v = np.linalg.eigh(_observed_gram(observed, d, n))
    etv, power = _fast_ofdm.phasor_product(np.asarray(targets) % n, d % n, _twiddles(n), v)
    return lam, v, etv, power


@functools.lru_cache(maxsize=128)
@single_threaded
def _comb_basis(cfg: OfdmConfig, rows: int, delays: tuple) -> tuple:
    """(delays modulo N, eigenvalues and eigenvectors V of G = E_o^H E_o, V^H E_o^H
    [delays, comb], the lags d_i - d_j modulo N of G's entries, flat) of the pilot
    comb's interpolator for a delay prior."""
    n = cfg.fft_size
    comb = _pilot_comb(cfg, rows)
    d = np.asarray(delays, dtype=np.int64)
    lam, v = np.linalg.eigh(_observed_gram(comb, d, n))
    v = np.ascontiguousarray(v)
    eo = _twiddles(n)[np.outer(comb, d) % n]  # E_o [comb, delays]
    b = _fast_ofdm.product_bt(np.ascontiguousarray(v.conj().T), eo.conj())  # V^H E_o^H
    lags = (np.subtract.outer(d, d) % n).reshape(-1)
    out = (d % n, lam, v, b, lags)
    for a in out:
        a.flags.writeable = False
    return out


@functools.lru_cache(maxsize=32)
def _used_phasors(cfg: OfdmConfig, rows: int, delays: tuple) -> tuple:
    """The phasors E_t [delays, used] (real and imaginary parts apart) of the comb
    interpolator's delay form for a delay prior (``_comb_interpolator``): the same for
    every frame and noise level with that prior (15-30 us a frame to make; 140-470 kB
    an entry, hence the small cache)."""
    at = _comb_basis(cfg, rows, delays)[0]
    er, ei = _fast_ofdm.phasor_rows(_used_bins(cfg), at, _twiddles(cfg.fft_size))
    er.flags.writeable = False
    ei.flags.writeable = False
    return er, ei


@functools.lru_cache(maxsize=16)
def _used_bins(cfg: OfdmConfig) -> np.ndarray:
    out = np.ascontiguousarray(cfg.layout.used_freqs % cfg.fft_size, dtype=np.int64)
    out.flags.writeable = False
    return out


def _residual_step(hp: np.ndarray, stagger: int) -> float:
    """Common phase advance per OFDM symbol (radians) that the pilots ``hp``
    [symbols, pilots per symbol] show: from symbols carrying the same pilots
    (``stagger`` apart), refined by a line through every symbol's common phase against
    its row's mean channel (half the error of the differences alone)."""
    return _fast_ofdm.residual_step(hp, stagger)


@functools.lru_cache(maxsize=256)
def _known_interpolator(cfg: OfdmConfig, known: bytes, rows: int, delays: tuple, rho_db10: float):
    """[comb, known] Wiener weights from one symbol's known subcarriers (signed, sorted,
    int64 bytes: a cheap key) to the pilot comb of the first ``rows`` layout rows, and
    the comb's relative error."""
    freqs = np.frombuffer(known, dtype=np.int64)
    return _wiener_weights(_pilot_comb(cfg, rows), freqs, cfg.fft_size, delays, 10.0**rho_db10)


@single_threaded
def _wiener_weights(targets, observed, fft_size: int, delays, rho: float):
    """[targets, observed] Wiener weights from channel observations at the subcarriers
    ``observed`` (noise ``rho`` relative to the channel) to the subcarriers ``targets``
    (whole numbers, signed), for a delay prior spread evenly over ``delays`` (whole
    samples), and each target's relative error variance.

    W = R_to (R_oo + rho I)^-1 with R = E E^H / D (E: the D delays' phasors); when the
    delays are fewer than the observations, the same W as E_t (E_o^H E_o + rho D I)^-1
    E_o^H, a D x D solve instead of one of the observations' size (255 known symbols'
    solve cost 7.5 ms, more than a whole frame, on every new delay prior or noise level)."""
    d = np.asarray(delays, dtype=np.int64).reshape(-1)
    observed = np.asarray(observed, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    if d.size == 0:
        d = np.zeros(1, dtype=np.int64)
    n = fft_size
    # R(dk) = mean over the delays of exp(-2 pi j dk d / N), for every dk modulo N: the
    # FFT of the delays' histogram (the correlations are gathered from it, no products).
    corr = np.fft.fft(np.bincount(d % n, minlength=n)) / d.size
    rdp = corr[np.subtract.outer(targets, observed) % n]
    if d.size >= observed.size:
        a = corr[np.subtract.outer(observed, observed) % n] + rho * np.eye(observed.size)
        w = np.linalg.solve(a.T, rdp.T).T  # rdp a^-1
    else:
        phasor = _twiddles(n)
        eo_h = phasor[np.outer(d, observed) % n].conj()  # E_o^H [D, observed]
        et = phasor[np.outer(targets, d) % n]  # [targets, D]
        gram = _observed_gram(observed, d, n)
        gram[np.diag_indices(d.size)] += rho * d.size
        x = np.linalg.solve(gram, eo_h)  # [D, observed]
        w = _fast_ofdm.product_bt(et, np.ascontiguousarray(x.T))
    mse = np.clip(1.0 - np.einsum("kp,kp->k", w, np.conj(rdp)).real, 0.0, 1.0)
    return w, mse


@functools.lru_cache(maxsize=8)
def _twiddles(n: int) -> np.ndarray:
    """exp(-2 pi j k / n) for k = 0 .. n-1."""
    out = np.exp(-2j * np.pi * np.arange(n) / n)
    out.flags.writeable = False
    return out


def clear_caches() -> None:
    """Forget the cached delay priors and Wiener interpolators (benchmarks: the cost of
    a new link, or of a channel and noise level that keep changing, before the caches
    fill; each new delay prior or noise level costs a solve)."""
    for cached in (
        _prior_delays,
        _used_phasors,
        _wiener_cached,
        _comb_interpolator,
        _comb_basis,
        _known_interpolator,
        _known_factor,
        _known_basis,
        _known_row_error,
    ):
        cached.cache_clear()


# A chunk whose peak leaves 2 ** +-_LEVEL_RANGE (in the buffer's units) rescales the buffer.
_LEVEL_RANGE = 10


class DegenerateEstimate(ArithmeticError):
    """A burst's channel estimate is not finite (overflowing or degenerate samples)."""


def _rho_db10(rho: float) -> float:
    # At least -40 dB: a narrow delay prior leaves the pilot correlations nearly
    # singular, and a smaller load would amplify what noise there is without bound.
    return round(4.0 * 10.0 * math.log10(max(float(rho), _MIN_RHO))) / 40.0


@functools.lru_cache(maxsize=64)
def _flat_index(cfg: OfdmConfig, m: int, which: str) -> np.ndarray:
    """Flat indices into an [m, width] array of the layout's ``which`` positions
    ("pilots", "data": FFT bins; "data_in_used": positions among the used subcarriers)
    of every symbol's row."""
    lay = cfg.layout
    width = lay.used_freqs.size if which == "data_in_used" else cfg.fft_size
    idx = getattr(lay, which)[lay.rows(m)]
    flat = np.arange(m, dtype=np.intp)[:, None] * width + idx
    flat.flags.writeable = False
    return flat


@functools.lru_cache(maxsize=64)
def _own_columns(cfg: OfdmConfig, m: int) -> np.ndarray:
    """[m, pilots]: each symbol's pilots as positions in the comb of the frame's rows."""
    lay = cfg.layout
    have = min(m, cfg.pilot_stagger)
    position = np.searchsorted(_pilot_comb(cfg, have), lay.pilot_freqs[:have])
    out = np.ascontiguousarray(position[lay.rows(m)], dtype=np.int64)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=64)
def _pilot_plan(cfg: OfdmConfig, m: int) -> tuple:
    """What the pilot stage of a frame of m symbols needs that depends on the layout and
    m alone (``_fast_ofdm.pilot_stage``'s plan: guard bins, the pilots' flat indices and
    values, the stagger, every row's candidate time smoothers and their leave-one-out
    parts, padded to the longest row, the rows' observation counts, each row's pilots'
    positions in the comb, the comb's inverse DFT), and the candidates' names, the
    comb, those positions."""
    lay = cfg.layout
    k = cfg.pilot_stagger
    have = min(m, k)
    cands = [time_smoothers(m, k, r) for r in range(have)]
    counts = np.asarray([len(range(r, m, k)) for r in range(have)], dtype=np.int64)
    width, size = len(cands[0]), int(counts.max())
    smoothers = np.zeros((have, width, m, size))
    loo_rows = np.zeros((have, width, size, size))
    loo_keep = np.ones((have, width, size))
    loo_noise = np.zeros((have, width))
    for r in range(have):
        n = int(counts[r])
        for c, (_, s) in enumerate(cands[r]):
            smoothers[r, c, :, :n] = s
        if width > 1:
            rows, keeps, noise = _loo_parts(m, k, r)
            loo_rows[r, :, :n, :n] = rows
            loo_keep[r, :, :n] = keeps
            loo_noise[r] = noise
    comb = _pilot_comb(cfg, have)
    position = np.ascontiguousarray(np.searchsorted(comb, lay.pilot_freqs[:have]), np.int64)
    q = comb.size
    dft = np.exp(2j * np.pi * np.outer(np.arange(q), np.arange(q)) / q) / q
    xp = np.ascontiguousarray(pilot_values(m, cfg), dtype=np.complex64)
    noise_bins = np.ascontiguousarray(lay.noise, dtype=np.int64)
    flat = np.ascontiguousarray(_flat_index(cfg, m, "pilots"), dtype=np.int64)
    arrays = (noise_bins, flat, xp, smoothers, loo_rows, loo_keep, loo_noise, counts, position)
    for a in (*arrays, dft, comb):
        a.flags.writeable = False
    plan = (
        noise_bins,
        flat,
        xp,
        k,
        smoothers,
        loo_rows,
        loo_keep,
        loo_noise,
        counts,
        position,
        dft,
    )
    return plan, tuple(name for name, _ in cands[0]), comb, position


@functools.lru_cache(maxsize=64)
def _data_in_used(cfg: OfdmConfig, m: int) -> np.ndarray:
    """[m, data]: each symbol's data subcarriers as positions among the used ones."""
    out = np.ascontiguousarray(cfg.layout.data_in_used[cfg.layout.rows(m)], dtype=np.int64)
    out.flags.writeable = False
    return out


def _take(a: np.ndarray, cfg: OfdmConfig, which: str) -> np.ndarray:
    """a[i, position of ``which`` in symbol i's row] for every symbol i of ``a``."""
    return a.reshape(-1).take(_flat_index(cfg, a.shape[0], which))


class LinkDelayPrior:
    """The delay prior of one link, held across its frames.

    A radio channel's power delay profile moves far slower than its tap gains, while
    each frame's fresh noise moves which points of the pilots' delay profile stand out:
    on a steady flat link at 10 dB, 1,000 frames made 176 distinct priors frame by
    frame, each a new eigen-solve and phasor table. This keeps a running profile per
    pilot comb (the one-symbol header estimate's and the frame's: ``_fast_ofdm.
    track_delays``) with hysteresis on its kept points. ``propose`` gives a frame's
    estimate the prior with its profile folded in; ``accept`` holds it once the frame
    is the link's (a header that decoded, a delivered frame), so noise bursts and
    failed attempts move nothing, and a stream gives the same priors however it is
    chunked."""

    def __init__(self, weight: float = _fast_ofdm.TRACK_WEIGHT):
        self.weight = float(weight)
        self.restarts = 0  # frames that started a comb's profile again (a new link)
        self._held: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def reset(self) -> None:
        self._held.clear()

    def held(self, points: int) -> bytes | None:
        """The kept points (bool bytes) held for the comb of ``points`` pilots."""
        entry = self._held.get(points)
        return None if entry is None else entry[1].tobytes()

    def propose(self, pdp: np.ndarray, floor: float, keep: np.ndarray) -> tuple:
        """(the kept points a frame's estimate uses, its token for ``accept``) for the
        frame's delay profile ``pdp`` of noise ``floor`` per point and its own kept
        points ``keep``."""
        total = float(pdp.sum())
        if not (floor > 0.0 and math.isfinite(total) and total > 0.0):
            return keep, None
        held, kept = self._held.get(pdp.size, (_NO_PROFILE, keep))
        state, out, fresh = _fast_ofdm.track_delays(pdp, floor, keep, held, kept, self.weight)
        return out, (pdp.size, state, out, fresh and held.size > 0)

    def accept(self, token) -> None:
        if token is None:
            return
        points, state, kept, restarted = token
        self._held[points] = (state, kept)
        self.restarts += restarted


_NO_PROFILE = np.empty(0)


# Products here are einsums, not BLAS calls: OpenBLAS's thread pool would spin on every
# core for these small matrices (CPU time three times the work on the 2-core VM).


def estimate_channel_grid(
    y: np.ndarray, cfg: OfdmConfig, known=None, link: LinkDelayPrior | None = None
) -> ChannelGrid:
    """Channel over the data subcarriers of ``y`` ([symbols, fft_size], the FFT outputs
    scaled to unit-energy subcarrier symbols) from its pilots and guard band, and from
    ``known`` data symbols (``(slots, values)``, flat indices into [symbols, data]: the
    decoded header, the padding; optionally the slots' ``_slots_key`` third) where a symbol has at least a comb's worth of them.
    ``y`` is derotated in place by the residual frequency offset it finds. The delay
    prior covers the points of the pilots' delay profile that stand out in this frame,
    or, given the ``link``, in the link's running profile with this frame's folded in
    (the grid's ``delay_profile``, for ``link.accept``)."""
    lay = cfg.layout
    m = y.shape[0]
    k = cfg.pilot_stagger
    plan, names, comb, position = _pilot_plan(cfg, m)
    xp = plan[2]
    have = min(m, k)  # layout rows this frame has (a one-symbol frame: the first only)
    hp = np.empty((m, cfg.pilots_per_symbol), dtype=np.complex128)
    hs = np.empty((m, comb.size), dtype=np.complex128)
    nu = np.empty(m)
    self_weight = np.zeros(m)
    pdp = np.empty(comb.size)
    # Pilots, residual phase, the time smoother's choice, smoothing, power and the delay
    # profile: one compiled call (the steps' numpy twins where numba is not).
    noise_var, step, best, drift, power, nu_mean, keep = _fast_ofdm.pilot_stage(
        y, plan, hp, hs, nu, self_weight, pdp
    )
    cfo_res = step / (2.0 * math.pi * cfg.symbol_length)
    name = names[best]

    if not (math.isfinite(power) and math.isfinite(nu_mean) and math.isfinite(noise_var)):
        # Samples so large that their products overflow float32 (or garbage that
        # sums to it): no estimate, the burst is dropped and counted.
        raise DegenerateEstimate("channel estimate not finite")
    profile = None
    if link is not None:
        keep, profile = link.propose(pdp, nu_mean / comb.size, keep)
    kept = keep.tobytes()
    if not kept.strip(b"\x00") or nu_mean <= 0:  # no point kept (bytes: cheaper than .any())
        delays, key_delays, delay_array = _whole_prefix(cfg.cp_length)
    else:
        span = cfg.fft_size * have / cfg.pilot_spacing
        delays, key_delays, delay_array = _prior_delays(kept, span)
    if known is not None:
        prior = (key_delays, delay_array)
        dense = _known_estimates(y, cfg, known, xp, prior, noise_var / power, have)
        if dense:
            # Every comb subcarrier observed at a symbol with known data; that symbol's
            # own pilots are in its estimate, so its pilot observation is left out.
            dense_t = np.asarray(sorted(dense), dtype=np.int64)
            dense_est = np.empty((dense_t.size, comb.size), dtype=np.complex128)
            for j, t in enumerate(dense_t.tolist()):
                dense_est[j] = dense[t][0]
            dense_var = np.maximum(
                power * np.asarray([dense[t][2] for t in dense_t.tolist()]), 1e-3 * noise_var
            )
            hs = np.empty((m, comb.size), dtype=np.complex128)
            nu = np.empty(m)
            # The delay prior stays the pilots' (recomputing it changed nothing measurable).
            power = _fast_ofdm.dense_smooth(
                hp,
                dense_t,
                dense_est,
                dense_var,
                noise_var,
                position,
                *_shape(name, k),
                hs,
                nu,
                self_weight,
            )
    else:
        dense = {}
    if m > k and drift > 0.0:
        # A channel that changes faster than the combs sample it in time (Doppler of
        # fD*Ts = 1e-4 decorrelates it by a tenth from one 1056-sample symbol to the
        # next, by 40 % over the stagger's two): each symbol on its own pilots (and
        # known symbols), interpolated across frequency, where that is expected to err
        # less than the time smoother's estimate with what it misses.
        rho = _rho_db10(noise_var / power)
        own = np.empty_like(hs)
        own_err = np.empty(m)
        for i, (est, rel, _) in dense.items():
            own[i] = est
            own_err[i] = power * float(np.mean(rel))
        # Leave-one-out residuals of the symbols' pilots: what the model misses.
        loo = np.empty(hp.shape)
        alone = np.ones(m, dtype=bool)
        alone[list(dense)] = False
        for r in range(have):
            at = np.flatnonzero(alone[r::k]) * k + r  # this row's symbols on pilots alone
            if at.size == 0:
                continue
            key = np.ascontiguousarray(lay.pilot_freqs[r], dtype=np.int64).tobytes()
            w_own, rel = _known_interpolator(cfg, key, have, key_delays, rho)
            own[at] = _fast_ofdm.product_bt(hp[at], w_own)
            lev = np.minimum(w_own[position[r], np.arange(position[r].size)].real, 0.9)
            loo[at] = np.abs(hp[at] - own[at][:, position[r]]) ** 2 / (1.0 - lev) ** 2
            own_err[at] = power * float(np.mean(rel))
        loo = loo[alone].reshape(-1)
        if loo.size:
            # Interference between subcarriers and the interpolation's misfit, beyond
            # the pilots' own noise (less twice the scatter, so noise adds nothing).
            own_err += max(0.0, float(np.mean(loo)) - noise_var * (1.0 + 2.0 / math.sqrt(loo.size)))
        if float(np.mean(own_err)) < float(np.mean(nu)) + 0.5 * drift:
            hs, nu, drift, name = own, own_err, 0.0, "per-symbol"
            self_weight[:] = 0.0
    nu_mean = _mean(nu)
    at, w, mse = _comb_interpolator(cfg, have, key_delays, _rho_db10(nu_mean / power))
    # What the smoother misses of the channel's change over time is about half its
    # leave-one-out excess (a fit that sees the symbol itself misses less).
    scale = nu / max(nu_mean, 1e-30)
    pick = _data_in_used(cfg, m)
    if at is None:
        h, err = _fast_ofdm.interpolate(hs, w, pick, mse, scale, power, 0.5 * drift)
    else:
        if _fast_ofdm.AVAILABLE:
            er, ei = _used_phasors(cfg, have, key_delays)
            h, err = _fast_ofdm.interpolate_phasors(
                hs, w, er, ei, pick, mse, scale, power, 0.5 * drift
            )
        else:
            twiddle = _twiddles(cfg.fft_size)
            h, err = _fast_ofdm.interpolate_delays(
                hs, w, at, _used_bins(cfg), pick, twiddle, mse, scale, power, 0.5 * drift
            )
    if known is not None and m > k:
        # Where the smoother leans on the known symbols' estimates, the pilots' own
        # residuals show what it misses of a changing channel, symbol by symbol (the
        # leave-one-out excess is a frame's average for equal weights).
        err = _fast_ofdm.pilot_excess(
            hs, hp, _own_columns(cfg, m), self_weight, nu, noise_var, 0.5 * drift, err
        )
    if known is not None:
        err += _inband_excess(y, cfg, known, h, err, noise_var)
    return ChannelGrid(h, err, noise_var, cfo_res, name, profile)


def _mean(a: np.ndarray) -> float:
    """np.mean of a float64 array (the same pairwise sum over its size), without
    np.mean's dispatch and checks (3 us a call, several calls a frame)."""
    return float(a.sum()) / a.size


def _inband_excess(y, cfg: OfdmConfig, known, h, err, noise_var: float) -> float:
    """What the known data symbols' residuals against the estimate show beyond the
    guard band's noise and the estimate's own error: interference between subcarriers
    (Doppler: about -15 dB at fD*Ts = 1e-4 with a 1024-point FFT), between symbols,
    in-band distortion. The guard band sees none of it. Counted on every symbol, less
    twice the residual's own scatter, so that noise alone adds nothing."""
    lay = cfg.layout
    slots, values = known[:2]
    if _fast_ofdm.AVAILABLE:
        plan = _inband_plan(cfg, _slots_key(known), y.shape[0])
        if plan is None:
            return 0.0
        return _fast_ofdm.inband_excess(y, h, err, *plan, values, noise_var)
    slots = np.asarray(slots)
    d = cfg.data_per_symbol
    sym, col = slots // d, slots % d
    inside = sym < y.shape[0]
    if np.count_nonzero(inside) < 16:
        return 0.0
    sym, col, values = sym[inside], col[inside], np.asarray(values)[inside]
    bins = lay.data[sym % cfg.pilot_stagger, col]
    resid = y[sym, bins] - h[sym, col] * values
    power = float(np.mean(resid.real**2 + resid.imag**2))
    expected = noise_var + float(np.mean(err[sym, col]))
    return max(0.0, power - expected * (1.0 + 2.0 / math.sqrt(resid.size)))


def _slots_key(known) -> bytes:
    """The known slots as int64 bytes, the key of the plans cached for them: the
    third item of ``known`` where the caller has it (a frame's layout gives the same
    slots frame after frame: ``_known_slots``)."""
    if len(known) > 2:
        return known[2]
    return np.ascontiguousarray(known[0], dtype=np.int64).tobytes()


@functools.lru_cache(maxsize=64)
def _known_slots(payload_len: int, data_per_symbol: int, version: int) -> tuple:
    """A frame's known slots (the decoded header's, then the padding's; read-only)
    and their ``_slots_key``."""
    layout = frame_slots(payload_len, data_per_symbol, version)
    slots = np.ascontiguousarray(np.concatenate([layout.header, layout.padding]), np.int64)
    slots.flags.writeable = False
    return slots, slots.tobytes()


@functools.lru_cache(maxsize=64)
def _inband_plan(cfg: OfdmConfig, slots: bytes, m: int):
    """For ``_inband_excess``: the known slots (int64 bytes) within m symbols as their
    symbols, data columns, FFT bins and positions among the slots (None: under 16)."""
    d = cfg.data_per_symbol
    slots = np.frombuffer(slots, dtype=np.int64)
    sym, col = slots // d, slots % d
    pick = np.flatnonzero(sym < m)
    if pick.size < 16:
        return None
    sym, col = sym[pick], col[pick]
    bins = cfg.layout.data[sym % cfg.pilot_stagger, col]
    out = tuple(np.ascontiguousarray(a, dtype=np.int64) for a in (sym, col, bins, pick))
    for a in out:
        a.flags.writeable = False
    return out


def _known_estimates(y, cfg: OfdmConfig, known, xp, prior, rho: float, rows: int) -> dict:
    """symbol -> (channel at the comb, its relative error, that error's mean over each
    layout row's pilots) for every symbol with at least a comb's worth of known data
    symbols, by a Wiener filter from its pilots and those, for the delay prior ``prior``
    (its key tuple and int64 array)."""
    values = np.asarray(known[1])
    out = {}
    key_delays, delay_array = prior
    rho_db10 = _rho_db10(rho)
    plan = _known_plan(cfg, _slots_key(known), y.shape[0])
    n = cfg.fft_size
    for i, take, bins, order, key in plan:
        row_error = _known_row_error(cfg, key, rows, key_delays, rho_db10)
        if len(key_delays) >= bins.size:
            w, rel = _known_interpolator(cfg, key, rows, key_delays, rho_db10)
            ls = y[i, bins] / np.concatenate([xp[i], values[take]])[order]  # |known| = 1
            out[i] = (_fast_ofdm.product_bt(ls[None, :], w)[0], rel, row_error)
            continue
        # Fewer delays than known symbols: W ls = E_t G^-1 (E_o^H ls), and E_o^H ls, the
        # observations' response at the prior's delays, is one inverse FFT; the cached
        # factor E_t G^-1 is [comb, delays], its miss a small solve.
        factor, rel = _known_factor(cfg, key, rows, key_delays, rho_db10)
        if _fast_ofdm.AVAILABLE:
            est = _fast_ofdm.known_comb(
                y, i, bins, xp[i], values, take, order, delay_array, _twiddles(n), factor
            )
            out[i] = (est, rel, row_error)
            continue
        spectrum = np.zeros(n, dtype=np.complex128)
        spectrum[bins] = y[i, bins] / np.concatenate([xp[i], values[take]])[order]
        response = np.fft.ifft(spectrum)[delay_array % n] * n
        out[i] = (_fast_ofdm.product_bt(factor, response[None, :])[:, 0], rel, row_error)
    return out


@functools.lru_cache(maxsize=1024)
def _known_row_error(cfg: OfdmConfig, known: bytes, rows: int, delays: tuple, rho_db10: float):
    """The known symbols' comb estimate's relative error (``_known_estimates``) averaged
    over the pilots of each of the first ``rows`` layout rows."""
    if len(delays) >= len(known) // 8:
        rel = _known_interpolator(cfg, known, rows, delays, rho_db10)[1]
    else:
        rel = _known_factor(cfg, known, rows, delays, rho_db10)[1]
    position = np.searchsorted(_pilot_comb(cfg, rows), cfg.layout.pilot_freqs[:rows])
    return tuple(rel[position].mean(axis=1).tolist())


@functools.lru_cache(maxsize=1024)
def _known_factor(cfg: OfdmConfig, known: bytes, rows: int, delays: tuple, rho_db10: float):
    """E_t G^-1 [comb, delays], G = E_o^H E_o + rho D I, for the known subcarriers (as
    ``_known_interpolator``'s key), and the comb's relative error, rho E_t G^-1 E_t^H."""
    rho = 10.0**rho_db10
    lam, v, etv, power = _known_basis(cfg, known, rows, delays)
    inv = 1.0 / (lam + rho * len(delays))
    factor = _fast_ofdm.product_bt(etv * inv, v.conj())  # E_t V diag(inv) V^H
    mse = np.clip(rho * (power * inv).sum(axis=1), 0.0, 1.0)
    factor.flags.writeable = False
    mse.flags.writeable = False
    return factor, mse


@functools.lru_cache(maxsize=256)
def _known_basis(cfg: OfdmConfig, known: bytes, rows: int, delays: tuple) -> tuple:
    """``_eigen_basis`` from the known subcarriers (``_known_factor``'s key) to the pilot
    comb of the first ``rows`` layout rows, for a delay prior: a new noise level then
    costs two small products, not a solve."""
    observed = np.frombuffer(known, dtype=np.int64)
    d = np.asarray(delays, dtype=np.int64)
    out = _eigen_basis(observed, _pilot_comb(cfg, rows), d, cfg.fft_size)
    for a in out:
        a.flags.writeable = False
    return out


def _observed_gram(observed: np.ndarray, d: np.ndarray, n: int) -> np.ndarray:
    """E_o^H E_o [d1, d2] = sum over the observed subcarriers f of exp(-2 pi j f (d2 - d1)
    / N): the FFT of their histogram, gathered."""
    spectrum = np.fft.fft(np.bincount(observed % n, minlength=n))
    return spectrum[np.subtract.outer(d, d).T % n]


@functools.lru_cache(maxsize=64)
def _known_plan(cfg: OfdmConfig, slots: bytes, m: int) -> tuple:
    """For ``_known_estimates``, per symbol (of m) with at least a comb's worth of the
    known slots (int64 bytes, flat indices into [symbols, data]): the symbol, which
    known values it holds, its pilots' and those values' FFT bins in ascending
    frequency, the order that sorts [pilots, values] so, and the interpolator's key."""
    lay = cfg.layout
    d = cfg.data_per_symbol
    slots = np.frombuffer(slots, dtype=np.int64)
    sym, col = slots // d, slots % d
    plan = []
    for i in np.unique(sym):
        sel = sym == i
        if np.count_nonzero(sel) < lay.pilots.shape[1] or i >= m:
            continue
        r = int(i) % cfg.pilot_stagger
        freqs = np.concatenate([lay.pilot_freqs[r], lay.data_freqs[r][col[sel]]])
        bins = np.concatenate([lay.pilots[r], lay.data[r][col[sel]]])
        order = np.argsort(freqs)
        key = np.ascontiguousarray(freqs[order], dtype=np.int64).tobytes()
        plan.append((int(i), np.flatnonzero(sel), bins[order], order, key))
    return tuple(plan)


# Spread of a frame's payload power about the image's (unit) when an image takes several
# frames: the codec's symbols measured +-0.6 dB per frame over three 1024x768 images.
_FRAME_POWER_VAR = 0.02


def payload_gain(
    y: np.ndarray, grid: ChannelGrid, slots: np.ndarray, whole_image: bool = True
) -> float:
    """Scale for the estimated channel from the payload's received power: JSCC symbols
    have unit average power, so mean |y|^2 - N measures mean |h|^2 over the payload
    without the pilots' noise (at 0 dB the 105 pilots of a 3,072-symbol frame leave
    the channel's gain uncertain by about 10 %, and MMSE interpolation shrinks it; the
    equalised symbols carry that scale error, about 0.5 dB of their SNR). The two
    estimates of the gain are combined by their variances, in logarithms. The encoder
    normalises the power over the image: a frame that carries only part of it
    (``whole_image`` False) is unit-power only to within ``_FRAME_POWER_VAR``."""
    h = grid.h.reshape(-1)[slots]
    n = y.size
    if n == 0:
        return 1.0
    est = float(np.mean(h.real**2 + h.imag**2))
    received = float(np.mean(y.real**2 + y.imag**2))
    err = float(np.mean(grid.error_var.reshape(-1)[slots]))
    return _gain_from_means(received, est, err, grid.noise_var, n, whole_image)


def _gain_from_means(
    received: float, est: float, err: float, noise_var: float, n: int, whole_image: bool
) -> float:
    """``payload_gain`` from the payload's mean received power, the estimate's mean
    |h|^2 and mean error variance over its n symbols."""
    measured = received - noise_var
    if n == 0 or est <= 0 or measured <= 0:
        return 1.0
    # Relative variances of |h|^2: from the power, (|h|^2 + N)^2 / (n |h|^2)^2 (a
    # Gaussian-like payload); from the estimate, about 2 err / |h|^2 over few
    # independent values (the estimate's errors are correlated across subcarriers).
    var_power = ((measured + noise_var) / measured) ** 2 / n
    if not whole_image:
        var_power += _FRAME_POWER_VAR
    var_est = 2.0 * err / est
    ratio = min(max(measured / est, 0.5), 2.0)
    return math.sqrt(ratio) ** (var_est / (var_est + var_power))


def genie_channel_grid(genie: GenieChannel, start: float, m: int, cfg: OfdmConfig, backoff: int):
    """The true channel over the data subcarriers, seen by windows placed like the
    receiver's for a burst that truly starts at ``start``."""
    lay = cfg.layout
    taps = np.asarray(genie.taps, dtype=np.complex128)
    frac = start - math.floor(start)
    delays = np.arange(taps.size) + frac + backoff
    k = lay.data_freqs[lay.rows(m)]  # [m, data]
    h = np.exp(-2j * np.pi * k[..., None] * delays / cfg.fft_size) @ taps
    noise_var = genie.noise_voltage**2 / cfg.oversampling
    return ChannelGrid(h, np.zeros_like(h.real), max(noise_var, 1e-12), 0.0, "genie")


def equalise(y: np.ndarray, grid: ChannelGrid, kind: str = "mmse"):
    """Equalised symbols and the variance of their error against the sent ones.

    ``mmse``: the per-subcarrier MMSE weights conj(H) / (|H|^2 + N), divided by their
    mean gain over the frame, so that on average the symbols keep their scale (the
    decoder was trained on x + n, unbiased): a flat channel gives exactly zero forcing,
    a faded subcarrier is shrunk towards zero (nearly an erasure) instead of having its
    noise amplified. ``zf``: y / H. N includes the channel estimate's error."""
    h = grid.h
    p = h.real**2 + h.imag**2
    noise = grid.noise_var + grid.error_var
    if kind == "zf":
        x = y / np.where(p > 0, h, 1.0)
        return x, noise / np.maximum(p, 1e-30)
    shrink = p / (p + noise)
    gain = shrink / max(float(np.mean(shrink)), 1e-12)
    x = y * np.conj(h) / (p + noise) * (gain / np.maximum(shrink, 1e-30))
    var = (gain - 1.0) ** 2 + gain**2 * noise / np.maximum(p, 1e-30)
    return x, var


def equalise_payload(yd, grid: ChannelGrid, slots, kind="mmse", gain=True, whole_image=True):
    """The payload's equalised symbols (complex64) at ``slots`` (flat indices into the
    [symbols, data] grid ``yd``) and their error variances (float32), the channel
    first scaled by ``payload_gain`` (``gain``); and the mean |h|^2 and mean h over
    the slots. Compiled, one pass over the slots (the mmse weights' mean gain over
    the whole grid first) where numpy equalises the whole grid and gathers; and the
    error variances' mean (``effective_snr``'s, summed in float64 when compiled)."""
    if not _fast_ofdm.AVAILABLE:
        if gain:
            grid.h *= payload_gain(yd.reshape(-1)[slots], grid, slots, whole_image)
        x, var = equalise(yd, grid, kind)
        hflat = grid.h.reshape(-1)[slots]
        var = var.reshape(-1)[slots].astype(np.float32)
        return (
            x.reshape(-1)[slots].astype(np.complex64),
            var,
            float(np.mean(np.abs(hflat) ** 2)),
            complex(np.mean(hflat)),
            float(np.mean(var)),
        )
    scale = 1.0
    if gain:
        received, est, err = _fast_ofdm.slot_means(yd, grid.h, grid.error_var, slots)
        scale = _gain_from_means(received, est, err, grid.noise_var, len(slots), whole_image)
    return _fast_ofdm.equalise_slots(
        yd, grid.h, grid.error_var, grid.noise_var, scale, slots, kind == "mmse"
    )


def effective_snr(var: np.ndarray) -> float:
    """The SNR of an AWGN channel with the same mean squared error, 1 / mean(var): what
    the decoder's training assumed (x_hat = x + n, SNR = 1 / var(n))."""
    return 1.0 / max(float(np.mean(var)), 1e-12)


def _reencode_conv(soft: np.ndarray) -> np.ndarray:
    """The version-2 header symbols of the Viterbi decoder's most likely bits."""
    scrambler = header_scrambler(hdr.CONV_SYMBOLS)
    bits = hdr.viterbi(np.asarray(soft, dtype=np.float64) * scrambler)
    code = hdr.conv_encode(bits)
    return ((1.0 - 2.0 * code) * scrambler).astype(np.complex128)


# -- the streaming receiver ---------------------------------------------------------------


@dataclass
class _Candidate:
    start: int  # absolute sample index of the burst start
    cfo: float
    metric: float
    header: hdr.FrameHeader | None = None
    payload_len: int = 0
    symbols: int = 0
    tried: int = 0  # header attempts made so far (in the receiver's order)


class OfdmReceiver:
    """Streaming receiver: ``feed(samples) -> list[ReceivedFrame]``."""

    def __init__(
        self,
        cfg: OfdmConfig | None = None,
        tuning: OfdmTuning | None = None,
        genie: GenieChannel | None = None,
    ):
        self.cfg = OfdmConfig() if cfg is None else cfg
        if tuning is None:
            tuning = OfdmTuning()
        elif not isinstance(tuning, OfdmTuning):
            # A single-carrier ReceiverTuning: only its limits mean the same here.
            tuning = OfdmTuning(
                max_image_symbols=getattr(tuning, "max_image_symbols", MAX_IMAGE_SYMBOLS)
            )
        self.tuning = tuning
        self.genie = genie
        cfg = self.cfg
        self._backoff = (
            cfg.cp_length // 4 if tuning.timing_backoff < 0 else int(tuning.timing_backoff)
        )
        if self._backoff > cfg.cp_length:
            raise ConfigError(
                f"timing_backoff {self._backoff} is longer than the cyclic prefix {cfg.cp_length}"
            )
        block = sync_block(cfg.fft_size, cfg.used_carriers).astype(np.complex128)
        self._block = block
        # Read-only, as the kernels were compiled for (numba types them apart).
        self._sync_block = np.array(block, dtype=np.complex128)
        self._signs = np.array(_SIGNS)
        self._sync_block.flags.writeable = False
        self._signs.flags.writeable = False
        self._cover = np.asarray(COVER_SIGNS, dtype=np.float64)
        self._template = np.conj(block[::-1])
        self._template_fft = {}
        for size in (_CORR_FFT, _AFTER_FRAME_FFT):
            kernel = np.zeros(size, dtype=np.complex64)
            kernel[:SYNC_PERIOD] = self._template
            self._template_fft[size] = scipy.fft.fft(kernel).astype(np.complex64)
        self._block_energy = float(np.sum(np.abs(block) ** 2))
        # The lag sum's gain for a single path: the block's periodic autocorrelation
        # |R(l)|^2 summed over _LAGS lags, at its best placement.
        auto = np.fft.ifft(np.abs(np.fft.fft(block)) ** 2)
        r2 = np.abs(np.concatenate([auto[-_LAGS:], auto[:_LAGS]])) ** 2 / self._block_energy**2
        sums = np.array([r2[i : i + _LAGS].sum() for i in range(_LAGS + 1)])
        self._lag_gain = float(sums.max())
        # Both header codes are received; the one of the last success is tried first,
        # from its own OFDM symbols, then (when that is fewer than a full pilot comb's
        # symbols) from a full comb's: a second estimate only where the first failed.
        self._versions = [cfg.header_version] + [v for v in hdr.VERSIONS if v != cfg.header_version]
        self._header_syms = {v: header_symbol_count(cfg, v) for v in hdr.VERSIONS}
        self._flushing = False
        _fast.load()  # the header's Viterbi decoder (numpy without numba)
        _fast_ofdm.load()  # the sync metric
        self.stats = {k: 0 for k in RECEIVER_STAT_KEYS}
        self.stats["estimate_failed"] = 0
        self.stats["rescaled"] = 0
        self.stats["header_crc_fail"] = 0
        self.reset()

    def reset(self) -> None:
        """Forget buffered samples, bursts in progress and the link's delay prior and clock;
        counters are kept."""
        # The buffered samples, _buf, are a view of _store from _head on (_append, _trim).
        self._store = np.zeros(0, dtype=np.complex64)
        self._head = 0
        self._buf = self._store[:0]
        self._base = 0  # absolute index of _buf[0]
        self._end = 0  # absolute index after the last sample
        self._search = 0  # absolute index where the sync search continues
        self._pending: _Candidate | None = None
        self._unprocessed = 0
        self._after_frame = False  # the search resumes right after a decoded frame
        self._scale = 1.0  # power of two the buffered samples carry (_level)
        self.delay_prior = LinkDelayPrior()  # the link's, held across its frames
        self.clock = LinkClock()  # the link's clock offset, from its frames' drift

    # -- input ------------------------------------------------------------------------

    def _level(self, x: np.ndarray, peak: float | None = None) -> np.ndarray:
        """The chunk in the buffer's units: samples are kept (scaled by a power of two)
        with their peak within 2 ** +-_LEVEL_RANGE, where float32 products neither
        overflow nor fall under the estimator's absolute floors (its noise variance of at
        least 1e-12); the buffer follows when the level moves out of that range. The
        frames' h and noise_var are given back in the input's units. ``peak``: the
        chunk's largest |real| or |imag| where the caller has it."""
        if self.genie is not None:  # the genie's noise is in the input's units
            return x
        if peak is None:
            parts = x.view(np.float32)
            peak = max(float(parts.max()), -float(parts.min()))
        if peak > 0 and not (2.0**-_LEVEL_RANGE <= peak * self._scale <= 2.0**_LEVEL_RANGE):
            scale = 2.0 ** -math.floor(math.log2(peak))
            factor = scale / self._scale
            if factor <= 2.0**40:
                self._buf *= np.float32(factor)
            else:
                # Buffered samples far louder than these would overflow float32 products
                # once scaled up: they are silence at the new level.
                self._buf[:] = 0
            self._scale = scale
            self.stats["rescaled"] += 1
        return x * np.float32(self._scale) if self._scale != 1.0 else x

    def feed(self, samples) -> list[ReceivedFrame]:
        try:
            x = np.asarray(samples, dtype=np.complex64).reshape(-1)
        except (TypeError, ValueError):
            self.stats["invalid_input"] += 1
            return []
        if x.size == 0:
            return []
        self.stats["samples_in"] += int(x.size)
        peak = None
        if _fast_ofdm.AVAILABLE:  # the non-finite samples and the peak in one pass
            nonfinite, peak = _fast_ofdm.input_scan(x)
        else:
            nonfinite = int(np.count_nonzero(~np.isfinite(x)))
        if nonfinite:
            self.stats["nonfinite_samples"] += nonfinite
            x = np.where(np.isfinite(x), x, 0).astype(np.complex64)
        x = self._level(x, peak)
        self._append(x)
        self._end += x.size
        self._unprocessed += x.size
        if self._unprocessed < _PASS_SAMPLES:
            return []
        self._unprocessed = 0
        return self._work()

    def _append(self, x: np.ndarray) -> None:
        """``x`` after the buffered samples, in a store with room to spare (a
        concatenation copied the whole buffer on every chunk, and trimming once more):
        when it fills, the buffer moves to its front, or to a larger store with at least
        the buffer's size or 64 k samples to spare (not twice a huge chunk)."""
        size = self._buf.size
        need = size + x.size
        stop = self._head + need
        if stop > self._store.size:
            if need + (1 << 14) > self._store.size:
                store = np.empty(need + max(size, 1 << 16), dtype=np.complex64)
            else:
                store = self._store  # room enough once the buffer moves to the front
            store[:size] = self._buf  # numpy copies overlapping ranges safely
            self._store, self._head = store, 0
            stop = size + x.size
        self._store[stop - x.size : stop] = x
        self._buf = self._store[self._head : stop]

    def flush(self) -> list[ReceivedFrame]:
        """End of stream: decode what has arrived (zeros after the last sample)."""
        pad = SYNC_LENGTH + 2 * SYNC_PERIOD + _LAGS
        self._append(np.zeros(pad, dtype=np.complex64))
        self._end += pad
        frames = self._work()
        if self._pending is not None and self._pending.header is None:
            # Zeros for the longest header attempt, searched for no sync (a metric over
            # little but silence is no evidence of a burst).
            pad = self._header_span() * self.cfg.symbol_length
            self._append(np.zeros(pad, dtype=np.complex64))
            self._end += pad
            self._flushing = True
            try:
                frames += self._work()
            finally:
                self._flushing = False
        if self._pending is not None:
            self.stats["frames_truncated"] += 1
            self._pending = None
        self._search = self._end
        self._trim()
        return frames

    # -- work -------------------------------------------------------------------------

    def _work(self) -> list[ReceivedFrame]:
        frames = []
        for _ in range(10000):  # bounded: each step consumes samples or waits
            try:
                progressed, frame = self._step()
            except DegenerateEstimate:
                self.stats["estimate_failed"] += 1
                start = self._pending.start if self._pending else self._search
                self._pending = None
                self._search = max(self._search, start + SYNC_LENGTH)
                progressed, frame = True, None
            except Exception:  # noqa: BLE001 - a serving loop must not die
                log.exception("OFDM receiver: internal error, burst dropped")
                self.stats["internal_errors"] += 1
                start = self._pending.start if self._pending else self._search
                self._pending = None
                self._search = max(self._search, start + SYNC_LENGTH)
                progressed, frame = True, None
            if frame is not None:
                if self._scale != 1.0:
                    frame.h = complex(frame.h) / self._scale
                    frame.noise_var = float(frame.noise_var) / self._scale**2
                frames.append(frame)
            if not progressed:
                break
        self._trim()
        return frames

    def _samples(self, start: int, stop: int) -> np.ndarray | None:
        if start < self._base or stop > self._end:
            return None
        return self._buf[start - self._base : stop - self._base]

    def _step(self) -> tuple[bool, ReceivedFrame | None]:
        p = self._pending
        if p is None:
            return self._detect(), None
        cfg = self.cfg
        if p.header is None:
            version, count = self._attempts()[p.tried]
            stop = p.start + SYNC_LENGTH + count * cfg.symbol_length
            if stop > self._end:
                return False, None
            self._decode_header(p, version, count)
            return True, None
        stop = p.start + SYNC_LENGTH + p.symbols * cfg.symbol_length
        if stop > self._end:
            return False, None
        frame = self._decode_payload(p)
        self._pending = None
        self._search = stop - 2 * SYNC_PERIOD
        self._after_frame = True
        return True, frame

    def _attempts(self) -> list[tuple[int, int]]:
        """(header version, OFDM symbols to estimate the channel from), in order."""
        out = []
        for v in self._versions:
            own = self._header_syms[v]
            out += [(v, c) for c in sorted({own, max(own, self.cfg.pilot_stagger)})]
        return out

    def _header_span(self) -> int:
        return max(c for _, c in self._attempts())

    def _detect(self) -> bool:
        """Search [self._search, ...) for a sync; True when a candidate was made or the
        search moved on."""
        if self._flushing:
            return False
        lo = max(self._search, self._base)
        valid_end = self._end - SYNC_LENGTH - _LAGS  # last metric index + 1 computable
        if valid_end - lo < SYNC_LENGTH:
            return False
        hi = valid_end
        if self._after_frame:
            # Frames back to back: the next sync is likely within one correlation block,
            # and the metric beyond it (over that frame's body) would be thrown away.
            hi = min(valid_end, lo + _AFTER_FRAME_FFT - SYNC_LENGTH - _LAGS)
            self._after_frame = hi == valid_end  # a short window: the next pass too
        metric, summed, single = self._metric(lo, hi)
        threshold = self.tuning.detection_threshold
        first, peak, start, strongest = _fast_ofdm.sync_peak(
            metric, single, threshold, SYNC_LENGTH, _LAGS
        )
        if first < 0:
            self._search = hi
            return hi < valid_end
        if first + SYNC_LENGTH > metric.size and hi < valid_end:
            metric, summed, single = self._metric(lo, valid_end)  # the whole peak window
            first, peak, start, strongest = _fast_ofdm.sync_peak(
                metric, single, threshold, SYNC_LENGTH, _LAGS
            )
        if first + SYNC_LENGTH > metric.size:
            self._search = lo + first  # wait for the whole peak window
            return False
        start += lo
        strongest += lo
        cfo = cmath.phase(complex(summed[peak])) / (2.0 * math.pi * SYNC_PERIOD)
        cfo += self._sync_residual(strongest, cfo)
        if self.genie is not None:
            true = min(self.genie.burst_starts, key=lambda t: abs(t - start))
            if abs(true - start) <= self.cfg.cp_length:
                start, cfo = int(math.floor(true)), float(self.genie.cfo)
        self.stats["bursts_detected"] += 1
        self._pending = _Candidate(start=start, cfo=cfo, metric=float(metric[peak]))
        self._search = start + SYNC_LENGTH
        return True

    def _sync_residual(self, at: int, cfo: float) -> float:
        """What the coarse frequency offset (from products one block apart) misses: a line
        through the phases of the eight block correlations at the strongest path, after
        the coarse correction (several times finer; at -3 dB the coarse error reaches
        half a subcarrier, more than the pilots' estimate can take)."""
        x = self._samples(at, at + SYNC_LENGTH)
        if x is None:
            return 0.0
        slope = _fast_ofdm.sync_slope(x, cfo, self._cover, self._block)
        return slope / (2.0 * math.pi * SYNC_PERIOD)

    def _metric(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Normalised sync metric and its complex lag sums (the angle: the frequency
        offset) for burst starts lo..hi-1 (absolute), and the magnitude of the
        single-lag sums (lo..hi-1+_LAGS) they add up: products of correlations one
        block apart, signed by the Barker cover; every path's products have the same
        angle, so a sum over neighbouring lags gathers a multipath channel's energy
        coherently; normalised by the mean power over every sample the sums used (a
        quiet stretch before a burst would otherwise divide the burst's first
        products by the silence's power). |S| = 7 |g|^2 E_b^2 gain for a clean burst;
        the power is |g|^2 + noise."""
        x = self._samples(lo, hi + SYNC_LENGTH + _LAGS)
        norm = (SYNC_BLOCKS - 1) * self._block_energy**2 * self._lag_gain
        if _fast_ofdm.AVAILABLE:
            return _fast_ofdm.sync_search(
                x, self._sync_block, hi - lo, SYNC_PERIOD, self._signs, _LAGS, norm
            )
        corr = self._correlate(x)  # [n] = sum_i conj(t[i]) x[n + i]
        return _fast_ofdm.sync_metric(corr, x, hi - lo, SYNC_PERIOD, _SIGNS, _LAGS, norm)

    def _correlate(self, x: np.ndarray) -> np.ndarray:
        """Correlation with the sync block, by overlap-save with the template's FFT made
        once (scipy's oaconvolve makes it, and picks block sizes, on every call)."""
        taps = SYNC_PERIOD
        size = _AFTER_FRAME_FFT if x.size <= _AFTER_FRAME_FFT else _CORR_FFT
        valid = x.size - taps + 1
        step = size - taps + 1
        blocks = -(-valid // step)
        padded = np.zeros(blocks * step + taps - 1, dtype=np.complex64)
        padded[: x.size] = x
        if blocks == 1:  # right after a frame: one block, no strided view to make
            windows = padded.reshape(1, size)
        else:
            windows = np.lib.stride_tricks.as_strided(
                padded, (blocks, size), (step * padded.itemsize, padded.itemsize)
            )
        spec = scipy.fft.fft(windows, axis=1) * self._template_fft[size]
        out = scipy.fft.ifft(spec, axis=1)[:, taps - 1 :]
        return out.reshape(-1)[:valid]

    def _fft_symbols(self, p: _Candidate, first: int, count: int) -> np.ndarray:
        cfg = self.cfg
        n = cfg.fft_size
        w0 = p.start + SYNC_LENGTH + cfg.cp_length - self._backoff
        length = cfg.symbol_length
        starts = np.arange(w0 + first * length, w0 + (first + count) * length, length)
        seg = self._samples(int(starts[0]), int(starts[-1]) + n)
        if p.cfo:
            win = _fast_ofdm.derotate(seg, cfg.symbol_length, count, n, p.cfo, starts)
        else:
            win = np.lib.stride_tricks.as_strided(
                seg, (count, n), (cfg.symbol_length * seg.itemsize, seg.itemsize)
            )
        y = scipy.fft.fft(win, axis=1, overwrite_x=bool(p.cfo))
        return _fast_ofdm.scaled(y, math.sqrt(cfg.used_carriers) / n)

    def _grid(self, p: _Candidate, y: np.ndarray, known=None) -> ChannelGrid:
        if self.genie is not None:
            true = min(self.genie.burst_starts, key=lambda t: abs(t - p.start))
            if abs(true - p.start) <= 1:
                return genie_channel_grid(self.genie, true, y.shape[0], self.cfg, self._backoff)
        return estimate_channel_grid(y, self.cfg, known, self.delay_prior)

    def _prefix_residual(self, p: _Candidate, count: int) -> float:
        """What the frequency offset ``p.cfo`` misses, from the cyclic prefixes of the
        first ``count`` OFDM symbols against the ends they copy (unambiguous to half a
        subcarrier spacing, several times finer than the sync's estimate: the pilots'
        phase from symbol to symbol, ``stagger`` symbols apart, would wrap with the
        sync's error alone at 0 dB). Samples under the previous symbol's echo are
        uncorrelated with their copy: noise, no bias."""
        cfg = self.cfg
        n, cp, length = cfg.fft_size, cfg.cp_length, cfg.symbol_length
        if cp == 0 or self.genie is not None:
            return 0.0
        first = p.start + SYNC_LENGTH
        seg = self._samples(first, first + count * length)
        if seg is None:
            return 0.0
        z = _fast_ofdm.prefix_products(seg, count, length, n, cp)  # sum conj(prefix) * copy
        if z == 0:
            return 0.0
        z *= cmath.exp(-2j * math.pi * p.cfo * n)
        return cmath.phase(z) / (2.0 * math.pi * n)

    def _header_at(self, p: _Candidate, version: int, count: int):
        """The header decoded from the first ``count`` symbols at the offset ``p.cfo``
        (or None), and the channel estimate it used."""
        cfg = self.cfg
        y = self._fft_symbols(p, 0, count)
        grid = self._grid(p, y)
        yd = _take(y, cfg, "data")
        slots = frame_slots(0, cfg.data_per_symbol, version).header
        soft = (yd * np.conj(grid.h)).real.reshape(-1)[slots]
        header = hdr.decode_version(soft, version)
        if header is None and version == hdr.VERSION_CONV and self.genie is None:
            # The decoder's guess, right in most of its bits even when the CRC fails,
            # re-encoded as known symbols across the band: a much better estimate
            # than the symbol's pilots alone give, and one more try.
            grid = estimate_channel_grid(y, cfg, (slots, _reencode_conv(soft)), self.delay_prior)
            yd = _take(y, cfg, "data")
            soft = (yd * np.conj(grid.h)).real.reshape(-1)[slots]
            header = hdr.decode_version(soft, version)
        return header, grid

    def _decode_header(self, p: _Candidate, version: int, count: int) -> None:
        cfg = self.cfg
        cfo = p.cfo
        refined = cfo + self._prefix_residual(p, count)
        # The prefixes measure the offset modulo a subcarrier spacing; at 0 dB the
        # sync's estimate is off by more than half a spacing in about 1 % of bursts,
        # so the neighbouring value (towards the sync's) is tried when the CRC fails.
        tries = [refined]
        if self.genie is None and cfg.cp_length and refined != cfo:
            tries.append(refined - math.copysign(1.0 / cfg.fft_size, refined - cfo))
        for value in tries:
            p.cfo = value
            header, grid = self._header_at(p, version, count)
            if header is not None:
                break
        if header is None:
            p.tried += 1
            p.cfo = cfo
            if p.tried < len(self._attempts()):
                return
            self.stats["header_crc_fail"] += 1
            self._pending = None
            return
        try:
            start, stop = header_payload_slice(
                header.rate_code,
                header.image_shape,
                header.frame_count,
                header.frame_index,
                self.tuning.max_image_symbols,
            )
            if stop - start > MAX_PAYLOAD_SYMBOLS:
                raise FrameError(f"frame of {stop - start} symbols exceeds {MAX_PAYLOAD_SYMBOLS}")
        except FrameError:
            self.stats["header_invalid"] += 1
            self._pending = None
            return
        if version != self._versions[0]:
            self._versions.remove(version)
            self._versions.insert(0, version)
        self.delay_prior.accept(grid.delay_profile)
        p.header = header
        # The header's symbols measured the residual offset; the payload's FFTs use it
        # (less leakage between subcarriers than a per-symbol phase correction leaves).
        p.cfo += grid.cfo_residual
        p.payload_len = stop - start
        p.symbols = ofdm_symbol_count(p.payload_len, cfg, version)

    def _decode_payload(self, p: _Candidate) -> ReceivedFrame:
        cfg = self.cfg
        p.cfo += self._prefix_residual(p, p.symbols)
        y = self._fft_symbols(p, 0, p.symbols)
        # Samples per OFDM symbol that the FFT windows slip (a clock offset): this frame's,
        # measured before any correction, and the link's, corrected for.
        drift, measured = 0.0, math.nan
        if self.genie is None and self.tuning.max_sample_rate_offset_ppm > 0:
            d, sigma = estimate_drift(y, cfg, self.tuning.max_sample_rate_offset_ppm)
            measured = d if math.isfinite(sigma) else math.nan  # nan: too short to tell
            drift = self.clock.drift(p.symbols, measured)
            if drift:
                correct_drift(y, cfg, drift)
        layout = frame_slots(p.payload_len, cfg.data_per_symbol, p.header.version)
        slots, key = _known_slots(p.payload_len, cfg.data_per_symbol, p.header.version)
        values = np.concatenate([hdr.encode_symbols(p.header), padding_values(layout.padding.size)])
        known = (slots, values.astype(np.complex128), key)
        grid = self._grid(p, y, known)
        yd = _take(y, cfg, "data")
        symbols, sym_var, h_power, h_mean, var_mean = equalise_payload(
            yd,
            grid,
            layout.payload,
            self.tuning.equaliser,
            gain=self.genie is None,
            whole_image=p.header.frame_count == 1,
        )
        snr = 1.0 / max(var_mean, 1e-12)  # effective_snr(sym_var)
        h_rms = math.sqrt(h_power)
        h = cmath.rect(h_rms, cmath.phase(h_mean))
        header = p.header
        self.delay_prior.accept(grid.delay_profile)
        self.clock.add(measured)
        self.stats["frames_ok"] += 1
        pad = layout.padding.size
        return ReceivedFrame(
            image_id=header.image_id,
            frame_index=header.frame_index,
            frame_count=header.frame_count,
            rate_code=header.rate_code,
            image_shape=header.image_shape,
            design_snr_db=header.design_snr_db,
            symbols=symbols,
            snr_db=10.0 * math.log10(snr),
            h=h,
            cfo=p.cfo + grid.cfo_residual,
            timing=float(p.start),
            noise_var=h_rms**2 / snr,
            num_known=p.symbols * cfg.pilots_per_symbol + pad,
            h_sample=float(p.start + SYNC_LENGTH),
            sample_rate_offset=-drift / cfg.symbol_length if drift else 0.0,
            symbol_noise_var=sym_var,
            waveform="ofdm",
        )

    def _trim(self) -> None:
        keep_from = self._search if self._pending is None else self._pending.start
        keep_from = min(keep_from, self._end) - 2 * SYNC_PERIOD
        drop = keep_from - self._base
        if drop > 0:
            self._head += min(drop, self._buf.size)
            self._buf = self._buf[drop:]
            self._base += drop
