"""Compiled inner loops of the OFDM receiver (numba), with their numpy twins.

As ``radio._fast`` for the single carrier: numba is optional (the ``fast`` extra),
nothing is compiled or imported until ``load()`` (which ``OfdmReceiver`` calls),
and without numba, or with ``DIFFJSCC_NUMBA=0`` in the environment, ``AVAILABLE``
stays False and the numpy twin runs, which gives the same results to rounding
(``tests/test_radio_ofdm_fast.py``). Kernels are cached on disk (``cache=True``).

The sync metric is the receiver's cost on every sample (an idle stream is nothing
else): numpy makes a temporary per Barker term and per step of the lag sum; the
kernel runs through the correlations once.
"""

from __future__ import annotations

import logging
import os
import threading

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)

AVAILABLE = False  # the kernel below is compiled and in use
REASON = "not loaded yet"
_tried = False
_lock = threading.Lock()
_compiled = None


def sync_metric_numpy(corr, x, count, period, signs, lags, norm):
    """The sync metric's parts for ``count`` burst starts (see ``sync_metric``)."""
    prod = np.conj(corr[: corr.size - period]) * corr[period:]
    acc = np.zeros(count + lags, dtype=np.complex128)
    for j, b in enumerate(signs):
        seg = prod[j * period : j * period + count + lags]
        acc += seg if b > 0 else -seg
    single = np.abs(acc)
    total = np.concatenate([[0.0], np.cumsum(acc)])
    summed = total[lags : lags + count] - total[:count]
    span = signs.size * period + period + lags
    energy = ndimage.uniform_filter1d(
        (x.real.astype(np.float64) ** 2 + x.imag.astype(np.float64) ** 2),
        span,
        origin=-(span // 2),
    )[:count]
    return np.abs(summed) / (norm * np.maximum(energy, 1e-30)), summed, single


def _sync_metric(corr, x, count, period, signs, lags, norm, metric, summed, single):
    terms = signs.size
    reach = count + lags
    products = reach + (terms - 1) * period
    # Real and imaginary parts apart: loops the compiler can vectorise.
    pr = np.empty(products)
    pi = np.empty(products)
    for i in range(products):
        a, b = corr[i], corr[i + period]
        pr[i] = a.real * b.real + a.imag * b.imag  # conj(a) b
        pi[i] = a.real * b.imag - a.imag * b.real
    ar = np.zeros(reach)
    ai = np.zeros(reach)
    for j in range(terms):  # one signed, shifted copy of the products per term
        sign = signs[j]
        base = j * period
        for n in range(reach):
            ar[n] += sign * pr[base + n]
            ai[n] += sign * pi[base + n]
    for n in range(reach):
        single[n] = np.sqrt(ar[n] * ar[n] + ai[n] * ai[n])
    wr = 0.0  # summed[n] = acc[n] + ... + acc[n + lags - 1]
    wi = 0.0
    for i in range(lags):
        wr += ar[i]
        wi += ai[i]
    span = (terms + 1) * period + lags
    run = 0.0  # power over x[n : n + span]
    for i in range(span):
        run += float(x[i].real) ** 2 + float(x[i].imag) ** 2
    for n in range(count):
        summed[n] = complex(wr, wi)
        metric[n] = np.sqrt(wr * wr + wi * wi) / (norm * max(run / span, 1e-30))
        if n + lags < reach:
            wr += ar[n + lags]
            wi += ai[n + lags]
        wr -= ar[n]
        wi -= ai[n]
        if n + span < x.size:
            v, w = x[n + span], x[n]
            run += float(v.real) ** 2 + float(v.imag) ** 2 - float(w.real) ** 2 - float(w.imag) ** 2


def sync_metric(corr, x, count, period, signs, lags, norm):
    """For burst starts 0..count-1 of ``x``: the normalised metric |S| / (norm E), the
    lag sums S (complex: their angle is the frequency offset), and the magnitude of
    the single-lag sums (count + lags of them) that S adds up. ``corr`` holds the
    correlations with one sync block, ``signs`` the products' Barker signs, E the
    mean power over the ``(len(signs) + 1) * period + lags`` samples a start uses."""
    if not AVAILABLE:
        return sync_metric_numpy(corr, x, count, period, signs, lags, norm)
    metric = np.empty(count)
    summed = np.empty(count, dtype=np.complex128)
    single = np.empty(count + lags)
    _compiled(
        np.ascontiguousarray(corr, dtype=np.complex64),
        np.ascontiguousarray(x, dtype=np.complex64),
        int(count),
        int(period),
        np.ascontiguousarray(signs, dtype=np.float64),
        int(lags),
        float(norm),
        metric,
        summed,
        single,
    )
    return metric, summed, single


def load() -> bool:
    """Import numba and compile (or load from its cache) the kernel, once; returns
    ``AVAILABLE``. A missing or broken numba is logged once; numpy stays in use."""
    global AVAILABLE, REASON, _tried, _compiled
    with _lock:
        if _tried:
            return AVAILABLE
        _tried = True
        if os.environ.get("DIFFJSCC_NUMBA", "1") == "0":
            REASON = "DIFFJSCC_NUMBA=0"
            return False
        try:
            import numba

            _compiled = numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})(
                _sync_metric
            )
            corr = np.zeros(64, np.complex64)
            x = np.zeros(64, np.complex64)
            out = (np.empty(4), np.empty(4, np.complex128), np.empty(6))
            _compiled(corr, x, 4, 4, np.ones(3), 2, 1.0, *out)
        except Exception as exc:  # ImportError, or a numba that cannot compile here
            REASON = f"{type(exc).__name__}: {exc}"
            log.warning("diffjscc.radio: compiled OFDM kernel unavailable (%s); numpy", REASON)
            return False
        REASON = ""
        AVAILABLE = True
        return True
