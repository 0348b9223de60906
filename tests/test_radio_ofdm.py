"""The OFDM waveform: transmitter, receiver, interleaver, PAPR and channel presets."""

from pathlib import Path

import numpy as np
import pytest
from diffjscc import channels
from diffjscc.errors import ConfigError
from diffjscc.radio import header as hdr
from diffjscc.radio import image_symbol_count
from diffjscc.radio.channel_presets import (
    PRESETS,
    draw_taps,
    exponential_taps,
    get_preset,
    parse_taps,
)
from diffjscc.radio.ofdm import (
    SYNC_LENGTH,
    OfdmConfig,
    OfdmWaveform,
    build_bursts,
    channel_uses,
    frame_slots,
    header_symbol_count,
    interleaver,
    noise_voltage,
    ofdm_symbol_count,
)
from diffjscc.radio.ofdm_papr import papr_db, rapp
from diffjscc.radio.ofdm_receiver import GenieChannel, OfdmReceiver, OfdmTuning
from diffjscc.radio.sim import fractional_delay, frequency_offset
from diffjscc.radio.waveform import Receiver, get_waveform
from diffjscc.symbols import EncodedImage

SHAPE = (64, 96)  # 48 JSCC symbols at CBR 1/384: 2 OFDM symbols of payload with the header


def _enc(rng, shape=SHAPE):
    n = image_symbol_count(1, shape)
    z = channels.normalise_power(rng.standard_normal(n) + 1j * rng.standard_normal(n))
    return EncodedImage(z.astype(np.complex64), shape, (0, 0, 0), "jscc-awgn-cbr1_384", 5.0)


def _channel(bursts, cfg, snr_db, rng, taps=(1.0,), delay=37.4, cfo=0.0, lead=500):
    x = np.concatenate([np.zeros(lead, np.complex64), *bursts, np.zeros(2000, np.complex64)])
    taps = np.asarray(taps, dtype=np.complex128)
    x = np.convolve(x, taps).astype(np.complex64)
    x = fractional_delay(x, delay)
    if cfo:
        x = frequency_offset(x, cfo)
    sigma = noise_voltage(snr_db, cfg)
    noise = sigma / np.sqrt(2) * (rng.standard_normal(x.size) + 1j * rng.standard_normal(x.size))
    return (x + noise).astype(np.complex64), sigma


def _receive(x, cfg, chunk=3000, **kw):
    rx = OfdmReceiver(cfg, **kw)
    frames = []
    for i in range(0, x.size, chunk):
        frames += rx.feed(x[i : i + chunk])
    return frames + rx.flush(), rx


def _mse_snr_db(frame, sent):
    mse = float(np.mean(np.abs(frame.symbols - sent) ** 2))
    return 10 * np.log10(1 / mse)  # the effective SNR's definition


def test_clean_round_trip_through_the_registry():
    rng = np.random.default_rng(0)
    wf = get_waveform("ofdm", max_payload_symbols=30)
    assert isinstance(wf, OfdmWaveform) and get_waveform("ofdm", **wf.settings()) == wf
    enc = _enc(rng)
    bursts = wf.build_bursts(enc, image_id=9)
    assert len(bursts) == 2 and [b.size for b in bursts] == [wf.frame_samples(24)] * 2
    power = np.mean(np.abs(np.concatenate(bursts)) ** 2)
    assert power == pytest.approx(1.0, abs=0.05)
    rx = wf.make_receiver()
    assert isinstance(rx, Receiver)
    x, _ = _channel(bursts, wf.cfg, 90.0, rng)  # nearly noiseless, after silence
    frames = rx.feed(x) + rx.flush()
    assert [(f.image_id, f.frame_index, f.frame_count, f.waveform) for f in frames] == [
        (9, 0, 2, "ofdm"),
        (9, 1, 2, "ofdm"),
    ]
    got = np.concatenate([f.symbols for f in frames])
    assert np.max(np.abs(got - enc.symbols)) < 0.1
    assert all(f.symbol_noise_var is not None and f.symbol_noise_var.size == 24 for f in frames)
    assert rx.stats["internal_errors"] == 0 and rx.stats["frames_ok"] == 2


@pytest.mark.parametrize(
    ("snr", "taps", "cfo"),
    [
        (10.0, (1.0,), 0.0),
        (10.0, (1.0,), 0.005),  # 1 % of a single carrier's symbol rate at sps 2
        (10.0, (0.8, 0.0, 0.45j, 0.0, 0.0, -0.3, 0.0, 0.0, 0.0, 0.2), 0.005),
        (3.0, (0.8, 0.0, 0.45j, 0.0, 0.0, -0.3), -0.004),
    ],
)
def test_noise_offset_and_multipath_within_the_prefix(snr, taps, cfo):
    rng = np.random.default_rng(1)
    cfg = OfdmConfig()
    taps = np.asarray(taps) / np.linalg.norm(taps)
    enc = _enc(rng, (256, 384))
    x, sigma = _channel(build_bursts(enc, 4, cfg), cfg, snr, rng, taps, delay=91.7, cfo=cfo)
    (frame,), rx = _receive(x, cfg)
    # At the first path, or a little later where multipath puts the sync's energy;
    # the FFT windows start cp_length / 4 early, which covers that.
    assert -2 <= frame.timing - (500 + 91.7) <= 4
    assert frame.cfo == pytest.approx(cfo, abs=5e-5)
    true = _mse_snr_db(frame, enc.symbols)
    genie = GenieChannel(tuple(taps), (500 + 91.7,), cfo, sigma)
    (gframe,), _ = _receive(x, cfg, genie=genie)
    assert gframe.frame_index == 0
    gtrue = _mse_snr_db(gframe, enc.symbols)
    assert true > gtrue - 0.8  # estimated channel close to the true one (5 symbols here)
    # The SNR estimate is close to the effective SNR of the true channel (the genie's,
    # by definition) and to what the symbols show (768 symbols: +-0.5 dB by chance).
    assert abs(frame.snr_db - gframe.snr_db) < 0.7
    assert abs(frame.snr_db - true) < 1.0
    if len(taps) == 1:
        assert gtrue == pytest.approx(snr, abs=0.5)  # flat: the effective SNR is the SNR


def test_zero_forcing_and_its_effective_snr():
    rng = np.random.default_rng(2)
    cfg = OfdmConfig()
    enc = _enc(rng, (128, 192))
    x, _ = _channel(build_bursts(enc, 1, cfg), cfg, 8.0, rng, (0.9, 0.0, 0.4j))
    (frame,), _ = _receive(x, cfg, tuning=OfdmTuning(equaliser="zf"))
    mse = float(np.mean(np.abs(frame.symbols - enc.symbols) ** 2))
    assert frame.snr_db == pytest.approx(10 * np.log10(1 / mse), abs=0.6)


def test_interleaver_is_a_permutation_that_scatters():
    for n in (1, 2, 48, 768, 3072, 4096, 4099):
        perm = interleaver(n)
        assert np.array_equal(np.sort(perm), np.arange(n))
        inverse = np.argsort(perm)
        assert np.array_equal(perm[inverse], np.arange(n))
    perm = interleaver(3072)
    assert np.min(np.abs(np.diff(perm))) > 100  # latent neighbours land far apart


def test_clip_ratio_is_honoured_and_filtered():
    rng = np.random.default_rng(3)
    enc = _enc(rng, (256, 384))
    plain = build_bursts(enc, 1, OfdmConfig())[0]
    clipped_cfg = OfdmConfig(clip_ratio_db=4.0)
    clipped = build_bursts(enc, 1, clipped_cfg)[0]
    assert papr_db(plain, None) > 8.0
    # Filtering lets peaks grow back a little; they stay well under the unclipped ones.
    assert papr_db(clipped, None) < 4.0 + 2.0 < papr_db(plain, None)
    # Nothing leaks into the guard band, and the receiver still decodes at 15 dB.
    first = SYNC_LENGTH + clipped_cfg.cp_length  # the first OFDM symbol's FFT window
    spec = np.abs(np.fft.fft(clipped[first : first + clipped_cfg.fft_size])) ** 2
    assert np.sum(spec[clipped_cfg.layout.noise]) < 1e-6 * np.sum(spec)
    x, _ = _channel([clipped], clipped_cfg, 15.0, rng)
    (frame,), _ = _receive(x, clipped_cfg)
    assert 8.0 < _mse_snr_db(frame, enc.symbols) < 15.5
    # The Rapp model saturates, and is transparent far below saturation.
    assert np.max(np.abs(rapp(plain * 10, 1.0))) <= 1.0
    assert np.allclose(rapp(plain * 1e-3, 1.0), plain * 1e-3, rtol=1e-4, atol=1e-9)


def test_bad_settings_give_clear_errors():
    with pytest.raises(ConfigError, match="shorter than the FFT"):
        OfdmConfig(fft_size=128, cp_length=128)
    with pytest.raises(ConfigError, match="too few pilots"):
        cfg = OfdmConfig()
        # A comb that resolves half the prefix's delays.
        OfdmConfig(cp_length=2 * cfg.fft_size * cfg.pilot_stagger // cfg.pilot_spacing)
    with pytest.raises(ConfigError, match="pilot_stagger"):
        OfdmConfig(pilot_stagger=3)
    with pytest.raises(ConfigError, match="power of two"):
        OfdmConfig(fft_size=500)
    with pytest.raises(ConfigError, match="used_carriers"):
        OfdmConfig(used_carriers=OfdmConfig().fft_size - 2)  # no guard band
    with pytest.raises(ConfigError, match="header_version"):
        OfdmConfig(header_version=3)
    with pytest.raises(ConfigError, match="clip_ratio_db"):
        OfdmConfig(clip_ratio_db=-3)
    with pytest.raises(ConfigError):
        get_waveform("ofdm", sps=2)
    with pytest.raises(ConfigError, match="equaliser"):
        OfdmTuning(equaliser="lms")


def test_noise_and_garbage_make_no_frames():
    rng = np.random.default_rng(4)
    cfg = OfdmConfig()
    rx = OfdmReceiver(cfg)
    noise = (rng.standard_normal(300000) + 1j * rng.standard_normal(300000)).astype(np.complex64)
    assert rx.feed(noise) == [] and rx.feed("garbage") == [] and rx.flush() == []
    bad = np.full(10000, np.nan, dtype=np.complex64)
    assert rx.feed(bad) == []
    assert rx.stats["frames_ok"] == 0 and rx.stats["internal_errors"] == 0
    assert rx.stats["invalid_input"] == 1 and rx.stats["nonfinite_samples"] == 10000


def test_presets_are_normalised():
    for name, preset in PRESETS.items():
        powers = preset.tap_powers()
        assert powers.sum() == pytest.approx(1.0) and np.all(powers >= 0), name
        taps = draw_taps(name, rng=5)
        if name != "rayleigh":
            assert np.sum(np.abs(taps) ** 2) == pytest.approx(1.0), name
    assert get_preset("EPA").tap_powers().size == 4  # 410 ns at 7.68 MS/s: 3 samples
    assert get_preset("eva").tap_powers().size == 20
    assert 40 < get_preset("epa").rms_delay_ns() < 46  # 43 ns, as published
    assert exponential_taps(4.0).sum() == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="unknown channel preset"):
        get_preset("mars")
    assert np.allclose(parse_taps("1, 0.3-0.2j,0.1j"), [1, 0.3 - 0.2j, 0.1j])
    with pytest.raises(ConfigError):
        parse_taps("1, x")


def test_channel_uses_of_the_default_image():
    cfg = OfdmConfig()
    uses = channel_uses(3072, cfg) / 3072  # 768x512 at CBR 1/384
    assert 1.0 < uses <= 1.2  # issue 12's target


def test_frame_slots_spread_the_header_and_cover_the_grid():
    cfg = OfdmConfig()
    d = cfg.data_per_symbol
    for version in hdr.VERSIONS:
        for n in (1, 48, 3072):
            slots = frame_slots(n, d, version)
            every = np.concatenate([slots.header, slots.payload, slots.padding])
            assert np.array_equal(np.sort(every), np.arange(slots.symbols * d))
            assert slots.symbols == ofdm_symbol_count(n, cfg, version)
            # The header spans the band of the symbols it needs, neighbouring code
            # bits far apart in frequency.
            head = hdr.header_symbols(version)
            span = header_symbol_count(cfg, version) * d
            assert (
                slots.header.max() < span and slots.header.max() - slots.header.min() > 0.9 * span
            )
            gaps = np.abs(np.diff(slots.header % d))
            assert np.median(gaps) > d / 8
            assert slots.header.size == head and slots.payload.size == n


@pytest.mark.parametrize("version", hdr.VERSIONS)
def test_either_header_version_is_received(version):
    rng = np.random.default_rng(7)
    tx = OfdmConfig(header_version=version)
    enc = _enc(rng, (128, 192))
    x, _ = _channel(build_bursts(enc, 3, tx), tx, 3.0, rng, (0.9, 0.0, 0.4j), cfo=0.005)
    (frame,), rx = _receive(x, OfdmConfig())  # the receiver's default sends version 2
    assert frame.image_id == 3 and rx.stats["header_crc_fail"] == 0
    assert _mse_snr_db(frame, enc.symbols) > 0.0


def test_gnuradio_blocks_with_the_ofdm_waveform_over_epa(tmp_path):
    """image source -> GNU Radio EPA channel with a frequency offset -> receiver block."""
    import gnuradio

    module = str(Path(__file__).resolve().parents[1] / "gr-diffjscc" / "python")
    if module not in gnuradio.__path__:
        gnuradio.__path__.insert(0, module)
    import pmt
    from diffjscc.radio.channel_presets import gnuradio_channel
    from gnuradio import blocks, gr
    from gnuradio.diffjscc import image_source, jscc_receiver
    from gnuradio.diffjscc._fakes import BlockMeanCodec
    from PIL import Image

    path = tmp_path / "img.png"
    rng = np.random.default_rng(6)
    Image.fromarray(rng.integers(0, 256, (256, 384, 3), dtype=np.uint8)).save(path)
    src = image_source(
        str(path), gap_samples=500, encoder=BlockMeanCodec(), waveform="ofdm", interval_s=0
    )
    assert isinstance(src.waveform, OfdmWaveform)
    rx = jscc_receiver(waveform="ofdm")
    taps = draw_taps("epa", rng=3)  # a realisation with a deep notch in the band
    chain = gnuradio_channel("epa", src.waveform.noise_voltage(12.0), 0.004, taps=taps)
    dbg = blocks.message_debug()
    tb = gr.top_block()
    tb.connect(src, *chain, rx)
    tb.msg_connect(rx, "pdus", dbg, "store")
    tb.run()
    assert src.stats()["bursts_sent"] == 1 and dbg.num_messages() == 1
    meta = pmt.to_python(pmt.car(dbg.get_message(0)))
    assert meta["waveform"] == "ofdm" and len(meta["symbol_noise_var"]) == meta["num_symbols"]
    # The effective SNR of this channel: the AWGN SNR of the same mean squared error
    # after the (mean-gain preserving) MMSE equaliser.
    cfg = src.waveform.cfg
    power = np.abs(np.fft.fft(taps, cfg.fft_size)[cfg.layout.data]) ** 2
    noise = 10**-1.2
    shrink = power / (power + noise)
    gain = shrink / shrink.mean()
    expected = -10 * np.log10(np.mean((gain - 1) ** 2 + gain**2 * noise / power))
    assert meta["snr_db"] == pytest.approx(expected, abs=1.0)


def test_gnuradio_fading_and_impairment_blocks():
    """The Doppler path (selective_fading_model) keeps unit mean power; impairments chain."""
    from diffjscc.radio.channel_presets import gnuradio_channel
    from gnuradio import blocks, gr

    rng = np.random.default_rng(8)
    x = ((rng.standard_normal(60000) + 1j * rng.standard_normal(60000)) / np.sqrt(2)).astype(
        np.complex64
    )
    chain = gnuradio_channel(
        "eva", doppler=1e-3, seed=4, impairments={"phase_noise_mag": 0.01, "magbal": 0.1}
    )
    assert [type(b).__name__ for b in chain][0] == "selective_fading_model"
    tb = gr.top_block()
    sink = blocks.vector_sink_c()
    tb.connect(blocks.vector_source_c(x.tolist()), *chain, sink)
    tb.run()
    y = np.asarray(sink.data())
    assert x.size - 64 <= y.size <= x.size  # the fading filter keeps its history
    assert 0.5 < np.mean(np.abs(y) ** 2) < 2.0  # Rayleigh fading over many coherence times
    with pytest.raises(ConfigError, match="not both"):
        gnuradio_channel("epa", taps=[1.0], doppler=1e-4)


def test_loopback_example_with_ofdm_over_epa(loopback, tmp_path, monkeypatch):
    """examples/loopback.py --waveform ofdm --channel epa, with the stand-in codec; its
    --cfo is a fraction of the occupied band, as in the GRC loopbacks."""
    from gnuradio import channels as gr_channels
    from gnuradio.diffjscc._fakes import BlockMeanCodec
    from PIL import Image

    offsets = []
    real_model = gr_channels.channel_model

    def channel_model(*args, **kw):
        offsets.append(kw["frequency_offset"])
        return real_model(*args, **kw)

    monkeypatch.setattr(gr_channels, "channel_model", channel_model)

    path = tmp_path / "img.png"
    yy, xx = np.mgrid[0:96, 0:160]
    Image.fromarray(np.stack([xx, yy * 2, 255 - xx], 2).astype(np.uint8)).save(path)
    common = ["--image", str(path), "--output", str(tmp_path / "out"), "--quiet", "--seed", "2"]
    args = loopback.setup_args().parse_args(
        [*common, "--waveform", "ofdm", "--channel", "epa", "--snr", "15", "--cfo", "0.01"]
    )
    codec = BlockMeanCodec()
    summary = loopback.run(args, encoder=codec, decoder=codec)
    assert summary["waveform"] == "ofdm" and summary["channel"] == "epa"
    assert len(summary["taps"]) == 4  # EPA at 7.68 MS/s
    assert summary["frames_decoded"] == summary["frames_sent"] >= 1
    assert summary["images_decoded"] == 1
    assert offsets == [pytest.approx(0.01 * 492 / 1024)]  # used carriers / FFT size
    for bad in (["--channel", "mars"], ["--taps", "1, x"], ["--taps", "1", "--channel", "epa"]):
        assert loopback.main([*common, *bad]) == 2


def test_payload_gain_trusts_the_power_of_a_whole_image_more():
    from diffjscc.radio.ofdm_receiver import ChannelGrid, payload_gain

    rng = np.random.default_rng(8)
    n = 3072
    sent = channels.normalise_power(rng.standard_normal(n) + 1j * rng.standard_normal(n))
    noise = (rng.standard_normal(n) + 1j * rng.standard_normal(n)) / np.sqrt(2)
    y = 0.8 * sent + noise  # the channel is 0.8; the estimate below says 1 (0 dB, 2 dB off)
    grid = ChannelGrid(np.ones((1, n), complex), np.full((1, n), 0.05), 1.0, 0.0)
    whole = payload_gain(y, grid, np.arange(n), whole_image=True)
    part = payload_gain(y, grid, np.arange(n), whole_image=False)
    assert whole == pytest.approx(0.8, abs=0.05)
    assert whole < part < 1.0


def test_wiener_weights_match_the_textbook_solve():
    """Both ways the interpolator is solved (the observations' size, or the delays' when
    fewer: the push-through identity) give W = R_to (R_oo + rho I)^-1 and its error."""
    from diffjscc.radio.ofdm_receiver import _wiener_weights

    n = 1024
    rng = np.random.default_rng(0)
    for n_obs, delays in [(30, np.arange(-3, 37)), (255, np.arange(0, 40)), (12, [0, 5, 9])]:
        observed = np.sort(rng.choice(np.arange(-250, 250), n_obs, replace=False))
        targets = np.arange(-246, 247, 7)
        for rho in (1e-3, 0.3):
            w, mse = _wiener_weights(targets, observed, n, tuple(delays), rho)
            d = np.asarray(delays, dtype=np.float64)
            eo = np.exp(-2j * np.pi * np.outer(observed, d) / n)
            et = np.exp(-2j * np.pi * np.outer(targets, d) / n)
            r_oo, r_to = eo @ eo.conj().T / d.size, et @ eo.conj().T / d.size
            want = r_to @ np.linalg.inv(r_oo + rho * np.eye(n_obs))
            assert np.allclose(w, want, atol=1e-8 * np.abs(want).max())
            want_mse = 1.0 - np.sum(want * r_to.conj(), axis=1).real
            assert np.allclose(mse, np.clip(want_mse, 0, 1), atol=1e-8)
            assert 0.0 < mse.max() < 1.0


def test_known_symbol_factor_matches_the_interpolator():
    """The factored known-symbol estimate (E_t G^-1 times the observations' response at
    the delays, one inverse FFT) equals the full Wiener interpolator's, and so does its
    error."""
    from diffjscc.radio import ofdm_receiver as rx

    cfg = OfdmConfig()
    lay = cfg.layout
    rng = np.random.default_rng(1)
    freqs = np.sort(np.concatenate([lay.pilot_freqs[0], lay.data_freqs[0][:120]]))
    key = np.ascontiguousarray(freqs, dtype=np.int64).tobytes()
    delays = tuple(range(-2, 30))
    ls = rng.standard_normal(freqs.size) + 1j * rng.standard_normal(freqs.size)
    for rho_db10 in (-3.0, -1.0, 0.5):
        w, rel = rx._known_interpolator(cfg, key, 2, delays, rho_db10)
        factor, rel_f = rx._known_factor(cfg, key, 2, delays, rho_db10)
        spectrum = np.zeros(cfg.fft_size, dtype=np.complex128)
        spectrum[freqs % cfg.fft_size] = ls
        response = np.fft.ifft(spectrum)[np.asarray(delays) % cfg.fft_size] * cfg.fft_size
        assert np.allclose(factor @ response, w @ ls, atol=1e-9 * np.abs(w @ ls).max())
        assert np.allclose(rel_f, rel, atol=1e-9)


def test_unstaggered_512_point_layout_with_a_two_symbol_header():
    # Its version-2 header spans two OFDM symbols; smoothing the pilots' residuals over
    # neighbouring symbols once returned three values for two and every frame failed.
    rng = np.random.default_rng(3)
    cfg = OfdmConfig(fft_size=512, used_carriers=256, pilot_spacing=8, pilot_stagger=1)
    enc = _enc(rng, (128, 192))
    bursts = []
    for image_id in range(4):
        bursts += [*build_bursts(enc, image_id, cfg), np.zeros(300, np.complex64)]
    x, _ = _channel(bursts, cfg, 3.0, rng, (0.9, 0.0, 0.4j), cfo=0.003)
    frames, rx = _receive(x, cfg)
    assert rx.stats["internal_errors"] == 0
    assert [f.image_id for f in frames] == [0, 1, 2, 3]


def test_chunking_changes_no_frame_and_the_buffer_stays_bounded():
    """The same frames whether the stream comes in one piece, in chunks of 1-40,000
    samples or in tiny ones; the sample store is reused (its head moves), not grown
    with the stream."""
    rng = np.random.default_rng(21)
    cfg = OfdmConfig()
    bursts = [b for i in range(4) for b in build_bursts(_enc(rng), i, cfg)]
    gaps = [np.zeros(int(rng.integers(0, 3000)), np.complex64) for _ in bursts]
    pieces = [p for b, g in zip(bursts, gaps, strict=True) for p in (b, g)]
    x, _ = _channel(pieces, cfg, 8.0, rng, cfo=0.003)
    whole, _ = _receive(x, cfg, chunk=x.size)
    tiny, _ = _receive(x, cfg, chunk=97)
    rx = OfdmReceiver(cfg)
    mixed, i = [], 0
    while i < x.size:
        n = int(rng.choice([1, 5, 800, 8192, 40000]))
        mixed += rx.feed(x[i : i + n])
        i += n
    mixed += rx.flush()
    assert [f.image_id for f in whole] == [0, 1, 2, 3]
    for other in (tiny, mixed):
        assert [f.image_id for f in other] == [0, 1, 2, 3]
        for a, b in zip(whole, other, strict=True):
            assert a.timing == b.timing
            assert np.allclose(a.symbols, b.symbols, atol=1e-5)
    noise = (0.1 * rng.standard_normal(8192 * 100)).astype(np.complex64)
    for i in range(0, noise.size, 8192):
        rx.feed(noise[i : i + 8192])
    assert rx._store.size < 4 * 40000  # not the 819,200 samples fed


def _link(cfg, rng, taps_of_frame, snr_db, frames, cfo=0.01, shape=(512, 768)):
    """A link's stream, frame by frame: each frame's burst through its own taps, a gap,
    the frequency offset running on, fresh noise; (pieces, sent symbols)."""
    sigma = noise_voltage(snr_db, cfg)
    pieces, sent, at = [], [], 0
    for i in range(frames):
        enc = _enc(rng, shape)
        sent.append(enc.symbols)
        (burst,) = build_bursts(enc, i, cfg)
        x = np.convolve(np.concatenate([burst, np.zeros(1000)]), taps_of_frame(i))[
            : burst.size + 1000
        ]
        x = frequency_offset(x, cfo, 2 * np.pi * cfo * at)
        at += x.size
        noise = rng.standard_normal((2, x.size)) * (sigma / np.sqrt(2))
        pieces.append((x + noise[0] + 1j * noise[1]).astype(np.complex64))
    return pieces, sent


def _held_per_frame(rx, pieces):
    """Frames delivered and the payload comb's held delay prior after each."""
    frames, held = [], []
    points = rx.cfg.pilot_stagger * rx.cfg.pilots_per_symbol
    for piece in pieces:
        got = rx.feed(piece)
        frames += got
        held += [rx.delay_prior.held(points)] * len(got)
    return frames + rx.flush(), held


def test_a_steady_link_keeps_one_delay_prior():
    """Each frame's fresh noise moves which points of its pilots' delay profile stand
    out; the receiver's prior, held across the link's frames, stays put (each new one
    costs its solves), and a reset forgets it."""
    rng = np.random.default_rng(31)
    cfg = OfdmConfig()
    pieces, sent = _link(cfg, rng, lambda i: np.ones(1), 10.0, 40)
    rx = OfdmReceiver(cfg)
    frames, held = _held_per_frame(rx, pieces)
    assert [f.image_id for f in frames] == list(range(40))
    assert len(set(held)) <= 2 and len(set(held[5:])) == 1, [h.hex() for h in set(held)]
    assert rx.delay_prior.restarts == 0
    for f in frames:
        assert _mse_snr_db(f, sent[f.image_id]) > 9.0
    rx.reset()
    assert rx.delay_prior.held(len(held[0])) is None


@pytest.mark.parametrize("first, then", [("flat", "eva"), ("eva", "flat")])
def test_a_changed_channel_is_followed(first, then):
    """One receiver, a link's frames through one channel, then through another (a new
    transmitter or a moved antenna: the EVA profile's paths over 20 samples, against a
    flat channel's one): every frame decodes, the held prior moves, and from the second
    frame after the change every frame is about as good as a receiver that never saw
    the first channel makes it (the first can lose a few tenths of a dB: a new path 15
    dB under the strongest is not told from noise in one frame)."""
    rng = np.random.default_rng(32)
    cfg = OfdmConfig()
    taps = {"flat": np.ones(1), "eva": draw_taps("eva", rng)}
    change = 12
    pieces, sent = _link(cfg, rng, lambda i: taps[first if i < change else then], 10.0, 24)
    rx = OfdmReceiver(cfg)
    frames, held = _held_per_frame(rx, pieces)
    assert [f.image_id for f in frames] == list(range(24))
    assert held[change - 1] != held[-1]
    loss = []
    for f in frames[change:]:
        alone = _receive(np.concatenate([np.zeros(3000, np.complex64), pieces[f.image_id]]), cfg)[0]
        assert [g.image_id for g in alone] == [f.image_id]
        loss.append(_mse_snr_db(alone[0], sent[f.image_id]) - _mse_snr_db(f, sent[f.image_id]))
    assert loss[0] < 0.6 and max(loss[1:]) < 0.3 and np.mean(loss[1:]) < 0.1, loss


def test_the_receivers_solves_run_on_one_blas_thread(monkeypatch):
    """A new delay prior or noise level costs eigenproblems and solves of a few dozen
    unknowns; on OpenBLAS's thread pool they left its threads spinning on every core
    (half the receiver's speed on a new link). Each runs with every BLAS library at one
    thread, and the process's own setting is back afterwards."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from diffjscc.radio import ofdm_receiver as orx

    def blas_threads():
        return [
            i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"
        ]

    before = blas_threads()
    if not before:
        pytest.skip("no BLAS library that threadpoolctl can see")
    seen = []
    for name in ("eigh", "solve"):
        real = getattr(np.linalg, name)

        def spy(*args, _real=real, **kw):
            seen.append(blas_threads())
            return _real(*args, **kw)

        monkeypatch.setattr(np.linalg, name, spy)
    orx.clear_caches()
    rng = np.random.default_rng(3)
    wf = get_waveform("ofdm")
    enc = _enc(rng, (256, 384))
    x, _ = _channel(wf.build_bursts(enc, image_id=1), wf.cfg, 10.0, rng, taps=(0.8, 0.3j, 0.2))
    frames, rx = _receive(x, wf.cfg)
    orx.clear_caches()
    assert len(frames) == 1 and rx.stats["internal_errors"] == 0
    assert seen and all(set(threads) == {1} for threads in seen), seen
    assert blas_threads() == before


def _clocked_frames(ppm, snr_db, seed, taps=(1.0,), count=3):
    """``count`` single-frame images, each through ``taps``, a clock offset of ``ppm``
    (band-limited resampling), 1 % frequency offset and noise; the frames received and
    each one's symbols' SNR against what was sent."""
    from diffjscc.radio.sim import resample

    rng = np.random.default_rng(seed)
    wf = get_waveform("ofdm")
    rx = wf.make_receiver()
    out = []
    for i in range(count):
        enc = _enc(rng, (512, 768))  # one frame of 8 OFDM symbols
        x = np.concatenate([np.zeros(700, np.complex64), *wf.build_bursts(enc, image_id=i)])
        x = np.convolve(np.concatenate([x, np.zeros(3000, np.complex64)]), taps)
        if ppm:
            x = resample(x, 1 + 1e-6 * ppm)
        x = frequency_offset(x.astype(np.complex64), 0.005)
        sigma = noise_voltage(snr_db, wf.cfg)
        x = x + sigma / np.sqrt(2) * (
            rng.standard_normal(x.size) + 1j * rng.standard_normal(x.size)
        )
        for f in rx.feed(x.astype(np.complex64)) + rx.flush():
            out.append((f, _mse_snr_db(f, enc.symbols)))
    return out


@pytest.mark.parametrize("ppm", [200.0, -150.0])
def test_a_links_clock_offset_is_measured_and_taken_out(ppm):
    """A receiver clock off by 150-200 ppm slips the 1,024-point FFT windows by 0.16-0.21
    samples a symbol: the estimator's time smoother followed that ramp only in part (4 dB
    of the symbols' SNR at 20 dB). The link's frames' drifts, measured from their pilots,
    are averaged; once eight agree, frames are corrected by the mean and report it as
    their sample_rate_offset. A reset forgets it."""
    clocked = _clocked_frames(ppm, 20.0, seed=5, count=11)
    plain = _clocked_frames(0.0, 20.0, seed=5, count=11)
    assert len(clocked) == len(plain) == 11
    loss = []
    for i, ((frame, snr), (reference, snr_plain)) in enumerate(zip(clocked, plain, strict=True)):
        assert reference.sample_rate_offset == 0.0
        if i < 8:
            assert frame.sample_rate_offset == 0.0  # not yet: fewer than eight frames
        else:
            assert frame.sample_rate_offset * 1e6 == pytest.approx(ppm, abs=10.0)
        loss.append(snr_plain - snr)
    assert np.mean(loss[:8]) > 1.5  # what the offset cost
    assert max(loss[8:]) < 1.5 and np.mean(loss[8:]) < np.mean(loss[:8]) - 1.0, loss


def test_a_link_clock_needs_agreeing_frames():
    """The link's clock takes a mean only from enough frames that agree: scattered drifts
    (a fading channel's) or too few give none; a reset forgets them."""
    from diffjscc.radio.ofdm_drift import LinkClock

    clock = LinkClock()
    rng = np.random.default_rng(2)
    for d in rng.normal(0.0, 0.15, 32):  # Doppler's pseudo-drift: zero mean
        clock.add(float(d))
    assert clock.drift(8) == 0.0
    clock.reset()
    for d in 0.2 + rng.normal(0.0, 0.08, 7):
        clock.add(float(d))
    assert clock.drift(8) == 0.0  # seven frames
    clock.add(0.2)
    clock.add(float("nan"))  # not counted
    assert clock.drift(8) == pytest.approx(0.2, abs=0.06)
    assert clock.drift(1) == 0.0  # a one-symbol frame does not drift
    clock.reset()
    assert clock.drift(8) == 0.0


def test_a_link_clock_follows_a_new_clock():
    """Frames whose drift lies outside the window's spread are not corrected by it and do
    not join it; three in a row start the window again (another transmitter)."""
    from diffjscc.radio.ofdm_drift import LinkClock

    clock = LinkClock()
    rng = np.random.default_rng(3)
    for d in 0.21 + rng.normal(0.0, 0.01, 12):
        clock.add(float(d))
    assert clock.drift(8, 0.21) == pytest.approx(0.21, abs=0.01)
    assert clock.drift(8, -0.16) == 0.0  # this frame does not agree: not corrected
    for d in -0.16 + rng.normal(0.0, 0.01, 3):
        clock.add(float(d))
    assert clock.restarts == 1 and clock.drift(8, -0.16) == 0.0  # three frames so far
    for d in -0.16 + rng.normal(0.0, 0.01, 5):
        clock.add(float(d))
    assert clock.drift(8, -0.16) == pytest.approx(-0.16, abs=0.01)
    clock.add(0.5)  # one stray frame is dropped, not a new clock
    clock.add(-0.16)
    assert clock.restarts == 1 and clock.drift(8, -0.16) == pytest.approx(-0.16, abs=0.01)


def test_no_clock_offset_is_found_in_noise_or_multipath():
    """Without a clock offset no frame is corrected, at low SNR and over multipath."""
    taps = (0.8, 0.0, 0.45j, 0.0, 0.0, -0.3)
    for snr_db, seed, channel in ((0.0, 6, (1.0,)), (3.0, 7, taps), (20.0, 8, taps)):
        frames = _clocked_frames(0.0, snr_db, seed, channel, count=12)
        assert frames and all(f.sample_rate_offset == 0.0 for f, _ in frames)
