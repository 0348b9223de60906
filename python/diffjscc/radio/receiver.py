"""The streaming burst receiver: samples in, equalised frames with CSI out.

``BurstReceiver.feed`` takes samples in chunks of any size and returns the
frames completed by them. It synchronises on the signal itself (GNU Radio's
``channel_model`` with a clock offset drops samples and leaves stream tags where
they were, so tags cannot be trusted):

1. Detection, on every sample, vectorised: the samples are correlated (FFT,
   overlap-add) with one pulse-shaped preamble segment; products of neighbouring
   segment correlations, signed by the cover code, add up only at the burst
   start. Their sum's magnitude, normalised by the samples' energy, is the
   detection metric (insensitive to a frequency offset); its angle is the coarse
   frequency offset.
2. Fine timing: the matched filter is evaluated with fractionally delayed taps,
   and the delay that maximises the preamble's energy is found by parabolic
   search; symbols are then taken at exactly that delay (no interpolation).
3. Header: the gain, phase and residual frequency offset are estimated from the
   preamble and the pilots around the header; the header is demodulated, decoded
   and its CRC checked. A failing CRC drops the frame and counts it.
4. Clock offset: a sample-rate offset between transmitter and receiver makes
   the timing slide along the frame; it is measured block by block on all
   symbols (``estimate_drift``) and, where it matters, followed.
5. Payload: h, the frequency offset and the SNR are re-estimated from every
   known symbol of the frame (preamble, pilots, and the header now that it is
   known); a slow phase tracker follows the pilots; the payload is equalised by
   zero forcing.

Nothing that arrives can make ``feed`` raise: noise, truncated bursts, corrupted
headers, NaN samples are counted in ``stats`` and dropped.
"""

from __future__ import annotations

import cmath
import dataclasses
import functools
import logging
import math
from dataclasses import dataclass

import numpy as np
import scipy.fft
from scipy import ndimage

from diffjscc.errors import DiffJSCCError
from diffjscc.radio import _fast
from diffjscc.radio import header as hdr
from diffjscc.radio.config import MAX_PAYLOAD_SYMBOLS, FrameConfig, ReceiverTuning
from diffjscc.radio.equalise import (  # noqa: F401  (re-exported: the names' old home)
    _DRIFT_EXTRA_MAX,
    _PRECHECK_BLOCKS,
    _PRECHECK_SPREADS,
    _QUICK_BLOCKS,
    _TRACKER_NOISE,
    KnownSymbols,
    equalise_frame,
    estimate_drift,
    find_damage,
    frame_known,
    matched_filter_drifting,
)
from diffjscc.radio.estimation import ChannelEstimate, _estimate, estimate_channel_at, phasor
from diffjscc.radio.frame import (  # noqa: F401  (re-exported: the names' old home)
    FrameError,
    ReceivedFrame,
    body_layout,
    header_payload_slice,
    header_pilot_positions,
    header_span,
)
from diffjscc.radio.frontend import DcRemover
from diffjscc.radio.pulse import (
    FRACTION_STEPS,
    matched_filter,
    rx_taps_table,
    shape,
    tx_taps,
)
from diffjscc.radio.pulse import _windows as pulse_windows
from diffjscc.radio.sequences import (
    BARKER_7,
    PREAMBLE_LENGTH,
    SEGMENT_LENGTH,
    SEGMENTS,
    header_scrambler,
    pilot_symbols,
    preamble,
    preamble_segment,
)

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=16)
def _segment_filter_table(cfg: FrameConfig) -> np.ndarray:
    """The matched filter (every delay step of ``rx_taps_table``, rows) convolved
    with one conjugated preamble segment at symbol spacing: its dot product with
    the samples from a segment's start is the sum of that segment's matched-filter
    outputs times the conjugated segment symbols."""
    taps = rx_taps_table(cfg)
    out = np.zeros((taps.shape[0], (SEGMENT_LENGTH - 1) * cfg.sps + cfg.num_taps), np.complex128)
    for k, symbol in enumerate(np.conj(preamble_segment())):
        out[:, k * cfg.sps : k * cfg.sps + cfg.num_taps] += symbol * taps
    out = out.astype(np.complex64)
    out.flags.writeable = False
    return out


@dataclass
class _Candidate:
    """A detected preamble, waiting for enough samples to decode."""

    start: float  # absolute sample index of the burst start (coarse, then fine)
    cfo: float  # cycles per sample
    peak_metric: float = 1.0
    header: hdr.FrameHeader | None = None
    header_est: ChannelEstimate | None = None
    payload_len: int = 0
    body_len: int = 0
    header_span: int = 0  # body symbols up to the header's last (of its version)
    header_symbols: np.ndarray | None = None  # as sent, where the header kernel gave them


@dataclass(frozen=True)
class _HeaderForm:
    """Where the symbols of one header version lie, and the known symbols before them."""

    version: int
    span: int  # body symbols up to and including its last symbol
    known_times: np.ndarray  # preamble and the pilots among the header's symbols
    known_values: np.ndarray
    data_times: np.ndarray  # of the header's symbols, from the preamble's start


def _header_form(version: int, cfg: FrameConfig) -> _HeaderForm:
    pilots = PREAMBLE_LENGTH + header_pilot_positions(cfg, version)
    data = body_layout(hdr.header_symbols(version), cfg).data_positions
    return _HeaderForm(
        version=version,
        span=header_span(cfg, version),
        known_times=np.concatenate([np.arange(PREAMBLE_LENGTH), pilots]),
        known_values=np.concatenate([preamble(), pilot_symbols(pilots.size)]),
        data_times=PREAMBLE_LENGTH + data,
    )


# A stream's frames share a few shapes and counts: their slices looked up once
# (the model registry and the shape arithmetic took 10-30 us a frame). Refusals
# (exceptions) are not cached and cost what they did.
_payload_slice = functools.lru_cache(maxsize=1024)(header_payload_slice)


def _first_above(metric: np.ndarray, bar: float) -> int:
    """Index of the first value of the (float32) metric above ``bar``; -1 when none is."""
    bar32 = np.float32(bar)  # the comparison numpy makes of a float32 array and a float
    if _fast.AVAILABLE and metric.dtype == np.float32:
        return int(_fast.first_above(metric, bar32))
    hits = np.flatnonzero(metric > bar32)
    return int(hits[0]) if hits.size else -1


def _header_soft(y: np.ndarray, times: np.ndarray, est: ChannelEstimate) -> np.ndarray:
    """Soft bits of the header symbols at ``times``: y derotated by the estimate's gain."""
    if _fast.AVAILABLE and y.dtype == np.complex64 and times.dtype == np.int64:
        out = np.empty(times.size, dtype=np.float32)
        _fast.header_soft(y, times, complex(est.h), float(est.freq), float(est.t_ref), out)
        return out
    return (y[times] * np.conj(est.gain(times))).real


# Header versions a receiver decodes. It tries first the one that decoded last
# (at first: its FrameConfig's), so that a stream of either costs one decoding a
# frame. A header decoded with the wrong version's code passes the CRC and the
# version nibble with probability about 2^-20.
_HEADER_VERSIONS = (hdr.VERSION_CONV, hdr.VERSION_RM)


_METRIC_PIECE = 1 << 18  # lags of detection metric computed at a time
_MIN_BATCH = 4096  # new samples worth a pass of the receiver


# Every detected burst ends in exactly one of frames_ok, frames_partial,
# frames_unusable, header_crc_fail, header_invalid, estimate_failed (or an internal
# error); frames_truncated and frames_collided say why a frame was partial or unusable.
STAT_KEYS = (
    "samples_in",
    "bursts_detected",
    "header_crc_fail",
    "header_invalid",
    "frames_truncated",
    "frames_collided",
    "frames_partial",
    "frames_unusable",
    "estimate_failed",
    "frames_ok",
    "nonfinite_samples",
    "invalid_input",
    "internal_errors",
    "rescaled",
)

# Fewer usable payload symbols than this and a damaged frame is not delivered.
_MIN_USABLE = 64
# Symbols before a collision found by its energy where the search for the other
# burst's preamble starts again (the change point may lie well inside it).
_RESUME_BACK = 256
# Symbols of undamaged frame start needed to measure a clock offset in a damaged frame.
_MIN_DRIFT_SPAN = 1024
# The samples are kept (scaled by a power of two) with their peak within
# 2 ** +-_LEVEL_RANGE, where float32 products neither overflow nor lose precision.
_LEVEL_RANGE = 24


class _Growable:
    """An array appended at the back and dropped from the front, each in amortised
    time proportional to the elements moved (not to the array's length), so that
    tiny chunks cost no more per sample than large ones."""

    def __init__(self, dtype, capacity: int = 1 << 15):
        self._data = np.zeros(capacity, dtype=dtype)
        self._lo = 0
        self._hi = 0

    @property
    def view(self) -> np.ndarray:
        return self._data[self._lo : self._hi]

    @property
    def size(self) -> int:
        return self._hi - self._lo

    def append(self, x: np.ndarray) -> None:
        self.grow(x.size)[...] = x

    def grow(self, n: int) -> np.ndarray:
        """``n`` more elements at the back, uninitialised: the writable view of them
        (valid until the next append or grow), for a kernel to fill in place."""
        if self._hi + n > self._data.size:
            live = self.size
            if live + n > self._data.size // 2:
                # Twice the old size at least: sized to just twice the need, a stream of
                # chunks of varying size (GNU Radio's) made it anew every few calls, each
                # time megabytes of fresh pages faulted in.
                size = max(2 * (live + n), 2 * self._data.size)
                data = np.zeros(size, dtype=self._data.dtype)
                data[:live] = self.view
                self._data = data
            else:
                self._data[:live] = self.view.copy()
            self._lo, self._hi = 0, live
        tail = self._data[self._hi : self._hi + n]
        self._hi += n
        return tail

    def drop(self, n: int) -> None:
        self._lo += min(max(n, 0), self.size)

    def clear(self) -> None:
        self._lo = self._hi = 0


# Steps (samples) of the fine timing's parabolic search, shrinking.
_FINE_STEPS = np.array([0.5, 0.15, 0.04])
_FINE_STEPS.flags.writeable = False

# FFT length of the overlap-save correlation: about 16 times the template at sps=2.
# On the 2-core development VM (scipy's pocketfft, complex64, one core) the cost per
# output sample was 6.6, 6.9, 8.2 and 8.8 ns at 512, 1024, 2048 and 4096 points;
# 1024 keeps a longer template (sps 4) efficient too.
_CORR_FFT = 1024


@dataclass
class _Tables:
    template: np.ndarray
    template_energy: float
    template_fft: np.ndarray  # of the reversed, conjugated template, _corr_fft points
    segment_period: int  # samples between preamble segments
    preamble_samples: int
    # The template's factors, for the compiled correlation: the transmit pulse
    # (real, symmetric) and the conjugated segment symbols' parts.
    pulse: np.ndarray
    segment_re: np.ndarray
    segment_im: np.ndarray


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


class BurstReceiver:
    """Streaming receiver: ``feed(samples) -> list[ReceivedFrame]``."""

    def __init__(self, cfg: FrameConfig | None = None, tuning: ReceiverTuning | None = None):
        self.cfg = FrameConfig() if cfg is None else cfg
        self.tuning = ReceiverTuning() if tuning is None else tuning
        cfg, tuning = self.cfg, self.tuning
        template = shape(preamble_segment(), cfg)
        self._tables = _Tables(
            template=np.conj(template[::-1]).astype(np.complex64),
            template_energy=float(np.sum(np.abs(template) ** 2)),
            template_fft=scipy.fft.fft(np.conj(template[::-1]), self._corr_fft(template.size)),
            segment_period=SEGMENT_LENGTH * cfg.sps,
            preamble_samples=PREAMBLE_LENGTH * cfg.sps,
            pulse=_readonly(tx_taps(cfg).astype(np.float32)),
            segment_re=_readonly(np.conj(preamble_segment()).real.astype(np.float32)),
            segment_im=_readonly(np.conj(preamble_segment()).imag.astype(np.float32)),
        )
        # Samples needed after a lag to compute its metric.
        self._metric_reach = max(
            (SEGMENTS - 1) * self._tables.segment_period + template.size,
            self._tables.preamble_samples,
        )
        # The metric's normalisation: energy of the samples used, times that of the
        # template and the number of products (float32, as numpy applies it).
        self._metric_scale = np.float32(
            (SEGMENTS - 1)
            * self._tables.template_energy
            * (self._tables.segment_period / self._metric_reach)
        )
        # At low SNR the metric's peak and the noise's spread both scale as 1/sps.
        self._threshold = tuning.detection_threshold * 2.0 / cfg.sps
        self._max_sro = tuning.max_sample_rate_offset_ppm * 1e-6
        # Samples kept before the search point, for timing adjustments and for
        # a frame's start moved by a clock offset.
        self._margin = 4 * cfg.sps + _DRIFT_EXTRA_MAX
        forms = {v: _header_form(v, cfg) for v in _HEADER_VERSIONS}
        first = forms.pop(cfg.header_version)
        self._header_forms = (first, *forms.values())  # the order they are tried in
        # Samples waited for before the header is decoded: enough for the longest.
        self._header_span = max(form.span for form in self._header_forms)
        # Tables built now rather than during the first frames.
        pilot_symbols(1)
        self._segment_filters = _segment_filter_table(cfg)
        self._rx_taps = rx_taps_table(cfg)
        self._conv_scrambler = header_scrambler(hdr.CONV_SYMBOLS)
        # Samples of the preamble's segment windows that the fine timing reads.
        self._fine_reach = (SEGMENTS - 1) * self._tables.segment_period + (
            (SEGMENT_LENGTH - 1) * cfg.sps + cfg.num_taps
        )
        # Cover-code differences, signs of the detection sum's terms.
        self._signs = np.ascontiguousarray(BARKER_7[: SEGMENTS - 1], dtype=np.float32)
        # Read for every frame (the config's num_taps is a property computed each time).
        self._sps = cfg.sps
        self._num_taps = cfg.num_taps
        # The header kernel's outputs that do not outlive a header's decoding: made once.
        self._header_out = (
            np.empty(1),  # timing
            np.empty(PREAMBLE_LENGTH + self._header_span, dtype=np.complex64),  # y
            np.empty(5),  # fit
            np.empty(hdr.HEADER_BITS + hdr.CONV_TAIL, dtype=np.uint8),  # bits
            np.empty(hdr.HEADER_BITS // 8, dtype=np.uint8),  # packed
        )
        _fast.load()  # compiled kernels, where numba is installed
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)
        self.reset()

    def reset(self) -> None:
        """Forget buffered samples and any burst in progress (counters are kept)."""
        # The buffer starts with a few zeros before sample 0 so that a burst at
        # the very start of the stream can be timed like any other.
        self._samples_store = _Growable(np.complex64)
        self._samples_store.append(np.zeros(self._margin, dtype=np.complex64))
        self._buf_start = -self._margin
        self._metric_store = _Growable(np.float32)
        self._dsum_store = _Growable(np.complex64)
        self._energy_work = np.empty(0, dtype=np.float32)
        self._peak_out = np.empty(4)
        self._metric_start = self._buf_start  # absolute lag of _metric[0]
        self._search = 0  # absolute lag where the search for preambles continues
        self._pending: _Candidate | None = None
        self._scale = 1.0  # buffered samples = samples fed * _scale (a power of two)
        self._resume: int | None = None  # where a damaged frame wants the search to go on
        # Last sample of the latest burst found to have another one over it: a burst
        # starting before it has its start under that one.
        self._collided_until: float | None = None

    # ------------------------------------------------------------------ public

    def feed(self, samples, dc: DcRemover | None = None) -> list[ReceivedFrame]:
        """Take more samples; return the frames they complete. Never raises on bad input.

        ``dc``: a DC remover (``radio.frontend``) the samples pass first, its output
        written straight into the receiver's buffer (the same samples as
        ``feed(dc.process(samples))``, one copy of the chunk fewer)."""
        try:
            x = np.asarray(samples).reshape(-1)
            if x.dtype.kind not in "biufc":
                raise TypeError(f"samples of dtype {x.dtype}")
            x = x.astype(np.complex64, copy=False)
        except (TypeError, ValueError) as exc:
            self.stats["invalid_input"] += 1
            log.warning("BurstReceiver.feed: input dropped: %s", exc)
            return []
        x = np.ascontiguousarray(x)
        held = self._samples_store.size  # buffered before this chunk
        if dc is not None:
            # Into the buffer's end, where the chunk goes: levelled there in place.
            x = dc.process(x, out=self._samples_store.grow(x.size))
        # The largest and smallest parts are NaN or infinite if any sample is: two
        # cheap passes that the level needs anyway, the per-sample check only then.
        top, bottom = self._range(x)
        if not (math.isfinite(top) and math.isfinite(bottom)):
            bad = ~np.isfinite(x)
            self.stats["nonfinite_samples"] += int(bad.sum())
            if dc is not None:
                x[bad] = 0
            else:
                x = np.where(bad, 0, x).astype(np.complex64)
            top, bottom = self._range(x)
        self.stats["samples_in"] += x.size
        x = self._level(x, top, bottom, held, in_place=dc is not None)
        if dc is None:
            self._samples_store.append(x)
        # Tiny chunks are gathered first: every pass has a fixed cost, and
        # waiting for _MIN_BATCH samples delays nothing by more than that.
        metric_end = self._metric_start + self._metric.size
        if self._buf_end - self._metric_reach + 1 - metric_end < _MIN_BATCH:
            return []
        frames: list[ReceivedFrame] = []
        try:
            self._update_metric()
            while True:
                progressed, frame = self._step()
                if frame is not None:
                    frames.append(frame)
                if not progressed:
                    break
        except Exception:  # a bug must not stop a flowgraph: count it, drop the burst, go on
            self.stats["internal_errors"] += 1
            log.exception("BurstReceiver: internal error, burst dropped")
            if self._pending is not None:
                self._drop_pending()
        self._trim()
        return frames

    def flush(self) -> list[ReceivedFrame]:
        """End of stream: pad with silence so that every burst that arrived completes.

        Samples fed afterwards continue the stream after that silence.
        """
        end = self._buf_end
        frames: list[ReceivedFrame] = []
        # Each round completes at least one stage of the burst in progress.
        for _ in range(4):
            if self._pending is None and self._search >= end:
                break
            pad = 2 * self._metric_reach + self._tables.preamble_samples + self._frame_samples_max()
            pad = max(pad, _MIN_BATCH)
            frames += self.feed(np.zeros(pad, dtype=np.complex64))
        return frames

    # --------------------------------------------------------------- internals

    @staticmethod
    def _range(x: np.ndarray) -> tuple[float, float]:
        """Largest and smallest real or imaginary part of the samples (0, 0 for none)."""
        if x.size == 0:
            return 0.0, 0.0
        v = x.view(np.float32)
        return float(v.max()), float(v.min())

    def _level(
        self, x: np.ndarray, top: float, bottom: float, held: int, in_place: bool = False
    ) -> np.ndarray:
        """``x`` at the buffer's scale, which follows the signal's level by powers of
        two (exact) so that a burst at 1e18 or 1e-20 is received like one at 1.
        ``top``, ``bottom``: its largest and smallest parts; ``held``: the samples
        buffered before it; ``in_place``: ``x`` is the buffer's end, scaled there."""
        if x.size == 0:
            return x
        peak = max(top, -bottom) * self._scale
        lo, hi = 2.0**-_LEVEL_RANGE, 2.0**_LEVEL_RANGE
        if peak > hi or 0.0 < peak < lo:
            earlier = self._samples_store.view[:held]
            if peak < lo:  # louder samples still buffered must not overflow
                buffered = earlier.view(np.float32)
                if buffered.size:
                    peak = max(peak, float(buffered.max()), -float(buffered.min()))
            factor = 2.0 ** -round(math.log2(peak))
            if factor != 1.0 and (peak > hi or peak * factor <= hi):
                earlier *= np.float32(factor)
                self._scale *= factor
                self.stats["rescaled"] += 1
        if self._scale != 1.0:
            if in_place:
                x *= np.float32(self._scale)
            else:
                x = x * np.float32(self._scale)
        return x

    @property
    def _buf(self) -> np.ndarray:
        return self._samples_store.view

    @property
    def _metric(self) -> np.ndarray:
        return self._metric_store.view

    @property
    def _dsum(self) -> np.ndarray:
        return self._dsum_store.view

    @property
    def _buf_end(self) -> int:
        return self._buf_start + self._samples_store.size

    def _frame_samples_max(self) -> int:
        p = self._pending
        if p is None or p.header is None:
            return (PREAMBLE_LENGTH + self._header_span) * self._sps + self._num_taps
        count = PREAMBLE_LENGTH + p.body_len
        return count * self._sps + self._num_taps + self._drift_extra(count)

    def _update_metric(self) -> None:
        """Extend the detection metric to every lag whose samples have arrived."""
        while True:
            metric_end = self._metric_start + self._metric_store.size
            new_end = self._buf_end - self._metric_reach + 1
            if new_end <= metric_end:
                return
            # In pieces, so that one huge input does not need huge temporaries.
            self._extend_metric(metric_end, min(new_end, metric_end + _METRIC_PIECE))

    def _extend_metric(self, metric_end: int, new_end: int) -> None:
        t = self._tables
        lo = metric_end - self._buf_start
        hi = new_end - self._buf_start
        D = t.segment_period
        seg = self._buf[lo : hi - 1 + self._metric_reach]
        n = hi - lo
        reach = self._metric_reach
        if _fast.AVAILABLE:
            # Written in place at the stores' ends (their copies cost a tenth of the
            # kernel); the energy into a work array kept between calls.
            if self._energy_work.size < n:
                self._energy_work = np.empty(max(n, 1 << 15), dtype=np.float32)
            energy = self._energy_work[:n]
            flat = np.ascontiguousarray(seg).view(np.float32)
            metric = self._metric_store.grow(n)
            dsum = self._dsum_store.grow(n)
            top, low = _fast.detection(
                flat,
                n,
                D,
                self._signs,
                reach,
                self._metric_scale,
                t.pulse,
                t.segment_re,
                t.segment_im,
                self.cfg.sps,
                dsum,
                energy,
                metric,
            )
            if 1e-7 * top > low:  # a floor is needed (see _normalise_metric)
                metric[...] = self._floored_metric(dsum, energy)
            return
        else:
            corr = self._correlate(seg)  # corr[n] at lag lo + n
            dsum, energy = self._detection_sums(seg, corr, n)
        self._normalise_metric(dsum, energy)

    def _detection_sums(self, seg: np.ndarray, corr: np.ndarray, n: int):
        """numpy twin of ``_fast.detection``'s sums and energies."""
        K, D = SEGMENTS, self._tables.segment_period
        # Products of correlations one segment apart, then their signed sum.
        prod = corr[D : (K - 1) * D + n] * np.conj(corr[: (K - 2) * D + n])
        dsum = prod[:n].copy()  # BARKER_7[0] == 1
        for k in range(1, K - 1):
            if BARKER_7[k] > 0:
                dsum += prod[k * D : k * D + n]
            else:
                dsum -= prod[k * D : k * D + n]
        # Energy of every sample the correlations touched, so that a lag whose
        # correlations reach into a burst cannot be divided by silence alone.
        # A running mean (scipy.ndimage accumulates in double precision) costs a third
        # of a float64 cumsum and its differences.
        reach = self._metric_reach
        squares = np.square(seg.view(np.float32))
        power = squares[0::2] + squares[1::2]
        energy = ndimage.uniform_filter1d(power, reach, mode="constant")[reach // 2 :][:n]
        energy *= reach
        return dsum, energy

    def _normalise_metric(self, dsum: np.ndarray, energy: np.ndarray) -> None:
        """Metric = |dsum| / energy (floored), appended with dsum to the stores."""
        self._metric_store.append(self._floored_metric(dsum, energy))
        self._dsum_store.append(dsum)

    def _floored_metric(self, dsum: np.ndarray, energy: np.ndarray) -> np.ndarray:
        """|dsum| / energy, the energy floored (changed in place)."""
        t = self._tables
        reach = self._metric_reach
        # The FFT leaves rounding noise where the input is silent; without a
        # floor relative to the loud samples nearby, silence next to a burst
        # would look like a perfect match. Rounding noise reaches no further than
        # one FFT block (plus the metric's reach): a quiet burst beyond that from
        # a loud one keeps its own level (a floor over the whole chunk hid it).
        top = float(energy.max(initial=0.0))
        if 1e-7 * top > float(energy.min(initial=top)):
            near = 2 * (t.template_fft.size + reach) + 1
            floor = ndimage.maximum_filter1d(energy, near, mode="nearest")
            floor *= 1e-7
            np.maximum(energy, floor, out=energy)
        np.maximum(energy, 1e-30, out=energy)
        energy *= self._metric_scale
        metric = np.abs(dsum)
        metric /= energy
        return metric

    @staticmethod
    def _corr_fft(taps: int) -> int:
        return max(_CORR_FFT, 1 << int(math.ceil(math.log2(4 * taps))))

    def _correlate(self, seg: np.ndarray) -> np.ndarray:
        """Valid part of the convolution of ``seg`` with the reversed, conjugated
        template (its correlation with the template), by overlap-save with the
        template's FFT computed once (scipy's oaconvolve redoes it on every call)."""
        t = self._tables
        taps = t.template.size
        size = t.template_fft.size
        step = size - taps + 1
        count = seg.size - taps + 1
        blocks = -(-count // step)
        padded = np.empty((blocks - 1) * step + size, dtype=np.complex64)
        padded[: seg.size] = seg
        padded[seg.size :] = 0
        item = padded.strides[0]
        frames = np.lib.stride_tricks.as_strided(padded, (blocks, size), (step * item, item))
        spectra = scipy.fft.fft(frames, axis=1)
        spectra *= t.template_fft
        out = scipy.fft.ifft(spectra, axis=1, overwrite_x=True)[:, taps - 1 :]
        return out.reshape(-1)[:count]

    def _metric_at(self, lo: int, hi: int) -> np.ndarray:
        return self._metric[lo - self._metric_start : hi - self._metric_start]

    def _step(self) -> tuple[bool, ReceivedFrame | None]:
        cfg, t = self.cfg, self._tables
        metric_end = self._metric_start + self._metric_store.size
        if self._pending is None:
            # The peak follows the first crossing by at most the preamble's length
            # (earlier crossings are cover-code sidelobes of partial overlaps).
            window = self._metric_reach + t.preamble_samples + 1
            found = self._find_peak(self._metric_at(self._search, metric_end), window)
            if found is None:
                self._search = max(self._search, metric_end)
                return False, None
            hit, i, frac, top = found
            first = self._search + hit
            if i is None:  # the window has not all arrived
                self._search = first
                return False, None
            peak = first + i
            dsum = complex(self._dsum[peak - self._metric_start])
            cfo = cmath.phase(dsum) / (2 * math.pi * t.segment_period)
            self.stats["bursts_detected"] += 1
            self._pending = _Candidate(start=peak + frac, cfo=cfo, peak_metric=top)
            return True, None
        p = self._pending
        need = int(p.start) + self._frame_samples_max() + self._margin
        if p.header is None:
            if need > self._buf_end:
                return False, None
            self._decode_header(p)
            return True, None
        body_end_lag = int(p.start) + (PREAMBLE_LENGTH + p.body_len) * cfg.sps
        if need > self._buf_end or body_end_lag > metric_end:
            return False, None
        # Another preamble inside this frame's span means this burst was cut short.
        # It must look like a burst of comparable strength: payload data alone
        # can reach the detection threshold at high SNR.
        inside = self._metric_at(int(p.start) + t.preamble_samples, body_end_lag)
        bar = max(self._threshold, 0.5 * p.peak_metric)
        hit = _first_above(inside, bar)
        other = None
        if hit >= 0:
            # Decoded up to where the other burst begins; the search resumes there.
            other = (t.preamble_samples + hit) / cfg.sps
            self._search = int(p.start) + t.preamble_samples + hit
        else:
            self._search = body_end_lag
        self._resume = None
        self._symbols_finite = False  # unless the compiled stage's sum says so
        frame = self._decode_payload(p, other)
        if self._resume is not None:
            # Another burst lies over this one without a preamble seen inside:
            # search again from where it began.
            self._search = min(self._search, self._resume)
        self._pending = None
        if frame is None:
            return True, None
        # A sum is finite when every term is (the exact test only when it is not);
        # the compiled payload stage sums the symbols it delivers as it makes them.
        symbols = frame.symbols
        finite = (
            self._symbols_finite or np.isfinite(np.sum(symbols)) or np.all(np.isfinite(symbols))
        )
        if not (finite and math.isfinite(frame.snr_db)):
            # Only a degenerate channel estimate (h = 0) gets here; never deliver NaN.
            self.stats["estimate_failed"] += 1
            return True, None
        self.stats["frames_ok" if frame.complete else "frames_partial"] += 1
        return True, frame

    def _find_peak(self, metric: np.ndarray, window: int):
        """The first lag of ``metric`` above the threshold and the peak in the
        ``window`` lags from it: (first, offset of the peak from it, fraction of a
        lag by a parabola, peak value); offset None when the window has not all
        arrived; None when nothing crosses."""
        bar32 = np.float32(self._threshold)  # the comparison numpy makes with float32
        if _fast.AVAILABLE and metric.dtype == np.float32:
            out = self._peak_out
            hit = int(_fast.burst_peak(metric, bar32, window, out))
            if hit < 0:
                return None
            if not out[0]:
                return hit, None, 0.0, 0.0
            return hit, int(out[1]), float(out[2]), float(out[3])
        hit = _first_above(metric, self._threshold)
        if hit < 0:
            return None
        if hit + window > metric.size:
            return hit, None, 0.0, 0.0
        values = metric[hit : hit + window]
        i = int(np.argmax(values))
        frac = 0.0
        if 0 < i < values.size - 1:
            a, b, c = (float(v) for v in values[i - 1 : i + 2])
            denom = a - 2 * b + c
            if denom < 0:
                frac = min(max(0.5 * (a - c) / denom, -0.5), 0.5)
        return hit, i, frac, float(values[i])

    def _samples(
        self, start: float, count: int, cfo: float, extra: int = 0
    ) -> tuple[np.ndarray, int]:
        """Buffer slice covering ``count`` symbols of a burst from ``start`` (and
        ``extra`` samples on each side), frequency corrected.

        Returns the slice and the absolute sample index of its first sample.
        """
        first = math.floor(start)
        base = first - 1 - extra
        stop = first + 1 + (count - 1) * self._sps + self._num_taps + extra
        seg = self._buf[base - self._buf_start : stop - self._buf_start]
        if _fast.AVAILABLE:
            out = np.empty(seg.size, dtype=np.complex64)
            _fast.mix(seg, -cfo, out)
            return out, base
        return seg * phasor(-cfo, seg.size), base

    def _fine_timing(self, p: _Candidate) -> None:
        """Fractional burst start that maximises the preamble's matched-filter energy."""
        cfg = self.cfg
        seg, origin = self._samples(p.start - 2.0, PREAMBLE_LENGTH + 4 * cfg.sps, p.cfo)
        width = (SEGMENT_LENGTH - 1) * cfg.sps + cfg.num_taps
        reach = (SEGMENTS - 1) * self._tables.segment_period + width
        table = self._segment_filters

        def energies(start: float, step: float) -> tuple[float, float, float]:
            # Sum over segments of |matched filter . preamble segment|^2, each as one
            # dot product of the samples with the filter convolved with the segment
            # (the cover signs drop out of the magnitude): 8 windows instead of 128,
            # the three delays in one product.
            pos = start - origin + np.array([-step, 0.0, step])
            bases = np.floor(pos).astype(np.int64)
            lo = int(bases[0])
            span = width + int(bases[2]) - lo
            if lo < 0 or lo + reach + span - width > seg.size:
                raise FrameError(f"fine timing left its samples (offset {start - origin:.2f})")
            if _fast.AVAILABLE:
                rows = np.round((pos - bases) * FRACTION_STEPS).astype(np.int64)
                e = np.empty(3)
                _fast.segment_energies(
                    seg, bases, rows, table, SEGMENTS, self._tables.segment_period, e
                )
                return float(e[0]), float(e[1]), float(e[2])
            filters = np.zeros((3, span), dtype=np.complex64)
            for j in range(3):
                k = int(bases[j]) - lo
                filters[j, k : k + width] = table[round(float(pos[j] - bases[j]) * FRACTION_STEPS)]
            windows = pulse_windows(seg, lo, SEGMENTS, span, self._tables.segment_period)
            v = np.einsum("ij,kj->ki", windows, filters)
            e = np.einsum("ki,ki->k", v.real, v.real) + np.einsum("ki,ki->k", v.imag, v.imag)
            return float(e[0]), float(e[1]), float(e[2])

        # The coarse start (a parabola through the detection metric at 2 samples
        # per symbol) can be half a sample off; shrinking parabolic steps, each
        # allowed to move a little beyond its points, reach a hundredth of a sample.
        if _fast.AVAILABLE:
            out = np.empty(1)
            inside = _fast.fine_timing(
                seg,
                p.start - origin,
                table,
                FRACTION_STEPS,
                SEGMENTS,
                self._tables.segment_period,
                reach,
                _FINE_STEPS,
                out,
            )
            if not inside:
                raise FrameError(f"fine timing left its samples (offset {float(out[0]):.2f})")
            p.start = origin + float(out[0])
            return
        start = p.start
        for step in _FINE_STEPS:
            a, b, c = energies(start, step)
            denom = a - 2 * b + c
            if denom < 0:
                start += step * min(max(0.5 * (a - c) / denom, -1.5), 1.5)
            else:  # not concave here: move towards the larger side
                start += step * float(np.sign(c - a))
        p.start = start

    def _decode_header(self, p: _Candidate) -> None:
        cfg = self.cfg
        count = PREAMBLE_LENGTH + self._header_span
        # The coarse estimate from the preamble errs by < 0.002 cycles/symbol at -5 dB.
        halfwidth = min(0.004, self.tuning.max_cfo)
        header = None
        forms = self._header_forms
        y, header, est = self._header_compiled(p, count, halfwidth)
        if header is not None:
            p.header_span = forms[0].span
        elif y is None:
            self._fine_timing(p)
            seg, origin = self._samples(p.start, count, p.cfo)
            y = matched_filter(seg, p.start - origin, count, cfg)
        for i, form in enumerate(() if header is not None else forms):
            # The estimate from the known symbols up to this version's last header
            # symbol (a short frame of version 2 may end before version 1's); each
            # estimate also gives the versions tried before another chance.
            t = form.known_times
            est = estimate_channel_at(y, t, form.known_values, 0.0, halfwidth)
            for other in (form, *forms[:i]):
                header = hdr.decode_version(_header_soft(y, other.data_times, est), other.version)
                if header is not None:
                    p.header_span = other.span
                    if other is not forms[0]:
                        self._header_forms = (other, *(f for f in forms if f is not other))
                    break
            if header is not None:
                break
        if header is None:
            self.stats["header_crc_fail"] += 1
            self._drop_pending()
            return
        try:
            start, stop = _payload_slice(
                header.rate_code,
                header.image_shape,
                header.frame_count,
                header.frame_index,
                self.tuning.max_image_symbols,
            )
            # No transmitter puts more in a frame: refused rather than waited for.
            if stop - start > MAX_PAYLOAD_SYMBOLS:
                raise FrameError(f"{stop - start} symbols in one frame")
        except DiffJSCCError as exc:
            log.info("BurstReceiver: header with valid CRC refused: %s", exc)
            self.stats["header_invalid"] += 1
            self._drop_pending()
            return
        p.header = header
        p.header_est = est
        p.payload_len = stop - start
        p.body_len = body_layout(hdr.header_symbols(header.version) + p.payload_len, cfg).length

    def _header_compiled(self, p: _Candidate, count: int, halfwidth: float):
        """``_fast.header_path`` for a first-tried convolutional header: (y, header,
        estimate), the header None when its CRC or version failed (the general
        loop goes on from ``y``, with the start fine-timed), all three None where
        the kernels are not in use or the general path must run from the start."""
        form = self._header_forms[0]
        if not (_fast.AVAILABLE and form.version == hdr.VERSION_CONV):
            return None, None, None
        cfg, t = self.cfg, self._tables
        timing, y, fit, bits, packed = self._header_out
        if y.size != count:
            y = np.empty(count, dtype=np.complex64)
        encoded = np.empty(hdr.CONV_SYMBOLS, dtype=np.float32)  # kept by the candidate
        outcome = _fast.header_path(
            self._buf,
            self._buf_start,
            p.start,
            p.cfo,
            cfg.sps,
            cfg.num_taps,
            PREAMBLE_LENGTH + 4 * cfg.sps,
            self._segment_filters,
            FRACTION_STEPS,
            SEGMENTS,
            t.segment_period,
            self._fine_reach,
            _FINE_STEPS,
            self._rx_taps,
            count,
            form.known_times,
            form.known_values,
            form.data_times,
            halfwidth,
            self._conv_scrambler,
            hdr._PREV,
            hdr._SIGNS,
            hdr.CONV_K - 2,
            timing,
            y,
            fit,
            bits,
            packed,
            hdr._CONV_GENERATOR_ARRAY,
            encoded,
        )
        if outcome != _fast.HEADER_DECODED:
            return None, None, None
        p.start = float(timing[0])
        free_params = 3 if halfwidth > 0.0 else 2  # Re h, Im h (, f)
        t_known = form.known_times.size
        h_re, h_im, freq, t_ref, energy = fit.tolist()  # floats: cheaper arithmetic after
        est = _estimate(complex(h_re, h_im), freq, t_ref, energy, t_known, free_params)
        header = hdr.unpack_bytes(packed.tobytes(), hdr.VERSION_CONV)
        if header is not None:  # the code of these bits is what was sent
            p.header_symbols = encoded
        return y, header, est

    def _drop_pending(self) -> None:
        """Give up the burst in progress; the search goes on after its preamble."""
        self._search = int(self._pending.start) + self._tables.preamble_samples
        self._pending = None

    def _drift_extra(self, count: int) -> int:
        """Samples a clock offset within the configured limit can move a frame's end."""
        return min(_DRIFT_EXTRA_MAX, math.ceil(count * self._sps * self._max_sro) + 1)

    def _decode_payload(self, p: _Candidate, other: float | None = None) -> ReceivedFrame | None:
        """The frame of a candidate whose samples have all arrived; None (counted)
        when too little of it is usable. ``other``: symbol (from the burst start)
        where another burst's preamble was found inside this one."""
        cfg = self.cfg
        header = p.header
        count = PREAMBLE_LENGTH + p.body_len
        extra = self._drift_extra(count)
        seg, origin = self._samples(p.start, count, p.cfo, extra)
        start = p.start - origin
        symbols_sent = p.header_symbols if header.version == hdr.VERSION_CONV else None
        known = frame_known(header, p.payload_len, cfg, symbols_sent)
        # Stage A's frequency error (std 5e-5 cycles/symbol at -5 to 0 dB) is a small
        # fraction of its main lobe (1/span): +-0.15/span is 4 standard deviations or more.
        halfwidth = 0.15 / (PREAMBLE_LENGTH + p.header_span)
        mask = None
        bad_after = None if other is None else max(int(other), 1)
        bad_before = None
        if self._collided_until is not None and p.start < self._collided_until:
            # Symbol k's matched filter reaches back to the pulse of symbol k - span,
            # which starts where this burst's sample k * sps is.
            bad_before = min(int(math.ceil((self._collided_until - p.start) / cfg.sps)), count)
        outcome, y, symbols, est, drift = self._payload_compiled(
            seg, start, count, known, p, halfwidth
        )
        if outcome in (None, _fast.PAYLOAD_OTHER):
            y = matched_filter(seg, start, count, cfg)
            drift = 0.0
            if self._max_sro > 0:
                drift = estimate_drift(seg, start, y, cfg, self._max_sro, p.header_est.snr)
                if drift:
                    y = matched_filter_drifting(seg, start, count, drift, cfg)
            symbols, est = equalise_frame(
                y, header, p.payload_len, cfg, p.header_est.freq, halfwidth, known, self.tuning
            )
        if outcome == _fast.PAYLOAD_DONE and bad_after is None and bad_before is None:
            damage = None  # the pre-check passed, as find_damage's would
        else:
            damage = find_damage(y, known, est, bad_after=bad_after, bad_before=bad_before)
        if damage is None and outcome in (_fast.PAYLOAD_DONE, _fast.PAYLOAD_DAMAGE):
            # The symbols delivered are the kernel's, summed as it made them.
            self._symbols_finite = self._kernel_symbols_finite
        if damage is not None and drift:
            # The clock offset was measured over noise or another burst as well:
            # measured again over the undamaged start of the frame (or left alone),
            # and the damage looked for again in the symbols taken with it.
            prefix = int(np.argmin(damage.usable))
            y = matched_filter(seg, start, count, cfg)
            drift = 0.0
            if prefix >= _MIN_DRIFT_SPAN:
                drift = estimate_drift(seg, start, y[:prefix], cfg, self._max_sro, p.header_est.snr)
            if drift:
                y = matched_filter_drifting(seg, start, count, drift, cfg)
            symbols, est = equalise_frame(
                y, header, p.payload_len, cfg, p.header_est.freq, halfwidth, known, self.tuning
            )
            damage = find_damage(y, known, est, bad_after=bad_after, bad_before=bad_before)
        if damage is not None and (damage.collided or other is not None):
            self._collided_until = p.start + (count - 1 + 2 * cfg.filter_span) * cfg.sps
        if damage is not None:
            if damage.collision_start is not None and other is None:
                back = (damage.collision_start - _RESUME_BACK) * cfg.sps
                self._resume = int(p.start) + max(back, self._tables.preamble_samples)
            self.stats["frames_truncated"] += int(damage.truncated)
            self.stats["frames_collided"] += int(damage.collided or other is not None)
            mask = damage.usable[known.payload_times]
            if np.count_nonzero(mask) < min(_MIN_USABLE, mask.size):
                self.stats["frames_unusable"] += 1
                return None
            symbols, est = equalise_frame(
                y,
                header,
                p.payload_len,
                cfg,
                p.header_est.freq,
                halfwidth,
                known,
                self.tuning,
                usable=damage.usable,
            )
            symbols[~mask] = 0
            if math.isfinite(damage.noise_var) and damage.noise_var > 0:
                # The usable stretches' own noise, weighted by their symbols: the
                # known symbols crowd the header, and a stretch may be noisier.
                signal = est.snr * est.noise_var
                est = dataclasses.replace(
                    est, noise_var=damage.noise_var, snr=signal / damage.noise_var
                )
        # h for the payload's middle symbol, in the training convention: without the
        # matched filter's gain (sqrt(sps) for a unit channel: the transmit pulse has
        # energy sps, the matched filter 1), and with the phase that the coarse frequency
        # correction took away at that symbol's sample, so that it is the phase of the
        # samples as received there rather than one relative to where this buffer began.
        # The receiver's own scaling of the samples (``_LEVEL_RANGE``) is taken out.
        centre = 0.5 * float(known.payload_times[0] + known.payload_times[-1])
        at = start + (cfg.filter_span + centre * (1.0 + drift)) * cfg.sps
        gain = complex(
            np.complex64(est.h * cmath.exp(2j * math.pi * est.freq * (centre - est.t_ref)))
        )
        h = gain * cmath.exp(2j * math.pi * p.cfo * at)
        scale = self._scale
        return ReceivedFrame(
            image_id=header.image_id,
            frame_index=header.frame_index,
            frame_count=header.frame_count,
            rate_code=header.rate_code,
            image_shape=header.image_shape,
            design_snr_db=header.design_snr_db,
            symbols=symbols,
            snr_db=est.snr_db,
            h=h / math.sqrt(cfg.sps) / scale,
            cfo=p.cfo + est.freq / cfg.sps,
            timing=float(p.start),
            noise_var=est.noise_var / cfg.sps / scale**2,
            num_known=est.num_known,
            sample_rate_offset=drift,
            h_sample=origin + at,
            received_mask=None if mask is None or mask.all() else mask,
        )

    def _payload_compiled(
        self,
        seg: np.ndarray,
        start: float,
        count: int,
        known: KnownSymbols,
        p: _Candidate,
        halfwidth: float,
    ):
        """``_fast.payload_path``: (outcome, y, symbols, estimate, clock offset), the
        last three None unless equalised; outcome None where the compiled kernels are
        not in use."""
        if not (_fast.AVAILABLE and seg.dtype == np.complex64 and known.order is not None):
            return None, None, None, None, None
        y = np.empty(count, dtype=np.complex64)
        symbols = np.empty(known.payload_times.size, dtype=np.complex64)
        fit = np.empty(8)
        outcome = _fast.payload_path(
            seg,
            start,
            count,
            self.cfg.sps,
            self._rx_taps,
            FRACTION_STEPS,
            p.header_est.snr if self._max_sro > 0 else 0.0,
            self._max_sro,
            _QUICK_BLOCKS,
            PREAMBLE_LENGTH,
            known.times,
            known.values,
            known.order,
            known.pilot_times,
            known.pilot_values,
            known.payload_times,
            p.header_est.freq,
            halfwidth,
            self.tuning.phase_track_window,
            _TRACKER_NOISE,
            _PRECHECK_BLOCKS,
            _PRECHECK_SPREADS,
            y,
            symbols,
            fit,
        )
        if outcome not in (_fast.PAYLOAD_DONE, _fast.PAYLOAD_DAMAGE):
            return outcome, y, None, None, None
        h_re, h_im, freq, t_ref, energy, _, total, drift = fit.tolist()
        self._kernel_symbols_finite = math.isfinite(total)
        free_params = 3 if halfwidth > 0.0 else 2  # Re h, Im h (, f)
        est = _estimate(complex(h_re, h_im), freq, t_ref, energy, known.times.size, free_params)
        return outcome, y, symbols, est, drift

    def _trim(self) -> None:
        keep_from = self._search if self._pending is None else int(self._pending.start)
        keep_from -= self._margin
        drop = keep_from - self._buf_start
        if drop > 0:
            self._samples_store.drop(drop)
            self._buf_start += drop
        mdrop = keep_from - self._metric_start
        if mdrop >= self._metric_store.size:
            self._metric_store.clear()
            self._dsum_store.clear()
            self._metric_start = keep_from
        elif mdrop > 0:
            self._metric_store.drop(mdrop)
            self._dsum_store.drop(mdrop)
            self._metric_start += mdrop
