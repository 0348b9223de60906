"""The streaming receiver with impairments and bad input."""

import numpy as np
import pytest
from diffjscc import channels
from diffjscc.radio import (
    BurstReceiver,
    FrameConfig,
    ReceivedFrame,
    build_bursts,
    image_symbol_count,
)
from diffjscc.radio.frame import frame_length
from diffjscc.radio.header import header_symbols
from diffjscc.radio.sequences import PREAMBLE_LENGTH
from diffjscc.radio.sim import add_noise, impair
from diffjscc.symbols import EncodedImage

CFG = FrameConfig()


def _encoded(shape=(256, 384), rate_code=1, seed=0):
    rng = np.random.default_rng(seed)
    n = image_symbol_count(rate_code, shape)
    z = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64)
    model = {1: "jscc-awgn-cbr1_384", 2: "jscc-awgn-cbr1_96"}[rate_code]
    return EncodedImage(channels.normalise_power(z), shape, (0, 0, 0), model, 3.0)


def _feed_all(rx, x, chunk=5000):
    frames = []
    for i in range(0, x.size, chunk):
        frames += rx.feed(x[i : i + chunk])
    return frames + rx.flush()


@pytest.mark.parametrize("snr_db", [3.0, 12.0])
def test_frames_survive_cfo_timing_phase_and_noise(snr_db):
    rng = np.random.default_rng(int(snr_db))
    enc = _encoded(shape=(512, 768), rate_code=2)
    bursts = build_bursts(enc, image_id=42, cfg=CFG)
    stream = np.concatenate([np.zeros(300, np.complex64), *bursts, np.zeros(300, np.complex64)])
    cfo = -0.01 / CFG.sps  # 1 % of the symbol rate
    x = impair(stream, snr_db, CFG, cfo=cfo, delay=37.37, gain=0.05 * np.exp(2.0j), rng=rng)
    rx = BurstReceiver(CFG)
    frames = _feed_all(rx, x, chunk=4093)
    assert [f.frame_index for f in frames] == list(range(len(bursts)))
    for f in frames:
        start, stop = f.payload_slice
        mse = np.mean(np.abs(f.symbols - enc.symbols[start:stop]) ** 2)
        measured_db = -10 * np.log10(mse)
        assert abs(measured_db - snr_db) < 0.6  # equalisation loses little
        assert abs(f.snr_db - snr_db) < 0.6  # the estimate is the payload's SNR
        assert f.cfo == pytest.approx(cfo, abs=2e-4)
        assert f.design_snr_db == 3.0 and f.image_shape == (512, 768)
    assert abs(frames[0].timing - (300 + 37.37)) < 0.2
    meta = frames[0].meta()
    assert meta["model"] == "jscc-awgn-cbr1_96" and isinstance(meta["h"], complex)


@pytest.mark.parametrize(
    "sps, cfo, delay", [(2, 0.0, 37.37), (2, 0.005, 101.81), (4, -0.003, 12.6), (2, 0.004, 0.0)]
)
def test_h_is_the_channel_gain_in_the_training_convention(sps, cfo, delay):
    """Unit-power bursts through a gain g: |h| = |g| (no matched-filter gain), and its
    phase is that of the samples as received at h_sample, frequency offset included."""
    cfg = FrameConfig(sps=sps)
    rng = np.random.default_rng(sps + int(delay))
    enc = _encoded(shape=(512, 768), rate_code=2)
    bursts = build_bursts(enc, image_id=5, cfg=cfg)
    stream = np.concatenate([np.zeros(300, np.complex64), *bursts, np.zeros(300, np.complex64)])
    gain = 0.3 * np.exp(2.1j)
    x = impair(stream, 15.0, cfg, cfo=cfo, delay=delay, gain=gain, rng=rng)
    frames = _feed_all(BurstReceiver(cfg), x, chunk=4093)
    assert len(frames) == len(bursts)
    for f in frames:
        expected = gain * np.exp(2j * np.pi * cfo * f.h_sample)
        assert abs(f.h) == pytest.approx(abs(gain), rel=0.02)
        assert abs(np.angle(f.h / expected)) < 0.05
        # A symbol of the frame's payload, after the preamble and the header.
        first, end = PREAMBLE_LENGTH + header_symbols(cfg.header_version), _frame_length(f)
        assert (cfg.filter_span + first) * sps < f.h_sample - f.timing
        assert f.h_sample - f.timing < (cfg.filter_span + end) * sps
        # Noise in the same units: |h|^2 / noise_var is the SNR estimate, and
        # noise_var is the training convention's sigma^2 (here |g|^2 / snr).
        assert 10 * np.log10(abs(f.h) ** 2 / f.noise_var) == pytest.approx(f.snr_db, abs=0.05)
        assert 10 * np.log10(f.noise_var / abs(gain) ** 2) == pytest.approx(-15.0, abs=0.5)
        again = ReceivedFrame.from_meta(f.meta(), f.symbols)
        assert again.h == f.h and again.h_sample == f.h_sample


def _frame_length(frame) -> int:
    """Symbols of a received frame: preamble, header, payload and pilots."""
    return frame_length(frame.symbols.size, CFG)


def test_noise_only_gives_nothing():
    rng = np.random.default_rng(3)
    rx = BurstReceiver(CFG)
    frames = _feed_all(rx, add_noise(np.zeros(400_000, np.complex64), 0.0, CFG, rng), chunk=8192)
    assert frames == []
    assert rx.stats["frames_ok"] == 0 and rx.stats["internal_errors"] == 0
    assert rx.stats["bursts_detected"] == 0


def test_bad_input_never_raises():
    rx = BurstReceiver(CFG)
    assert rx.feed(np.array(["a", "b"])) == []
    assert rx.feed(None) == []
    assert rx.feed([]) == []
    x = np.ones(1000, np.complex64)
    x[::7] = np.nan
    x[3] = np.inf
    assert rx.feed(x) == []
    assert rx.stats["invalid_input"] == 2
    assert rx.stats["nonfinite_samples"] == 144
    assert rx.feed(np.zeros((10, 10), dtype=np.float32)) == []  # real, 2-D: used flattened
    assert rx.stats["internal_errors"] == 0


def test_truncated_burst_is_dropped_and_the_next_one_received():
    rng = np.random.default_rng(4)
    first = build_bursts(_encoded(seed=1), image_id=1, cfg=CFG)[0]
    second = build_bursts(_encoded(seed=2), image_id=2, cfg=CFG)[0]
    stream = np.concatenate([first[: first.size // 2], second, np.zeros(500, np.complex64)])
    rx = BurstReceiver(CFG)
    frames = _feed_all(rx, add_noise(stream, 10.0, CFG, rng), chunk=3000)
    assert [f.image_id for f in frames] == [2]
    assert rx.stats["frames_truncated"] == 1


def test_corrupted_header_is_counted_and_dropped():
    rng = np.random.default_rng(5)
    bursts = [build_bursts(_encoded(seed=s), image_id=s, cfg=CFG)[0] for s in range(3)]
    broken = bursts[1].copy()
    # Wipe the header region (just after the preamble) with strong noise.
    lo, hi = 128 * CFG.sps + 40, 700 * CFG.sps
    broken[lo:hi] = (rng.standard_normal(hi - lo) + 1j * rng.standard_normal(hi - lo)) * 3
    stream = np.concatenate([bursts[0], broken, bursts[2], np.zeros(500, np.complex64)])
    rx = BurstReceiver(CFG)
    frames = _feed_all(rx, add_noise(stream, 15.0, CFG, rng))
    assert [f.image_id for f in frames] == [0, 2]
    assert rx.stats["header_crc_fail"] == 1


def test_sample_by_sample_feeding_matches_one_block():
    rng = np.random.default_rng(6)
    burst = build_bursts(_encoded(shape=(64, 64)), image_id=9, cfg=CFG)[0]
    x = add_noise(
        np.concatenate([np.zeros(50, np.complex64), burst, np.zeros(50, np.complex64)]),
        8.0,
        CFG,
        rng,
    )
    whole = _feed_all(BurstReceiver(CFG), x, chunk=x.size)
    rx = BurstReceiver(CFG)
    pieces = []
    for i in range(0, x.size, 7):
        pieces += rx.feed(x[i : i + 7])
    pieces += rx.flush()
    assert len(whole) == len(pieces) == 1
    np.testing.assert_allclose(whole[0].symbols, pieces[0].symbols, atol=1e-4)


def test_sample_rate_offset_is_followed():
    from diffjscc.radio.sim import resample

    rng = np.random.default_rng(7)
    enc = _encoded(shape=(512, 768), rate_code=2)
    bursts = build_bursts(enc, image_id=3, cfg=CFG)
    stream = resample(np.concatenate([np.zeros(200, np.complex64), *bursts]), 1.0 - 150e-6)
    x = add_noise(np.concatenate([stream, np.zeros(300, np.complex64)]), 20.0, CFG, rng)
    frames = _feed_all(BurstReceiver(CFG), x)
    assert len(frames) == len(bursts)
    for f in frames:
        start, stop = f.payload_slice
        measured_db = -10 * np.log10(np.mean(np.abs(f.symbols - enc.symbols[start:stop]) ** 2))
        assert measured_db > 19.0  # a 1.5-sample slide left alone would leave about 5 dB
        assert f.sample_rate_offset == pytest.approx(-150e-6, abs=15e-6)


@pytest.mark.gnuradio
def test_gnuradio_channel_model_with_clock_offset():
    """GNU Radio's channel_model drops samples when epsilon != 1: sync is on the signal."""
    gr = pytest.importorskip("gnuradio.gr")
    from diffjscc.radio import noise_voltage
    from gnuradio import blocks
    from gnuradio import channels as grch

    enc = _encoded(shape=(512, 768), rate_code=2)
    bursts = build_bursts(enc, image_id=11, cfg=CFG)
    x = np.concatenate([np.zeros(1000, np.complex64), *bursts, np.zeros(3000, np.complex64)])
    tb = gr.top_block()
    src = blocks.vector_source_c(x.tolist(), False)
    channel = grch.channel_model(
        noise_voltage=noise_voltage(10.0, CFG),
        frequency_offset=0.01 / CFG.sps,
        epsilon=1.0001,
        taps=[complex(np.exp(0.7j))],
        noise_seed=1,
    )
    sink = blocks.vector_sink_c()
    tb.connect(src, channel, sink)
    tb.run()
    y = np.array(sink.data(), dtype=np.complex64)
    assert y.size < x.size  # samples were dropped
    frames = _feed_all(BurstReceiver(CFG), y, chunk=8192)
    assert [f.frame_index for f in frames] == list(range(len(bursts)))
    for f in frames:
        start, stop = f.payload_slice
        measured_db = -10 * np.log10(np.mean(np.abs(f.symbols - enc.symbols[start:stop]) ** 2))
        assert measured_db > 9.0 and abs(f.snr_db - 10.0) < 0.7


def test_flush_completes_a_burst_that_ends_the_stream():
    burst = build_bursts(_encoded(shape=(64, 64)), image_id=5, cfg=CFG)[0]
    rx = BurstReceiver(CFG)
    assert rx.feed(burst) == []  # nothing after the burst: not yet decidable
    frames = rx.flush()
    assert [f.image_id for f in frames] == [5]
    assert rx.flush() == []


def test_receiver_needs_no_payload_setting():
    """The header alone fixes the payload split: a receiver with another max_payload_symbols works."""
    enc = _encoded(shape=(512, 768), rate_code=2)
    bursts = build_bursts(enc, image_id=1, cfg=FrameConfig(max_payload_symbols=1000))
    frames = _feed_all(BurstReceiver(FrameConfig(max_payload_symbols=50)), np.concatenate(bursts))
    assert len(frames) == len(bursts) == 13


def test_header_with_valid_crc_but_impossible_fields_is_refused():
    from diffjscc.radio import header as hdr
    from diffjscc.radio.frame import frame_symbols
    from diffjscc.radio.pulse import shape

    payload = np.ones(100, np.complex64)
    bogus = [
        hdr.FrameHeader(1, 9, (64, 64), 0.0, 0, 1),  # rate code not in the registry
        hdr.FrameHeader(1, 1, (64, 64), 0.0, 3, 2),  # index beyond count
        hdr.FrameHeader(1, 1, (65535, 65535), 0.0, 0, 1),  # absurdly large image
    ]
    good = build_bursts(_encoded(shape=(64, 64)), image_id=8, cfg=CFG)[0]
    stream = np.concatenate([shape(frame_symbols(h, payload, CFG), CFG) for h in bogus] + [good])
    rx = BurstReceiver(CFG)
    frames = _feed_all(rx, stream)
    assert [f.image_id for f in frames] == [8]
    assert rx.stats["header_invalid"] == 3 and rx.stats["internal_errors"] == 0


@pytest.mark.parametrize(
    "cfg", [FrameConfig(sps=4, rolloff=0.25, pilot_spacing=12), FrameConfig(sps=3, rolloff=0.5)]
)
def test_other_waveform_settings(cfg):
    rng = np.random.default_rng(8)
    enc = _encoded(shape=(256, 384))
    bursts = build_bursts(enc, image_id=4, cfg=cfg)
    x = impair(
        np.concatenate([*bursts, np.zeros(200, np.complex64)]),
        5.0,
        cfg,
        cfo=0.01 / cfg.sps,
        delay=11.6,
        rng=rng,
    )
    frames = _feed_all(BurstReceiver(cfg), x)
    assert len(frames) == len(bursts)
    start, stop = frames[0].payload_slice
    measured_db = -10 * np.log10(np.mean(np.abs(frames[0].symbols - enc.symbols[start:stop]) ** 2))
    assert abs(measured_db - 5.0) < 0.6 and abs(frames[0].snr_db - 5.0) < 0.6


def test_version_1_and_version_2_headers_in_one_stream():
    """Transmitters of either header version, one receiver: every frame, its payload
    where the header's version puts it, and the CSI estimated from the right known symbols."""
    rng = np.random.default_rng(12)
    enc = _encoded(shape=(512, 768), rate_code=2)
    v1 = build_bursts(enc, image_id=1, cfg=FrameConfig(header_version=1))
    v2 = build_bursts(enc, image_id=2, cfg=CFG)  # version 2, the default
    short = build_bursts(enc, image_id=3, cfg=FrameConfig(header_version=2, max_payload_symbols=50))
    assert v2[0].size < v1[0].size
    gap = np.zeros(200, np.complex64)
    stream = np.concatenate([gap, v1[0], gap, v2[0], v2[1], gap, *short[:3], v1[1], gap])
    x = impair(stream, 8.0, CFG, cfo=0.003, delay=5.5, rng=rng)
    rx = BurstReceiver(CFG)
    frames = _feed_all(rx, x, chunk=7001)
    assert [(f.image_id, f.frame_index) for f in frames] == [
        (1, 0),
        (2, 0),
        (2, 1),
        (3, 0),
        (3, 1),
        (3, 2),
        (1, 1),
    ]
    assert rx.stats["header_crc_fail"] == 0 and rx.stats["frames_ok"] == len(frames)
    for f in frames:
        start, stop = f.payload_slice
        mse = np.mean(np.abs(f.symbols - enc.symbols[start:stop]) ** 2)
        assert abs(-10 * np.log10(mse) - 8.0) < 1.5
        assert abs(f.snr_db - 8.0) < 1.5


def test_dc_removal_into_the_buffer_gives_what_its_output_fed_gives():
    """``feed(x, dc=...)`` (the DC remover writing into the receiver's buffer, as the
    block does) delivers what ``feed(dc.process(x))`` does, sample for sample: through
    a DC offset, non-finite samples and the buffer rescaled when the level jumps."""
    from diffjscc.radio import faults
    from diffjscc.radio.frontend import DcRemover

    rng = np.random.default_rng(12)
    clean = faults.hostile_stream("clean", 10.0, rng).samples
    offset = np.complex64(0.02 - 0.01j)  # at each level, 30 dB below the signal
    x = np.concatenate([(clean + offset) * np.float32(level) for level in (1e-12, 1e12, 1.0)])
    x[5000:5010] = np.nan
    x[9000] = np.inf
    runs = []
    for into_buffer in (True, False):
        rx, dc, frames = BurstReceiver(FrameConfig()), DcRemover(), []
        for i in range(0, x.size, 30000):
            chunk = x[i : i + 30000]
            frames += rx.feed(chunk, dc=dc) if into_buffer else rx.feed(dc.process(chunk))
        runs.append((frames + rx.flush(), dict(rx.stats), dc.offset))
    (a, stats_a, offset_a), (b, stats_b, offset_b) = runs
    assert len(a) >= 4 and stats_a == stats_b and offset_a == offset_b
    assert stats_a["rescaled"] >= 2 and stats_a["nonfinite_samples"] == 11
    for fa, fb in zip(a, b, strict=True):
        assert fa.meta() == fb.meta()
        np.testing.assert_array_equal(fa.symbols, fb.symbols)
