"""The compiled receiver kernels (numba) against their numpy twins: the same
frames, the same estimates, to float32 rounding; and the numpy path alone."""

import numpy as np
import pytest
from diffjscc import channels
from diffjscc.radio import (
    BurstReceiver,
    FrameConfig,
    ReceiverTuning,
    _fast,
    build_bursts,
    image_symbol_count,
)
from diffjscc.radio.estimation import ChannelEstimate, estimate_channel, track_phase
from diffjscc.radio.pulse import matched_filter, matched_filter_delays
from diffjscc.radio.sim import impair, resample
from diffjscc.symbols import EncodedImage

CFG = FrameConfig()
needs_numba = pytest.mark.skipif(not _fast.load(), reason=f"no compiled kernels: {_fast.REASON}")


def _stream(seed=0, sro_ppm=0.0, snr_db=6.0):
    rng = np.random.default_rng(seed)
    shape = (256, 384)
    n = image_symbol_count(2, shape)
    z = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)
    enc = EncodedImage(channels.normalise_power(z), shape, (0, 0, 0), "jscc-awgn-cbr1_96", 3.0)
    bursts = build_bursts(enc, image_id=7, cfg=CFG)
    # A burst cut short in the middle: the damage search runs too.
    cut = bursts[0][: bursts[0].size // 2]
    gap = np.zeros(500, np.complex64)
    stream = np.concatenate([gap, bursts[0], gap, cut, gap, *bursts[1:], gap])
    if sro_ppm:
        stream = resample(stream, 1.0 + sro_ppm * 1e-6)
    return impair(stream, snr_db, CFG, cfo=0.004, delay=11.6, rng=rng)


def _receive(x, compiled, monkeypatch):
    monkeypatch.setattr(_fast, "AVAILABLE", compiled)
    rx = BurstReceiver(CFG, ReceiverTuning(max_sample_rate_offset_ppm=200.0))
    frames = []
    for i in range(0, x.size, 3001):
        frames += rx.feed(x[i : i + 3001])
    return frames + rx.flush(), dict(rx.stats)


@needs_numba
@pytest.mark.parametrize("sro_ppm", [0.0, 150.0])
def test_compiled_and_numpy_receivers_agree(sro_ppm, monkeypatch):
    x = _stream(seed=int(sro_ppm), sro_ppm=sro_ppm)
    fast, fast_stats = _receive(x, True, monkeypatch)
    slow, slow_stats = _receive(x, False, monkeypatch)
    assert fast_stats == slow_stats
    assert fast_stats["frames_partial"] + fast_stats["frames_unusable"] == 1  # the cut burst
    assert len(fast) == len(slow) >= 2
    for f, s in zip(fast, slow, strict=True):
        assert (f.image_id, f.frame_index, f.complete) == (s.image_id, s.frame_index, s.complete)
        assert f.timing == pytest.approx(s.timing, abs=1e-4)
        assert f.snr_db == pytest.approx(s.snr_db, abs=1e-3)
        assert f.sample_rate_offset == pytest.approx(s.sample_rate_offset, rel=1e-3, abs=1e-9)
        assert abs(f.h - s.h) < 1e-4 * abs(s.h)
        scale = float(np.sqrt(np.mean(np.abs(s.symbols) ** 2)))
        assert np.max(np.abs(f.symbols - s.symbols)) < 1e-4 * scale
        np.testing.assert_array_equal(f.mask(), s.mask())


@needs_numba
@pytest.mark.parametrize("dtype", [np.complex64, np.float32])
def test_compiled_matched_filter_matches_numpy(dtype, monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(900).astype(np.float32)
    if dtype == np.complex64:
        x = (x + 1j * rng.standard_normal(900)).astype(np.complex64)
    results = {}
    for compiled in (True, False):
        monkeypatch.setattr(_fast, "AVAILABLE", compiled)
        results[compiled] = (
            matched_filter(x, 3.37, 300, CFG),
            matched_filter(x, 0.5, 100, CFG, stride=3),
            matched_filter_delays(x, 10.2, 200, (0.5, -0.5, 0.0), CFG),
        )
    for a, b in zip(results[True], results[False], strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-6 * np.max(np.abs(b)))
    monkeypatch.setattr(_fast, "AVAILABLE", True)
    with pytest.raises(ValueError, match="matched filter needs samples"):
        matched_filter(x[:100], 0.0, 60, CFG)


@needs_numba
def test_compiled_estimates_match_numpy(monkeypatch):
    rng = np.random.default_rng(5)
    t = np.sort(rng.choice(2000, 400, replace=False)).astype(np.float64)
    known = np.exp(2j * np.pi * rng.random(400)).astype(np.complex64)
    y = 0.7 * np.exp(2j * np.pi * (0.0011 * t + 0.2)) * known
    y = (y + 0.3 * (rng.standard_normal(400) + 1j * rng.standard_normal(400))).astype(np.complex64)
    est, phase = {}, {}
    for compiled in (True, False):
        monkeypatch.setattr(_fast, "AVAILABLE", compiled)
        est[compiled] = estimate_channel(y, known, t, 0.001, 0.004)
        ref = ChannelEstimate(0.7, 0.0011, 0.0, 0.09, 5.0, 400)
        phase[compiled] = track_phase(y, known, t, ref, 17, np.arange(2000.0))
    a, b = est[True], est[False]
    assert a.freq == pytest.approx(b.freq, abs=1e-9)
    assert abs(a.h - b.h) < 1e-9 and a.snr == pytest.approx(b.snr, rel=1e-9)
    np.testing.assert_allclose(phase[True], phase[False], atol=1e-9)


def test_numpy_path_receives_without_numba(monkeypatch):
    frames, stats = _receive(_stream(seed=2, snr_db=10.0), False, monkeypatch)
    assert [f.frame_index for f in frames if f.complete] == list(range(len(frames) - 1))
    assert stats["internal_errors"] == 0 and stats["header_crc_fail"] == 0


@needs_numba
def test_compiled_block_test_matches_numpy(monkeypatch):
    from diffjscc.radio.equalise import _looks_clean

    rng = np.random.default_rng(9)
    times = np.sort(rng.choice(4000, 900, replace=False))
    for trial in range(40):
        z = 1.0 + 0.3 * (rng.standard_normal(900) + 1j * rng.standard_normal(900))
        if trial % 3 == 1:
            z[600:] *= 0.2  # the burst gone from there
        if trial % 3 == 2:
            z[300:500] += 2.0 * rng.standard_normal(200)  # something else on the air
        residual = np.abs(z - 1.0) ** 2
        count = 4000 if trial % 4 else 300  # short: blocks without known symbols
        answers = set()
        for compiled in (True, False):
            monkeypatch.setattr(_fast, "AVAILABLE", compiled)
            answers.add(_looks_clean(z, residual, times, count))
        assert len(answers) == 1


@needs_numba
def test_compiled_change_points_match_numpy(monkeypatch):
    """energy_stretches (binary segmentation) with the compiled split gains and with
    numpy's: the same stretches, for a cut, a collision seen in the residuals only,
    forced change points, and no residuals."""
    from diffjscc.radio.equalise import energy_stretches

    rng = np.random.default_rng(12)
    times = np.sort(rng.choice(4000, 600, replace=False))
    for trial in range(12):
        power = rng.exponential(1.0, 4000).astype(np.float32)
        residual = rng.exponential(0.1, times.size)
        if trial % 3 == 1:
            power[2500:] *= 0.01  # cut short
        if trial % 3 == 2:
            residual[times > 1800] *= 3.0  # another burst, hardly more power
        forced = (1000,) if trial % 4 == 3 else ()
        answers = []
        for compiled in (True, False):
            monkeypatch.setattr(_fast, "AVAILABLE", compiled)
            args = (residual, times) if trial % 5 else (None, None)
            answers.append(energy_stretches(power, forced, *args))
        assert answers[0] == answers[1]
        if trial % 3 == 1 and trial % 5:
            assert any(abs(a - 2500) <= 8 for a, _ in answers[0])


@needs_numba
def test_compiled_local_gain_noise_matches_numpy(monkeypatch):
    from diffjscc.radio.equalise import _local_gain_noise

    rng = np.random.default_rng(13)
    for n in (3, 15, 16, 17, 400):
        noise = 0.3 * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
        z = (1.0 + noise) * np.exp(0.01j * np.arange(n))  # a slowly turning gain
        answers = []
        for compiled in (True, False):
            monkeypatch.setattr(_fast, "AVAILABLE", compiled)
            answers.append(_local_gain_noise(z))
        np.testing.assert_allclose(answers[0], answers[1], rtol=1e-10)


@needs_numba
def test_compiled_viterbi_matches_numpy(monkeypatch):
    from diffjscc.radio import header as hdr

    rng = np.random.default_rng(11)
    header = hdr.FrameHeader(77, 2, (512, 768), 1.5, 2, 3, version=2)
    symbols = hdr.encode_symbols(header) * hdr.header_scrambler(hdr.CONV_SYMBOLS)
    for _ in range(20):
        soft = symbols + 1.3 * rng.standard_normal(symbols.size)  # about -2 dB: some errors
        decoded = set()
        for compiled in (True, False):
            monkeypatch.setattr(_fast, "AVAILABLE", compiled)
            decoded.add(hdr.viterbi(soft).tobytes())
        assert len(decoded) == 1


@needs_numba
def test_compiled_payload_equaliser_matches_numpy():
    rng = np.random.default_rng(13)
    y = (rng.standard_normal(400) + 1j * rng.standard_normal(400)).astype(np.complex64)
    # Outputs before the first knot, on knots, across gaps and after the last knot.
    t_out = np.concatenate([np.arange(0, 30), np.arange(31, 200, 3), np.arange(200, 400)])
    knots = np.arange(10, 380, 17).astype(np.float64)
    phase = np.cumsum(0.3 * rng.standard_normal(knots.size))
    h, freq, t_ref = 0.4 - 0.9j, 0.0013, 150.5
    for k_t, k_p in ((knots, phase), (np.zeros(0), np.zeros(0))):
        out = np.empty(t_out.size, np.complex64)
        _fast.equalise_payload(y, t_out, h, freq, t_ref, k_t, k_p, out)
        turn = 2 * np.pi * freq * (t_out - t_ref)
        if k_t.size:
            turn = turn + np.interp(t_out, k_t, k_p)
        np.testing.assert_allclose(out, y[t_out] / (h * np.exp(1j * turn)), rtol=2e-6)


@needs_numba
@pytest.mark.parametrize("lags", [1, 777, 5000, 4096 * 3 + 4])
def test_compiled_detection_sums_match_numpy(lags):
    """The detection kernel (the correlation as matched filter and segment sum, no
    FFT; blocks of lags; loops split for vectorising) against the receiver's numpy
    twin (FFT correlation), a loud stretch included (the energy's running sums in
    float64)."""
    rx = BurstReceiver(CFG)
    rng = np.random.default_rng(lags)
    reach = rx._metric_reach
    seg = (rng.standard_normal(lags + reach) + 1j * rng.standard_normal(lags + reach)).astype(
        np.complex64
    )
    seg[lags // 3 : lags // 3 + 400] *= 1e3
    corr = rx._correlate(seg)
    dsum, energy = np.empty(lags, np.complex64), np.empty(lags, np.float32)
    metric = np.empty(lags, np.float32)
    flat = seg.view(np.float32)
    D = rx._tables.segment_period
    t = rx._tables
    top, low = _fast.detection(
        flat,
        lags,
        D,
        rx._signs,
        reach,
        rx._metric_scale,
        t.pulse,
        t.segment_re,
        t.segment_im,
        CFG.sps,
        dsum,
        energy,
        metric,
    )
    twin_dsum, twin_energy = rx._detection_sums(seg, corr, lags)
    scale = np.max(np.abs(twin_dsum))
    assert np.max(np.abs(dsum - twin_dsum)) < 1e-5 * scale
    np.testing.assert_allclose(energy, twin_energy, rtol=1e-5)
    # The metric, compiled (no floor needed: the loud stretch is 60 dB up, the floor
    # starts at 70) and by the receiver's numpy normalisation of the same sums (the
    # FFT's rounding, spread from the loud stretch over its blocks, moves the twin's
    # metric by up to 0.4 % where the samples are quiet).
    assert top == pytest.approx(energy.max()) and low == pytest.approx(energy.min())
    assert not 1e-7 * top > low
    rx._normalise_metric(dsum.copy(), energy.copy())
    np.testing.assert_allclose(metric, rx._metric[-lags:], rtol=2e-5)


def test_linear_conv_encoder_matches_the_shift_register():
    from diffjscc.radio import header as hdr

    rng = np.random.default_rng(14)
    rows = [np.zeros(120, np.uint8), np.ones(120, np.uint8)]
    rows += [rng.integers(0, 2, 120).astype(np.uint8) for _ in range(20)]
    for bits in rows:
        np.testing.assert_array_equal(hdr.conv_encode(bits), hdr._conv_encode_shift(bits))
    short = rng.integers(0, 2, 30).astype(np.uint8)  # other lengths: the register itself
    np.testing.assert_array_equal(hdr.conv_encode(short), hdr._conv_encode_shift(short))


@needs_numba
def test_header_kernel_gives_the_header_symbols_as_sent(monkeypatch):
    """The header kernel's code of the decoded bits is what the transmitter sent
    (the payload stage uses it as the header's known symbols)."""
    from diffjscc.radio import header as hdr
    from diffjscc.radio import receiver

    seen = []
    original = receiver.frame_known

    def checked(header, payload_len, cfg, header_symbols=None):
        seen.append(header_symbols is not None)
        if header_symbols is not None:
            np.testing.assert_array_equal(header_symbols, hdr.encode_symbols(header))
        return original(header, payload_len, cfg, header_symbols)

    monkeypatch.setattr(receiver, "frame_known", checked)
    frames, _ = _receive(_stream(seed=3), True, monkeypatch)
    assert len(frames) >= 2 and seen and all(seen)


@needs_numba
def test_header_kernel_fallback_decodes_and_codes_afresh(monkeypatch):
    """Where the header kernel's bits fail (here: made to), the general loop decodes
    the header from the kernel's matched-filter outputs, and its known symbols are
    coded from the header, not taken from the failed bits."""
    from diffjscc.radio import receiver

    x = _stream(seed=5)
    reference, _ = _receive(x, False, monkeypatch)
    given = []
    original = receiver.frame_known

    def recorded(header, payload_len, cfg, header_symbols=None):
        given.append(header_symbols)
        return original(header, payload_len, cfg, header_symbols)

    kernel = _fast.header_path

    def failing(*args):
        outcome = kernel(*args)
        args[-3][0] ^= 0xFF  # the packed bits: their CRC fails
        return outcome

    monkeypatch.setattr(receiver, "frame_known", recorded)
    monkeypatch.setattr(_fast, "header_path", failing)
    frames, stats = _receive(x, True, monkeypatch)
    assert stats["header_crc_fail"] == 0 and len(frames) == len(reference) >= 2
    assert given and all(g is None for g in given)
    for f, r in zip(frames, reference, strict=True):
        assert (f.image_id, f.frame_index) == (r.image_id, r.frame_index)
        assert f.timing == pytest.approx(r.timing, abs=1e-4)
        err = np.abs(f.symbols - r.symbols).max()
        assert err < 1e-4 * np.sqrt(np.mean(np.abs(r.symbols) ** 2))


@needs_numba
def test_compiled_header_encoder_matches_numpy(monkeypatch):
    from diffjscc.radio import header as hdr

    headers = [
        hdr.FrameHeader(i * 977 % 65536, i % 16, (512, 768), -3.5 + i, i, 40, 2) for i in range(20)
    ]
    for compiled in (True, False):
        monkeypatch.setattr(_fast, "AVAILABLE", compiled)
        hdr._encode_cached.cache_clear()
        symbols = [hdr.encode_symbols(h) for h in headers]
        if compiled:
            fast = symbols
    hdr._encode_cached.cache_clear()
    for f, s in zip(fast, symbols, strict=True):
        assert f.dtype == s.dtype == np.float32
        np.testing.assert_array_equal(f, s)


@needs_numba
def test_unit_phasors_match_exp_on_every_kind_of_step():
    """Known symbols' times: runs of consecutive integers (preamble), steps of 17
    (pilots), jumps back (pilots after the header), long gaps, fractions."""
    rng = np.random.default_rng(15)
    t = np.concatenate(
        [
            np.arange(128.0),
            128.0 + np.arange(0, 3000, 17),
            np.arange(130.0, 400.0),
            [5000.0, 5000.5, 5001.5, 9000.0],
            np.sort(rng.uniform(0, 4000, 50)),
        ]
    )
    whole = np.concatenate([t[t == np.floor(t)], [0.0, 63.0, 64.0, 65.0, 4095.0, 4096.0]])
    for freq in (0.0, 1.3e-4, -0.0041, 0.37):
        # Fractions among them; whole times only (the tables: at 0.37 cycles per
        # symbol their angles reach 2e4 rad, where a float64 angle's step is 4e-12).
        for times, atol in ((t, 1e-12), (whole, 5e-12)):
            out = np.empty(times.size, np.complex128)
            _fast._unit_phasors(times, freq, out)
            exact = np.exp(-2j * np.pi * freq * times)
            np.testing.assert_allclose(out, exact, rtol=0, atol=atol)


def test_kernel_loader_off_switch_and_broken_kernel(monkeypatch, caplog):
    """The shared loader: DIFFJSCC_NUMBA=0 compiles nothing; a kernel that cannot
    compile leaves the module on numpy with its reason, logged once."""
    import sys
    import types

    from diffjscc.radio._numba import Kernel, KernelLoader

    module = types.ModuleType("diffjscc_test_kernels")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    store = {}
    monkeypatch.setenv("DIFFJSCC_NUMBA", "0")
    off = KernelLoader(module.__name__, "test kernels", (Kernel("k", abs),), lambda: None, store)
    assert not off.load() and module.REASON == "DIFFJSCC_NUMBA=0" and not store

    pytest.importorskip("numba")
    monkeypatch.setenv("DIFFJSCC_NUMBA", "1")

    def _broken(x):
        return undefined_name + x  # noqa: F821 (fails to compile, as intended)

    broken = KernelLoader(
        module.__name__, "test kernels", (Kernel("k", _broken),), lambda: store["k"](1.0), store
    )
    assert not broken.load() and not module.AVAILABLE
    assert module.REASON and "test kernels" in caplog.text
    caplog.clear()
    assert not broken.load() and not caplog.text  # once: no second attempt, no second log


_NO_COMPILE_MID_STREAM = """
import numpy as np
from diffjscc import channels
from diffjscc.radio import BurstReceiver, FrameConfig, ReceiverTuning, _fast, build_bursts
from diffjscc.radio import image_symbol_count
from diffjscc.radio.sim import impair, resample
from diffjscc.symbols import EncodedImage

assert _fast.load(), _fast.REASON
compiled = {name: len(getattr(_fast, name).signatures) for name in _fast._KERNELS}
cfg = FrameConfig()
rng = np.random.default_rng(3)
n = image_symbol_count(2, (256, 384))
z = channels.normalise_power((rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64))
bursts = build_bursts(EncodedImage(z, (256, 384), (0, 0, 0), "jscc-awgn-cbr1_96", 3.0), 7, cfg)
gap = np.zeros(500, np.complex64)
clean = np.concatenate([gap, *bursts, gap])
cut = np.concatenate([gap, bursts[0][: bursts[0].size // 2], gap, *bursts[1:], gap])
rx = BurstReceiver(cfg, ReceiverTuning(max_sample_rate_offset_ppm=200.0))
for x in (clean, resample(clean, 1.0 + 150e-6), cut):
    x = impair(x, 6.0, cfg, cfo=0.004, delay=11.6, rng=rng)
    for i in range(0, x.size, 4096):
        rx.feed(x[i : i + 4096])
rx.flush()
assert rx.stats["frames_partial"] + rx.stats["frames_unusable"] >= 1, rx.stats
grown = [k for k in compiled if len(getattr(_fast, k).signatures) != compiled[k]]
assert not grown, grown
"""


@needs_numba
def test_warm_up_compiles_every_kernel_the_receiver_calls():
    """In a fresh process: after load(), receiving clean, clock-offset and damaged
    bursts compiles nothing more (numba types read-only arrays apart; a missed type
    compiled mid-stream, for seconds)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _NO_COMPILE_MID_STREAM], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
