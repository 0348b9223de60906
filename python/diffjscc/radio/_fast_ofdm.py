"""Compiled inner loops of the OFDM receiver (numba), with their numpy twins.

As ``radio._fast`` for the single carrier: numba is optional (the ``fast`` extra),
nothing is compiled or imported until ``load()`` (which ``OfdmReceiver`` calls),
and without numba, or with ``DIFFJSCC_NUMBA=0`` in the environment, ``AVAILABLE``
stays False and the numpy twin runs, which gives the same results to rounding
(``tests/test_radio_ofdm_fast.py``). Kernels are cached on disk (``cache=True``:
all of them, with the read-only argument types the receiver's caches pass, 15 s to
compile once at load 2-3; then 0.3 s to load, after numba's own import of 0.6-0.8 s,
on the 2-core VM).

The sync search is the receiver's cost on every sample (an idle stream is nothing
else): one kernel correlates with the 32-sample sync block directly (the overlap-save
FFTs cost more) and runs through the correlations once for the metric. The others are
a frame's steps, where numpy's cost is its calls (1-50 us each, a hundred and more a
frame) rather than the arithmetic. Each kernel is a module global that replaces its
Python source on ``load()``, so kernels call kernels: the pilot stage (guard noise
and pilots, residual phase step and rotation, the time smoother's choice by its
candidates' leave-one-out residuals, each comb row's smoothing, the channel's power,
the delay profile's kept points) is one call from a plan cached per layout and frame
length, the known symbols' smoothing (their estimates merged with the pilots in time,
weights, smoothing, power) another. Single kernels: the FFT windows' derotation, the
cyclic-prefix products, the known symbols' comb estimate, the interpolation to the
data subcarriers with its error (dense weights, the delay form, or the delay form
with its phasors cached per delay prior), the pilots' and the known symbols' excess,
the payload's gain and equalisation at its slots, a chunk's non-finite samples and
peak, and the phasor products of a new interpolator basis. A few have no twin here
(``slot_means``, ``equalise_slots``, ``known_comb``, ``inband_excess``,
``interpolate_phasors``, ``sync_search``, ``input_scan``): the receiver's numpy path
is their twin, tested against them.
"""

from __future__ import annotations

import cmath
import math

import numpy as np
from scipy import ndimage

from diffjscc.radio._numba import Kernel, KernelLoader

AVAILABLE = False  # the kernels below are compiled and in use
REASON = "not loaded yet"


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
    _sync_metric(
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


def _correlate(x, block, out):
    # out[n] = sum_i conj(block[i]) x[n + i]: tap by tap over contiguous real and
    # imaginary parts (vectorised along n), in float32 as the FFTs it replaces were
    # (float64 sums ran at half the speed; the two differ by 3e-7 of the peak).
    count = out.size
    taps = block.size
    xr = np.empty(count + taps - 1, dtype=np.float32)
    xi = np.empty(count + taps - 1, dtype=np.float32)
    for n in range(count + taps - 1):
        xr[n] = x[n].real
        xi[n] = x[n].imag
    cr = np.zeros(count, dtype=np.float32)
    ci = np.zeros(count, dtype=np.float32)
    for i in range(taps):
        br = np.float32(block[i].real)
        bi = np.float32(block[i].imag)
        for n in range(count):
            a = xr[n + i]
            b = xi[n + i]
            cr[n] += br * a + bi * b
            ci[n] += br * b - bi * a
    for n in range(count):
        out[n] = complex(cr[n], ci[n])


def _sync_direct(x, block, count, period, signs, lags, norm, metric, summed, single):
    corr = np.empty(count + lags + signs.size * period, dtype=np.complex64)
    _correlate(x, block, corr)
    _sync_metric(corr, x, count, period, signs, lags, norm, metric, summed, single)


def sync_search(x, block, count, period, signs, lags, norm):
    """``sync_metric`` with the correlations with the sync block ``block`` made here,
    directly (32 taps: cheaper than the overlap-save FFTs, whose two 2,048-point
    transforms cost 30-50 us for a short search window). Compiled only: the receiver's
    numpy path correlates by FFT and calls ``sync_metric``."""
    metric = np.empty(count)
    summed = np.empty(count, dtype=np.complex128)
    single = np.empty(count + lags)
    _sync_direct(
        x, block, int(count), int(period), signs, int(lags), float(norm), metric, summed, single
    )
    return metric, summed, single


def sync_peak_numpy(metric, single, threshold, length, lags):
    """``sync_peak`` in numpy."""
    above = np.flatnonzero(metric > threshold)
    if above.size == 0:
        return -1, -1, -1, -1
    first = int(above[0])
    if first + length > metric.size:
        return first, -1, -1, -1
    peak = first + int(np.argmax(metric[first : first + length]))
    early = max(0, peak - lags // 4)
    window = single[early : peak + lags]
    start = early + int(np.argmax(window >= 0.3 * float(window.max())))
    return first, peak, start, early + int(np.argmax(window))


def _sync_peak(metric, single, threshold, length, lags):
    first = -1
    for n in range(metric.size):
        if metric[n] > threshold:
            first = n
            break
    if first < 0 or first + length > metric.size:
        return first, -1, -1, -1
    peak = first
    for n in range(first + 1, first + length):
        if metric[n] > metric[peak]:
            peak = n
    early = max(0, peak - lags // 4)
    stop = min(peak + lags, single.size)
    strongest = early
    for n in range(early + 1, stop):
        if single[n] > single[strongest]:
            strongest = n
    bar = 0.3 * single[strongest]
    start = early
    while start < stop and not single[start] >= bar:
        start += 1
    if start == stop:  # none reaches it (NaN): np.argmax of no True is the first
        start = early
    return first, peak, start, strongest


def sync_peak(metric, single, threshold, length, lags):
    """Where the sync metric first exceeds ``threshold`` (-1: nowhere); when the
    ``length`` starts after it are all there, the highest metric among them, and among
    the single-lag sums from ``lags // 4`` before that peak to ``lags`` after it, the
    strongest and the first to reach 30 % of it (the first path): (first, peak,
    start, strongest), -1 for what is not found. Six numpy calls in the twin."""
    if not AVAILABLE:
        return sync_peak_numpy(metric, single, threshold, length, lags)
    out = _sync_peak(metric, single, float(threshold), int(length), int(lags))
    return tuple(int(v) for v in out)


def _scaled(y, scale, out):
    yf = y.reshape(-1)
    of = out.reshape(-1)
    for i in range(yf.size):
        v = yf[i]
        of[i] = complex(np.float64(v.real) * scale, np.float64(v.imag) * scale)


def scaled(y, scale):
    """complex64 ``y`` times a real ``scale`` as a new complex128 array: numpy's
    np.multiply(y, scale, dtype=complex128) to the bit, a quarter of its time (the FFT
    outputs of every frame)."""
    if not AVAILABLE or not y.flags.c_contiguous or y.dtype != np.complex64:
        return np.multiply(y, scale, dtype=np.complex128)
    out = np.empty(y.shape, dtype=np.complex128)
    _scaled(y, float(scale), out)
    return out


def _input_scan(x):
    bad = 0
    peak = np.float32(0.0)
    for v in x:
        a = v.real
        b = v.imag
        if math.isfinite(a) and math.isfinite(b):
            peak = max(peak, abs(a), abs(b))
        else:
            bad += 1
    return bad, peak


def input_scan(x):
    """(non-finite samples, largest |real| or |imag| of the finite ones) of a complex64
    chunk, in one pass (numpy: isfinite, count, max and min, four). Compiled only."""
    bad, peak = _input_scan(np.ascontiguousarray(x, dtype=np.complex64))
    return int(bad), float(peak)


def local_linear_numpy(t_obs, m, half, fit=True, weight=None):
    """The time smoother's weights (``ofdm_receiver._local_linear``), in numpy."""
    t_obs = np.asarray(t_obs, dtype=np.float64)
    w = np.ones(t_obs.size) if weight is None else np.asarray(weight, dtype=np.float64)
    t = t_obs[None, :] - np.arange(m, dtype=np.float64)[:, None]  # [m, n]
    inside = np.abs(t) <= half
    empty = ~inside.any(axis=1)
    if empty.any():
        inside[np.flatnonzero(empty), np.argmin(np.abs(t[empty]), axis=1)] = True
    wt = inside * w[None, :]
    s0, s1, s2 = wt.sum(axis=1), (wt * t).sum(axis=1), (wt * t * t).sum(axis=1)
    mean = wt / s0[:, None]
    det = s0 * s2 - s1 * s1
    # Two observations on either side: the line between them (a weighted mean would
    # hold a heavily weighted one, the decoded header's symbol, across a fading
    # channel's change; the line does not depend on the weights).
    count = inside.sum(axis=1)
    bracket = ((t < 0) & inside).any(axis=1) & ((t > 0) & inside).any(axis=1)
    line = fit & ((count >= 3) | ((count == 2) & bracket)) & (det > 1e-9 * s0 * s0)
    if not line.any():
        return mean
    safe = np.where(line, det, 1.0)
    fitted = wt * (s2[:, None] - s1[:, None] * t) / safe[:, None]
    return np.where(line[:, None], fitted, mean)


def _local_linear(t_obs, m, half, fit, w, out):
    # Row by row, the twin's sums in the twin's order (no fastmath: the same rounding).
    n = t_obs.size
    t = np.empty(n)
    inside = np.empty(n, dtype=np.bool_)
    for i in range(m):
        any_inside = False
        for j in range(n):
            t[j] = t_obs[j] - i
            inside[j] = abs(t[j]) <= half
            any_inside |= inside[j]
        if not any_inside:
            nearest = 0
            for j in range(1, n):
                if abs(t[j]) < abs(t[nearest]):
                    nearest = j
            inside[nearest] = True
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        count = 0
        before = False
        after = False
        for j in range(n):
            wt = w[j] if inside[j] else 0.0
            s0 += wt
            s1 += wt * t[j]
            s2 += wt * t[j] * t[j]
            if inside[j]:
                count += 1
                before |= t[j] < 0
                after |= t[j] > 0
        det = s0 * s2 - s1 * s1
        line = fit and (count >= 3 or (count == 2 and before and after)) and det > 1e-9 * s0 * s0
        for j in range(n):
            wt = w[j] if inside[j] else 0.0
            out[i, j] = wt * (s2 - s1 * t[j]) / det if line else wt / s0


def local_linear(t_obs, m, half, fit=True, weight=None):
    """[m, n] weights of a straight line (weighted least squares) through observations
    at times ``t_obs`` within ``half`` symbols of each of m symbols (see
    ``ofdm_receiver._local_linear``): 25 numpy calls on a few values each, per frame
    and comb row, where the kernel makes one."""
    if not AVAILABLE:
        return local_linear_numpy(t_obs, m, half, fit, weight)
    t_obs = np.ascontiguousarray(t_obs, dtype=np.float64)
    w = np.ones(t_obs.size) if weight is None else np.ascontiguousarray(weight, dtype=np.float64)
    out = np.empty((int(m), t_obs.size))
    _local_linear(t_obs, int(m), float(half), bool(fit), w, out)
    return out


def residual_step_numpy(hp, stagger):
    """The common phase advance per OFDM symbol (``ofdm_receiver._residual_step``), in numpy."""
    m = hp.shape[0]
    z = sum(np.vdot(hp[r:-stagger:stagger], hp[r + stagger :: stagger]) for r in range(stagger))
    if m <= stagger or z == 0:
        return 0.0
    step = cmath.phase(z) / stagger
    if m < 2 * stagger + 1:
        return step
    t = np.arange(m, dtype=np.float64)
    derot = hp * np.exp(-1j * step * t)[:, None]
    common = np.empty(m, dtype=np.complex128)
    tc = np.empty(m)
    for r in range(stagger):
        g = derot[r::stagger]
        common[r::stagger] = np.einsum("ip,p->i", g, np.conj(np.mean(g, axis=0)))
        w = np.abs(common[r::stagger])
        tr = t[r::stagger]
        tc[r::stagger] = tr - np.sum(w * tr) / max(float(np.sum(w)), 1e-30)
    phase = np.angle(common)  # each row's phases centre on 0: no unwrapping across rows
    weight = np.abs(common)
    return step + float(np.sum(weight * tc * phase) / max(np.sum(weight * tc * tc), 1e-30))


def _residual_step(hp, stagger):
    m, p = hp.shape
    z = 0j
    for r in range(stagger):
        for i in range(r, m - stagger, stagger):
            for q in range(p):
                z += np.conj(hp[i, q]) * hp[i + stagger, q]
    if m <= stagger or z == 0:
        return 0.0
    step = math.atan2(z.imag, z.real) / stagger
    if m < 2 * stagger + 1:
        return step
    derot = np.empty((m, p), dtype=np.complex128)
    for i in range(m):
        rot = np.exp(-1j * step * i)
        for q in range(p):
            derot[i, q] = hp[i, q] * rot
    common = np.empty(m, dtype=np.complex128)
    tc = np.empty(m)
    mean = np.empty(p, dtype=np.complex128)
    for r in range(stagger):
        n = len(range(r, m, stagger))
        for q in range(p):
            acc = 0j
            for i in range(r, m, stagger):
                acc += derot[i, q]
            mean[q] = acc / n
        sw = 0.0
        swt = 0.0
        for i in range(r, m, stagger):
            acc = 0j
            for q in range(p):
                acc += derot[i, q] * np.conj(mean[q])
            common[i] = acc
            sw += abs(acc)
            swt += abs(acc) * i
        centre = swt / max(sw, 1e-30)
        for i in range(r, m, stagger):
            tc[i] = i - centre
    num = 0.0
    den = 0.0
    for i in range(m):
        weight = abs(common[i])
        phase = math.atan2(common[i].imag, common[i].real)
        num += weight * tc[i] * phase
        den += weight * tc[i] * tc[i]
    return step + num / max(den, 1e-30)


def residual_step(hp, stagger):
    """Common phase advance per OFDM symbol (radians) that the pilots ``hp`` [symbols,
    pilots] show, ``stagger`` symbols apart (see ``ofdm_receiver._residual_step``):
    about 25 small numpy calls a frame in the twin."""
    if not AVAILABLE:
        return residual_step_numpy(hp, stagger)
    return float(_residual_step(np.ascontiguousarray(hp, dtype=np.complex128), int(stagger)))


def loo_totals_numpy(smoothers, keep, g):
    """Leave-one-out squared residuals of the time smoothers, in numpy (``loo_totals``)."""
    out = np.empty(smoothers.shape[0])
    for c in range(smoothers.shape[0]):
        resid = (g - np.einsum("ij,jp->ip", smoothers[c], g)) / keep[c][:, None]
        out[c] = float(np.sum(resid.real**2 + resid.imag**2))
    return out


def _loo_totals(smoothers, keep, g, out):
    n, p = g.shape
    for c in range(smoothers.shape[0]):
        total = 0.0
        for i in range(n):
            for q in range(p):
                acc = 0j
                for j in range(n):
                    acc += smoothers[c, i, j] * g[j, q]
                resid = (g[i, q] - acc) / keep[c, i]
                total += resid.real * resid.real + resid.imag * resid.imag
        out[c] = total


def loo_totals(smoothers, keep, g):
    """Per candidate time smoother c ([c, n, n], at the n symbols carrying one comb
    row's pilots ``g`` [n, pilots]): the sum of squared leave-one-out residuals
    (g - S g) / keep. Four candidates and two rows cost the twin 24 numpy calls."""
    if not AVAILABLE:
        return loo_totals_numpy(smoothers, keep, g)
    out = np.empty(smoothers.shape[0])
    _loo_totals(
        np.ascontiguousarray(smoothers, dtype=np.float64),
        np.ascontiguousarray(keep, dtype=np.float64),
        np.ascontiguousarray(g, dtype=np.complex128),
        out,
    )
    return out


def sync_slope_numpy(x, cfo, signs, block):
    """The phase slope across the sync's blocks (``sync_slope``), in numpy."""
    n = np.arange(x.size)
    x = x * np.exp(-2j * np.pi * cfo * n)
    blocks = x.reshape(signs.size, block.size) * signs[:, None]
    c = np.einsum("bn,n->b", blocks, np.conj(block))  # one correlation per block
    phase = unwrap_few(np.angle(c))
    w = np.abs(c) ** 2
    t = np.arange(signs.size, dtype=np.float64)
    tc = t - np.sum(w * t) / max(float(np.sum(w)), 1e-30)
    return float(np.sum(w * tc * phase) / max(float(np.sum(w * tc * tc)), 1e-30))


def unwrap_few(phase: np.ndarray) -> np.ndarray:
    """np.unwrap for a few values, in Python floats (np.unwrap's calls cost more)."""
    values = phase.tolist()
    out = [values[0]]
    correction = 0.0
    for prev, cur in zip(values[:-1], values[1:], strict=True):
        d = cur - prev
        d_mod = (d + math.pi) % (2.0 * math.pi) - math.pi
        if d_mod == -math.pi and d > 0:
            d_mod = math.pi
        if abs(d) >= math.pi:
            correction += d_mod - d
        out.append(cur + correction)
    return np.asarray(out)


def _sync_slope(x, cfo, signs, block):
    terms = signs.size
    period = block.size
    phase = np.empty(terms)
    w = np.empty(terms)
    correction = 0.0
    prev = 0.0
    for b in range(terms):
        acc = 0j
        for k in range(period):
            i = b * period + k
            acc += x[i] * np.exp(-2j * np.pi * cfo * i) * signs[b] * np.conj(block[k])
        w[b] = acc.real * acc.real + acc.imag * acc.imag
        cur = math.atan2(acc.imag, acc.real)
        if b > 0:
            d = cur - prev
            d_mod = (d + math.pi) % (2.0 * math.pi) - math.pi
            if d_mod == -math.pi and d > 0:
                d_mod = math.pi
            if abs(d) >= math.pi:
                correction += d_mod - d
        phase[b] = cur + correction
        prev = cur
    sw = 0.0
    swt = 0.0
    for b in range(terms):
        sw += w[b]
        swt += w[b] * b
    centre = swt / max(sw, 1e-30)
    num = 0.0
    den = 0.0
    for b in range(terms):
        tc = b - centre
        num += w[b] * tc * phase[b]
        den += w[b] * tc * tc
    return num / max(den, 1e-30)


def sync_slope(x, cfo, signs, block):
    """Phase advance (radians per block) of the sync's block correlations at ``x`` (the
    sync's samples, one block per sign of the cover ``signs``) after removing ``cfo``
    (cycles per sample): a line weighted by the correlations' power. Ten numpy calls
    and np.unwrap's in the twin."""
    if not AVAILABLE:
        return sync_slope_numpy(x, cfo, signs, block)
    return float(
        _sync_slope(
            np.ascontiguousarray(x, dtype=np.complex64),
            float(cfo),
            np.ascontiguousarray(signs, dtype=np.float64),
            np.ascontiguousarray(block, dtype=np.complex128),
        )
    )


def _product_bt(a, b, out):
    for i in range(a.shape[0]):
        for k in range(b.shape[0]):
            acc = 0j
            for p in range(a.shape[1]):
                acc += a[i, p] * b[k, p]
            out[i, k] = acc


def product_bt(a, b):
    """a @ b.T for complex matrices [m, p] and [k, p]: the channel estimate's
    interpolation products (30 pilots to 492 subcarriers over a frame's symbols cost
    numpy's einsum 0.3 ms; BLAS would spin its thread pool on every core)."""
    if not AVAILABLE:
        return np.einsum("mp,kp->mk", a, b)
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.complex128)
    _product_bt(
        np.ascontiguousarray(a, dtype=np.complex128),
        np.ascontiguousarray(b, dtype=np.complex128),
        out,
    )
    return out


def interpolate_numpy(hs, w, pick, mse, scale, power, half_drift):
    """The channel at the data subcarriers and its error (``interpolate``), in numpy."""
    used = np.einsum("mp,kp->mk", hs, w)
    h = np.take_along_axis(used, pick, axis=1)
    err = power * mse[pick] * scale[:, None] + half_drift
    return h, err


def _interpolate(hs, w, pick, mse, scale, power, half_drift, h, err):
    m, p = hs.shape
    for i in range(m):
        for j in range(pick.shape[1]):
            k = pick[i, j]
            acc = 0j
            for q in range(p):
                acc += hs[i, q] * w[k, q]
            h[i, j] = acc
            err[i, j] = power * mse[k] * scale[i] + half_drift


def interpolate(hs, w, pick, mse, scale, power, half_drift):
    """The Wiener interpolation of the comb estimates ``hs`` [m, comb] by ``w`` [used,
    comb] at each symbol's data subcarriers ``pick`` [m, data] (positions among the
    used), and their error power * mse[pick] * scale[i] + half_drift: one pass where
    numpy forms every used subcarrier, gathers, and makes four temporaries."""
    if not AVAILABLE:
        return interpolate_numpy(hs, w, pick, mse, scale, power, half_drift)
    h = np.empty(pick.shape, dtype=np.complex128)
    err = np.empty(pick.shape)
    _interpolate(
        np.ascontiguousarray(hs, dtype=np.complex128),
        np.ascontiguousarray(w, dtype=np.complex128),
        np.ascontiguousarray(pick, dtype=np.int64),
        np.ascontiguousarray(mse, dtype=np.float64),
        np.ascontiguousarray(scale, dtype=np.float64),
        float(power),
        float(half_drift),
        h,
        err,
    )
    return h, err


def interpolate_delays_numpy(hs, x, at, used_bins, pick, twiddle, mse, scale, power, half_drift):
    """``interpolate_delays`` in numpy."""
    response = np.einsum("mp,dp->md", hs, x)
    et = twiddle[np.outer(used_bins, at) % twiddle.size]  # [used, delays]
    used = np.einsum("md,kd->mk", response, et)
    h = np.take_along_axis(used, pick, axis=1)
    err = power * mse[pick] * scale[:, None] + half_drift
    return h, err


def _phasor_rows(bins, at, twiddle, er, ei):
    # E[d, k] = twiddle[bins_k at_d mod N], real and imaginary parts apart, [delays,
    # bins]: consecutive delays step each phase index by the bin (an add where a modulo
    # per entry cost most of the pass), and the products that use E run along its
    # contiguous rows (vectorised: a third of the time of a gather per product).
    n = twiddle.size
    for k in range(bins.size):
        f = bins[k]
        idx = (f * at[0]) % n
        er[0, k] = twiddle[idx].real
        ei[0, k] = twiddle[idx].imag
        for d in range(1, at.size):
            if at[d] == at[d - 1] + 1 or (at[d] == 0 and at[d - 1] == n - 1):
                idx += f
                if idx >= n:
                    idx -= n
            else:
                idx = (f * at[d]) % n
            er[d, k] = twiddle[idx].real
            ei[d, k] = twiddle[idx].imag


def phasor_rows(bins, at, twiddle):
    """E[d, k] = twiddle[bins_k at_d mod N] as its real and imaginary parts, [delays,
    bins] each (``interpolate_phasors``'s form). Compiled only."""
    return _phasors(bins, at, twiddle)


def interpolate_phasors(hs, x, er, ei, pick, mse, scale, power, half_drift):
    """``interpolate_delays`` with its phasors made beforehand (``phasor_rows``: cached
    per delay prior by the receiver). Compiled only; ``interpolate_delays`` is the twin."""
    h = np.empty(pick.shape, dtype=np.complex128)
    err = np.empty(pick.shape)
    _interpolate_delays(
        np.ascontiguousarray(hs, dtype=np.complex128),
        np.ascontiguousarray(x, dtype=np.complex128),
        er,
        ei,
        np.ascontiguousarray(pick, dtype=np.int64),
        np.ascontiguousarray(mse, dtype=np.float64),
        np.ascontiguousarray(scale, dtype=np.float64),
        float(power),
        float(half_drift),
        h,
        err,
    )
    return h, err


def _phasors(bins, at, twiddle):
    er = np.empty((at.size, bins.size))
    ei = np.empty((at.size, bins.size))
    _phasor_rows(
        np.ascontiguousarray(bins, dtype=np.int64),
        np.ascontiguousarray(at, dtype=np.int64),
        np.ascontiguousarray(twiddle, dtype=np.complex128),
        er,
        ei,
    )
    return er, ei


def _interpolate_delays(hs, x, er, ei, pick, mse, scale, power, half_drift, h, err):
    m, p = hs.shape
    count, used = er.shape
    hr = np.empty(used)
    hi = np.empty(used)
    for i in range(m):
        hr[:] = 0.0
        hi[:] = 0.0
        for d in range(count):
            acc = 0j
            for q in range(p):
                acc += hs[i, q] * x[d, q]
            a = acc.real
            b = acc.imag
            row_r = er[d]
            row_i = ei[d]
            for k in range(used):
                hr[k] += a * row_r[k] - b * row_i[k]
                hi[k] += a * row_i[k] + b * row_r[k]
        for j in range(pick.shape[1]):
            k = pick[i, j]
            h[i, j] = complex(hr[k], hi[k])
            err[i, j] = power * mse[k] * scale[i] + half_drift


def interpolate_delays(hs, x, at, used_bins, pick, twiddle, mse, scale, power, half_drift):
    """``interpolate`` with the interpolator in its delay form W = E_t X: the comb
    estimates' response at the prior's delays (X hs, X [delays, comb]), then its
    spectrum at each symbol's data subcarriers (E_t[k, d] = twiddle[bin_k at_d mod N];
    ``at``, ``used_bins``: the delays and the used subcarriers modulo N)."""
    if not AVAILABLE:
        return interpolate_delays_numpy(
            hs, x, at, used_bins, pick, twiddle, mse, scale, power, half_drift
        )
    er, ei = _phasors(used_bins, at, twiddle)
    return interpolate_phasors(hs, x, er, ei, pick, mse, scale, power, half_drift)


def phasor_product_numpy(bins, at, twiddle, v):
    """``phasor_product`` in numpy."""
    et = twiddle[np.outer(bins, at) % twiddle.size]
    out = np.einsum("kd,de->ke", et, v)
    return out, out.real**2 + out.imag**2


def _phasor_product(er, ei, vt, out, power):
    count, width = er.shape
    acc_r = np.empty(width)
    acc_i = np.empty(width)
    for e in range(vt.shape[0]):
        acc_r[:] = 0.0
        acc_i[:] = 0.0
        for d in range(count):
            a = vt[e, d].real
            b = vt[e, d].imag
            row_r = er[d]
            row_i = ei[d]
            for k in range(width):
                acc_r[k] += a * row_r[k] - b * row_i[k]
                acc_i[k] += a * row_i[k] + b * row_r[k]
        for k in range(width):
            out[k, e] = complex(acc_r[k], acc_i[k])
            power[k, e] = acc_r[k] * acc_r[k] + acc_i[k] * acc_i[k]


def phasor_product(bins, at, twiddle, v):
    """E V and |E V|^2 for the phasors E[k, d] = twiddle[bins_k at_d mod N] (``bins``,
    ``at``: subcarriers and delays modulo N) without forming E: an interpolator's
    basis on a new delay prior (``ofdm_receiver._eigen_basis``)."""
    if not AVAILABLE:
        return phasor_product_numpy(bins, at, twiddle, v)
    out = np.empty((bins.size, v.shape[1]), dtype=np.complex128)
    power = np.empty(out.shape)
    er, ei = _phasors(bins, at, twiddle)
    _phasor_product(
        er,
        ei,
        np.ascontiguousarray(v.T, dtype=np.complex128),
        out,
        power,
    )
    return out, power


def _slot_means(yd, h, err, slots):
    """Means over ``slots`` (flat indices) of |y|^2, |h|^2 and err."""
    yf, hf, ef = yd.reshape(-1), h.reshape(-1), err.reshape(-1)
    sy = 0.0
    sh = 0.0
    se = 0.0
    for s in slots:
        a, b = yf[s], hf[s]
        sy += a.real * a.real + a.imag * a.imag
        sh += b.real * b.real + b.imag * b.imag
        se += ef[s]
    n = max(slots.size, 1)
    return sy / n, sh / n, se / n


def _equalise_slots(yd, h, err, noise_var, gain, slots, mmse, symbols, var):
    # The mmse weights' mean gain over the whole grid, then the slots alone.
    hf, ef, yf = h.reshape(-1), err.reshape(-1), yd.reshape(-1)
    total = 0.0
    if mmse:
        for s in range(hf.size):
            b = hf[s] * gain
            p = b.real * b.real + b.imag * b.imag
            total += p / (p + noise_var + ef[s])
    mean_shrink = max(total / max(hf.size, 1), 1e-12)
    inv_mean = 1.0 / mean_shrink
    sh = 0.0
    hsum = 0j
    vsum = 0.0
    for j in range(slots.size):
        s = slots[j]
        b = hf[s] * gain
        p = b.real * b.real + b.imag * b.imag
        noise = noise_var + ef[s]
        sh += p
        hsum += b
        if mmse:
            # The twin's y conj(b) / (p + N) * (g / shrink) with two divisions, not five
            # (g / shrink is 1 / mean_shrink wherever shrink is not below its floor).
            inv = 1.0 / (p + noise)
            shrink = p * inv
            g = shrink * inv_mean
            scale = inv * inv_mean if shrink >= 1e-30 else inv * g * 1e30
            symbols[j] = yf[s] * np.conj(b) * scale
            var[j] = (g - 1.0) ** 2 + g * g * noise / max(p, 1e-30)
        else:
            symbols[j] = yf[s] / (b if p > 0 else 1.0)
            var[j] = noise / max(p, 1e-30)
        vsum += var[j]  # the float32 value handed on
    n = max(slots.size, 1)
    return sh / n, hsum / n, vsum / n


def slot_means(yd, h, err, slots):
    """(mean |yd|^2, mean |h|^2, mean err) over ``slots`` (flat indices into the [m,
    data] grids): the payload gain's three means in one pass. Compiled only."""
    return _slot_means(
        np.ascontiguousarray(yd, dtype=np.complex128),
        np.ascontiguousarray(h, dtype=np.complex128),
        np.ascontiguousarray(err, dtype=np.float64),
        np.ascontiguousarray(slots, dtype=np.int64),
    )


def equalise_slots(yd, h, err, noise_var, gain, slots, mmse):
    """The equalised symbols (complex64) and their error variances (float32) at
    ``slots`` of the [m, data] grids, for the channel ``h`` times ``gain`` (see
    ``ofdm_receiver.equalise``: mmse weights divided by their mean gain over the whole
    grid, or zero forcing), the mean |h|^2 and mean h over the slots, and the
    variances' mean. Compiled
    only: the receiver's numpy path is ``equalise`` on the whole grid."""
    symbols = np.empty(slots.size, dtype=np.complex64)
    var = np.empty(slots.size, dtype=np.float32)
    power, mean, var_mean = _equalise_slots(
        np.ascontiguousarray(yd, dtype=np.complex128),
        np.ascontiguousarray(h, dtype=np.complex128),
        np.ascontiguousarray(err, dtype=np.float64),
        float(noise_var),
        float(gain),
        np.ascontiguousarray(slots, dtype=np.int64),
        bool(mmse),
        symbols,
        var,
    )
    return symbols, var, float(power), complex(mean), float(var_mean)


def frame_pilots_numpy(y, noise_bins, pilot_flat, xp):
    """The guard band's noise variance and the pilots' least-squares channel
    (``frame_pilots``), in numpy."""
    noise = y[:, noise_bins]
    noise_var = max(float(np.mean(noise.real**2 + noise.imag**2)), 1e-12)
    return noise_var, y.reshape(-1).take(pilot_flat) * np.conj(xp)


def _frame_pilots(y, noise_bins, pilot_flat, xp, hp):
    m = y.shape[0]
    total = 0.0
    for i in range(m):
        for b in noise_bins:
            v = y[i, b]
            total += v.real * v.real + v.imag * v.imag
    yf = y.reshape(-1)
    for i in range(m):
        for q in range(pilot_flat.shape[1]):
            hp[i, q] = yf[pilot_flat[i, q]] * np.conj(np.complex128(xp[i, q]))
    return max(total / max(m * noise_bins.size, 1), 1e-12)


def frame_pilots(y, noise_bins, pilot_flat, xp):
    """(noise variance over the guard bins ``noise_bins`` of every symbol of ``y``
    [m, fft], the pilots' channel y[pilot_flat] / xp [m, pilots]) in one pass."""
    if not AVAILABLE:
        return frame_pilots_numpy(y, noise_bins, pilot_flat, xp)
    hp = np.empty(pilot_flat.shape, dtype=np.complex128)
    noise_var = _frame_pilots(
        np.ascontiguousarray(y, dtype=np.complex128),
        np.ascontiguousarray(noise_bins, dtype=np.int64),
        np.ascontiguousarray(pilot_flat, dtype=np.int64),
        np.ascontiguousarray(xp, dtype=np.complex64),
        hp,
    )
    return float(noise_var), hp


def rotate_numpy(y, hp, step):
    """``rotate`` in numpy."""
    rot = np.exp(-1j * step * np.arange(y.shape[0]))[:, None]
    y *= rot
    hp *= rot


def _rotate(y, hp, step):
    for i in range(y.shape[0]):
        rot = np.exp(-1j * step * i)
        for j in range(y.shape[1]):
            y[i, j] *= rot
        for j in range(hp.shape[1]):
            hp[i, j] *= rot


def rotate(y, hp, step):
    """Symbol i of ``y`` and ``hp`` (C-contiguous complex128, in place) times
    exp(-j step i): the residual frequency offset's phase advance removed."""
    if not AVAILABLE or y.dtype != np.complex128 or not y.flags.c_contiguous:
        return rotate_numpy(y, hp, step)
    _rotate(y, hp, float(step))
    return None


def smooth_row_numpy(s, values, var, times, cols, hs, nu, self_weight):
    """``smooth_row`` in numpy."""
    hs[:, cols] = np.einsum("ij,jp->ip", s, values)
    nu += np.einsum("ij,j->i", s * s, var)  # the estimate's noise at each symbol
    self_weight[times] = s[times, np.arange(len(times))]


def _smooth_row(s, values, var, times, cols, hs, nu, self_weight):
    m, n = s.shape
    for i in range(m):
        for q in range(cols.size):
            acc = 0j
            for j in range(n):
                acc += s[i, j] * values[j, q]
            hs[i, cols[q]] = acc
        acc_nu = 0.0
        for j in range(n):
            acc_nu += s[i, j] * s[i, j] * var[j]
        nu[i] += acc_nu
    for j in range(n):
        self_weight[times[j]] = s[times[j], j]


def smooth_row(s, values, var, times, cols, hs, nu, self_weight):
    """One comb row's time smoothing: hs[:, cols] = s @ values (s [m, n] from the n
    observations ``values`` [n, pilots] at symbols ``times``), nu += (s * s) @ var
    (the estimate's noise), self_weight[times] = each observation's own weight."""
    if not AVAILABLE:
        return smooth_row_numpy(s, values, var, times, cols, hs, nu, self_weight)
    _smooth_row(
        np.ascontiguousarray(s, dtype=np.float64),
        np.ascontiguousarray(values, dtype=np.complex128),
        np.ascontiguousarray(var, dtype=np.float64),
        np.ascontiguousarray(times, dtype=np.int64),
        np.ascontiguousarray(cols, dtype=np.int64),
        hs,
        nu,
        self_weight,
    )
    return None


def mean_power_numpy(a):
    """``mean_power`` in numpy."""
    return float(np.mean(a.real**2 + a.imag**2))


def _mean_power(a):
    total = 0.0
    for v in a:
        total += v.real * v.real + v.imag * v.imag
    return total / max(a.size, 1)


def mean_power(a):
    """mean |a|^2 of a complex128 array, in one pass (numpy: three temporaries)."""
    if not AVAILABLE:
        return mean_power_numpy(a)
    return float(_mean_power(np.ascontiguousarray(a, dtype=np.complex128).reshape(-1)))


def delay_keep_numpy(grid, floor):
    """``delay_keep`` in numpy."""
    return profile_keep_numpy(np.mean(grid.real**2 + grid.imag**2, axis=0), floor)


def profile_keep_numpy(pdp, floor):
    """The points of a delay profile ``pdp`` that stand out of the noise ``floor``."""
    # Out of the noise, and within 20 dB of the strongest: a path between grid points
    # leaks into every grid point (the comb sees a finite band), weaker and weaker.
    keep = pdp > max(8.0 * floor, 0.01 * float(pdp.max()))
    # The strongest point on a lower bar: at 0 dB from one symbol's pilots a single
    # path between two grid points often has neither above 8 times the noise, and
    # the whole prefix as the prior would leave the estimate about as noisy as the
    # pilots (the header's CRC then failed in 1 of 20 frames).
    keep[int(np.argmax(pdp))] |= float(pdp.max()) > 3.0 * floor
    return keep


def _delay_keep(grid, floor, keep, pdp):
    m, q = grid.shape
    pdp[:] = 0.0
    for i in range(m):
        for j in range(q):
            v = grid[i, j]
            pdp[j] += v.real * v.real + v.imag * v.imag
    best = 0
    for j in range(q):
        pdp[j] /= m
        if pdp[j] > pdp[best]:
            best = j
    bar = max(8.0 * floor, 0.01 * pdp[best])
    for j in range(q):
        keep[j] = pdp[j] > bar
    keep[best] |= pdp[best] > 3.0 * floor


def delay_keep(grid, floor):
    """The points of the pilots' delay grid ``grid`` [symbols, points] (their inverse
    FFT) whose mean power stands out of the noise ``floor`` (``channel_delays``)."""
    if not AVAILABLE:
        return delay_keep_numpy(grid, floor)
    keep = np.empty(grid.shape[1], dtype=np.bool_)
    pdp = np.empty(grid.shape[1])
    _delay_keep(np.ascontiguousarray(grid, dtype=np.complex128), float(floor), keep, pdp)
    return keep


# A link's delay prior (``track_delays``), chosen on streams of 300 frames at 10 dB (flat,
# EPA redrawn every frame) and on changes between a flat and an EVA channel: the weight
# of each new frame in the running profile (0.25 took a frame longer to follow a new weak
# path; 0.4 made half as many priors again), how far under the bar to join a held point
# must fall to leave, the level of a frame's strongest point above which a new path far
# from the held ones joins at once (at 0.01, today's bar, noise made 5 times as many
# priors), and how many points either side of a held one count as near.
TRACK_WEIGHT = 0.3
TRACK_LEAVE = 0.5
TRACK_CLEAR = 0.1
TRACK_NEAR = 2


def track_delays_numpy(pdp, floor, keep, held, kept, weight, state, out_kept):
    """``track_delays`` in numpy."""
    q = pdp.size
    total = float(pdp.sum())
    p = pdp / total
    f = floor / total
    top = int(np.argmax(p))
    covered = kept.copy()
    for o in range(1, TRACK_NEAR + 1):
        covered |= np.roll(kept, o) | np.roll(kept, -o)
    if held.size == 0 or (not covered[top] and p[top] > 8.0 * f):
        state[:q] = p
        state[q] = f
        out_kept[:] = keep
        return True
    state[:] = (1.0 - weight) * held + weight * np.append(p, f)
    mean, mean_floor = state[:q], state[q]
    bar = max(8.0 * mean_floor, 0.01 * float(mean.max()))
    out_kept[:] = mean > np.where(kept, TRACK_LEAVE * bar, bar)
    best = int(np.argmax(mean))
    lower = 3.0 * mean_floor * (TRACK_LEAVE if kept[best] else 1.0)
    out_kept[best] |= float(mean[best]) > lower
    out_kept |= (p > max(8.0 * f, TRACK_CLEAR * float(p[top]))) & ~covered
    return False


def _track_delays(pdp, floor, keep, held, kept, weight, state, out_kept):
    q = pdp.size
    total = 0.0
    top = 0
    for j in range(q):
        total += pdp[j]
        if pdp[j] > pdp[top]:
            top = j
    f = floor / total
    fresh = held.size == 0
    if not fresh:
        fresh = not _near(kept, top) and pdp[top] / total > 8.0 * f
    if fresh:
        for j in range(q):
            state[j] = pdp[j] / total
            out_kept[j] = keep[j]
        state[q] = f
        return True
    for j in range(q):
        state[j] = (1.0 - weight) * held[j] + weight * (pdp[j] / total)
    state[q] = (1.0 - weight) * held[q] + weight * f
    best = 0
    for j in range(q):
        if state[j] > state[best]:
            best = j
    bar = max(8.0 * state[q], 0.01 * state[best])
    for j in range(q):
        out_kept[j] = state[j] > (TRACK_LEAVE * bar if kept[j] else bar)
    lower = 3.0 * state[q] * (TRACK_LEAVE if kept[best] else 1.0)
    out_kept[best] |= state[best] > lower
    clear = max(8.0 * f, TRACK_CLEAR * (pdp[top] / total))
    for j in range(q):
        if pdp[j] / total > clear and not _near(kept, j):
            out_kept[j] = True
    return False


def _near(kept, j):
    q = kept.size
    for o in range(-TRACK_NEAR, TRACK_NEAR + 1):
        if kept[(j + o) % q]:
            return True
    return False


def track_delays(pdp, floor, keep, held, kept, weight=TRACK_WEIGHT):
    """A link's delay prior with a frame's delay profile ``pdp`` (noise ``floor`` per
    point, ``keep`` the frame's own kept points: ``delay_keep``) folded in: the
    running profile ``held`` (each point's power and the noise as fractions of the
    profile's total, averaged over frames with ``weight`` for the newest; empty for a
    new link) and its kept points ``kept``. The fractions make gain and noise level
    changes cancel; a point joins where the average stands out as ``delay_keep``'s
    rule has it, and leaves only when it falls under ``TRACK_LEAVE`` of that bar, so
    that noise moves no point of a steady link in or out. Far from the held points
    (no kept point within ``TRACK_NEAR``), a point that stands out clearly in this
    frame (within 10 dB of its strongest and 8 times its noise) joins at once, and a
    frame whose strongest point lies there starts the average again from the frame
    (a new transmitter, a moved antenna). Returns (the new running profile
    [points + 1], its kept points, whether it started again)."""
    pdp = np.ascontiguousarray(pdp, dtype=np.float64)
    state = np.empty(pdp.size + 1)
    out_kept = np.empty(pdp.size, dtype=np.bool_)
    if not AVAILABLE:
        fresh = track_delays_numpy(pdp, floor, keep, held, kept, weight, state, out_kept)
    else:
        fresh = _track_delays(pdp, float(floor), keep, held, kept, float(weight), state, out_kept)
    return state, out_kept, bool(fresh)


def pilot_excess_numpy(hs, hp, own_cols, self_weight, nu, noise_var, half_drift, err):
    """``pilot_excess`` in numpy."""
    m = hs.shape[0]
    own = hs[np.arange(m)[:, None], own_cols]
    resid = np.mean(np.abs(hp - own) ** 2, axis=1)
    expected = noise_var * (1.0 - 2.0 * self_weight) + nu
    excess = resid - expected * (1.0 + 2.0 / math.sqrt(hp.shape[1]))
    # Neighbours averaged: a symbol's few pilots alone scatter by a quarter.
    # "full" trimmed to m: "same" returns 3 values for a frame of 2 symbols.
    excess = np.convolve(np.maximum(excess, 0.0), np.ones(3) / 3.0)[1 : 1 + m]
    return np.maximum(err, err - half_drift + excess[:, None])


def _pilot_excess(hs, hp, own_cols, self_weight, nu, noise_var, half_drift, err):
    m, p = hp.shape
    excess = np.zeros(m)
    bar = 1.0 + 2.0 / math.sqrt(p)
    for i in range(m):
        total = 0.0
        for q in range(p):
            d = hp[i, q] - hs[i, own_cols[i, q]]
            total += d.real * d.real + d.imag * d.imag
        e = total / p - (noise_var * (1.0 - 2.0 * self_weight[i]) + nu[i]) * bar
        excess[i] = max(e, 0.0)
    for i in range(m):
        near = excess[i]
        if i > 0:
            near += excess[i - 1]
        if i + 1 < m:
            near += excess[i + 1]
        lift = near / 3.0 - half_drift
        if lift > 0.0:
            for j in range(err.shape[1]):
                err[i, j] += lift


def pilot_excess(hs, hp, own_cols, self_weight, nu, noise_var, half_drift, err):
    """The estimate's error ``err`` [m, data] raised where the symbols' own pilots
    ``hp`` miss the smoothed channel ``hs`` at their comb positions ``own_cols`` [m,
    pilots] by more than their noise (less their own weight ``self_weight`` in the
    smoothing) and the estimate's (``nu``) explain, three neighbouring symbols
    averaged, beyond ``half_drift`` (already counted); returns the new err."""
    if not AVAILABLE:
        return pilot_excess_numpy(hs, hp, own_cols, self_weight, nu, noise_var, half_drift, err)
    out = np.array(err, dtype=np.float64, order="C")
    _pilot_excess(
        np.ascontiguousarray(hs, dtype=np.complex128),
        np.ascontiguousarray(hp, dtype=np.complex128),
        np.ascontiguousarray(own_cols, dtype=np.int64),
        np.ascontiguousarray(self_weight, dtype=np.float64),
        np.ascontiguousarray(nu, dtype=np.float64),
        float(noise_var),
        float(half_drift),
        out,
    )
    return out


def _known_comb(y, i, bins, pilots, values, take, order, delays, twiddle, factor, out):
    p = pilots.size
    n = twiddle.size
    response = np.zeros(delays.size, dtype=np.complex128)
    for b in range(bins.size):
        o = order[b]
        sent = np.complex128(pilots[o]) if o < p else values[take[o - p]]
        ls = y[i, bins[b]] / sent
        f = bins[b]
        idx = (f * (delays[0] % n)) % n
        response[0] += ls * np.conj(twiddle[idx])
        for d in range(1, delays.size):
            if delays[d] == delays[d - 1] + 1:  # the next phase index by an add
                idx += f
                if idx >= n:
                    idx -= n
            else:
                idx = (f * (delays[d] % n)) % n
            response[d] += ls * np.conj(twiddle[idx])
    for c in range(factor.shape[0]):
        acc = 0j
        for d in range(delays.size):
            acc += factor[c, d] * response[d]
        out[c] = acc


def known_comb(y, i, bins, pilots, values, take, order, delays, twiddle, factor):
    """The channel at the pilot comb from symbol ``i`` of ``y`` where its pilots and
    the known values ``values[take]`` sit at ``bins`` (``order`` sorts [pilots, known]
    by frequency as ``bins`` are): the least-squares values' response at the delay
    prior's ``delays`` (sum over the bins of ls exp(2 pi j bin d / N): the inverse FFT
    at those delays; ``twiddle``: exp(-2 pi j k / N)), times ``factor`` [comb, delays].
    Compiled only."""
    out = np.empty(factor.shape[0], dtype=np.complex128)
    _known_comb(
        y,
        int(i),
        np.ascontiguousarray(bins, dtype=np.int64),
        np.ascontiguousarray(pilots, dtype=np.complex64),
        np.ascontiguousarray(values, dtype=np.complex128),
        np.ascontiguousarray(take, dtype=np.int64),
        np.ascontiguousarray(order, dtype=np.int64),
        np.ascontiguousarray(delays, dtype=np.int64),
        twiddle,
        np.ascontiguousarray(factor, dtype=np.complex128),
        out,
    )
    return out


def _inband(y, h, err, sym, col, bins, values, pick, noise_var):
    power = 0.0
    expected = 0.0
    count = sym.size
    for j in range(count):
        r = y[sym[j], bins[j]] - h[sym[j], col[j]] * values[pick[j]]
        power += r.real * r.real + r.imag * r.imag
        expected += err[sym[j], col[j]]
    power /= count
    expected = noise_var + expected / count
    return max(0.0, power - expected * (1.0 + 2.0 / math.sqrt(count)))


def inband_excess(y, h, err, sym, col, bins, pick, values, noise_var):
    """The known values' residual power against the estimate beyond the noise and the
    estimate's error (``ofdm_receiver._inband_excess``) for the known symbols at
    (``sym``, ``col``) of the data grids, FFT bins ``bins``, values ``values[pick]``.
    Compiled only."""
    return float(
        _inband(
            y,
            np.ascontiguousarray(h, dtype=np.complex128),
            np.ascontiguousarray(err, dtype=np.float64),
            sym,
            col,
            bins,
            np.ascontiguousarray(values, dtype=np.complex128),
            pick,
            float(noise_var),
        )
    )


def dense_smooth_numpy(
    hp, dense_t, dense_est, dense_var, noise_var, position, half, fit, hs, nu, self_weight
):
    """``dense_smooth`` in numpy."""
    m, stagger = hp.shape[0], position.shape[0]
    hs[:] = 0.0
    nu[:] = 0.0
    dense = dense_t.tolist()
    for r in range(stagger):
        times = [t for t in range(r, m, stagger) if t not in dense] + dense
        values = [hp[t] for t in times[: len(times) - len(dense)]]
        values += [est[position[r]] for est in dense_est]
        var = [noise_var] * (len(times) - len(dense)) + dense_var[:, r].tolist()
        order = np.argsort(times, kind="stable")
        times, values, var = (
            np.asarray(times)[order],
            np.asarray(values)[order],
            np.asarray(var)[order],
        )
        s = local_linear_numpy(times, m, half, fit, 1.0 / var)
        smooth_row_numpy(s, values, var, times, position[r], hs, nu, self_weight)
    nu /= stagger
    self_weight[dense_t] = 0.0
    mean_square = mean_power_numpy(hs)
    return max(mean_square - float(nu.sum()) / nu.size, 0.1 * mean_square, 1e-12)


def _dense_smooth(
    hp, dense_t, dense_est, dense_var, noise_var, position, half, fit, hs, nu, self_weight
):
    m = hp.shape[0]
    rows, p = position.shape
    count = dense_t.size
    hs[:] = 0.0
    nu[:] = 0.0
    is_dense = np.zeros(m, dtype=np.bool_)
    for d in range(count):
        is_dense[dense_t[d]] = True
    for r in range(rows):
        n = count
        for t in range(r, m, rows):
            if not is_dense[t]:
                n += 1
        times = np.empty(n, dtype=np.int64)
        values = np.empty((n, p), dtype=np.complex128)
        var = np.empty(n)
        # Merged in time order: the row's symbols on their pilots, the known symbols'
        # estimates at the row's comb positions (dense_t ascending).
        j = 0
        d = 0
        t = r
        while j < n:
            while t < m and is_dense[t]:
                t += rows
            if d < count and (t >= m or dense_t[d] < t):
                times[j] = dense_t[d]
                for q in range(p):
                    values[j, q] = dense_est[d, position[r, q]]
                var[j] = dense_var[d, r]
                d += 1
            else:
                times[j] = t
                for q in range(p):
                    values[j, q] = hp[t, q]
                var[j] = noise_var
                t += rows
            j += 1
        t_obs = np.empty(n)
        weight = np.empty(n)
        for j in range(n):
            t_obs[j] = times[j]
            weight[j] = 1.0 / var[j]
        s = np.empty((m, n))
        _local_linear(t_obs, m, half, fit, weight, s)
        _smooth_row(s, values, var, times, position[r], hs, nu, self_weight)
    total = 0.0
    for i in range(m):
        nu[i] /= rows
        total += nu[i]
    for d in range(count):
        self_weight[dense_t[d]] = 0.0
    mean_square = _mean_power(hs.reshape(-1))
    return max(mean_square - total / m, 0.1 * mean_square, 1e-12)


def dense_smooth(
    hp, dense_t, dense_est, dense_var, noise_var, position, half, fit, hs, nu, self_weight
):
    """The time smoothing again with the known symbols' comb estimates: for each of the
    ``position.shape[0]`` comb rows, the row's symbols on their pilots ``hp`` (those at
    ``dense_t`` left out) and the estimates ``dense_est`` [symbols, comb] at the row's
    comb positions, with variances ``noise_var`` and ``dense_var`` [symbols, rows],
    merged in time; a local-linear smoother (``half``, ``fit``) weighted by 1 / variance
    into ``hs``, ``nu`` and ``self_weight`` (out; zero at ``dense_t``). Returns the
    channel's power (mean |hs|^2 less the mean noise, at least a tenth of it)."""
    args = (hp, dense_t, dense_est, dense_var, float(noise_var), position, float(half), bool(fit))
    if not AVAILABLE:
        return dense_smooth_numpy(*args, hs, nu, self_weight)
    return float(_dense_smooth(*args, hs, nu, self_weight))


def pilot_stage_numpy(y, plan, hp, hs, nu, self_weight, pdp):
    """``pilot_stage`` in numpy: its steps' twins one after the other."""
    noise_bins, flat, xp, stagger, smoothers, loo_rows, loo_keep, loo_noise, counts = plan[:9]
    position = plan[9]
    noise_var, hp[:] = frame_pilots_numpy(y, noise_bins, flat, xp)
    step = residual_step_numpy(hp, stagger)
    if step:
        rotate_numpy(y, hp, step)
    best, excess = _select_numpy(hp, plan, noise_var)
    m = hp.shape[0]
    have = counts.size
    nu[:] = 0.0
    for r in range(have):
        n = counts[r]
        var = np.full(n, noise_var)
        times = np.arange(r, m, stagger)
        s = smoothers[r, best, :, :n]
        smooth_row_numpy(s, hp[r::stagger], var, times, position[r], hs, nu, self_weight)
    nu /= have
    mean_nu = float(nu.sum()) / nu.size
    mean_square = mean_power_numpy(hs)
    power = max(mean_square - mean_nu, 0.1 * mean_square, 1e-12)
    grid = np.fft.ifft(hs, axis=1)
    pdp[:] = np.mean(grid.real**2 + grid.imag**2, axis=0)
    keep = profile_keep_numpy(pdp, mean_nu / hs.shape[1])
    return noise_var, step, best, excess, power, mean_nu, keep


def _select_numpy(hp, plan, noise_var):
    stagger, loo_rows, loo_keep, loo_noise, counts = plan[3], *plan[5:9]
    if loo_rows.shape[1] == 1:
        return 0, 0.0
    p = hp.shape[1]
    size = int(counts.sum()) * p
    totals = sum(
        loo_totals_numpy(loo_rows[r, :, :n, :n], loo_keep[r, :, :n], hp[r::stagger])
        for r, n in enumerate(counts)
    )
    best, best_score, best_excess = 0, math.inf, 0.0
    for c in range(loo_rows.shape[1]):
        expected = sum(loo_noise[r, c] * p for r in range(counts.size))
        score = float(totals[c]) / size
        if score < best_score:
            # Less twice the score's own scatter, so that noise alone adds nothing.
            excess = score - noise_var * expected / size * (1.0 + 2.0 / math.sqrt(size))
            best, best_score, best_excess = c, score, max(0.0, excess)
    return best, best_excess


def _pilot_stage(
    y,
    noise_bins,
    flat,
    xp,
    stagger,
    smoothers,
    loo_rows,
    loo_keep,
    loo_noise,
    counts,
    position,
    dft,
    hp,
    hs,
    nu,
    self_weight,
    keep,
    pdp,
):
    noise_var = _frame_pilots(y, noise_bins, flat, xp, hp)
    step = _residual_step(hp, stagger)
    if step != 0.0:
        _rotate(y, hp, step)
    m, p = hp.shape
    have = counts.size
    candidates = loo_rows.shape[1]
    best = 0
    excess = 0.0
    if candidates > 1:
        size = 0
        for r in range(have):
            size += counts[r] * p
        totals = np.zeros(candidates)
        part = np.empty(candidates)
        for r in range(have):
            n = counts[r]
            _loo_totals(loo_rows[r, :, :n, :n], loo_keep[r, :, :n], hp[r::stagger], part)
            for c in range(candidates):
                totals[c] += part[c]
        best_score = math.inf
        for c in range(candidates):
            expected = 0.0
            for r in range(have):
                expected += loo_noise[r, c] * p
            score = totals[c] / size
            if score < best_score:
                e = score - noise_var * expected / size * (1.0 + 2.0 / math.sqrt(size))
                best = c
                best_score = score
                excess = max(0.0, e)
    nu[:] = 0.0
    var = np.full(smoothers.shape[3], noise_var)
    for r in range(have):
        n = counts[r]
        times = np.arange(r, m, stagger)
        _smooth_row(
            smoothers[r, best, :, :n],
            hp[r::stagger],
            var[:n],
            times,
            position[r],
            hs,
            nu,
            self_weight,
        )
    total = 0.0
    for i in range(m):
        nu[i] /= have
        total += nu[i]
    mean_nu = total / m
    mean_square = _mean_power(hs.reshape(-1))
    power = max(mean_square - mean_nu, 0.1 * mean_square, 1e-12)
    q = hs.shape[1]
    grid = np.empty((m, q), dtype=np.complex128)  # the inverse DFT along the comb
    for i in range(m):
        for j in range(q):
            acc = 0j
            for k in range(q):
                acc += hs[i, k] * dft[k, j]
            grid[i, j] = acc
    _delay_keep(grid, mean_nu / q, keep, pdp)
    return noise_var, step, best, excess, power, mean_nu


def pilot_stage(y, plan, hp, hs, nu, self_weight, pdp):
    """A frame's estimate from its pilots alone, in one call: the guard band's noise,
    the pilots' least-squares channel ``hp`` [m, pilots] (out), the residual phase step
    (``y`` and ``hp`` derotated by it in place), the time smoother chosen by the
    leave-one-out residuals of the candidates in ``plan`` (``ofdm_receiver._pilot_plan``:
    the layout's and frame length's arrays), each comb row smoothed with it into ``hs``
    [m, comb] with its noise ``nu`` [m] and each observation's own weight
    ``self_weight`` (out, zeros on entry), the channel's power, the delay profile
    ``pdp`` [comb] (out: the mean power at each point of the comb's delay grid, whose
    noise is mean nu / comb) and its kept points. Returns (noise_var, step, candidate,
    excess, power, mean nu, keep)."""
    if not AVAILABLE or y.dtype != np.complex128 or not y.flags.c_contiguous:
        return pilot_stage_numpy(y, plan, hp, hs, nu, self_weight, pdp)
    keep = np.empty(hs.shape[1], dtype=np.bool_)
    out = _pilot_stage(y, *plan, hp, hs, nu, self_weight, keep, pdp)
    noise_var, step, best, excess, power, mean_nu = out
    return (
        float(noise_var),
        float(step),
        int(best),
        float(excess),
        float(power),
        float(mean_nu),
        keep,
    )


def derotate_numpy(seg, step, count, n, cfo, starts):
    """``derotate`` in numpy."""
    win = np.lib.stride_tricks.as_strided(seg, (count, n), (step * seg.itemsize, seg.itemsize))
    # One phasor per symbol start (float64: absolute sample counts are large) times one
    # shared ramp within the window.
    ramp = np.exp(-2j * np.pi * cfo * np.arange(n)).astype(np.complex64)
    lead = np.exp(-2j * np.pi * cfo * starts.astype(np.float64)).astype(np.complex64)
    return win * ramp[None, :] * lead[:, None]


def _derotate(seg, step, count, n, cfo, starts, out):
    # The ramp from two short tables (32 + n / 32 exponentials, products in float64:
    # the same to a float32 rounding) where n exponentials cost most of the pass.
    block = 32
    fine = np.empty(block, dtype=np.complex128)
    for r in range(block):
        fine[r] = np.exp(-2j * np.pi * cfo * r)
    ramp = np.empty(n, dtype=np.complex64)
    for b in range(0, n, block):
        coarse = np.exp(-2j * np.pi * cfo * b)
        for r in range(min(block, n - b)):
            ramp[b + r] = np.complex64(coarse * fine[r])
    for i in range(count):
        lead = np.complex64(np.exp(-2j * np.pi * cfo * np.float64(starts[i])))
        base = i * step
        for k in range(n):
            out[i, k] = seg[base + k] * ramp[k] * lead


def prefix_products_numpy(seg, count, length, n, cp):
    """``prefix_products`` in numpy."""
    sym = seg[: count * length].reshape(count, length).astype(np.complex128)
    return complex(np.vdot(sym[:, :cp], sym[:, n : n + cp]))


def _prefix_products(seg, count, length, n, cp):
    acc = 0j
    for i in range(count):
        base = i * length
        for k in range(cp):
            acc += np.conj(np.complex128(seg[base + k])) * np.complex128(seg[base + n + k])
    return acc


def prefix_products(seg, count, length, n, cp):
    """Sum over ``count`` OFDM symbols (``length`` samples each, from the start of
    ``seg``) of conj(cyclic prefix) times the symbol's end that it copies (n samples
    later, ``cp`` of them), accumulated in complex128."""
    if not AVAILABLE:
        return prefix_products_numpy(seg, count, length, n, cp)
    return complex(
        _prefix_products(
            np.ascontiguousarray(seg, dtype=np.complex64), int(count), int(length), int(n), int(cp)
        )
    )


def derotate(seg, step, count, n, cfo, starts):
    """The ``count`` FFT windows of n samples, ``step`` apart in ``seg`` (complex64),
    times exp(-2 pi j cfo t) at their absolute sample times t (window i starts at
    ``starts[i]``), as one new [count, n] complex64 array."""
    if not AVAILABLE:
        return derotate_numpy(seg, step, count, n, cfo, starts)
    out = np.empty((count, n), dtype=np.complex64)
    _derotate(
        np.ascontiguousarray(seg, dtype=np.complex64),
        int(step),
        int(count),
        int(n),
        float(cfo),
        np.ascontiguousarray(starts, dtype=np.int64),
        out,
    )
    return out


def drift_scores_numpy(y, flat, conj_pilots, stagger, phasors, noise_bins, scores):
    """``drift_scores`` in numpy."""
    hp = y.reshape(-1).take(flat) * conj_pilots
    pairs = hp[stagger:] * np.conj(hp[:-stagger])
    z = np.stack([pairs[r::stagger].sum(axis=0) for r in range(phasors.shape[1])])
    scores[:] = np.abs(np.einsum("grp,rp->g", phasors, z)) ** 2
    power = float(np.mean(np.abs(hp) ** 2))
    return power, float(np.mean(np.abs(y[:, noise_bins]) ** 2))


def _drift_scores(y, flat, conj_pilots, stagger, phasors, noise_bins, scores):
    m, p = flat.shape
    rows = phasors.shape[1]
    hp = np.empty((m, p), np.complex128)
    yf = y.reshape(-1)
    power = 0.0
    for i in range(m):
        for j in range(p):
            v = yf[flat[i, j]] * conj_pilots[i, j]
            hp[i, j] = v
            power += v.real * v.real + v.imag * v.imag
    z = np.zeros((rows, p), np.complex128)
    for i in range(m - stagger):
        r = i % stagger
        for j in range(p):
            z[r, j] += hp[i + stagger, j] * hp[i, j].conjugate()
    for g in range(phasors.shape[0]):
        acc = 0j
        for r in range(rows):
            for j in range(p):
                acc += phasors[g, r, j] * z[r, j]
        scores[g] = acc.real * acc.real + acc.imag * acc.imag
    noise = 0.0
    for i in range(m):
        for b in noise_bins:
            v = y[i, b]
            noise += v.real * v.real + v.imag * v.imag
    return power / (m * p), noise / (m * noise_bins.size)


def drift_scores(y, flat, conj_pilots, stagger, phasors, noise_bins, scores):
    """The sample-rate drift search of ``ofdm_drift.estimate_drift`` in one pass: the
    pilots' estimates (``flat`` into ``y``, times ``conj_pilots``), the products of
    symbols ``stagger`` apart summed per row, their coherent sums against each drift's
    ``phasors`` [drifts, rows, pilots] as |.|^2 into ``scores``; returns (mean |pilot
    estimate|^2, mean |y|^2 over the guard ``noise_bins``)."""
    if not AVAILABLE or not y.flags.c_contiguous or y.dtype != np.complex128:
        return drift_scores_numpy(y, flat, conj_pilots, stagger, phasors, noise_bins, scores)
    return _drift_scores(y, flat, conj_pilots, int(stagger), phasors, noise_bins, scores)


def _warm_up() -> None:
    corr = np.zeros(64, np.complex64)
    x = np.zeros(64, np.complex64)
    out = (np.empty(4), np.empty(4, np.complex128), np.empty(6))
    _sync_metric(corr, x, 4, 4, np.ones(3), 2, 1.0, *out)
    c = np.ones((2, 3), np.complex128)
    _product_bt(c, c, np.empty((2, 2), np.complex128))
    _local_linear(np.arange(2.0), 3, 1.0, True, np.ones(2), np.empty((3, 2)))
    _residual_step(np.ones((5, 3), np.complex128), 2)
    _sync_slope(np.ones(8, np.complex64), 0.0, np.ones(2), np.ones(4, np.complex128))
    _loo_totals(np.ones((1, 2, 2)), np.ones((1, 2)), np.ones((2, 3), np.complex128), np.empty(1))
    pick = np.zeros((2, 2), np.int64)
    h, err = c[:, :2].copy(), np.ones((2, 2))
    _interpolate(c, c, pick, np.ones(3), np.ones(2), 1.0, 0.0, h, err)
    at = np.arange(2, dtype=np.int64)
    tw = np.ones(4, np.complex128)
    er, ei = np.ones((2, 3)), np.ones((2, 3))
    _phasor_rows(at, at, tw, er, ei)
    _interpolate_delays(c, c, er, ei, pick, np.ones(3), np.ones(2), 1.0, 0.0, h, err)
    _phasor_product(er[:, :2].copy(), ei[:, :2].copy(), c[:, :2].copy(), h, err)
    slots = np.arange(3, dtype=np.int64)
    _slot_means(c, c, np.ones((2, 3)), slots)
    for mmse in (True, False):
        out = (np.empty(3, np.complex64), np.empty(3, np.float32))
        _equalise_slots(c, c, np.ones((2, 3)), 0.1, 1.0, slots, mmse, *out)
    flat = np.zeros((2, 2), np.int64)
    hp = np.empty((2, 2), np.complex128)
    _frame_pilots(c, slots, flat, np.ones((2, 2), np.complex64), hp)
    _rotate(c.copy(), hp, 0.1)
    cols = np.arange(2, dtype=np.int64)
    nu, weight = np.zeros(2), np.zeros(2)
    _smooth_row(np.ones((2, 2)), hp, np.ones(2), cols, cols, c.copy(), nu, weight)
    _mean_power(c.reshape(-1))
    _delay_keep(c, 0.1, np.empty(3, np.bool_), np.empty(3))
    flags = np.zeros(3, np.bool_)
    for held in (np.empty(0), np.ones(4)):
        _track_delays(np.ones(3), 0.1, flags, held, flags, 0.25, np.empty(4), np.empty(3, np.bool_))
    _pilot_excess(c, hp, flat, weight, nu, 0.1, 0.0, np.ones((2, 2)))
    idx = np.zeros(2, np.int64)
    tw = np.ones(4, np.complex128)
    _known_comb(c, 0, idx, np.ones(1, np.complex64), c[0], idx, idx, idx, tw, c, hp[0])
    _inband(c, c, np.ones((2, 3)), idx, idx, idx, c[0], idx, 0.1)
    seg = np.ones(8, np.complex64)
    _derotate(seg, 4, 2, 4, 0.01, idx, np.empty((2, 4), np.complex64))
    _prefix_products(seg, 2, 4, 3, 1)
    # The receiver passes its cached (read-only) arrays where these have "ro": numba
    # types read-only arrays apart, so those are compiled here too, not mid-stream.
    ro_w, ro_pick, ro_mse = _ro(c), _ro(pick), _ro(np.ones(3))
    _loo_totals(
        _ro(np.ones((1, 2, 2))), _ro(np.ones((1, 2))), np.ones((2, 3), np.complex128), np.empty(1)
    )
    _interpolate(c, ro_w, ro_pick, ro_mse, np.ones(2), 1.0, 0.0, h, err)
    ro_tw = _ro(tw)
    _phasor_rows(_ro(at), _ro(at), ro_tw, er, ei)
    _phasor_rows(at, at, ro_tw, er, ei)
    _interpolate_delays(c, ro_w, er, ei, ro_pick, ro_mse, np.ones(2), 1.0, 0.0, h, err)
    _interpolate_delays(c, ro_w, _ro(er), _ro(ei), ro_pick, ro_mse, np.ones(2), 1.0, 0.0, h, err)
    ro_slots = _ro(slots)
    _slot_means(c, c, np.ones((2, 3)), ro_slots)
    for mmse in (True, False):
        out = (np.empty(3, np.complex64), np.empty(3, np.float32))
        _equalise_slots(c, c, np.ones((2, 3)), 0.1, 1.0, ro_slots, mmse, *out)
    _frame_pilots(c, ro_slots, _ro(flat), np.ones((2, 2), np.complex64), hp)
    _smooth_row(_ro(np.ones((2, 2))), hp, np.ones(2), cols, cols, c.copy(), nu, weight)
    _pilot_excess(c, hp, _ro(flat), weight, nu, 0.1, 0.0, np.ones((2, 2)))
    ro_idx = _ro(idx)
    known_args = (ro_idx, ro_tw, ro_w, hp[0])
    _known_comb(c, 0, idx, np.ones(1, np.complex64), c[0], idx, idx, *known_args)
    _inband(c, c, np.ones((2, 3)), ro_idx, ro_idx, ro_idx, c[0], ro_idx, 0.1)
    # The pilot stage's plan is cached: its comb positions and pilot values reach the
    # known symbols' smoothing and comb estimate read-only.
    ro_cols = _ro(cols)
    _smooth_row(np.ones((2, 2)), hp, np.ones(2), cols, ro_cols, c.copy(), nu, weight)
    ro_pilots = _ro(np.ones((2, 1), np.complex64))[0]
    _known_comb(c, 0, idx, ro_pilots, c[0], idx, idx, *known_args)
    _warm_up_stage()
    out = (np.empty(4), np.empty(4, np.complex128), np.empty(6))
    _sync_direct(x, _ro(np.ones(4, np.complex128)), 4, 4, _ro(np.ones(3)), 2, 1.0, *out)
    # The chunks fed: fresh arrays, or read-only views of a caller's buffer.
    for chunk in (x, _ro(x)):
        _input_scan(chunk)
    _sync_peak(np.ones(8), np.ones(10), 0.5, 4, 2)
    _scaled(np.ones((2, 4), np.complex64), 0.5, np.empty((2, 4), np.complex128))
    flat = _ro(np.arange(6, dtype=np.int64).reshape(3, 2))
    phasors = _ro(np.ones((3, 1, 2), np.complex128))
    args = (flat, _ro(np.ones((3, 2), np.complex128)), 2, phasors, _ro(np.arange(2)))
    _drift_scores(np.ones((3, 4), np.complex128), *args, np.empty(3))


def _warm_up_stage() -> None:
    # The plan's arrays come read-only from the receiver's cache; the outputs are fresh.
    m, p, q = 3, 2, 4
    plan = (
        np.arange(2, dtype=np.int64),
        np.arange(m * p, dtype=np.int64).reshape(m, p),
        np.ones((m, p), np.complex64),
        2,
        np.ones((2, 2, m, 2)),
        np.ones((2, 2, 2, 2)),
        np.ones((2, 2, 2)),
        np.ones((2, 2)),
        np.array([2, 1], dtype=np.int64),
        np.arange(2 * p, dtype=np.int64).reshape(2, p),
        np.ones((q, q), np.complex128),
    )
    plan = tuple(_ro(a) if isinstance(a, np.ndarray) else a for a in plan)
    y = np.ones((m, 8), np.complex128)
    hp, hs = np.empty((m, p), np.complex128), np.empty((m, q), np.complex128)
    _pilot_stage(y, *plan, hp, hs, np.empty(m), np.zeros(m), np.empty(q, np.bool_), np.empty(q))
    dense_t = np.array([1], dtype=np.int64)
    args = (dense_t, np.ones((1, q), np.complex128), np.ones((1, 2)), 0.1, plan[9])
    for half, fit in ((math.inf, False), (1.0, True)):
        _dense_smooth(hp, *args, half, fit, hs, np.empty(m), np.zeros(m))


def _ro(a: np.ndarray) -> np.ndarray:
    out = np.array(a)
    out.flags.writeable = False
    return out


_loader = KernelLoader(
    __name__,
    "OFDM kernels",
    (
        Kernel("_sync_metric", _sync_metric),
        Kernel("_correlate", _correlate),
        Kernel("_sync_direct", _sync_direct),
        Kernel("_input_scan", _input_scan),
        Kernel("_scaled", _scaled, fastmath=False),
        Kernel("_sync_peak", _sync_peak, fastmath=False),
        Kernel("_product_bt", _product_bt),
        Kernel("_local_linear", _local_linear, fastmath=False),
        Kernel("_residual_step", _residual_step, fastmath=False),
        Kernel("_sync_slope", _sync_slope, fastmath=False),
        Kernel("_loo_totals", _loo_totals),
        Kernel("_interpolate", _interpolate),
        Kernel("_phasor_rows", _phasor_rows),
        Kernel("_interpolate_delays", _interpolate_delays),
        Kernel("_phasor_product", _phasor_product),
        Kernel("_slot_means", _slot_means),
        Kernel("_equalise_slots", _equalise_slots),
        Kernel("_frame_pilots", _frame_pilots),
        Kernel("_rotate", _rotate),
        Kernel("_smooth_row", _smooth_row),
        Kernel("_mean_power", _mean_power),
        Kernel("_delay_keep", _delay_keep),
        Kernel("_near", _near, fastmath=False),
        Kernel("_track_delays", _track_delays, fastmath=False),
        Kernel("_pilot_excess", _pilot_excess),
        Kernel("_known_comb", _known_comb),
        Kernel("_inband", _inband),
        Kernel("_derotate", _derotate, fastmath=False),
        Kernel("_prefix_products", _prefix_products),
        Kernel("_pilot_stage", _pilot_stage, fastmath=False),
        Kernel("_dense_smooth", _dense_smooth, fastmath=False),
        Kernel("_drift_scores", _drift_scores),
    ),
    _warm_up,
    globals(),  # each kernel replaces its Python source: kernels call kernels
)


def load() -> bool:
    """Import numba and compile (or load from its cache) the kernels, once; returns
    ``AVAILABLE``. A missing or broken numba is logged once; numpy stays in use."""
    return _loader.load()


def compiled() -> dict:
    """Name -> numba dispatcher of every kernel once loaded (empty before, or without
    numba): for tests that count their compiled signatures."""
    if not AVAILABLE:
        return {}
    return {k.name: globals()[k.name] for k in _loader.kernels}
