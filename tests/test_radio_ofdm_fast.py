"""The compiled OFDM sync metric (numba) against its numpy twin: the same metric,
the same frames from a stream, and the numpy path alone."""

import numpy as np
import pytest
from diffjscc import channels
from diffjscc.radio import _fast_ofdm, image_symbol_count
from diffjscc.radio.ofdm import OfdmConfig, build_bursts, noise_voltage
from diffjscc.radio.ofdm_receiver import OfdmReceiver
from diffjscc.radio.sequences import BARKER_7
from diffjscc.radio.sim import fractional_delay, frequency_offset
from diffjscc.symbols import EncodedImage

needs_numba = pytest.mark.skipif(
    not _fast_ofdm.load(), reason=f"no compiled kernel: {_fast_ofdm.REASON}"
)


def _stream(seed=0, snr_db=3.0):
    rng = np.random.default_rng(seed)
    cfg = OfdmConfig()
    shape = (128, 192)
    n = image_symbol_count(1, shape)
    sent = []
    pieces = [np.zeros(700, np.complex64)]
    for i in range(3):
        z = channels.normalise_power(rng.standard_normal(n) + 1j * rng.standard_normal(n))
        enc = EncodedImage(z.astype(np.complex64), shape, (0, 0, 0), "jscc-awgn-cbr1_384", 5.0)
        sent.append(enc.symbols)
        pieces += [*build_bursts(enc, i, cfg), np.zeros(int(rng.integers(0, 900)), np.complex64)]
    x = np.convolve(np.concatenate(pieces), [0.9, 0.0, 0.3j, -0.2])
    x = frequency_offset(fractional_delay(x.astype(np.complex64), 5.3), -0.004)
    sigma = noise_voltage(snr_db, cfg)
    x = x + sigma / np.sqrt(2) * (rng.standard_normal(x.size) + 1j * rng.standard_normal(x.size))
    return x.astype(np.complex64), sent


def _receive(x, compiled, monkeypatch):
    monkeypatch.setattr(_fast_ofdm, "AVAILABLE", compiled)
    rx = OfdmReceiver(OfdmConfig())
    frames = []
    for i in range(0, x.size, 5000):
        frames += rx.feed(x[i : i + 5000])
    return frames + rx.flush(), rx.stats


@needs_numba
def test_compiled_metric_matches_numpy(monkeypatch):
    rng = np.random.default_rng(1)
    count, period, lags = 3000, 32, 16
    span = (BARKER_7.size + 1) * period + lags
    x = (rng.standard_normal(count + span) + 1j * rng.standard_normal(count + span)).astype(
        np.complex64
    )
    x[1000:1100] = 0  # silence: the power's running sum must follow it down
    corr = np.convolve(x, np.ones(period))[period - 1 :].astype(np.complex64)
    signs = np.asarray(BARKER_7, dtype=np.float64)
    compiled = _fast_ofdm.sync_metric(corr, x, count, period, signs, lags, 3.0)
    monkeypatch.setattr(_fast_ofdm, "AVAILABLE", False)
    twin = _fast_ofdm.sync_metric(corr, x, count, period, signs, lags, 3.0)
    for a, b in zip(compiled, twin, strict=True):
        assert a.shape == b.shape
        assert np.allclose(a, b, rtol=1e-6, atol=1e-9 * np.max(np.abs(b)))


@needs_numba
def test_compiled_and_numpy_receivers_give_the_same_frames(monkeypatch):
    x, sent = _stream()
    fast, fast_stats = _receive(x, True, monkeypatch)
    slow, slow_stats = _receive(x, False, monkeypatch)
    assert [f.image_id for f in fast] == [f.image_id for f in slow] == [0, 1, 2]
    assert fast_stats == slow_stats
    for a, b in zip(fast, slow, strict=True):
        assert a.timing == b.timing
        assert np.allclose(a.symbols, b.symbols, atol=1e-4)
        assert a.snr_db == pytest.approx(b.snr_db, abs=1e-4)


def test_numpy_path_alone(monkeypatch):
    x, sent = _stream(seed=2, snr_db=8.0)
    frames, stats = _receive(x, False, monkeypatch)
    assert [f.image_id for f in frames] == [0, 1, 2] and stats["internal_errors"] == 0
    for f in frames:
        assert np.mean(np.abs(f.symbols - sent[f.image_id]) ** 2) < 0.5


@needs_numba
def test_compiled_estimator_kernels_match_their_numpy_twins(monkeypatch):
    """The channel estimator's kernels (time smoother, its leave-one-out residuals, the
    residual phase step, the interpolation product) against their twins, on the shapes
    a frame gives them and on edge cases (one symbol, an empty row, the nearest-only
    fallback, a straight line through two observations either side)."""
    rng = np.random.default_rng(3)

    def cplx(*shape):
        return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)

    cases = []
    for m, stagger in [(1, 2), (2, 2), (3, 2), (7, 2), (9, 2), (6, 3), (10, 1)]:
        step = rng.uniform(-0.3, 0.3)
        hp = cplx(1, 15) * np.exp(1j * step * np.arange(m))[:, None] + 0.2 * cplx(m, 15)
        cases.append((m, stagger, hp))
    for m, stagger, hp in cases:
        for row in range(min(m, stagger)):
            t_obs = np.arange(row, m, stagger, dtype=np.float64)
            weight = rng.uniform(0.1, 10.0, t_obs.size)
            for half, fit in [(np.inf, False), (np.inf, True), (1.0, True), (0.4, True)]:
                compiled = [_fast_ofdm.local_linear(t_obs, m, half, fit, w) for w in (None, weight)]
                compiled.append(_fast_ofdm.residual_step(hp, stagger))
                monkeypatch.setattr(_fast_ofdm, "AVAILABLE", False)
                twin = [_fast_ofdm.local_linear(t_obs, m, half, fit, w) for w in (None, weight)]
                twin.append(_fast_ofdm.residual_step(hp, stagger))
                monkeypatch.setattr(_fast_ofdm, "AVAILABLE", True)
                for a, b in zip(compiled, twin, strict=True):
                    assert np.allclose(a, b, rtol=1e-12, atol=1e-12)
    assert _fast_ofdm.residual_step(cases[3][2], 2) != 0.0  # the phase ramp is found
    smoothers = rng.uniform(-0.5, 1.0, (4, 4, 4))
    keep = rng.uniform(0.2, 1.0, (4, 4))
    g, a, b = cplx(4, 15), cplx(7, 30), cplx(492, 30)
    compiled = (_fast_ofdm.loo_totals(smoothers, keep, g), _fast_ofdm.product_bt(a, b))
    monkeypatch.setattr(_fast_ofdm, "AVAILABLE", False)
    twin = (_fast_ofdm.loo_totals(smoothers, keep, g), _fast_ofdm.product_bt(a, b))
    assert np.allclose(compiled[0], twin[0], rtol=1e-12)
    assert np.allclose(compiled[1], twin[1], rtol=1e-12, atol=1e-12)
    assert np.allclose(twin[1], a @ b.T)
    # The sync's phase slope: a known frequency offset left after the coarse correction.
    signs = np.asarray([1.0, 1.0, -1.0, 1.0, -1.0, -1.0, 1.0, 1.0])
    block = cplx(32)
    x = np.tile(block, 8) * np.repeat(signs, 32) * np.exp(2j * np.pi * 0.003 * np.arange(256))
    x = (x + 0.3 * cplx(256)).astype(np.complex64)
    compiled = _fast_ofdm.sync_slope(x, 0.001, signs, block)
    monkeypatch.setattr(_fast_ofdm, "AVAILABLE", False)
    twin = _fast_ofdm.sync_slope(x, 0.001, signs, block)
    assert compiled == pytest.approx(twin, abs=1e-12)
    assert twin / (2 * np.pi * 32) == pytest.approx(0.002, abs=2e-4)


def _twins(monkeypatch, fn, *args):
    """fn(*args) with the kernels, then with the numpy twins."""
    compiled = fn(*args)
    monkeypatch.setattr(_fast_ofdm, "AVAILABLE", False)
    twin = fn(*args)
    monkeypatch.setattr(_fast_ofdm, "AVAILABLE", True)
    return compiled, twin


def _close(a, b, tol=1e-12):
    if isinstance(a, tuple | list):
        for x, y in zip(a, b, strict=True):
            _close(x, y, tol)
        return
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype.kind == b.dtype.kind
    scale = max(float(np.max(np.abs(b))) if b.size else 0.0, 1e-30)
    assert np.allclose(a, b, rtol=tol, atol=tol * scale)


def _rotated(y, hp, step):
    y, hp = y.copy(), hp.copy()
    _fast_ofdm.rotate(y, hp, step)
    return y, hp


def _smoothed(s, values, var, times, cols, m):
    hs, nu, weight = np.zeros((m, 30), complex), np.ones(m), np.zeros(m)
    _fast_ofdm.smooth_row(s, values, var, times, cols, hs, nu, weight)
    return hs, nu, weight


@needs_numba
def test_compiled_frame_kernels_match_their_numpy_twins(monkeypatch):
    """The per-frame kernels (guard noise and pilots, the residual rotation, one comb
    row's smoothing, the delay profile's kept points, both interpolation forms with
    their error, the pilots' excess, the windows' derotation and the prefix products)
    against their twins on a frame's shapes, edge cases included (one symbol, a single
    observation, a delay prior that wraps below zero, a flat delay profile)."""
    rng = np.random.default_rng(5)

    def cplx(*shape):
        return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)

    f = _fast_ofdm
    twiddle = np.exp(-2j * np.pi * np.arange(1024) / 1024)
    bins = (np.arange(-246, 246) % 1024).astype(np.int64)
    for m in (1, 2, 7):
        y, hp = cplx(m, 64), cplx(m, 15)
        noise = np.array([0, 1, 62, 63])
        flat = (np.arange(m)[:, None] * 64 + rng.integers(2, 60, (m, 15))).astype(np.int64)
        xp = (cplx(m, 15) / np.sqrt(2)).astype(np.complex64)
        _close(*_twins(monkeypatch, f.frame_pilots, y, noise, flat, xp))
        _close(*_twins(monkeypatch, _rotated, y, hp, 0.05))
        times = np.arange(0, m, 2)
        s = rng.uniform(-0.2, 1.0, (m, times.size))
        values, var = cplx(times.size, 15), rng.uniform(0.1, 1, times.size)
        cols = np.arange(1, 30, 2)
        _close(*_twins(monkeypatch, _smoothed, s, values, var, times, cols, m))
        grid = cplx(m, 32) * 0.1
        grid[:, 3] += 2.0  # one path stands out
        for floor in (1e-3, 0.5, 10.0):
            _close(*_twins(monkeypatch, f.delay_keep, grid, floor))
        _close(*_twins(monkeypatch, f.mean_power, grid))
        hs, pick = cplx(m, 30), rng.integers(0, 492, (m, 476)).astype(np.int64)
        mse, scale, w = rng.uniform(0, 0.5, 492), rng.uniform(0.5, 2, m), cplx(492, 30)
        _close(*_twins(monkeypatch, f.interpolate, hs, w, pick, mse, scale, 2.0, 0.1))
        for delays in (np.arange(-3, 9), np.array([-40, -2, -1, 0, 5, 6, 7, 30])):
            at = (delays % 1024).astype(np.int64)
            x = cplx(delays.size, 30)
            args = (hs, x, at, bins, pick, twiddle, mse, scale, 2.0, 0.1)
            _close(*_twins(monkeypatch, f.interpolate_delays, *args))
        own = rng.integers(0, 30, (m, 15)).astype(np.int64)
        err = rng.uniform(0, 0.1, (m, 476))
        weight, nu = rng.uniform(0, 0.5, m), rng.uniform(0, 0.1, m)
        for half in (0.0, 0.05, 5.0):
            args = (hs, hp, own, weight, nu, 0.3, half, err)
            _close(*_twins(monkeypatch, f.pilot_excess, *args))
    seg = cplx(5000).astype(np.complex64)
    starts = np.array([123456789, 123457845, 123458901])
    for cfo in (0.0, 0.0047, -0.3):
        _close(*_twins(monkeypatch, f.derotate, seg, 1056, 3, 1024, cfo, starts), tol=2e-6)
    _close(*_twins(monkeypatch, f.prefix_products, seg, 4, 1056, 1024, 32))


def _equalised(yd, h, err, slots, kind, gain):
    from diffjscc.radio import ofdm_receiver as orx

    grid = orx.ChannelGrid(h.copy(), err, 0.1, 0.0)
    return orx.equalise_payload(yd, grid, slots, kind, gain, whole_image=False)


@needs_numba
def test_compiled_only_steps_match_the_receivers_numpy_path(monkeypatch):
    """Steps with a kernel and no twin of their own against the receiver's numpy path:
    the payload's gain, equalisation at the slots (both equalisers), the known symbols'
    comb estimate, the in-band excess; and the comb interpolator's delay form against
    the dense weights it replaces."""
    from diffjscc.radio import ofdm_receiver as orx

    rng = np.random.default_rng(8)
    cfg = OfdmConfig()
    m, d = 7, cfg.data_per_symbol
    yd = rng.standard_normal((m, d)) + 1j * rng.standard_normal((m, d))
    h = (rng.standard_normal((m, d)) + 1j * rng.standard_normal((m, d))) * 0.8
    h[2, 5] = 0.0  # a dead subcarrier: zero forcing divides by 1 there
    err = rng.uniform(0, 0.05, (m, d))
    slots = np.sort(rng.choice(m * d, 3000, replace=False))
    for kind in ("mmse", "zf"):
        for gain in (True, False):
            # complex64 and float32 out: their rounding
            _close(*_twins(monkeypatch, _equalised, yd, h, err, slots, kind, gain), tol=1e-5)
    y = rng.standard_normal((m, cfg.fft_size)) + 1j * rng.standard_normal((m, cfg.fft_size))
    known = (np.arange(0, 600, dtype=np.int64), np.exp(2j * np.pi * rng.uniform(size=600)))
    xp = np.exp(2j * np.pi * rng.uniform(size=(m, cfg.pilots_per_symbol))).astype(np.complex64)
    for delays in (np.arange(-3, 12), np.arange(0, 300)):
        whole = delays.astype(np.int64)
        prior = (tuple(whole.tolist()), whole)
        args = (y, cfg, known, xp, prior, 0.1, 2)
        compiled, twin = _twins(monkeypatch, orx._known_estimates, *args)
        assert sorted(compiled) == sorted(twin) and compiled
        for i in compiled:
            _close(compiled[i][0], twin[i][0], tol=1e-10)
            assert compiled[i][2] == twin[i][2]
    args = (y, cfg, known, h, err, 0.1)
    _close(*_twins(monkeypatch, orx._inband_excess, *args))
    assert orx._inband_excess(*args) > 0.0
    for rows in (1, 2):
        comb = orx._pilot_comb(cfg, rows).size
        # Fewer delays than pilots, more (G singular, G + rho D I not), and the dense form.
        for delays in (tuple(range(-3, 12)), tuple(range(comb + 2)), tuple(range(2 * comb))):
            w_dense, mse_dense = orx.wiener_interpolator(cfg, 0.05, np.array(delays), rows)
            at, x, mse = orx._comb_interpolator(cfg, rows, delays, orx._rho_db10(0.05))
            if len(delays) >= 2 * comb:
                assert at is None
                continue
            et = orx._twiddles(cfg.fft_size)[np.outer(orx._used_bins(cfg), at) % cfg.fft_size]
            _close(et @ x, w_dense, tol=1e-9)
            assert np.allclose(mse, mse_dense, atol=1e-9)


_NO_COMPILE = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from test_radio_ofdm_fast import _stream
from diffjscc.radio import _fast_ofdm
from diffjscc.radio.ofdm import OfdmConfig
from diffjscc.radio.ofdm_receiver import OfdmReceiver, OfdmTuning

assert _fast_ofdm.load()
before = {k: len(v.signatures) for k, v in _fast_ofdm.compiled().items()}
x, _ = _stream(seed=4, snr_db=6.0)
for tuning in (OfdmTuning(), OfdmTuning(equaliser="zf")):
    rx = OfdmReceiver(OfdmConfig(), tuning)
    frames = [f for i in range(0, x.size, 5000) for f in rx.feed(x[i : i + 5000])]
    assert len(frames + rx.flush()) == 3
after = {k: len(v.signatures) for k, v in _fast_ofdm.compiled().items()}
print({k: after[k] - before[k] for k in after if after[k] != before[k]})
"""


@needs_numba
def test_receiving_compiles_nothing_after_load():
    """load() compiles every argument type the receiver passes (its cached arrays are
    read-only, a type of their own to numba): in a fresh process, a stream through both
    equalisers makes no kernel compile again mid-stream."""
    import subprocess
    import sys
    from pathlib import Path

    here = str(Path(__file__).resolve().parent)
    run = subprocess.run(
        [sys.executable, "-c", _NO_COMPILE, here], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "{}"


def _staged(y, plan, comb_size):
    y = y.copy()
    m = y.shape[0]
    hp = np.empty(plan[1].shape, dtype=np.complex128)
    hs = np.empty((m, comb_size), dtype=np.complex128)
    nu, weight, pdp = np.empty(m), np.zeros(m), np.empty(comb_size)
    out = _fast_ofdm.pilot_stage(y, plan, hp, hs, nu, weight, pdp)
    return (*out, y, hp, hs, nu, weight, pdp)


def _dense_smoothed(args, comb_size):
    m = args[0].shape[0]
    hs, nu, weight = np.empty((m, comb_size), complex), np.empty(m), np.ones(m)
    power = _fast_ofdm.dense_smooth(*args, hs, nu, weight)
    return power, hs, nu, weight


@needs_numba
def test_pilot_stage_matches_its_twin(monkeypatch):
    """The pilot stage in one compiled call (pilots, residual phase, the time smoother's
    choice by leave-one-out residuals, smoothing, power, delay profile) against its
    numpy twin on frames of 1 to 9 symbols, static and fading; the choice differs
    between a static channel and a fast-fading one (the comparison covers both)."""
    from diffjscc.radio import ofdm_receiver as orx

    rng = np.random.default_rng(11)
    cfg = OfdmConfig()
    lay = cfg.layout
    chosen = set()
    for m in (1, 2, 3, 7, 9):
        for doppler, slope in ((0.0, 0.0), (0.0, 0.15), (0.8, 0.0)):
            plan, names, comb, _ = orx._pilot_plan(cfg, m)
            taps = rng.standard_normal(4) + 1j * rng.standard_normal(4)
            freqs = np.fft.fftfreq(cfg.fft_size) * cfg.fft_size
            phasors = np.exp(-2j * np.pi * np.outer(freqs, np.arange(4)) / cfg.fft_size)
            # Each path turns at its own rate (Doppler) or all grow along a line: a
            # change over time that the common phase step does not remove.
            t = np.arange(m)[:, None]
            taps_t = taps * (1.0 + slope * t) * np.exp(1j * doppler * t * np.array([0, 1, -1, 0.5]))
            h = taps_t @ phasors.T * np.exp(0.02j * t)
            noise = rng.standard_normal((m, cfg.fft_size)) + 1j * rng.standard_normal(
                (m, cfg.fft_size)
            )
            y = h * 0.3 + 0.02 * noise
            xp = plan[2]
            y.reshape(-1)[plan[1]] *= xp  # the pilots carry their known values
            y[:, lay.noise] = 0.05 * noise[:, lay.noise]

            compiled, twin = _twins(monkeypatch, _staged, y, plan, comb.size)
            assert compiled[2] == twin[2] and np.array_equal(compiled[6], twin[6])
            for a, b in zip(compiled[:6] + compiled[7:], twin[:6] + twin[7:], strict=True):
                _close(a, b, tol=1e-10)
            chosen.add(names[compiled[2]])
    assert len(chosen) >= 3, chosen


@needs_numba
def test_dense_smoothing_and_cached_phasors_match_their_twins(monkeypatch):
    """The known symbols' time smoothing (one or two symbols with known data, in either
    comb row, every smoother shape) and the interpolation with the phasors cached per
    delay prior against their numpy twins."""
    from diffjscc.radio import ofdm_receiver as orx

    rng = np.random.default_rng(12)
    cfg = OfdmConfig()

    def cplx(*shape):
        return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)

    for m in (3, 7, 9):
        _, names, comb, position = orx._pilot_plan(cfg, m)
        hp = cplx(m, cfg.pilots_per_symbol)
        for dense_t in ([0], [0, m - 1], [1, 2]):
            dense_t = np.asarray(dense_t, dtype=np.int64)
            dense_est = cplx(dense_t.size, comb.size)
            dense_var = rng.uniform(0.001, 0.2, (dense_t.size, 2))
            for name in names:
                shape = orx._shape(name, 2)
                args = (hp, dense_t, dense_est, dense_var, 0.05, position, *shape)
                compiled, twin = _twins(monkeypatch, _dense_smoothed, args, comb.size)
                _close(compiled, twin, tol=1e-10)
                assert np.all(compiled[3][dense_t] == 0.0)
    delays = tuple(range(-3, 15))
    at, x, mse = orx._comb_interpolator(cfg, 2, delays, orx._rho_db10(0.05))
    er, ei = orx._used_phasors(cfg, 2, delays)
    hs, scale = cplx(7, x.shape[1]), rng.uniform(0.5, 2, 7)
    pick = orx._data_in_used(cfg, 7)
    compiled = _fast_ofdm.interpolate_phasors(hs, x, er, ei, pick, mse, scale, 2.0, 0.1)
    twiddle = orx._twiddles(cfg.fft_size)
    args = (hs, x, at, orx._used_bins(cfg), pick, twiddle, mse, scale, 2.0, 0.1)
    monkeypatch.setattr(_fast_ofdm, "AVAILABLE", False)
    _close(compiled, _fast_ofdm.interpolate_delays(*args), tol=1e-10)


@needs_numba
def test_direct_sync_correlation_matches_the_fft_path(monkeypatch):
    """The sync search with its correlation made in the kernel against the receiver's
    overlap-save FFT correlation and the metric's numpy twin, on a window holding a
    sync (noise, a frequency offset) and on silence then signal."""
    from diffjscc.radio import ofdm_receiver as orx

    rng = np.random.default_rng(13)
    rx = OfdmReceiver(OfdmConfig())
    x, _ = _stream(seed=5, snr_db=6.0)
    norm = (orx.SYNC_BLOCKS - 1) * rx._block_energy**2 * rx._lag_gain
    for lo, count in ((0, 1776), (300, 336), (0, 4000)):
        seg = x[lo : lo + count + orx.SYNC_LENGTH + orx._LAGS].copy()
        assert seg.size == count + orx.SYNC_LENGTH + orx._LAGS
        if count == 336:
            seg[:100] = 0
        seg += (0.01 * rng.standard_normal(seg.size)).astype(np.complex64)
        args = (count, orx.SYNC_PERIOD)
        compiled = _fast_ofdm.sync_search(seg, rx._sync_block, *args, rx._signs, orx._LAGS, norm)
        monkeypatch.setattr(_fast_ofdm, "AVAILABLE", False)
        corr = rx._correlate(seg)
        twin = _fast_ofdm.sync_metric(corr, seg, *args, orx._SIGNS, orx._LAGS, norm)
        monkeypatch.setattr(_fast_ofdm, "AVAILABLE", True)
        for a, b in zip(compiled, twin, strict=True):
            assert a.shape == b.shape
            assert np.allclose(a, b, rtol=1e-4, atol=1e-5 * np.max(np.abs(b)))
        assert int(np.argmax(compiled[0])) == int(np.argmax(twin[0]))
    assert float(np.max(compiled[0])) > 0.5  # a sync in the window


@needs_numba
def test_input_scan_counts_nonfinite_samples_and_finds_the_peak():
    rng = np.random.default_rng(14)
    x = (rng.standard_normal(5000) + 1j * rng.standard_normal(5000)).astype(np.complex64)
    x[[3, 70, 4000]] = [np.nan, complex(1.0, np.inf), complex(-np.inf, 0.0)]
    clean = np.where(np.isfinite(x), x, 0).view(np.float32)
    assert _fast_ofdm.input_scan(x) == (3, float(np.max(np.abs(clean))))
    assert _fast_ofdm.input_scan(x[::2])[0] == int(np.count_nonzero(~np.isfinite(x[::2])))
    assert _fast_ofdm.input_scan(np.zeros(8, np.complex64)) == (0, 0.0)


@needs_numba
def test_sync_peak_matches_its_twin(monkeypatch):
    """The first crossing, the peak after it, the strongest single-lag sum and the first
    path, against numpy's: nothing above, a crossing too near the end for its peak
    window, ties (the first of equals), a plateau of single-lag sums."""
    rng = np.random.default_rng(15)
    cases = [(rng.uniform(0, 0.1, 500), rng.uniform(0, 1, 516))]
    metric = rng.uniform(0, 0.1, 500)
    metric[[300, 310, 320]] = [0.5, 0.9, 0.9]
    single = rng.uniform(0, 1, 516)
    single[305:312] = 2.0
    single[306] = 1.0  # the first path, weaker than the strongest
    cases += [(metric, single), (metric[:400], single[:416]), (metric[:305], single[:321])]
    for m, s in cases:
        compiled = _fast_ofdm.sync_peak(m, s, 0.16, 64, 16)
        monkeypatch.setattr(_fast_ofdm, "AVAILABLE", False)
        assert compiled == _fast_ofdm.sync_peak(m, s, 0.16, 64, 16)
        monkeypatch.setattr(_fast_ofdm, "AVAILABLE", True)
    assert _fast_ofdm.sync_peak(*cases[0], 0.16, 64, 16) == (-1, -1, -1, -1)
    assert _fast_ofdm.sync_peak(*cases[1], 0.16, 64, 16) == (300, 310, 306, 307)
    assert _fast_ofdm.sync_peak(*cases[3], 0.16, 64, 16)[1:] == (-1, -1, -1)


@needs_numba
def test_scaled_is_numpys_multiply_to_the_bit():
    rng = np.random.default_rng(16)
    y = (rng.standard_normal((7, 1024)) + 1j * rng.standard_normal((7, 1024))).astype(np.complex64)
    ref = np.multiply(y, 0.0216, dtype=np.complex128)
    out = _fast_ofdm.scaled(y, 0.0216)
    assert out.dtype == np.complex128 and np.array_equal(out.view(np.float64), ref.view(np.float64))


@needs_numba
def test_link_delay_tracking_matches_its_twin(monkeypatch):
    """The link's running delay profile and its kept points (``track_delays``) against
    the numpy twin: a new link (nothing held), a steady one, a new path far from the
    held points (joins at once), a new strongest point there (starts again), a held
    point fading (leaves only under half the bar), at the wrap-around of the grid."""
    rng = np.random.default_rng(13)
    outcomes = set()
    for q in (15, 30):
        base = np.full(q, 1e-3)
        base[[3, 4, 5]] = [0.05, 1.0, 0.2]
        floor = 1e-3
        own = _fast_ofdm.delay_keep(np.sqrt(base)[None, :].astype(complex), floor)
        held, kept = _fast_ofdm.track_delays(base, floor, own, np.empty(0), own)[:2]
        cases = []
        for _ in range(20):
            pdp = base * rng.exponential(1.0, q) * rng.uniform(0.1, 10.0)
            cases.append(pdp)
        far = base.copy()
        far[q - 2] = 0.3  # a new path far from the held ones
        cases.append(far)
        moved = base.copy()
        moved[10] = 3.0  # a new strongest point there: a new link
        cases.append(moved)
        fading = base.copy()
        fading[3] = 0.004  # a held point fading in one frame: the average keeps it
        cases.append(fading)
        for pdp in cases:
            f = floor * float(pdp.sum() / base.sum())
            keep = _fast_ofdm.delay_keep(np.sqrt(pdp)[None, :].astype(complex), f)
            for h, k in ((np.empty(0), keep), (held, kept)):
                compiled, twin = _twins(monkeypatch, _fast_ofdm.track_delays, pdp, f, keep, h, k)
                _close(compiled[0], twin[0])
                assert np.array_equal(compiled[1], twin[1]) and compiled[2] == twin[2]
                outcomes.add((h.size > 0, compiled[2], compiled[1].tobytes() == k.tobytes()))
        fresh, stays, joined = (
            _fast_ofdm.track_delays(c, floor, _fast_ofdm.profile_keep_numpy(c, floor), held, kept)
            for c in (moved, fading, far)
        )
        assert fresh[2] and fresh[1][10] and not stays[2] and stays[1][3]
        assert not joined[2] and joined[1][q - 2] and joined[1][4]
    assert {(True, False, True), (True, False, False), (True, True, False)} <= outcomes


@needs_numba
def test_drift_scores_match_their_twin(monkeypatch):
    """The clock-offset search's one compiled pass against numpy: the scores over the
    drift grid and the pilots' and guard band's mean power."""
    from diffjscc.radio import ofdm_drift

    cfg = OfdmConfig()
    rng = np.random.default_rng(21)
    for m in (3, 8):
        y = rng.standard_normal((m, cfg.fft_size)) + 1j * rng.standard_normal((m, cfg.fft_size))
        flat, conj_pilots, grid, phasors, noise_bins, _ = ofdm_drift._plan(cfg, m, 0.26)
        args = (y, flat, conj_pilots, cfg.pilot_stagger, phasors, noise_bins)
        compiled_scores = np.empty(grid.size)
        compiled = _fast_ofdm.drift_scores(*args, compiled_scores)
        monkeypatch.setattr(_fast_ofdm, "AVAILABLE", False)
        twin_scores = np.empty(grid.size)
        twin = _fast_ofdm.drift_scores(*args, twin_scores)
        monkeypatch.setattr(_fast_ofdm, "AVAILABLE", True)
        np.testing.assert_allclose(compiled_scores, twin_scores, rtol=1e-9)
        np.testing.assert_allclose(compiled, twin, rtol=1e-9)
