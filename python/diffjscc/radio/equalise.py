"""Single-carrier equalisation: the known symbols of a frame, the channel
estimate from all of them, zero-forcing with a phase tracker, and the clock
(sample-rate) offset seen along a frame and followed by the matched filter.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import numpy as np

from diffjscc.radio import _fast
from diffjscc.radio import header as hdr
from diffjscc.radio.config import FrameConfig, ReceiverTuning
from diffjscc.radio.estimation import ChannelEstimate, cis, estimate_channel_at, pilot_phase
from diffjscc.radio.frame import body_layout
from diffjscc.radio.pulse import (
    FRACTION_STEPS,
    matched_filter,
    matched_filter_delays,
    rx_taps_table,
)
from diffjscc.radio.sequences import PREAMBLE_LENGTH, pilot_symbols, preamble

log = logging.getLogger(__name__)


# Phase noise the tracker may add, relative to the signal: its window grows at
# low SNR so that averaging keeps 1 / (2 * window * snr) below this.
_TRACKER_NOISE = 0.01


@dataclass(frozen=True)
class KnownSymbols:
    """Where a frame's known symbols are (symbol times from the preamble's start) and what they are."""

    times: np.ndarray  # preamble, header, pilots
    values: np.ndarray
    pilot_times: np.ndarray
    pilot_values: np.ndarray
    payload_times: np.ndarray
    order: np.ndarray | None = None  # permutation sorting ``times``


@functools.lru_cache(maxsize=64)
def _known_layout(payload_len: int, cfg: FrameConfig, header_len: int):
    """The parts of ``frame_known`` that depend on the layout alone (shared, read-only)."""
    layout = body_layout(header_len + payload_len, cfg)
    pilots_t = PREAMBLE_LENGTH + layout.pilot_positions
    header_t = PREAMBLE_LENGTH + layout.data_positions[:header_len]
    times = np.concatenate([np.arange(PREAMBLE_LENGTH), header_t, pilots_t])
    pilots = pilot_symbols(pilots_t.size)
    payload_t = PREAMBLE_LENGTH + layout.data_positions[header_len:]
    order = np.argsort(times, kind="stable")
    # The known values with the header's left at zero: a frame's copy gets its header.
    values = np.concatenate([preamble(), np.zeros(header_len, np.complex64), pilots])
    for a in (pilots_t, times, pilots, payload_t, order, values):
        a.flags.writeable = False
    return times, pilots_t, pilots, payload_t, order, values


def frame_known(
    header: hdr.FrameHeader,
    payload_len: int,
    cfg: FrameConfig,
    header_symbols: np.ndarray | None = None,
) -> KnownSymbols:
    """The known symbols of a frame with this header. ``header_symbols``: the
    header's symbols as sent (``hdr.encode_symbols(header)``), where the caller
    has them already."""
    header_len = hdr.header_symbols(header.version)
    layout = _known_layout(int(payload_len), cfg, header_len)
    times, pilots_t, pilots, payload_t, order, template = layout
    values = template.copy()
    if header_symbols is None or header_symbols.size != header_len:
        header_symbols = hdr.encode_symbols(header)
    values[PREAMBLE_LENGTH : PREAMBLE_LENGTH + header_len] = header_symbols
    return KnownSymbols(
        times=times,
        values=values,
        pilot_times=pilots_t,
        pilot_values=pilots,
        payload_times=payload_t,
        order=order,
    )


def equalise_frame(
    y: np.ndarray,
    header: hdr.FrameHeader,
    payload_len: int,
    cfg: FrameConfig,
    freq_center: float = 0.0,
    freq_halfwidth: float = 0.0,
    known: KnownSymbols | None = None,
    tuning: ReceiverTuning | None = None,
    usable: np.ndarray | None = None,
) -> tuple[np.ndarray, ChannelEstimate]:
    """Channel estimate from every known symbol of a frame, and the equalised payload.

    ``y``: matched-filter outputs of the whole frame (preamble first), already
    corrected for the coarse frequency offset. The residual frequency offset is
    searched within ``freq_center +- freq_halfwidth`` cycles per symbol.
    ``usable`` (bool per symbol of ``y``) restricts the estimate to the known
    symbols it marks: those of a damaged frame's undamaged stretches.
    """
    k = frame_known(header, payload_len, cfg) if known is None else known
    track_window = (ReceiverTuning() if tuning is None else tuning).phase_track_window
    times, values = k.times, k.values
    pilot_times, pilot_values = k.pilot_times, k.pilot_values
    if usable is not None:
        keep = usable[times]
        times, values = times[keep], values[keep]
        keep = usable[pilot_times]
        pilot_times, pilot_values = pilot_times[keep], pilot_values[keep]
    est = estimate_channel_at(y, times, values, freq_center, freq_halfwidth)
    knots = np.zeros(0)
    phase = np.zeros(0)
    if track_window > 1:
        window = max(track_window, int(math.ceil(0.5 / (_TRACKER_NOISE * max(est.snr, 1e-3)))))
        if 2 * window <= pilot_times.size:
            knots = pilot_times.astype(np.float64)
            phase = pilot_phase(y[pilot_times], pilot_values, pilot_times, est, window)
    # A zero or non-finite gain (degenerate samples) takes the numpy path, whose inf/NaN
    # symbols the receiver counts as estimate_failed; the compiled division would raise.
    if _fast.AVAILABLE and y.dtype == np.complex64 and 0 < abs(est.h) < math.inf:
        out = np.empty(k.payload_times.size, dtype=np.complex64)
        _fast.equalise_payload(y, k.payload_times, est.h, est.freq, est.t_ref, knots, phase, out)
        return out, est
    gain = est.gain_at_symbols(0, y.size)[k.payload_times]
    if knots.size:
        gain = gain * cis(np.interp(k.payload_times, knots, phase)).astype(np.complex64)
    return (y[k.payload_times] / gain).astype(np.complex64), est


# Damage along a frame (a burst cut short, another burst over it) is found in two
# steps: change points of the received energy locate where something changed, to a
# few symbols at high SNR; the known symbols of each stretch between change points
# then tell whether it still carries this burst as cleanly as its best stretch.
_SPLIT_GAIN = 24.0  # log-likelihood a change point must gain (exponential model)
_MIN_STRETCH = 64  # symbols between change points at least (3 pilots or more)
_MAX_STRETCHES = 8
_COARSE = 8  # change points are looked for on this grid first
_GUARD = 8  # symbols given up on each side of a damaged stretch (matched filter's reach)
_MAX_GUARD = 160  # and at most this many, for the least sharp change points
_QUIET_Z = 4.5  # noise ratio bound, in spreads of its log (find_damage)
_PRESENT_Z = 3.5  # gain shortfall bound, in standard deviations
_MIN_REF_KNOWN = 32  # known symbols of a reference stretch at least
_QUIET_FLOOR = 10 ** (-25 / 10)  # noise always quiet, relative to |gain|^2


@dataclass(frozen=True)
class Damage:
    """Which symbols of a frame (preamble first) are still usable, and why the others are not."""

    usable: np.ndarray  # bool per frame symbol
    truncated: bool  # this burst's signal is missing somewhere (cut short)
    collided: bool  # another signal lies over part of it
    noise_var: float  # payload-weighted noise of the usable stretches (units of |y|^2)
    collision_start: int | None = None  # first symbol of the first stretch with another signal


def _scale_loglik(csum: np.ndarray, floor: float):
    """Exponential log-likelihood (up to constants, negated) of stretches, from the
    cumulative sum of a positive sequence."""

    def loglik(lo, hi) -> np.ndarray:
        count = np.asarray(hi - lo, dtype=np.float64)
        total = csum[hi] - csum[lo]
        return count * np.log(np.maximum(total / np.maximum(count, 1.0), floor))

    return loglik


def energy_stretches(
    power: np.ndarray,
    forced: tuple[int, ...] = (),
    residual: np.ndarray | None = None,
    residual_times: np.ndarray | None = None,
) -> list[tuple[int, int]]:
    """[start, stop) stretches of constant statistics, by binary segmentation.

    Each split is where the exponential log-likelihood of the two halves beats
    that of the whole by ``_SPLIT_GAIN`` at least (a change in scale) of the
    power of every symbol plus, when given, of the residuals of the known
    symbols at ``residual_times`` (sorted): the power tells a cut sharply, the
    residuals another signal even where it hardly adds power.
    ``forced``: change points known already.
    """
    n = power.size
    csum = np.empty(n + 1)
    csum[0] = 0.0
    np.cumsum(power, out=csum[1:])
    floor_e = max(1e-12 * csum[-1] / max(n, 1), 1e-300)
    energy = _scale_loglik(csum, floor_e)
    noise = None
    rsum, floor_r = np.zeros(0), 1e-300
    if residual is not None and residual.size:
        rsum = np.empty(residual.size + 1)
        rsum[0] = 0.0
        np.cumsum(residual, out=rsum[1:])
        floor_r = max(1e-12 * rsum[-1] / residual.size, 1e-300)
        noise = _scale_loglik(rsum, floor_r)
    rtimes = np.zeros(0, np.int64) if noise is None else np.asarray(residual_times, np.int64)

    def gains(a: int, b: int, c: np.ndarray) -> np.ndarray:
        if _fast.AVAILABLE:
            out = np.empty(c.size)
            _fast.split_gains(csum, floor_e, rsum, floor_r, rtimes, a, b, c, out)
            return out
        g = energy(a, b) - energy(a, c) - energy(c, b)
        if noise is not None:
            ra, rb = np.searchsorted(residual_times, [a, b])
            rc = np.searchsorted(residual_times, c)
            g += noise(ra, rb) - noise(ra, rc) - noise(rc, rb)
        return g

    cuts = sorted({int(c) for c in forced if 0 < c < n})
    todo = list(zip([0, *cuts], [*cuts, n], strict=True))
    done: list[tuple[int, int]] = []
    while todo:
        a, b = todo.pop()
        if b - a < 2 * _MIN_STRETCH or len(done) + len(todo) + 1 >= _MAX_STRETCHES:
            done.append((a, b))
            continue
        # Every _COARSE-th position first, then every position around the best:
        # the gain is smooth away from its peak.
        lo, hi = a + _MIN_STRETCH, b - _MIN_STRETCH
        c = np.arange(lo, hi + 1, _COARSE)
        best = int(c[int(np.argmax(gains(a, b, c)))])
        c = np.arange(max(lo, best - _COARSE), min(hi, best + _COARSE) + 1)
        gain = gains(a, b, c)
        i = int(np.argmax(gain))
        if gain[i] > _SPLIT_GAIN:
            todo += [(a, int(c[i])), (int(c[i]), b)]
        else:
            done.append((a, b))
    return sorted(done)


_PRECHECK_BLOCKS = 8
# Spreads by which a block's residuals may exceed the best block's in the pre-check.
# The best of 8 blocks is low by chance (7 of them hold only some 27 pilots in a
# 3,072-symbol frame): at 4 spreads, 11.7 % of clean frames failed in a simulation
# of exponential residuals (15 % of 300 clean frames at 7 dB, all cleared by the
# full search), at 5 spreads 3.4 %; a block with 3 times the noise still fails
# 98 % of the time (the full test's own bound there: 2.7 times).
_PRECHECK_SPREADS = 5.0


def _looks_clean(z: np.ndarray, residual: np.ndarray, times: np.ndarray, count: int) -> bool:
    """Cheap test passed by undamaged frames (the full search runs otherwise): in
    no block of the frame do the known symbols sit farther from the frame's
    channel estimate than in the best block by ``_PRECHECK_SPREADS`` standard
    deviations (the full test asks for 4.5 of the ratio's log and 10 % more, over
    stretches), nor has their mean gain less than half the
    largest block's power. Damage shows in both wherever it is: noise instead of
    the burst leaves |h|^2 + sigma^2 and no gain, another burst adds its power."""
    if _fast.AVAILABLE:
        return bool(
            _fast.blocks_clean(z, residual, times, int(count), _PRECHECK_BLOCKS, _PRECHECK_SPREADS)
        )
    edges = np.searchsorted(times, (np.arange(1, _PRECHECK_BLOCKS) * count) // _PRECHECK_BLOCKS)
    starts = np.concatenate([[0], edges])
    counts = np.diff(np.concatenate([starts, [residual.size]])).astype(np.float64)
    if np.any(counts < 3):
        return False
    means = np.add.reduceat(residual, starts) / counts
    best = int(np.argmin(means))
    bound = means[best] * (1.0 + _PRECHECK_SPREADS * np.sqrt(1.0 / counts + 1.0 / counts[best]))
    gains = np.abs(np.add.reduceat(z, starts) / counts) ** 2
    return bool(np.all(means <= bound) and np.all(gains >= 0.5 * gains.max()))


_LOCAL_WINDOW = 16  # known symbols averaged for a stretch's local gain


def _local_gain_noise(z: np.ndarray) -> tuple[float, float]:
    """|gain| and noise variance of derotated known symbols z_k = h_k + n_k whose
    gain may turn slowly (a frequency error left by an estimate that damage
    spoilt): from a moving mean over ``_LOCAL_WINDOW`` of them rather than one
    mean over the whole stretch."""
    if _fast.AVAILABLE and z.dtype == np.complex128 and z.size:
        gain, noise = _fast.local_gain_noise(z, _LOCAL_WINDOW)
        return float(gain), float(noise)
    w = min(_LOCAL_WINDOW, z.size)
    kernel = np.ones(w)
    norm = np.convolve(np.ones(z.size), kernel, mode="same")
    local = (np.convolve(z, kernel, mode="same") - z) / np.maximum(norm - 1.0, 1.0)
    # Each residual against the mean of its neighbours (itself left out): E|z - m|^2
    # = sigma^2 (1 + 1/(w-1)); the mean's own noise biases |m|^2 by sigma^2/(w-1).
    noise = float(np.mean(np.abs(z - local) ** 2)) * (w - 1.0) / w
    power = float(np.mean(np.abs(local) ** 2)) - noise / max(w - 1.0, 1.0)
    return math.sqrt(max(power, 0.0)), noise


def find_damage(
    y: np.ndarray,
    k: KnownSymbols,
    est: ChannelEstimate,
    forced: tuple[int, ...] = (),
    bad_after: int | None = None,
    bad_before: int | None = None,
) -> Damage | None:
    """The frame's undamaged symbols, or None when the whole frame is fine.

    ``y``: matched-filter outputs of the frame (preamble first), ``est`` the
    estimate from all its known symbols (its frequency is used to derotate).
    ``bad_after``: a symbol from which another burst is known to lie over this one;
    ``bad_before``: one before which another (received already, found collided) does.
    A stretch is damaged when its known symbols show a gain well below the best
    stretch's (the signal is gone: truncation) or more noise than it
    (something else is there: a collision).
    """
    order = np.argsort(k.times, kind="stable") if k.order is None else k.order
    hints = bad_after is not None or bad_before is not None
    if _fast.AVAILABLE and y.dtype == np.complex64 and k.times.dtype == np.int64:
        z = np.empty(order.size, dtype=np.complex128)
        residual = np.empty(order.size)
        clean = _fast.damage_precheck(
            y,
            k.times,
            k.values,
            order,
            est.freq,
            est.t_ref,
            complex(est.h),
            y.size,
            _PRECHECK_BLOCKS,
            _PRECHECK_SPREADS,
            z,
            residual,
        )
        if clean and not hints and not forced:
            return None
        times = k.times[order]
    else:
        times = k.times[order]
        z = y[times].astype(np.complex128) * np.conj(k.values[order])
        z *= cis(-2 * np.pi * est.freq * (times - est.t_ref))
        residual = np.abs(z - est.h) ** 2
        if not hints and not forced and _looks_clean(z, residual, times, y.size):
            return None
    parts = y.view(np.float32)
    power = parts[0::2] * parts[0::2]
    power += parts[1::2] * parts[1::2]
    if bad_before is not None and 0 < bad_before < y.size:
        forced = (*forced, bad_before)
    stretches = energy_stretches(power, tuple(forced), residual, times)
    if bad_after is not None:
        # The stretch where the other burst begins is damaged from its start when
        # the energy shows where that is; a long stretch is cut short of it instead.
        split = []
        for a, b in stretches:
            if a < bad_after - 4 * _MIN_STRETCH and b > bad_after - _MIN_STRETCH:
                split += [(a, bad_after - _MIN_STRETCH), (bad_after - _MIN_STRETCH, b)]
            else:
                split.append((a, b))
        stretches = split
    elif len(stretches) == 1 and bad_before is None:
        return None
    bounds = np.searchsorted(times, [a for a, _ in stretches] + [y.size])
    count = np.diff(bounds).astype(np.float64)
    gain = np.zeros(len(stretches))
    noise = np.full(len(stretches), np.inf)
    for i in range(len(stretches)):
        zs = z[bounds[i] : bounds[i + 1]]
        if zs.size >= 3:
            gain[i], noise[i] = _local_gain_noise(zs)
    signal = np.maximum(np.abs(gain) ** 2 - noise / np.maximum(count, 1.0), 0.0)
    snr = signal / np.maximum(noise, 1e-300)
    lower = snr * (1.0 - 2.5 / np.sqrt(np.maximum(count, 1.0)))
    late = [
        (bad_after is not None and b > bad_after) or (bad_before is not None and a < bad_before)
        for a, b in stretches
    ]
    lower[late] = -np.inf
    # The reference has enough known symbols that its noise is not low by chance
    # (26 pilots once measured a third of the true noise, and the frame's other
    # 941 known symbols were taken for a collision).
    eligible = np.isfinite(lower) & (count >= _MIN_REF_KNOWN)
    if eligible.any():
        lower[~eligible] = -np.inf
    ref = int(np.argmax(lower))
    big = int(np.argmax(np.where(np.isfinite(lower), count, -1.0)))
    if not np.isfinite(noise[ref]) or signal[ref] <= 0:
        return Damage(np.zeros(y.size, bool), True, False, float("inf"))
    usable = np.zeros(y.size, dtype=bool)
    truncated = collided = False
    collision_start = None
    mean_power = [float(power[a:b].mean()) for a, b in stretches]
    for i, (a, b) in enumerate(stretches):
        spread = math.sqrt(1.0 / max(count[i], 1.0) + 1.0 / count[ref])
        # Noise this much above the best stretch's is something else on the air:
        # _QUIET_Z standard deviations of the log of the ratio, and 10 % for the
        # receiver's own residuals. The best stretch is picked for its low noise, and
        # a stretch of the payload (one latent map) has only some 50 pilots: the log
        # ratio's spread in clean streams is 1.15 times the nominal, and the linear
        # bound used before (4.5 spreads of the ratio: 3 of its log at 50 pilots)
        # flagged 10 of 12,000 clean back-to-back frames.
        # Stretches 25 dB above their noise are quiet whatever the best one's: that
        # close to noiseless, the residuals are partly the receiver's own
        # (interpolation, rounding), which follow the payload's power from stretch
        # to stretch (at 30 dB a clean stretch measured 2.5 times another's noise).
        bound = noise[ref] * 1.1 * math.exp(_QUIET_Z * spread)
        quiet = noise[i] <= max(bound, _QUIET_FLOOR * gain[ref] ** 2)
        # A gain this far below that of the stretch with the most known symbols
        # (_PRESENT_Z standard deviations, and below half the power) means the burst
        # is not there any more. Not the best stretch's: picked for its SNR, its
        # gain is high by chance, and 3 standard deviations of it flagged clean frames.
        weak_by = gain[big] - gain[i]
        gain_var = noise[big] / count[big] + min(noise[i], 4.0 * noise[big]) / max(count[i], 1.0)
        present = gain[i] ** 2 >= 0.5 * gain[big] ** 2 or weak_by**2 <= _PRESENT_Z**2 * gain_var
        if quiet and present and not late[i]:
            usable[a:b] = True
        elif bad_before is not None and a < bad_before:
            collided = True  # the other burst is known: no search for it from here
        elif not present or mean_power[i] < 0.75 * mean_power[ref]:
            truncated = True
        else:
            collided = True
            if collision_start is None:
                collision_start = a
    if usable.all():
        return None
    # Give up symbols next to each damaged stretch: the matched filter spreads the
    # damage over its span, and a change point is only as sharp as the change in
    # power: about 1 / KL symbols off, KL = ln r + 1/r - 1 nats per symbol for a
    # power ratio r (a collision doubling the power: 5 symbols; a cut at 30 dB: 0.2).
    bad_stretch = [not usable[a] for a, _ in stretches]
    for i in range(1, len(stretches)):
        if bad_stretch[i] == bad_stretch[i - 1]:
            continue
        edge = stretches[i][0]
        r = max(mean_power[i], 1e-300) / max(mean_power[i - 1], 1e-300)
        kl = max(abs(math.log(r)) + min(r, 1.0 / r) - 1.0, 1e-3)
        guard = min(_GUARD + int(math.ceil(6.0 / kl)), _MAX_GUARD)
        if bad_stretch[i]:
            usable[max(edge - guard, 0) : edge] = False
        else:
            usable[edge : edge + guard] = False
    # The noise of what is delivered: each stretch's, from its usable known
    # symbols, weighted by its usable symbols (the known ones crowd the header,
    # and one stretch may be noisier than another).
    keep = usable[times]
    total = weighted = 0.0
    for i, (a, b) in enumerate(stretches):
        n_usable = int(np.count_nonzero(usable[a:b]))
        zs = z[bounds[i] : bounds[i + 1]][keep[bounds[i] : bounds[i + 1]]]
        if n_usable and zs.size >= 3:
            total += n_usable
            weighted += n_usable * _local_gain_noise(zs)[1]
    noise_var = weighted / total if total else float("inf")
    return Damage(usable, truncated, collided, float(noise_var), collision_start)


# Blocks of a frame whose timing is measured to follow a clock offset.
_DRIFT_BLOCKS = 8
# The second and the last: enough to tell that there is no clock offset to follow.
_QUICK_BLOCKS = np.array([1, _DRIFT_BLOCKS - 1], dtype=np.int64)
_ALL_BLOCKS = np.arange(_DRIFT_BLOCKS, dtype=np.int64)
for _a in (_QUICK_BLOCKS, _ALL_BLOCKS):
    _a.flags.writeable = False
_DRIFT_EXTRA_MAX = 32  # samples of slack kept around a frame for a drifting clock


def estimate_drift(
    seg: np.ndarray,
    start: float,
    y: np.ndarray,
    cfg: FrameConfig,
    max_sro: float,
    snr: float = 100.0,
) -> float:
    """Sample-rate offset (receiver clock / transmitter clock - 1) seen along a frame.

    A clock offset makes the timing, exact at the preamble, slide linearly. The
    frame is cut into blocks and each block's timing is measured on all its
    symbols, whatever the data: the energy of matched-filter outputs taken one
    symbol apart, as a function of their delay, is a constant plus one sinusoid
    of period one symbol (the pulse's spectrum, squared, reaches no further than
    (1 + rolloff) / T: the principle of Oerder and Meyr's estimator). Three
    delays a quarter symbol apart give that sinusoid's phase, hence the block's
    timing, exactly and without a search. The phases are unwrapped from block to
    block and a line through zero at the preamble is fitted to them. Timing the
    sparse pilots instead would be about 25 times noisier: the unknown
    neighbours of a pilot leak into it as soon as it is probed off its centre.

    Returns 0.0 when the slide over the frame would cost less than about 0.2 dB
    at this ``snr`` (linear) if left alone, or exceeds ``max_sro``.
    """
    count = y.size
    # Equal blocks of whole symbols; the few left over at the end are ignored.
    size = count // _DRIFT_BLOCKS

    def centre(b: int) -> float:
        return (b + 0.5) * size - 0.5 - 0.5 * PREAMBLE_LENGTH

    quarter = cfg.sps / 4.0
    # A timing error growing linearly to `slide` samples leaves ISI of about
    # 3.3 (slide / sps)^2 / 3 on average (raised cosine, rolloff 0.35): below
    # 5 % of the noise it is left alone.
    min_slide = min(max(cfg.sps * math.sqrt(0.045 / max(snr, 1e-3)), 0.03), 0.5)

    compiled = (
        _fast.AVAILABLE
        and seg.dtype == np.complex64
        and seg.flags.c_contiguous
        and y.dtype == np.complex64
    )

    def block_delays(blocks) -> np.ndarray:
        """Timing (samples) of some blocks, wrapped to +-sps/2."""
        if compiled:
            out = np.empty(len(blocks))
            table = rx_taps_table(cfg)
            flat = seg.view(np.float32)
            if _fast.block_timings(
                flat, start, size, cfg.sps, quarter, blocks, table, FRACTION_STEPS, y, out
            ):
                return out
        out = []
        for b in blocks:
            lo, hi = b * size, (b + 1) * size
            v = y[lo:hi]
            centre_energy = _energy(v)
            late_v, early_v = matched_filter_delays(
                seg, start + lo * cfg.sps, size, (quarter, -quarter), cfg
            )
            late = _energy(late_v)
            early = _energy(early_v)
            out.append(math.atan2(0.5 * (late - early), centre_energy - 0.5 * (late + early)))
        return np.asarray(out) * cfg.sps / (2.0 * np.pi)

    # Most frames have no clock offset worth following: two blocks (the second
    # and the last) tell, at a quarter of the cost of all eight.
    first, last = (float(v) for v in block_delays(_QUICK_BLOCKS))
    c1, c_last = centre(1), centre(_DRIFT_BLOCKS - 1)
    step = cfg.sps * round((first * c_last / c1 - last) / cfg.sps)
    quick = (last + step) / c_last  # samples per symbol
    if abs(quick) * count < min_slide:
        return 0.0
    centres = np.array([centre(b) for b in range(_DRIFT_BLOCKS)])
    sizes = np.full(_DRIFT_BLOCKS, float(size))
    delay = block_delays(_ALL_BLOCKS)
    delay = np.unwrap(delay * (2.0 * np.pi / cfg.sps)) * (cfg.sps / (2.0 * np.pi))
    slope, slope_err = _weighted_slope(centres, delay, sizes)
    drift = slope / cfg.sps
    slide = abs(slope) * count
    sigmas = abs(slope) / max(slope_err, 1e-30)
    log.debug(
        "estimate_drift: %.1f ppm, slide %.3f (min %.3f), %.1f sigma",
        drift * 1e6,
        slide,
        min_slide,
        sigmas,
    )
    if abs(drift) > 1.2 * max_sro:
        return 0.0
    # Shrink towards zero by how little the blocks agree (James-Stein): a frame
    # without a clock offset is left alone, a clear offset is followed.
    drift *= max(0.0, 1.0 - 1.0 / max(sigmas, 1e-9) ** 2)
    if abs(drift) * count * cfg.sps < min_slide:
        return 0.0
    return float(drift)


def matched_filter_drifting(
    seg: np.ndarray, start: float, count: int, drift: float, cfg: FrameConfig
) -> np.ndarray:
    """Matched filter along a sliding timing, in pieces of constant delay short
    enough that the slide within one stays below 1/20 sample."""
    piece = int(max(16, min(count, 0.05 / max(abs(drift) * cfg.sps, 1e-12))))
    out = np.empty(count, dtype=np.complex64)
    if _fast.AVAILABLE and seg.dtype == np.complex64 and seg.flags.c_contiguous:
        table = rx_taps_table(cfg)
        if _fast.fir_drifting(seg, start, count, drift, cfg.sps, piece, table, FRACTION_STEPS, out):
            return out
    for lo in range(0, count, piece):
        hi = min(count, lo + piece)
        mid = 0.5 * (lo + hi - 1)
        out[lo:hi] = matched_filter(seg, start + lo * cfg.sps + mid * cfg.sps * drift, hi - lo, cfg)
    return out


def _energy(v: np.ndarray) -> float:
    return float(np.vdot(v, v).real)


def _weighted_slope(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted least-squares line through the origin, y = b x: (b, standard error of b)."""
    w = w / w.sum()
    sxx = float(np.sum(w * x * x))
    if sxx <= 0:
        return 0.0, float("inf")
    b = float(np.sum(w * x * y)) / sxx
    resid = y - b * x
    var_b = float(np.sum(w * resid**2)) / max(x.size - 1, 1) / sxx
    return b, math.sqrt(max(var_b, 0.0))
