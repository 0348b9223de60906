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
