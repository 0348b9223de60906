"""Single-carrier equalisation: the known symbols of a frame, the channel
estimate from all of them, zero-forcing with a phase tracker, and the clock
(sample-rate) offset seen along a frame and followed by the matched filter.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from diffjscc.radio import header as hdr
from diffjscc.radio.config import FrameConfig, ReceiverTuning
from diffjscc.radio.estimation import ChannelEstimate, cis, estimate_channel, track_phase
from diffjscc.radio.frame import body_layout
from diffjscc.radio.pulse import matched_filter, matched_filter_delays
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


def frame_known(header: hdr.FrameHeader, payload_len: int, cfg: FrameConfig) -> KnownSymbols:
    layout = body_layout(hdr.HEADER_SYMBOLS + payload_len, cfg)
    pilots_t = PREAMBLE_LENGTH + layout.pilot_positions
    header_t = PREAMBLE_LENGTH + layout.data_positions[: hdr.HEADER_SYMBOLS]
    pilots = pilot_symbols(pilots_t.size)
    return KnownSymbols(
        times=np.concatenate([np.arange(PREAMBLE_LENGTH), header_t, pilots_t]),
        values=np.concatenate(
            [preamble(), hdr.encode_symbols(header).astype(np.complex64), pilots]
        ),
        pilot_times=pilots_t,
        pilot_values=pilots,
        payload_times=PREAMBLE_LENGTH + layout.data_positions[hdr.HEADER_SYMBOLS :],
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
) -> tuple[np.ndarray, ChannelEstimate]:
    """Channel estimate from every known symbol of a frame, and the equalised payload.

    ``y``: matched-filter outputs of the whole frame (preamble first), already
    corrected for the coarse frequency offset. The residual frequency offset is
    searched within ``freq_center +- freq_halfwidth`` cycles per symbol.
    """
    k = frame_known(header, payload_len, cfg) if known is None else known
    track_window = (ReceiverTuning() if tuning is None else tuning).phase_track_window
    est = estimate_channel(y[k.times], k.values, k.times, freq_center, freq_halfwidth)
    gain = est.gain_at_symbols(0, y.size)[k.payload_times]
    if track_window > 1:
        window = max(track_window, int(math.ceil(0.5 / (_TRACKER_NOISE * max(est.snr, 1e-3)))))
        if 2 * window <= k.pilot_times.size:
            phase = track_phase(
                y[k.pilot_times], k.pilot_values, k.pilot_times, est, window, k.payload_times
            )
            gain = gain * cis(phase).astype(np.complex64)
    return (y[k.payload_times] / gain).astype(np.complex64), est


# Blocks of a frame whose timing is measured to follow a clock offset.
_DRIFT_BLOCKS = 8
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
    centres = (np.arange(_DRIFT_BLOCKS) + 0.5) * size - 0.5 - 0.5 * PREAMBLE_LENGTH
    sizes = np.full(_DRIFT_BLOCKS, float(size))

    quarter = cfg.sps / 4.0
    # A timing error growing linearly to `slide` samples leaves ISI of about
    # 3.3 (slide / sps)^2 / 3 on average (raised cosine, rolloff 0.35): below
    # 5 % of the noise it is left alone.
    min_slide = min(max(cfg.sps * math.sqrt(0.045 / max(snr, 1e-3)), 0.03), 0.5)

    def block_delays(blocks) -> np.ndarray:
        """Timing (samples) of some blocks, wrapped to +-sps/2."""
        out = []
        for b in blocks:
            lo, hi = b * size, (b + 1) * size
            v = y[lo:hi]
            centre = _energy(v)
            late_v, early_v = matched_filter_delays(
                seg, start + lo * cfg.sps, size, (quarter, -quarter), cfg
            )
            late = _energy(late_v)
            early = _energy(early_v)
            out.append(math.atan2(0.5 * (late - early), centre - 0.5 * (late + early)))
        return np.asarray(out) * cfg.sps / (2.0 * np.pi)

    # Most frames have no clock offset worth following: two blocks (the second
    # and the last) tell, at a quarter of the cost of all eight.
    probe = block_delays((1, _DRIFT_BLOCKS - 1))
    step = cfg.sps * np.round((probe[0] * centres[-1] / centres[1] - probe[1]) / cfg.sps)
    quick = (probe[1] + step) / centres[-1]  # samples per symbol
    if abs(quick) * count < min_slide:
        return 0.0
    delay = block_delays(range(_DRIFT_BLOCKS))
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
