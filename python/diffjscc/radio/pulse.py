"""Root raised cosine pulse shaping and matched filtering."""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import signal

from diffjscc.radio import _fast
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
    """Matched filter of unit energy, delayed by ``frac`` samples (0 <= frac <= 1).

    Evaluating the pulse at shifted times is how the receiver corrects a
    fractional timing offset: no interpolation of the samples is needed.
    """
    step = int(round(frac * FRACTION_STEPS))
    if not 0 <= step <= FRACTION_STEPS:
        raise ValueError(f"fractional delay {frac!r} outside [0, 1]")
    return rx_taps_table(cfg)[step]


@functools.lru_cache(maxsize=16)
def rx_taps_table(cfg: FrameConfig) -> np.ndarray:
    """``rx_taps`` of every delay step 0 .. FRACTION_STEPS (rows), computed at once:
    the receiver times every burst afresh, and per-delay computation on first use
    cost more than the filtering itself."""
    half = cfg.filter_span * cfg.sps
    steps = np.arange(FRACTION_STEPS + 1)[:, None] / FRACTION_STEPS
    times = (np.arange(cfg.num_taps)[None, :] - half - steps) / cfg.sps
    table = (
        rrc(times.reshape(-1), cfg.rolloff).reshape(times.shape) * _unit_energy_scale(cfg)
    ).astype(np.float32)
    table.flags.writeable = False
    return table


def shape(symbols: np.ndarray, cfg: FrameConfig) -> np.ndarray:
    """Upsample by ``sps`` and filter: the whole convolution, tails included.

    Symbol ``i`` peaks at sample ``filter_span * sps + i * sps``.
    """
    symbols = np.asarray(symbols, dtype=np.complex64)
    return signal.upfirdn(tx_taps(cfg), symbols, up=cfg.sps)[
        : (symbols.size - 1) * cfg.sps + cfg.num_taps
    ].astype(np.complex64)


def _windows(samples: np.ndarray, base: int, count: int, width: int, step: int) -> np.ndarray:
    """Read-only view of ``count`` windows of ``width`` samples, ``step`` apart, from ``base``.

    An ``ndarray`` over the samples' buffer where they are contiguous (about 1 us),
    ``as_strided`` otherwise (about 8 us: it goes through ``__array_interface__``;
    ``sliding_window_view`` costs several times more): the receiver makes
    thousands of these calls per second.
    """
    stop = base + (count - 1) * step + width
    if base < 0 or stop > samples.shape[0] or count < 1:
        raise ValueError(
            f"matched filter needs samples {base}..{stop}, has {samples.shape[0]} (count {count})"
        )
    item = samples.strides[0]
    if samples.flags.c_contiguous:
        view = np.ndarray(
            (count, width),
            samples.dtype,
            buffer=samples,
            offset=base * item,
            strides=(step * item, item),
        )
        view.flags.writeable = False
        return view
    return np.lib.stride_tricks.as_strided(
        samples[base:], (count, width), (step * item, item), writeable=False
    )


def _parts(samples: np.ndarray) -> tuple[np.ndarray, ...]:
    """Contiguous real (and imaginary) parts: real-valued taps on each part are
    dot products that numpy vectorises, a quarter faster than complex ones."""
    samples = np.asarray(samples)
    if np.iscomplexobj(samples):
        return np.ascontiguousarray(samples.real), np.ascontiguousarray(samples.imag)
    return (np.ascontiguousarray(samples),)


def _fast_input(samples: np.ndarray) -> np.ndarray | None:
    """The samples as one contiguous float32 array (complex: interleaved) when
    the compiled filter can take them, else None."""
    if not _fast.AVAILABLE or samples.dtype not in (np.complex64, np.float32):
        return None
    return np.ascontiguousarray(samples).view(np.float32)


def _filter_fast(flat, complex_input: bool, base, count, step, taps, out) -> None:
    if base < 0 or count < 1:
        raise ValueError(f"matched filter needs samples from {base} (count {count})")
    stop = base + (count - 1) * step + taps.size
    have = flat.size // 2 if complex_input else flat.size
    if stop > have:
        raise ValueError(f"matched filter needs samples {base}..{stop}, has {have} (count {count})")
    if complex_input:
        _fast.fir_complex(flat, base, count, step, taps, out)
    else:
        _fast.fir_real(flat, base, count, step, taps, out)


def _filter(parts, base: int, count: int, step: int, taps: np.ndarray, out: np.ndarray) -> None:
    # einsum, not a matrix product: BLAS would start a thread pool that spins on
    # every core, stealing the CPU that GNU Radio's other blocks need.
    targets = (out.real, out.imag) if len(parts) == 2 else (out,)
    for part, target in zip(parts, targets, strict=True):
        np.einsum("ij,j->i", _windows(part, base, count, taps.size, step), taps, out=target)


def _output(samples: np.ndarray, shape) -> np.ndarray:
    dtype = samples.dtype
    if dtype == np.complex64 or dtype == np.float32:  # the receiver's: no type promotion (3 us)
        return np.empty(shape, dtype=dtype)
    kind = np.complex64 if np.iscomplexobj(samples) else np.float32
    return np.empty(shape, dtype=np.result_type(dtype, kind))


def matched_filter(
    samples: np.ndarray, start: float, count: int, cfg: FrameConfig, stride: int = 1
) -> np.ndarray:
    """Matched-filter outputs of ``count`` symbols of a burst that starts at sample ``start``.

    ``start`` (float) is where the burst's first sample lies in ``samples``
    (symbol ``i`` peaks at ``start + filter_span * sps + i * sps``). The caller
    guarantees ``0 <= start`` and enough samples after. With ``stride`` > 1 only
    every stride-th symbol is computed.
    """
    base = math.floor(start)
    count = -(-count // stride)
    out = _output(samples, count)
    stop = base + (count - 1) * cfg.sps * stride + cfg.num_taps
    used = samples[max(base, 0) : stop]  # only the samples used
    taps = rx_taps(cfg, start - base)
    flat = _fast_input(used)
    if flat is not None:
        _filter_fast(flat, used.dtype.kind == "c", min(base, 0), count, cfg.sps * stride, taps, out)
    else:
        _filter(_parts(used), min(base, 0), count, cfg.sps * stride, taps, out)
    return out


def matched_filter_delays(
    samples: np.ndarray, start: float, count: int, delays, cfg: FrameConfig
) -> np.ndarray:
    """``matched_filter`` at several delays at once: shape (len(delays), count).

    Row ``j`` equals ``matched_filter(samples, start + delays[j], count, cfg)``.
    """
    positions = [start + delay for delay in delays]
    lo = math.floor(min(positions))
    stop = math.floor(max(positions)) + (count - 1) * cfg.sps + cfg.num_taps
    used = samples[max(lo, 0) : stop]  # only the samples used
    out = _output(samples, (len(positions), count))
    flat = _fast_input(used)
    parts = _parts(used) if flat is None else None
    for j, pos in enumerate(positions):
        base = math.floor(pos)
        taps = rx_taps(cfg, pos - base)
        if flat is not None:
            _filter_fast(
                flat, used.dtype.kind == "c", base - max(lo, 0), count, cfg.sps, taps, out[j]
            )
        else:
            _filter(parts, base - max(lo, 0), count, cfg.sps, taps, out[j])
    return out
