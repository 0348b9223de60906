"""Compiled inner loops of the single-carrier receiver (numba), where numpy's
per-call cost or its temporaries limit the rate.

numba is optional (the ``fast`` extra: ``pip install diffjscc[fast]``). Nothing
here is compiled, and numba is not even imported, until ``load()`` (which
``BurstReceiver`` calls): the transmitter and the GNU Radio blocks import as
fast as before. Until then, without numba, or with ``DIFFJSCC_NUMBA=0`` in the
environment, ``AVAILABLE`` is False and every caller takes its numpy path,
which gives the same results to float32 rounding (``tests/test_radio_fast.py``)
at a tenth of the speed (2.7-3.0 against 26-30 Msps per CPU second on the 2-core
VM, 3072-symbol frames; the numpy Viterbi decoder alone takes milliseconds a
header). Beside the detection metric (the correlation without an FFT, one call
a chunk), a clean frame takes five compiled calls: the preamble search,
``header_path``, the check for another preamble inside it, the mixing and
``payload_path``, the last two stages each the general path's steps in one call;
the general path (the kernels one by one, with Python between) takes over where
damage or anything unusual needs it. Kernels are cached on disk (``cache=True``: about 30 s to
compile once per installation on that VM under load, 1 s to load with numba's
import). The loading itself is ``radio._numba``'s, shared with the OFDM kernels.
"""

from __future__ import annotations

import numpy as np

from diffjscc.radio._numba import Kernel, KernelLoader

AVAILABLE = False  # the kernels below are compiled and in use
REASON = "not loaded yet"  # why not, when AVAILABLE is False

# The kernels, in the order they are compiled (helpers named with their underscore
# first: _fir_part, _anchored_powers, _unit_phasors, _model_gains, ...; the kernels after
# them call the compiled ones).
_KERNELS = (
    "_fir_part",
    "_anchored_powers",
    "_unit_phasors",
    "_model_gains",
    "_fir_accumulate",
    "_fir_block",
    "fir_complex",
    "fir_real",
    "segment_correlation",
    "detection",
    "periodogram_grid",
    "_parabola_offset",
    "frequency_search",
    "derotated_fit",
    "channel_fit",
    "first_above",
    "burst_peak",
    "split_gains",
    "local_gain_noise",
    "header_soft",
    "mix",
    "smoothed_phase",
    "segment_energies",
    "fine_timing",
    "blocks_clean",
    "viterbi",
    "conv_symbols",
    "_conj_turn",
    "equalise_payload",
    "damage_precheck",
    "drift_probe",
    "block_timings",
    "fir_drifting",
    "drift_fit",
    "pilot_residual_phase",
    "payload_path",
    "header_path",
)


def _fir_block(x, taps, out):
    """out[i] = sum_j taps[j] x[i + j] (real)."""
    for i in range(out.size):
        out[i] = np.float32(0.0)
    _fir_accumulate(x, taps, out)


def _fir_accumulate(x, taps, out):
    """out[i] += sum_j taps[j] x[i + j] (real), four taps a pass over ``out``; every
    operand a slice, so that the loops vectorise (indices such as x[i + q] with q a
    variable kept LLVM from it here: 4-6x slower)."""
    n = out.size
    width = taps.size
    q = 0
    while q + 4 <= width:
        t0 = taps[q]
        t1 = taps[q + 1]
        t2 = taps[q + 2]
        t3 = taps[q + 3]
        a = x[q : q + n]
        b = x[q + 1 : q + 1 + n]
        c = x[q + 2 : q + 2 + n]
        d = x[q + 3 : q + 3 + n]
        for i in range(n):
            out[i] += (t0 * a[i] + t1 * b[i]) + (t2 * c[i] + t3 * d[i])
        q += 4
    while q < width:
        t = taps[q]
        a = x[q : q + n]
        for i in range(n):
            out[i] += t * a[i]
        q += 1


def _segment_correlation(re, im, count, pulse, seg_re, seg_im, sps, out_re, out_im):
    """Correlation of the samples (parts ``re``, ``im``) with one pulse-shaped preamble
    segment at ``count`` lags, without an FFT: the pulse is real and symmetric, so
    the correlation is the matched filter at every sample (``pulse``, 33 taps at
    sps 2) followed by the segment's conjugated symbols (``seg_re``, ``seg_im``) at
    symbol spacing: out[m] = sum_k conj(s_k) mf[m + k sps], mf[j] = sum_i pulse[i]
    x[j + i]. 130 products a sample (the FFT pair: about 100, but not vectorised
    as well): 5 against 8 ns a sample on the development VM. In blocks, so that
    the matched filter's outputs stay in the first-level cache."""
    width = pulse.size
    segs = seg_re.size
    reach = (segs - 1) * sps
    block = 2048
    mr = np.empty(block + reach, dtype=np.float32)
    mi = np.empty(block + reach, dtype=np.float32)
    for lo in range(0, count, block):
        m = min(block, count - lo)
        _fir_block(re[lo : lo + m + reach + width - 1], pulse, mr[: m + reach])
        _fir_block(im[lo : lo + m + reach + width - 1], pulse, mi[: m + reach])
        o_re = out_re[lo : lo + m]
        o_im = out_im[lo : lo + m]
        for i in range(m):
            o_re[i] = np.float32(0.0)
            o_im[i] = np.float32(0.0)
        k = 0
        while k < segs:
            a_r = seg_re[k]
            a_i = seg_im[k]
            ar = mr[k * sps : k * sps + m]
            ai = mi[k * sps : k * sps + m]
            if k + 1 < segs:  # two symbols a pass over the sums
                b_r = seg_re[k + 1]
                b_i = seg_im[k + 1]
                br = mr[(k + 1) * sps : (k + 1) * sps + m]
                bi = mi[(k + 1) * sps : (k + 1) * sps + m]
                for i in range(m):
                    o_re[i] += (a_r * ar[i] - a_i * ai[i]) + (b_r * br[i] - b_i * bi[i])
                for i in range(m):
                    o_im[i] += (a_r * ai[i] + a_i * ar[i]) + (b_r * bi[i] + b_i * br[i])
                k += 2
            else:
                for i in range(m):
                    o_re[i] += a_r * ar[i] - a_i * ai[i]
                for i in range(m):
                    o_im[i] += a_r * ai[i] + a_i * ar[i]
                k += 1


# Kernels whose divisors are never zero, compiled without numba's divisor tests.
_NUMPY_ERRORS = frozenset({"detection"})


def _detection(
    flat, n, period, signs, reach, scale, pulse, seg_re, seg_im, sps, dsum, energy, metric
):
    """The detection metric at ``n`` lags from the samples (interleaved float32
    ``flat``, n + reach - 1 of them):

    corr = ``segment_correlation`` of the samples;
    dsum[m] = sum_k signs[k] corr[m + (k+1) D] conj(corr[m + k D]), D = ``period``
    (each product computed once, the sum term by term as numpy's twin does);
    energy[m] = sum of |x|^2 over x[m : m + reach] (running sums in float64);
    metric[m] = |dsum[m]| / (max(energy[m], 1e-30) scale).

    Returns the largest and the smallest energy, which tell whether the metric
    needs a floor. In blocks of lags, each with its own small work arrays (whole
    chunks' temporaries, hundreds of kilobytes each, cost page faults on every
    call: 14 against 8 ns a sample). Every loop runs over contiguous real arrays,
    its operands slices: interleaved parts, or offsets added to the index, keep
    LLVM from vectorising (4x); compiled with error_model "numpy" (the divisors
    are floored), so that the division vectorises too.
    """
    terms = signs.size
    samples = flat.size // 2
    block = 4096
    width = pulse.size
    corr_reach = terms * period
    need = block + corr_reach + (seg_re.size - 1) * sps + width - 1
    need = max(need, block + reach - 1)
    re = np.empty(need, dtype=np.float32)
    im = np.empty(need, dtype=np.float32)
    c_re = np.empty(block + corr_reach, dtype=np.float32)
    c_im = np.empty(block + corr_reach, dtype=np.float32)
    prod_re = np.empty(block + corr_reach, dtype=np.float32)
    prod_im = np.empty(block + corr_reach, dtype=np.float32)
    sum_re = np.empty(block, dtype=np.float32)
    sum_im = np.empty(block, dtype=np.float32)
    power = np.empty(need)
    change = np.empty(block)
    run = np.zeros(4)
    out = dsum.view(np.float32)
    top = 0.0
    low = np.inf
    for lo in range(0, n, block):
        b = min(block, n - lo)
        have = min(need, samples - lo)
        part = flat[2 * lo : 2 * (lo + have)]
        for i in range(have):
            re[i] = part[2 * i]
            im[i] = part[2 * i + 1]
        used = b + corr_reach
        segment_correlation(re, im, used, pulse, seg_re, seg_im, sps, c_re, c_im)
        count = b + (terms - 1) * period
        late_re = c_re[period : period + count]
        late_im = c_im[period : period + count]
        for i in range(count):
            prod_re[i] = late_re[i] * c_re[i] + late_im[i] * c_im[i]
        for i in range(count):
            prod_im[i] = late_im[i] * c_re[i] - late_re[i] * c_im[i]
        s0 = signs[0]
        for i in range(b):
            sum_re[i] = s0 * prod_re[i]
        for i in range(b):
            sum_im[i] = s0 * prod_im[i]
        k = 1
        while k < terms:  # two terms a pass over the sums
            sa = signs[k]
            ra = prod_re[k * period : k * period + b]
            ia = prod_im[k * period : k * period + b]
            if k + 1 < terms:
                sb = signs[k + 1]
                rb = prod_re[(k + 1) * period : (k + 1) * period + b]
                ib = prod_im[(k + 1) * period : (k + 1) * period + b]
                for i in range(b):
                    sum_re[i] += sa * ra[i] + sb * rb[i]
                for i in range(b):
                    sum_im[i] += sa * ia[i] + sb * ib[i]
                k += 2
            else:
                for i in range(b):
                    sum_re[i] += sa * ra[i]
                for i in range(b):
                    sum_im[i] += sa * ia[i]
                k += 1
        part = out[2 * lo : 2 * (lo + b)]
        for i in range(b):
            part[2 * i] = sum_re[i]
            part[2 * i + 1] = sum_im[i]
        # energy[m] = sum of power[m : m + reach] (zero past the samples' end): the
        # window's change at each lag first (vectorised), then four running sums
        # over four quarters of the block at once, so that their additions, each
        # waiting for the last, overlap.
        span = min(b + reach - 1, have)
        for j in range(span):
            power[j] = float(re[j]) * re[j] + float(im[j]) * im[j]
        for j in range(span, b + reach - 1):
            power[j] = 0.0
        change[0] = 0.0
        later = power[reach : reach + b - 1]
        for m in range(b - 1):
            change[m + 1] = later[m] - power[m]
        quarter = (b + 3) // 4
        for q in range(4):
            start = min(q * quarter, b)
            total = 0.0
            for j in range(start, start + reach):
                total += power[j] if start < b else 0.0
            run[q] = total - (change[start] if start < b else 0.0)
        e_out = energy[lo : lo + b]
        r0, r1, r2, r3 = run[0], run[1], run[2], run[3]
        whole = b // 4 if b % 4 == 0 else 0  # equal quarters: no bounds to test
        if whole:
            c0 = change[0:whole]
            c1 = change[whole : 2 * whole]
            c2 = change[2 * whole : 3 * whole]
            c3 = change[3 * whole : 4 * whole]
            e0 = e_out[0:whole]
            e1 = e_out[whole : 2 * whole]
            e2 = e_out[2 * whole : 3 * whole]
            e3 = e_out[3 * whole : 4 * whole]
            hi0 = hi1 = hi2 = hi3 = 0.0
            lo0 = lo1 = lo2 = lo3 = np.inf
            for i in range(whole):
                r0 += c0[i]
                r1 += c1[i]
                r2 += c2[i]
                r3 += c3[i]
                v0 = np.float32(max(r0, 0.0))  # rounding after a loud stretch
                v1 = np.float32(max(r1, 0.0))
                v2 = np.float32(max(r2, 0.0))
                v3 = np.float32(max(r3, 0.0))
                e0[i] = v0
                e1[i] = v1
                e2[i] = v2
                e3[i] = v3
                hi0 = max(hi0, v0)
                hi1 = max(hi1, v1)
                hi2 = max(hi2, v2)
                hi3 = max(hi3, v3)
                lo0 = min(lo0, v0)
                lo1 = min(lo1, v1)
                lo2 = min(lo2, v2)
                lo3 = min(lo3, v3)
            top = max(top, max(max(hi0, hi1), max(hi2, hi3)))
            low = min(low, min(min(lo0, lo1), min(lo2, lo3)))
        else:
            for i in range(quarter):
                for q in range(4):
                    m = q * quarter + i
                    if m < b:
                        run[q] += change[m]
                        v = np.float32(max(run[q], 0.0))
                        e_out[m] = v
                        top = max(top, v)
                        low = min(low, v)
        m_out = metric[lo : lo + b]
        tiny = np.float32(1e-30)
        for i in range(b):  # float32 throughout: vectorised
            x = sum_re[i]
            y = sum_im[i]
            m_out[i] = np.sqrt(x * x + y * y) / (max(e_out[i], tiny) * scale)
    return top, low


def _fir_part(flat, offset, stride, base, count, step, taps, acc):
    """acc[i] += sum_j taps[j] v[base + i step + j], v[k] = flat[offset + k stride],
    in polyphase form: each tap's products run over contiguous phase arrays
    (vectorised), rather than one short dot product per output."""
    width = taps.size
    span = (width + step - 1) // step
    size = (flat.size - offset + stride - 1) // stride
    phase = np.empty(count + span, dtype=np.float32)
    for p in range(min(step, width)):
        # Phase p holds v[base + m step + p]; past the samples' end, zeros.
        valid = min(count + span, max(0, (size - base - p + step - 1) // step))
        for m in range(valid):
            phase[m] = flat[offset + (base + m * step + p) * stride]
        for m in range(valid, count + span):
            phase[m] = np.float32(0.0)
        for q in range(span):
            j = q * step + p
            if j >= width:
                break
            t = taps[j]
            for i in range(count):
                acc[i] += t * phase[i + q]


def _fir_complex(flat, base, count, step, taps, out):
    """Complex samples (interleaved float32 ``flat``), real taps: complex64 ``out``,
    out[i] = sum_j taps[j] v[base + i step + j]. Polyphase: each phase's real and
    imaginary parts taken apart in one pass over the samples, then filtered by
    that phase's taps with ``_fir_accumulate`` (slices: 3x the speed of the same
    loops indexed with offsets)."""
    width = taps.size
    span = (width + step - 1) // step
    size = flat.size // 2
    n = count + span
    acc_re = np.zeros(count, dtype=np.float32)
    acc_im = np.zeros(count, dtype=np.float32)
    re = np.empty(n, dtype=np.float32)
    im = np.empty(n, dtype=np.float32)
    phase_taps = np.empty(span, dtype=np.float32)
    for p in range(min(step, width)):
        valid = min(n, max(0, (size - base - p + step - 1) // step))
        for m in range(valid):
            k = 2 * (base + m * step + p)
            re[m] = flat[k]
            im[m] = flat[k + 1]
        for m in range(valid, n):
            re[m] = np.float32(0.0)
            im[m] = np.float32(0.0)
        nq = (width - p + step - 1) // step
        for q in range(nq):
            phase_taps[q] = taps[q * step + p]
        _fir_accumulate(re, phase_taps[:nq], acc_re)
        _fir_accumulate(im, phase_taps[:nq], acc_im)
    for i in range(count):
        out[i] = complex(acc_re[i], acc_im[i])


def _fir_real(flat, base, count, step, taps, out):
    acc = np.zeros(count, dtype=np.float32)
    _fir_part(flat, 0, 1, base, count, step, taps, acc)
    out[:] = acc


# Integer steps of the known symbols' times taken by a product from a table, and a
# phasor computed exactly (a sine and cosine, ten times the cost) at least this often.
_PHASOR_STEPS = 64  # a power of two: _unit_phasors splits times with shifts and masks
_PHASOR_ANCHOR = 64


def _unit_phasors(t, freq, out):
    """out[k] = exp(-2j pi freq t[k]). Times that are whole, non-negative numbers
    (symbol times, nearly always) take one product of two table entries each,
    exp(-2j pi freq 64 q) exp(-2j pi freq r) for t = 64 q + r, the tables built by
    products anchored to an exact sine and cosine every 64 entries (relative error
    below 1e-13), and no chain of products from element to element. Other times:
    a step of a few integers from the previous one is one product with a tabled
    power, and every _PHASOR_ANCHOR-th element takes a sine and a cosine."""
    n = t.size
    whole = True
    top = 0.0
    for k in range(n):
        v = t[k]
        if not (v >= 0.0 and v < 16777216.0 and v == np.floor(v)):
            whole = False
            break
        top = max(top, v)
    if whole:
        low = np.empty(_PHASOR_STEPS, dtype=np.complex128)
        _anchored_powers(-2.0 * np.pi * freq, low)
        high = np.empty(int(top) // _PHASOR_STEPS + 1, dtype=np.complex128)
        _anchored_powers(-2.0 * np.pi * freq * _PHASOR_STEPS, high)
        for k in range(n):
            m = np.int64(t[k])
            out[k] = high[m >> 6] * low[m & 63]  # _PHASOR_STEPS = 64
        return
    table = np.empty(_PHASOR_STEPS + 1, dtype=np.complex128)
    for d in range(_PHASOR_STEPS + 1):
        a = -2.0 * np.pi * freq * d
        table[d] = complex(np.cos(a), np.sin(a))
    since = _PHASOR_ANCHOR
    for k in range(n):
        d = t[k] - t[k - 1] if k > 0 else -1.0
        if since < _PHASOR_ANCHOR and 0.0 <= d <= _PHASOR_STEPS and d == np.floor(d):
            out[k] = out[k - 1] * table[int(d)]
            since += 1
        else:
            a = -2.0 * np.pi * freq * t[k]
            out[k] = complex(np.cos(a), np.sin(a))
            since = 1


def _anchored_powers(angle, out):
    """out[m] = exp(1j angle m): products of the previous entry with exp(1j angle),
    an exact sine and cosine every _PHASOR_ANCHOR entries."""
    a = complex(np.cos(angle), np.sin(angle))
    for m in range(out.size):
        if m % _PHASOR_ANCHOR == 0:
            out[m] = complex(np.cos(angle * m), np.sin(angle * m))
        else:
            out[m] = out[m - 1] * a


def _periodogram_grid(z, t, first, step, count, out):
    """out[s] = |sum_k z_k exp(-2j pi (first + s step) t_k)|^2 for s < count, each
    frequency's phasors from the previous one's by one complex product (real and
    imaginary parts in separate arrays, so that the loops vectorise)."""
    n = z.size
    w = np.empty(n, dtype=np.complex128)
    turn = np.empty(n, dtype=np.complex128)
    _unit_phasors(t, first, w)
    _unit_phasors(t, step, turn)
    wr = np.empty(n)
    wi = np.empty(n)
    tr = np.empty(n)
    ti = np.empty(n)
    for k in range(n):
        v = z[k] * w[k]
        wr[k] = v.real
        wi[k] = v.imag
        tr[k] = turn[k].real
        ti[k] = turn[k].imag
    for s in range(count):
        acc_re = 0.0
        acc_im = 0.0
        for k in range(n):
            acc_re += wr[k]
            acc_im += wi[k]
        out[s] = acc_re * acc_re + acc_im * acc_im
        if s + 1 < count:
            for k in range(n):
                a = wr[k]
                b = wi[k]
                wr[k] = a * tr[k] - b * ti[k]
                wi[k] = a * ti[k] + b * tr[k]


def _derotated_fit(z, t, freq, t_ref):
    """Mean of z_k exp(-2j pi freq (t_k - t_ref)) (the gain h) and the residuals'
    energy about it."""
    n = z.size
    if n == 0:  # as numpy's mean of nothing: no estimate
        return complex(np.nan, np.nan), np.nan
    d = np.empty(n, dtype=np.complex128)
    _unit_phasors(t, freq, d)
    # exp(-2j pi f (t - t_ref)) = exp(-2j pi f t) exp(2j pi f t_ref)
    a = 2.0 * np.pi * freq * t_ref
    shift = complex(np.cos(a), np.sin(a))
    h = 0j
    for k in range(n):
        d[k] = z[k] * (d[k] * shift)
        h += d[k]
    h = h / n
    energy = 0.0
    for k in range(n):
        r = d[k] - h
        energy += r.real * r.real + r.imag * r.imag
    return h, energy


def _mix(x, freq, out):
    """out[n] = x[n] exp(2j pi freq n), as ``estimation.phasor``: the phasor of every
    64th sample times a 64-entry table; those of the 64th samples exact every 1024
    samples and products of their neighbours' between (relative error below 1e-14).
    Each block's phasors are made first, then applied in one loop (vectorised)."""
    block = 64
    table = np.empty(block, dtype=np.complex128)
    _anchored_powers(2.0 * np.pi * freq, table)
    t_re = table.real.copy()
    t_im = table.imag.copy()
    p_re = np.empty(block, dtype=np.float32)
    p_im = np.empty(block, dtype=np.float32)
    xf = x.view(np.float32)
    of = out.view(np.float32)
    n = x.size
    s_re = np.cos(2.0 * np.pi * freq * block)
    s_im = np.sin(2.0 * np.pi * freq * block)
    a_re = 1.0
    a_im = 0.0
    for lo in range(0, n, block):
        if lo % (16 * block) == 0:  # exact anchors; between them, a product per block
            a = 2.0 * np.pi * freq * lo
            a_re = np.cos(a)
            a_im = np.sin(a)
        else:
            a_re, a_im = a_re * s_re - a_im * s_im, a_re * s_im + a_im * s_re
        m = min(block, n - lo)
        for j in range(m):
            p_re[j] = np.float32(a_re * t_re[j] - a_im * t_im[j])
            p_im[j] = np.float32(a_re * t_im[j] + a_im * t_re[j])
        xs = xf[2 * lo : 2 * (lo + m)]  # slices: offsets in the index kept it scalar
        os = of[2 * lo : 2 * (lo + m)]
        for j in range(m):
            xr = xs[2 * j]
            xi = xs[2 * j + 1]
            os[2 * j] = xr * p_re[j] - xi * p_im[j]
            os[2 * j + 1] = xr * p_im[j] + xi * p_re[j]


# Slopes |im / re| small enough for _smoothed_phase's arctangent series.
_SMALL_SLOPE = 0.1


def _smoothed_phase(z, window, phase):
    """Unwrapped phase of the moving mean of ``z`` over ``window`` neighbours
    (numpy's ``convolve(..., mode="same")`` with ones, divided by the count),
    its steps taken within +-pi. The window's sum is kept running."""
    n = z.size
    back = window - 1 - (window - 1) // 2  # neighbours before, as mode="same" centres
    ahead = (window - 1) // 2 + 1
    prev = 0j
    total = 0.0
    acc = 0j
    lo_in = 0
    hi_in = 0  # z[lo_in:hi_in] is in acc
    for i in range(n):
        lo = max(i - back, 0)
        hi = min(i + ahead, n)
        while hi_in < hi:
            acc += z[hi_in]
            hi_in += 1
        while lo_in < lo:
            acc -= z[lo_in]
            lo_in += 1
        mean = acc / (hi - lo)
        if i == 0:
            total = np.arctan2(mean.imag, mean.real)
        else:
            step = mean * np.conj(prev)
            re = step.real
            im = step.imag
            if re > 0.0 and abs(im) < _SMALL_SLOPE * re:
                # The phase moves little from pilot to pilot: the arctangent by its
                # series (the first term left out is below 1e-17), not atan2.
                x = im / re
                x2 = x * x
                total += x * (
                    1.0
                    - x2
                    * (
                        1.0 / 3.0
                        - x2
                        * (
                            1.0 / 5.0
                            - x2
                            * (
                                1.0 / 7.0
                                - x2
                                * (1.0 / 9.0 - x2 * (1.0 / 11.0 - x2 * (1.0 / 13.0 - x2 / 15.0)))
                            )
                        )
                    )
                )
            else:
                total += np.arctan2(im, re)
        phase[i] = total
        prev = mean


def _segment_energies(seg, bases, rows, table, segments, period, out):
    """out[j] = sum_s |sum_i table[rows[j], i] seg[bases[j] + s period + i]|^2:
    the preamble's matched-filter energy at each probed delay (fine timing)."""
    width = table.shape[1]
    for j in range(bases.size):
        total = 0.0
        taps = table[rows[j]]
        for s in range(segments):
            lo = bases[j] + s * period
            window = seg[lo : lo + width]  # a slice, and real sums: vectorised
            acc_re = np.float32(0.0)
            acc_im = np.float32(0.0)
            for i in range(width):
                t = taps[i]
                v = window[i]
                acc_re += t.real * v.real - t.imag * v.imag
                acc_im += t.real * v.imag + t.imag * v.real
            total += float(acc_re) ** 2 + float(acc_im) ** 2
        out[j] = total


def _fine_timing(seg, offset, table, fraction_steps, segments, period, reach, steps, out):
    """The receiver's fine timing search in one call: from ``offset`` (the burst's
    start in ``seg``, in samples), for each step of ``steps``, the preamble's
    matched-filter energies (``segment_energies``) a step early, on time and late,
    and a move to the parabola's vertex (at most 1.5 steps; towards the larger side
    where the three are not concave). out[0] = the start found; False (out[0] the
    offset reached) when a probe would leave the samples."""
    width = table.shape[1]
    pos = np.empty(3)
    bases = np.empty(3, dtype=np.int64)
    rows = np.empty(3, dtype=np.int64)
    e = np.empty(3)
    for step in steps:
        for j in range(3):
            pos[j] = offset + (j - 1) * step
            bases[j] = np.int64(np.floor(pos[j]))
        lo = bases[0]
        span = width + bases[2] - lo
        if lo < 0 or lo + reach + span - width > seg.size:
            out[0] = offset
            return False
        for j in range(3):
            rows[j] = np.int64(np.rint((pos[j] - bases[j]) * fraction_steps))
        segment_energies(seg, bases, rows, table, segments, period, e)
        a = e[0]
        b = e[1]
        c = e[2]
        denom = a - 2.0 * b + c
        if denom < 0.0:
            offset += step * min(max(0.5 * (a - c) / denom, -1.5), 1.5)
        elif c > a:
            offset += step
        elif c < a:
            offset -= step
    out[0] = offset
    return True


def _parabola_offset(values, i):
    """As ``estimation._parabola_peak``."""
    a = values[i - 1]
    b = values[i]
    c = values[i + 1]
    denom = a - 2.0 * b + c
    if denom >= 0.0:
        return 0.0
    return min(max(0.5 * (a - c) / denom, -0.5), 0.5)


def _frequency_search(z, t, center, halfwidth):
    """``estimation.estimate_frequency`` in one call: the grid of half-lobe steps
    over center +- halfwidth, a parabola through the best point, and a second,
    narrower one."""
    span = max(t.max() - t.min(), 1.0)
    step = 0.5 / span
    count = int(np.ceil(halfwidth / step))
    size = 2 * count + 3
    power = np.empty(size)
    periodogram_grid(z, t, center + step * float(-count - 1), step, size, power)
    i = int(np.argmax(power[1:-1])) + 1
    best = center + step * float(i - count - 1) + step * _parabola_offset(power, i)
    fine = step / 4.0
    power3 = np.empty(3)
    periodogram_grid(z, t, best + fine * -1.0, fine, 3, power3)
    return best + fine * _parabola_offset(power3, 1)


def _channel_fit(y, times, known, center, halfwidth):
    """``estimation.estimate_channel_at``'s arithmetic in one call: z = y[t] conj(known)
    at the known symbols' times, the frequency (``frequency_search`` when
    ``halfwidth`` > 0, else ``center``), t_ref = mean time, and ``derotated_fit``.
    Returns (h, freq, t_ref, residual energy)."""
    n = times.size
    z = np.empty(n, dtype=np.complex128)
    t = np.empty(n)
    total = 0.0
    for k in range(n):
        v = known[k]
        z[k] = complex(y[times[k]]) * complex(v.real, -v.imag)
        t[k] = times[k]
        total += t[k]
    freq = center
    if halfwidth > 0.0 and n > 0:
        freq = frequency_search(z, t, center, halfwidth)
    t_ref = total / n if n else np.nan
    h, energy = derotated_fit(z, t, freq, t_ref)
    return h, freq, t_ref, energy


def _model_gains(times, h, freq, t_ref, out):
    """out[k] = h exp(2j pi freq (t - t_ref)) at t = times[k], rounded to complex64
    (as ``ChannelEstimate.gain``)."""
    n = times.size
    w = np.empty(n, dtype=np.complex128)
    t = np.empty(n)
    for k in range(n):
        t[k] = times[k]
    _unit_phasors(t, -freq, w)  # exp(2j pi freq t)
    a = -2.0 * np.pi * freq * t_ref
    shift = complex(np.cos(a), np.sin(a))
    for k in range(n):
        out[k] = np.complex64(h * (w[k] * shift))


def _header_soft(y, times, h, freq, t_ref, out):
    """out[k] = Re(y[t] conj(g(t))), g = ``_model_gains``, t = times[k]: the header's
    soft bits."""
    g = np.empty(times.size, dtype=np.complex64)
    _model_gains(times, h, freq, t_ref, g)
    for k in range(times.size):
        v = y[times[k]]
        out[k] = np.float32(float(v.real) * float(g[k].real) + float(v.imag) * float(g[k].imag))


def _first_above(values, bar):
    """Index of the first value above ``bar``; -1 when none is. Block by block:
    whether any of 64 crosses is one vectorised pass (the early exit of a plain
    loop kept it scalar: 3.5x slower over a frame's 7,300 lags)."""
    n = values.size
    for lo in range(0, n, 64):
        part = values[lo : min(lo + 64, n)]
        hit = False
        for i in range(part.size):
            hit |= part[i] > bar
        if hit:
            for i in range(part.size):
                if part[i] > bar:
                    return lo + i
    return -1


def _burst_peak(values, bar, window, out):
    """The receiver's search for a preamble in one call: the first value above
    ``bar`` (-1 when none is), and when the ``window`` values from it have all
    arrived (out[0] = 1, else 0): out[1] = the offset of their first largest from
    that first one, out[2] = the fraction of a lag (within +-0.5) of the parabola
    through it and its neighbours (0 at the window's ends or where they are not
    concave), out[3] = the largest value."""
    first = first_above(values, bar)
    out[0] = 0.0
    if first < 0 or first + window > values.size:
        return first
    best = first
    for i in range(first + 1, first + window):
        if values[i] > values[best]:
            best = i
    i = best - first
    frac = 0.0
    if 0 < i < window - 1:
        a = float(values[best - 1])
        b = float(values[best])
        c = float(values[best + 1])
        denom = a - 2.0 * b + c
        if denom < 0.0:
            frac = min(max(0.5 * (a - c) / denom, -0.5), 0.5)
    out[0] = 1.0
    out[1] = i
    out[2] = frac
    out[3] = values[best]
    return first


def _split_gains(csum, floor_e, rsum, floor_r, rtimes, a, b, c, out):
    """``equalise.energy_stretches``' split gains in one call: for each candidate
    change point c[j] in [a, b), the exponential log-likelihood gained by cutting
    the power's stretch there (from its cumulative sum ``csum``), plus that of the
    known symbols' residuals (``rsum`` at sorted times ``rtimes``; none when empty)."""

    def loglik(total_lo, total_hi, lo, hi, floor):
        count = float(hi - lo)
        return count * np.log(max((total_hi - total_lo) / max(count, 1.0), floor))

    whole = loglik(csum[a], csum[b], a, b, floor_e)
    residuals = rsum.size > 0
    ra = rb = 0
    whole_r = 0.0
    if residuals:
        ra = np.searchsorted(rtimes, a)
        rb = np.searchsorted(rtimes, b)
        whole_r = loglik(rsum[ra], rsum[rb], ra, rb, floor_r)
    for j in range(c.size):
        cj = c[j]
        g = whole - loglik(csum[a], csum[cj], a, cj, floor_e)
        g -= loglik(csum[cj], csum[b], cj, b, floor_e)
        if residuals:
            rc = np.searchsorted(rtimes, cj)
            g += whole_r - loglik(rsum[ra], rsum[rc], ra, rc, floor_r)
            g -= loglik(rsum[rc], rsum[rb], rc, rb, floor_r)
        out[j] = g


def _local_gain_noise(z, window):
    """``equalise._local_gain_noise`` in one call: each z_k against the mean of its
    neighbours in a ``window`` (numpy's ``convolve(..., mode="same")`` with ones,
    itself left out); returns (|gain|, noise variance)."""
    n = z.size
    w = min(window, n)
    ahead = (w - 1) // 2  # mode="same" centres the window so
    noise = 0.0
    power = 0.0
    for i in range(n):
        lo = max(i + ahead - (w - 1), 0)
        hi = min(i + ahead, n - 1)
        acc = 0j
        for m in range(lo, hi + 1):
            acc += z[m]
        local = (acc - z[i]) / max(hi - lo + 1 - 1.0, 1.0)
        r = z[i] - local
        noise += r.real * r.real + r.imag * r.imag
        power += local.real * local.real + local.imag * local.imag
    noise = noise / n * (w - 1.0) / w
    power = power / n - noise / max(w - 1.0, 1.0)
    return np.sqrt(max(power, 0.0)), noise


def _blocks_clean(z, residual, times, count, blocks, spreads):
    """``equalise._looks_clean`` in one call (the same test, block by block)."""
    starts = np.empty(blocks + 1, dtype=np.int64)
    starts[0] = 0
    for b in range(1, blocks):
        starts[b] = np.searchsorted(times, (b * count) // blocks)
    starts[blocks] = residual.size
    means = np.empty(blocks)
    gains = np.empty(blocks)
    for b in range(blocks):
        size = starts[b + 1] - starts[b]
        if size < 3:
            return False
        r = 0.0
        acc = 0j
        for k in range(starts[b], starts[b + 1]):
            r += residual[k]
            acc += z[k]
        means[b] = r / size
        g = acc / size
        gains[b] = g.real * g.real + g.imag * g.imag
    best = int(np.argmin(means))
    best_size = starts[best + 1] - starts[best]
    top = gains.max()
    for b in range(blocks):
        size = starts[b + 1] - starts[b]
        bound = means[best] * (1.0 + spreads * np.sqrt(1.0 / size + 1.0 / best_size))
        if means[b] > bound or gains[b] < 0.5 * top:
            return False
    return True


def _viterbi(soft, prev, signs, top, bits):
    """``header._viterbi_numpy``: the terminated code's most likely input bits
    (``top``: the bit of a state that holds its newest input bit).

    States ``j`` and ``j + half`` (newest bit 0 and 1) share their predecessors
    ``prev[j]``; for the shift register of the header code these are 2j and 2j+1,
    so the add-compare-select runs over contiguous arrays with no gathers and no
    branches (vectorised).
    """
    states = prev.shape[0]
    half = states // 2
    steps = bits.size
    pred0 = np.empty(states, dtype=np.int64)
    pred1 = np.empty(states, dtype=np.int64)
    for s in range(states):
        pred0[s] = prev[s, 0]
        pred1[s] = prev[s, 1]
    # Signs of the two code bits on each state's two incoming branches.
    a0 = signs[0, :, 0].copy()
    a1 = signs[1, :, 0].copy()
    b0 = signs[0, :, 1].copy()
    b1 = signs[1, :, 1].copy()
    metric = np.full(states, -np.inf)
    metric[0] = 0.0
    from_a = np.empty(states)
    from_b = np.empty(states)
    choices = np.zeros((steps, states), dtype=np.uint8)
    shift = True  # the shift register's layout: state j + half has j's predecessors 2j, 2j+1
    for s in range(half):
        if pred0[s] != 2 * s or pred1[s] != 2 * s + 1:
            shift = False
        if pred0[s + half] != pred0[s] or pred1[s + half] != pred1[s]:
            shift = False
    for i in range(steps):
        s0 = soft[2 * i]
        s1 = soft[2 * i + 1]
        if shift:
            for j in range(half):
                from_a[j] = metric[2 * j]
                from_b[j] = metric[2 * j + 1]
            for j in range(half):
                from_a[j + half] = from_a[j]
                from_b[j + half] = from_b[j]
        else:
            for s in range(states):
                from_a[s] = metric[pred0[s]]
                from_b[s] = metric[pred1[s]]
        row = choices[i]
        for s in range(states):
            a = from_a[s] + (a0[s] * s0 + a1[s] * s1)
            b = from_b[s] + (b0[s] * s0 + b1[s] * s1)
            take = b > a
            metric[s] = max(a, b)
            row[s] = np.uint8(take)
    state = 0
    for i in range(steps - 1, -1, -1):
        bits[i] = state >> top
        state = prev[state, choices[i, state]]


def _conv_symbols(bits, generators, scrambler, out):
    """``header.encode_symbols``' convolutional code: the shift register (the
    newest bit at bit K-1 of the register) from state 0, code bits g0, g1, ... per
    input bit, each sent as 1 - 2 bit and multiplied by the scrambler's sign."""
    k = 0
    register = 0
    top = 0
    g_max = 0
    for g in generators:
        g_max = max(g_max, g)
    while (1 << (top + 1)) <= g_max:
        top += 1
    for i in range(bits.size):
        register = (register >> 1) | (np.int64(bits[i]) << top)
        for g in generators:
            v = register & g
            parity = 0
            while v:
                parity ^= 1
                v &= v - 1
            out[k] = np.float32(1.0 - 2.0 * parity) * scrambler[k]
            k += 1


# Turns (radians) small enough for ``_conj_turn``'s series, and how many lines of
# the payload equaliser may follow one another by such turns before an exact anchor.
_SMALL_TURN = 0.25
_TURN_ANCHOR = 32


def _conj_turn(a):
    """exp(-1j a) for |a| < _SMALL_TURN, by the Taylor series of the cosine and sine
    to a^10 and a^11 (the first term left out is below 1.3e-16)."""
    a2 = a * a
    c = 1.0 - a2 / 2.0 * (
        1.0 - a2 / 12.0 * (1.0 - a2 / 30.0 * (1.0 - a2 / 56.0 * (1.0 - a2 / 90.0)))
    )
    s = a * (
        1.0
        - a2 / 6.0 * (1.0 - a2 / 20.0 * (1.0 - a2 / 42.0 * (1.0 - a2 / 72.0 * (1.0 - a2 / 110.0))))
    )
    return complex(c, -s)


def _equalise_payload(y, t_out, h, freq, t_ref, knot_t, knot_phase, out):
    """out[k] = y[t] / (h exp(2j pi freq (t - t_ref)) exp(1j phase(t))), t = t_out[k],
    phase(t) interpolated linearly between the knots (held at the end ones, as
    ``np.interp``; zero without knots). Between knots the angle is linear in t,
    so consecutive symbols take one complex product each, not a sine and cosine;
    the knot interval is followed along increasing times rather than searched,
    and its line is worked out once per interval."""
    knots = knot_t.size
    two_pi_f = 2.0 * np.pi * freq
    inv_h = 1.0 / h
    last_interval = -3
    last_t = 0
    current = 1.0 + 0j
    step = 1.0 + 0j
    interval = -1
    line_of = -4  # the interval whose base, slope and origin are below
    base = slope = origin = 0.0
    last_angle = 0.0
    since = 0
    for k in range(t_out.size):
        t = t_out[k]
        if knots == 0:
            interval = -2
        else:
            if k == 0 or t < last_t:  # the first, or times not increasing: search
                interval = np.searchsorted(knot_t, t, side="right") - 1
            else:
                while interval + 1 < knots and knot_t[interval + 1] <= t:
                    interval += 1
        if interval != line_of:
            line_of = interval
            if knots == 0:
                base, slope, origin = 0.0, 0.0, 0.0
            elif interval < 0:
                base, slope, origin = knot_phase[0], 0.0, 0.0
            elif interval >= knots - 1:
                base, slope, origin = knot_phase[knots - 1], 0.0, 0.0
            else:
                t0 = knot_t[interval]
                base = knot_phase[interval]
                slope = (knot_phase[interval + 1] - base) / (knot_t[interval + 1] - t0)
                origin = t0
        held = min(interval, knots - 1)
        angle = two_pi_f * (t - t_ref) + base + slope * (t - origin)
        if held == last_interval and t - last_t == 1:
            current = current * step
        else:
            # 1 / exp(1j angle) = exp(-1j angle): the division becomes a product.
            # Past a pilot the angle has turned little since the last symbol: that
            # turn by a series (exact to 1e-16) rather than a sine and cosine of the
            # whole angle, which are anchored afresh every _TURN_ANCHOR lines.
            turn = angle - last_angle
            if k > 0 and since < _TURN_ANCHOR and abs(turn) < _SMALL_TURN:
                current = current * _conj_turn(turn)
                since += 1
            else:
                current = complex(np.cos(angle), -np.sin(angle)) * inv_h
                since = 0
            w = two_pi_f + slope
            step = _conj_turn(w) if abs(w) < _SMALL_TURN else complex(np.cos(w), -np.sin(w))
        last_interval = held
        last_t = t
        last_angle = angle
        out[k] = y[t] * current


def _damage_precheck(y, times, values, order, freq, t_ref, h, count, blocks, spreads, z, residual):
    """``equalise.find_damage``'s first step in one call: the known symbols in time
    order (``order`` sorts ``times``), derotated by the frame's estimate
    (z = y[t] conj(value) exp(-2j pi freq (t - t_ref)), complex128), their
    residuals |z - h|^2, and ``blocks_clean`` of them. Fills ``z`` and ``residual``
    (the full search goes on from them) and returns whether the frame looks clean."""
    n = order.size
    t = np.empty(n)
    for k in range(n):
        t[k] = times[order[k]]
    _unit_phasors(t, freq, z)
    a = 2.0 * np.pi * freq * t_ref
    shift = complex(np.cos(a), np.sin(a))
    for k in range(n):
        j = order[k]
        v = values[j]
        w = complex(y[times[j]]) * complex(v.real, -v.imag)
        z[k] = w * (z[k] * shift)
        r = z[k] - h
        residual[k] = r.real * r.real + r.imag * r.imag
    sorted_times = np.empty(n, dtype=np.int64)
    for k in range(n):
        sorted_times[k] = times[order[k]]
    return blocks_clean(z, residual, sorted_times, count, blocks, spreads)


def _drift_probe(flat, bases, rows, table, count, step, y, los, out):
    """``equalise.estimate_drift``'s block timings in one call: for block j, the
    energy of the matched-filter outputs ``y[los[j] : los[j] + count]`` and of
    those a quarter symbol late (taps ``table[rows[2j]]`` from sample
    ``bases[2j]``) and early (``2j + 1``), and out[j] = the phase of the sinusoid
    through the three."""
    late_v = np.empty(count, dtype=np.complex64)
    early_v = np.empty(count, dtype=np.complex64)
    for j in range(out.size):
        centre = 0.0
        block = y[los[j] : los[j] + count]
        for i in range(count):
            v = block[i]
            centre += float(v.real) ** 2 + float(v.imag) ** 2
        fir_complex(flat, bases[2 * j], count, step, table[rows[2 * j]], late_v)
        fir_complex(flat, bases[2 * j + 1], count, step, table[rows[2 * j + 1]], early_v)
        late = 0.0
        early = 0.0
        for i in range(count):
            a = late_v[i]
            b = early_v[i]
            late += float(a.real) ** 2 + float(a.imag) ** 2
            early += float(b.real) ** 2 + float(b.imag) ** 2
        out[j] = np.arctan2(0.5 * (late - early), centre - 0.5 * (late + early))


def _block_timings(flat, start, size, sps, quarter, blocks, table, fraction_steps, y, out):
    """``equalise.estimate_drift``'s block timings (samples, wrapped to +-sps/2) of
    the blocks ``blocks`` of ``size`` symbols: ``drift_probe`` with the probes'
    sample bases and tap rows worked out here (a quarter symbol late and early).
    False, ``out`` untouched, when a probe would leave the samples."""
    n = blocks.size
    bases = np.empty(2 * n, dtype=np.int64)
    rows = np.empty(2 * n, dtype=np.int64)
    los = np.empty(n, dtype=np.int64)
    width = table.shape[1]
    samples = flat.size // 2
    for j in range(n):
        los[j] = blocks[j] * size
        for d in range(2):
            pos = start + blocks[j] * size * sps + (quarter if d == 0 else -quarter)
            base = np.int64(np.floor(pos))
            if base < 0 or base + (size - 1) * sps + width > samples:
                return False
            bases[2 * j + d] = base
            rows[2 * j + d] = np.int64(np.rint((pos - base) * fraction_steps))
    drift_probe(flat, bases, rows, table, size, sps, y, los, out)
    scale = sps / (2.0 * np.pi)
    for j in range(n):
        out[j] *= scale
    return True


def _fir_drifting(seg, start, count, drift, sps, piece, table, fraction_steps, out):
    """``equalise.matched_filter_drifting`` in one call: the matched filter of
    ``count`` symbols in pieces of ``piece``, each at the delay of its middle symbol
    on the sliding timing (taps ``table[rows]``). False (``out`` partly written) when
    a piece would leave the samples: the caller's general path then says why."""
    width = table.shape[1]
    for lo in range(0, count, piece):
        hi = min(count, lo + piece)
        mid = 0.5 * (lo + hi - 1)
        at = start + lo * sps + mid * sps * drift
        base = np.int64(np.floor(at))
        stop = base + (hi - lo - 1) * sps + width
        row = np.int64(np.rint((at - base) * fraction_steps))
        if base < 0 or stop > seg.size or row < 0 or row > fraction_steps:
            return False
        fir_complex(seg[base:stop].view(np.float32), 0, hi - lo, sps, table[row], out[lo:hi])
    return True


def _pilot_residual_phase(y, known, t, h, freq, t_ref, window, phase):
    """``estimation.pilot_phase`` in one call: the pilots' residual phasors after
    the linear model, z = y conj(known) / g (g = ``_model_gains``), then
    ``smoothed_phase``."""
    n = t.size
    g = np.empty(n, dtype=np.complex64)
    _model_gains(t, h, freq, t_ref, g)
    z = np.empty(n, dtype=np.complex128)
    for k in range(n):
        v = known[k]
        z[k] = complex(y[k]) * complex(v.real, -v.imag) / complex(g[k])
    smoothed_phase(z, window, phase)


def _drift_fit(
    seg, start, y, count, sps, taps_table, fraction_steps, preamble_length, max_sro, min_slide, out
):
    """``equalise.estimate_drift`` past its quick test, in one call: the timing of
    all 8 blocks (``block_timings``), unwrapped as ``np.unwrap``, the weighted line
    through zero (``_weighted_slope``), the limits and the James-Stein shrinking.
    out[0] = the clock offset (0.0: none to follow); False when a probe would leave
    the samples (the general path then)."""
    blocks = 8
    size = count // blocks
    delays = np.empty(blocks)
    if not block_timings(
        seg.view(np.float32),
        start,
        size,
        sps,
        sps / 4.0,
        np.arange(blocks),
        taps_table,
        fraction_steps,
        y,
        delays,
    ):
        return False
    turn = 2.0 * np.pi / sps
    unwrapped = np.empty(blocks)
    unwrapped[0] = delays[0] * turn
    total = 0.0
    for b in range(1, blocks):
        d = delays[b] * turn - delays[b - 1] * turn
        wrapped = (d + np.pi) % (2.0 * np.pi) - np.pi
        if wrapped == -np.pi and d > 0.0:
            wrapped = np.pi
        if abs(d) >= np.pi:
            total += wrapped - d
        unwrapped[b] = delays[b] * turn + total
    # Weighted least squares through the origin (equal weights: equal blocks).
    sxx = 0.0
    sxy = 0.0
    for b in range(blocks):
        x = (b + 0.5) * size - 0.5 - 0.5 * preamble_length
        v = unwrapped[b] / turn
        sxx += x * x / blocks
        sxy += x * v / blocks
    out[0] = 0.0
    if sxx <= 0.0:
        return True
    slope = sxy / sxx
    resid = 0.0
    for b in range(blocks):
        x = (b + 0.5) * size - 0.5 - 0.5 * preamble_length
        r = unwrapped[b] / turn - slope * x
        resid += r * r / blocks
    slope_err = np.sqrt(max(resid / max(blocks - 1, 1) / sxx, 0.0))
    drift = slope / sps
    sigmas = abs(slope) / max(slope_err, 1e-30)
    if abs(drift) > 1.2 * max_sro:
        return True
    drift *= max(0.0, 1.0 - 1.0 / max(sigmas, 1e-9) ** 2)
    if abs(drift) * count * sps < min_slide:
        return True
    out[0] = drift
    return True


# Outcomes of ``payload_path``.
PAYLOAD_DONE = 0  # equalised, the pre-check clean
PAYLOAD_DAMAGE = 2  # equalised, the pre-check failed: the full damage search follows
PAYLOAD_OTHER = 3  # anything else (samples short, a degenerate gain): the general path


def _payload_path(
    seg,
    start,
    count,
    sps,
    taps_table,
    fraction_steps,
    drift_snr,
    max_sro,
    quick_blocks,
    preamble_length,
    times,
    values,
    order,
    pilot_times,
    pilot_values,
    payload_times,
    freq_center,
    halfwidth,
    track_window,
    tracker_noise,
    pre_blocks,
    pre_spreads,
    y,
    symbols,
    fit,
):
    """The payload stage of a frame in one call, as the receiver's general path
    does it step by step (``matched_filter``, ``equalise.estimate_drift`` when
    ``drift_snr`` > 0 (its quick two-block test, and ``drift_fit`` and ``fir_drifting``
    when that sees a clock offset), ``equalise_frame`` from every
    known symbol, and ``find_damage``'s pre-check): fills the matched-filter outputs
    ``y`` (along the clock offset measured, when one is followed) and, when
    equalised, ``symbols`` and fit = [Re h, Im h, freq, t_ref, residual energy, snr,
    sum of the symbols' parts, clock offset]. Returns one of the PAYLOAD_* outcomes;
    past DONE the receiver goes on from ``y`` and the fit (DAMAGE: the full damage
    search) or from the start (OTHER) in Python."""
    width = taps_table.shape[1]
    base = np.int64(np.floor(start))
    stop = base + (count - 1) * sps + width
    if base < 0 or stop > seg.size or count < 1:
        return PAYLOAD_OTHER
    row = np.int64(np.rint((start - base) * fraction_steps))
    if row < 0 or row > fraction_steps:
        return PAYLOAD_OTHER
    fir_complex(seg[base:stop].view(np.float32), 0, count, sps, taps_table[row], y)
    drift = 0.0
    if drift_snr > 0.0:
        size = count // 8
        if size < 1:
            return PAYLOAD_OTHER
        delays = np.empty(2)
        if not block_timings(
            seg.view(np.float32),
            start,
            size,
            sps,
            sps / 4.0,
            quick_blocks,
            taps_table,
            fraction_steps,
            y,
            delays,
        ):
            return PAYLOAD_OTHER
        min_slide = min(max(sps * np.sqrt(0.045 / max(drift_snr, 1e-3)), 0.03), 0.5)
        c1 = (quick_blocks[0] + 0.5) * size - 0.5 - 0.5 * preamble_length
        c_last = (quick_blocks[1] + 0.5) * size - 0.5 - 0.5 * preamble_length
        step = sps * np.rint((delays[0] * c_last / c1 - delays[1]) / sps)
        quick = (delays[1] + step) / c_last
        if not abs(quick) * count < min_slide:
            found = np.empty(1)
            if not drift_fit(
                seg,
                start,
                y,
                count,
                sps,
                taps_table,
                fraction_steps,
                preamble_length,
                max_sro,
                min_slide,
                found,
            ):
                return PAYLOAD_OTHER
            drift = found[0]
            if drift != 0.0:
                piece = np.int64(max(16.0, min(count, 0.05 / max(abs(drift) * sps, 1e-12))))
                if not fir_drifting(
                    seg, start, count, drift, sps, piece, taps_table, fraction_steps, y
                ):
                    return PAYLOAD_OTHER
    h, freq, t_ref, energy = channel_fit(y, times, values, freq_center, halfwidth)
    n = times.size
    free = 3.0 if halfwidth > 0.0 else 2.0
    dof = n - free / 2.0
    noise_var = energy / max(dof, 1.0)
    gain = abs(h)
    signal = max(gain * gain - noise_var / n, 0.0)
    snr = signal / max(noise_var, 1e-30)
    if dof > 1.0:
        snr *= (dof - 1.0) / dof
    fit[0] = h.real
    fit[1] = h.imag
    fit[2] = freq
    fit[3] = t_ref
    fit[4] = energy
    fit[5] = snr
    fit[7] = drift
    if not (gain > 0.0 and gain < np.inf):
        return PAYLOAD_OTHER
    knots = np.zeros(0)
    phase = np.zeros(0)
    if track_window > 1:
        window = max(track_window, np.int64(np.ceil(0.5 / (tracker_noise * max(snr, 1e-3)))))
        if 2 * window <= pilot_times.size:
            m = pilot_times.size
            knots = np.empty(m)
            at_pilots = np.empty(m, dtype=np.complex64)
            for k in range(m):
                knots[k] = pilot_times[k]
                at_pilots[k] = y[pilot_times[k]]
            phase = np.empty(m)
            pilot_residual_phase(
                at_pilots, pilot_values, pilot_times, h, freq, t_ref, window, phase
            )
    equalise_payload(y, payload_times, h, freq, t_ref, knots, phase, symbols)
    total = 0.0  # NaN or infinite when any symbol is (or, rarely, on overflow)
    for k in range(symbols.size):
        total += symbols[k].real + symbols[k].imag
    fit[6] = total
    z = np.empty(order.size, dtype=np.complex128)
    residual = np.empty(order.size)
    if damage_precheck(
        y, times, values, order, freq, t_ref, h, count, pre_blocks, pre_spreads, z, residual
    ):
        return PAYLOAD_DONE
    return PAYLOAD_DAMAGE


# Outcomes of ``header_path``.
HEADER_DECODED = 0  # bits decoded (their CRC is checked in Python)
HEADER_OTHER = 1  # fine timing left its samples, or samples short: the general path


def _header_path(
    buf,
    buf_start,
    burst_start,
    cfo,
    sps,
    num_taps,
    fine_count,
    segment_table,
    fraction_steps,
    segments,
    period,
    reach,
    fine_steps,
    taps_table,
    count,
    known_times,
    known_values,
    data_times,
    halfwidth,
    scrambler,
    prev,
    signs,
    top,
    timing,
    y,
    fit,
    bits,
    packed,
    generators,
    encoded,
):
    """The header stage of a burst in one call, as the receiver's general path
    does it step by step for a convolutional header: the samples around the
    preamble frequency corrected (``mix``) and the fine timing (``fine_timing``);
    the samples of preamble and header corrected again from the new start, the
    matched filter (``count`` symbols into ``y``), the channel fit from the known
    symbols (``channel_fit``: fit = [Re h, Im h, freq, t_ref, residual energy]),
    the header's soft bits, descrambled, and ``viterbi`` into ``bits``, the first of
    them packed into the bytes ``packed``, and ``encoded``: their code (``generators``)
    sent as scrambled BPSK, the header's known symbols once its CRC has passed.
    ``timing[0]``: the burst's start found (absolute sample). Returns one of the
    HEADER_* outcomes."""
    # Fine timing, from two samples before the coarse start.
    first = burst_start - 2.0
    lo = np.int64(np.floor(first)) - 1
    hi = np.int64(np.floor(first)) + 1 + (fine_count - 1) * sps + num_taps
    if lo - buf_start < 0 or hi - buf_start > buf.size:
        return HEADER_OTHER
    seg = np.empty(hi - lo, dtype=np.complex64)
    mix(buf[lo - buf_start : hi - buf_start], -cfo, seg)
    found = np.empty(1)
    if not fine_timing(
        seg,
        burst_start - lo,
        segment_table,
        fraction_steps,
        segments,
        period,
        reach,
        fine_steps,
        found,
    ):
        return HEADER_OTHER
    start = lo + found[0]
    timing[0] = start
    # Preamble and header.
    lo = np.int64(np.floor(start)) - 1
    hi = np.int64(np.floor(start)) + 1 + (count - 1) * sps + num_taps
    if lo - buf_start < 0 or hi - buf_start > buf.size:
        return HEADER_OTHER
    seg = np.empty(hi - lo, dtype=np.complex64)
    mix(buf[lo - buf_start : hi - buf_start], -cfo, seg)
    offset = start - lo
    base = np.int64(np.floor(offset))
    stop = base + (count - 1) * sps + taps_table.shape[1]
    row = np.int64(np.rint((offset - base) * fraction_steps))
    if base < 0 or stop > seg.size or row < 0 or row > fraction_steps:
        return HEADER_OTHER
    fir_complex(seg[base:stop].view(np.float32), 0, count, sps, taps_table[row], y)
    h, freq, t_ref, energy = channel_fit(y, known_times, known_values, 0.0, halfwidth)
    fit[0] = h.real
    fit[1] = h.imag
    fit[2] = freq
    fit[3] = t_ref
    fit[4] = energy
    soft = np.empty(data_times.size, dtype=np.float32)
    header_soft(y, data_times, h, freq, t_ref, soft)
    n = min(soft.size, scrambler.size)
    steps = n // 2
    descrambled = np.empty(2 * steps)
    for k in range(2 * steps):
        descrambled[k] = np.float32(soft[k] * scrambler[k])
    viterbi(descrambled, prev, signs, top, bits[:steps])
    # The header's symbols as sent, should its CRC pass: the code of the decoded
    # bits (tail included), as ``header.encode_symbols`` makes them.
    conv_symbols(bits[:steps], generators, scrambler, encoded)
    for j in range(packed.size):  # the first bits, 8 a byte, the first the most significant
        v = 0
        for b in range(8):
            v = (v << 1) | (bits[8 * j + b] if 8 * j + b < steps else 0)
        packed[j] = v
    return HEADER_DECODED


# The compiled kernels, set by load(); None until then.
fir_complex = fir_real = detection = segment_correlation = periodogram_grid = derotated_fit = None
frequency_search = blocks_clean = viterbi = conv_symbols = equalise_payload = None
mix = smoothed_phase = segment_energies = None
damage_precheck = drift_probe = block_timings = pilot_residual_phase = fine_timing = None
payload_path = header_path = fir_drifting = drift_fit = None
channel_fit = header_soft = first_above = burst_peak = split_gains = local_gain_noise = None


def load() -> bool:
    """Import numba and compile (or load from its cache) every kernel, once.

    Returns ``AVAILABLE``. A missing or broken numba is logged once and leaves
    the numpy path in use.
    """
    return _loader.load()


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _warm_up() -> None:
    """Call every kernel with the argument types the receiver gives it (the
    taps and the fine-timing table are read-only), so none compiles mid-stream."""
    x = np.zeros(512, np.float32)
    taps = _readonly(np.zeros(8, np.float32))
    dsum = np.zeros(4, np.complex64)
    energy = np.zeros(4, np.float32)
    signs = np.ones(3, np.float32)
    pulse = _readonly(np.zeros(5, np.float32))
    segment = _readonly(np.zeros(2, np.float32))
    detection(
        x[: 2 * (4 + 54)],
        4,
        16,
        signs,
        55,
        np.float32(1.0),
        pulse,
        segment,
        segment,
        2,
        dsum,
        energy,
        energy.copy(),
    )
    fir_real(x, 0, 4, 2, taps, energy)
    fir_complex(x, 0, 4, 2, taps, dsum)
    z = np.ones(4, np.complex128)
    times = np.arange(4.0)
    periodogram_grid(z, times, 0.0, 0.01, 3, np.zeros(3))
    derotated_fit(z, times, 0.01, 1.5)
    frequency_search(z, times, 0.0, 0.01)
    blocks_clean(z, np.ones(4), np.arange(4), 4, 2, 5.0)
    prev = np.zeros((4, 2), np.int64)
    viterbi(np.zeros(8), prev, np.ones((2, 4, 2)), 1, np.empty(4, np.uint8))
    conv_symbols(
        np.zeros(4, np.uint8), _readonly(np.array([3, 2])), _readonly(np.ones(8, np.float32)), x
    )
    times = _readonly(np.arange(4))
    for knots in (np.zeros(0), np.arange(4.0)):
        equalise_payload(dsum, times, 1.0 + 0j, 0.0, 0.0, knots, np.zeros(knots.size), dsum.copy())
    mix(dsum, 0.01, np.empty_like(dsum))
    smoothed_phase(z, 2, np.empty(4))
    order = _readonly(np.arange(4))
    values = np.ones(4, np.complex64)
    damage_precheck(
        dsum, order, values, order, 0.01, 1.5, 1.0 + 0j, 4, 2, 5.0, z.copy(), np.empty(4)
    )
    rows = np.zeros(4, np.int64)
    drift_probe(
        x, rows, rows, _readonly(np.zeros((2, 8), np.float32)), 2, 2, dsum, rows, np.empty(2)
    )
    fir_drifting(dsum, 0.5, 1, 1e-4, 2, 1, _readonly(np.zeros((2, 8), np.float32)), 1, dsum.copy())
    for blocks in (_readonly(np.array([0, 1])), np.arange(2)):
        block_timings(
            x, 0.5, 2, 2, 0.5, blocks, _readonly(np.zeros((2, 8), np.float32)), 1, dsum, np.empty(2)
        )
    for known, times in ((_readonly(values.copy()), order), (values, np.arange(4))):
        pilot_residual_phase(dsum, known, times, 1.0 + 0j, 0.01, 1.5, 2, np.empty(4))
    three = np.zeros(3, np.int64)
    table = _readonly(np.zeros((2, 2), np.complex64))
    segment_energies(dsum, three, three, table, 1, 1, np.empty(3))
    steps = _readonly(np.array([0.5, 0.15]))
    fine_timing(dsum, 1.5, table, 1024, 1, 1, 2, steps, np.empty(1))
    # Known symbols' times and values come read-only from the layout caches or as
    # fresh arrays, in every combination (numba compiles each apart).
    for times in (order, np.arange(4)):
        for known in (_readonly(values.copy()), values):
            channel_fit(dsum, times, known, 0.0, 0.01)
        header_soft(dsum, times, 1.0 + 0j, 0.01, 1.5, np.empty(4, np.float32))
    first_above(energy, np.float32(0.5))
    burst_peak(energy, np.float32(0.5), 2, np.empty(4))
    # The header stage, with the receiver's tables (read-only) and header forms.
    header_path(
        np.zeros(64, np.complex64),
        0,
        8.0,
        0.001,
        2,
        5,
        4,
        _readonly(np.zeros((3, 6), np.complex64)),
        2,
        2,
        4,
        10,
        _readonly(np.array([0.5, 0.15])),
        _readonly(np.zeros((3, 5), np.float32)),
        4,
        np.arange(2),
        np.ones(2, np.complex64),
        np.arange(2, 4),
        0.004,
        _readonly(np.ones(2, np.float32)),
        np.zeros((4, 2), np.int64),
        np.ones((2, 4, 2)),
        1,
        np.empty(1),
        np.empty(4, np.complex64),
        np.empty(5),
        np.empty(1, np.uint8),
        np.empty(1, np.uint8),
        _readonly(np.array([3, 2])),
        np.empty(2, np.float32),
    )
    # The payload stage, with the layout caches' read-only arrays and a frame's own
    # known values; each outcome's branch compiled.
    table = _readonly(np.zeros((3, 5), np.float32))
    ro_times = _readonly(np.arange(40, dtype=np.int64))
    fresh = np.ones(40, np.complex64)
    pilots = _readonly(np.arange(0, 40, 4, dtype=np.int64))
    for snr in (0.0, 1.0):
        payload_path(
            np.ones(100, np.complex64),
            1.5,
            40,
            2,
            table,
            2,
            snr,
            2e-4,
            _readonly(np.array([1, 7])),
            8,
            ro_times,
            fresh,
            ro_times,
            pilots,
            _readonly(np.ones(pilots.size, np.complex64)),
            ro_times,
            0.0,
            0.01,
            2,
            0.01,
            2,
            5.0,
            np.empty(40, np.complex64),
            np.empty(40, np.complex64),
            np.empty(8),
        )
    local_gain_noise(z, 16)
    csum = np.arange(9.0)
    for rsum, rtimes in ((csum, np.arange(8)), (np.zeros(0), np.zeros(0, np.int64))):
        split_gains(csum, 1e-300, rsum, 1e-300, rtimes, 0, 8, np.arange(2, 6), np.empty(4))


_loader = KernelLoader(
    __name__,
    "receiver kernels",
    tuple(
        Kernel(
            name,
            globals()["_" + name.lstrip("_")],
            error_model="numpy" if name in _NUMPY_ERRORS else "python",
        )
        for name in _KERNELS
    ),
    _warm_up,
    globals(),
)
