"""Frame format: header code and CRC, layout, pilots, pulse shaping, transmitter checks."""

import numpy as np
import pytest
from diffjscc.errors import ConfigError
from diffjscc.radio import FrameConfig, build_bursts, frame_length, frame_slice
from diffjscc.radio import header as hdr
from diffjscc.radio.frame import body_layout, header_pilot_positions, header_span
from diffjscc.radio.pulse import matched_filter, shape
from diffjscc.radio.sequences import PREAMBLE_LENGTH, pilot_symbols, preamble
from diffjscc.symbols import EncodedImage

HEADER = hdr.FrameHeader(
    image_id=513,
    rate_code=1,
    image_shape=(500, 771),
    design_snr_db=-2.5,
    frame_index=3,
    frame_count=9,
)


def test_header_bits_round_trip_and_crc_catches_a_flipped_bit():
    bits = hdr.pack(HEADER)
    assert bits.size == hdr.HEADER_BITS == 112
    assert hdr.unpack(bits) == HEADER
    for i in (0, 37, 111):
        flipped = bits.copy()
        flipped[i] ^= 1
        assert hdr.unpack(flipped) is None


def test_header_code_corrects_errors_at_low_snr():
    rng = np.random.default_rng(0)
    symbols = hdr.encode_symbols(HEADER)
    assert symbols.size == hdr.HEADER_SYMBOLS and set(np.unique(symbols)) == {-1.0, 1.0}
    # 0 dB on real BPSK: uncoded, about 8 % of these bits would be wrong.
    decoded = 0
    for _ in range(20):
        noisy = symbols + rng.standard_normal(symbols.size) * np.sqrt(0.5)
        decoded += hdr.decode_soft(noisy) == HEADER
    assert decoded == 20
    # Hard sign errors on a quarter of the symbols of one block's worth are corrected too.
    corrupt = symbols.copy()
    corrupt[rng.choice(symbols.size, 60, replace=False)] *= -1
    assert hdr.decode_soft(corrupt) == HEADER


def test_header_rejects_noise_and_wrong_version():
    rng = np.random.default_rng(1)
    assert (
        sum(
            hdr.decode_soft(rng.standard_normal(hdr.HEADER_SYMBOLS)) is not None for _ in range(200)
        )
        == 0
    )
    with pytest.raises(ValueError):
        hdr.pack(hdr.FrameHeader(1, 16, (1, 1), 0.0, 0, 1))  # rate code beyond 4 bits


def test_layout_pilot_overhead_and_spacing():
    cfg = FrameConfig()
    layout = body_layout(hdr.HEADER_SYMBOLS + 4096, cfg)
    assert layout.data_positions.size == hdr.HEADER_SYMBOLS + 4096
    gaps = np.diff(layout.pilot_positions)
    assert gaps.max() <= cfg.pilot_spacing and layout.pilot_positions[0] == 0
    assert layout.pilot_positions[-1] == layout.length - 1
    assert layout.pilot_positions.size / layout.length <= 0.06
    span = header_span(cfg)
    assert layout.data_positions[hdr.HEADER_SYMBOLS - 1] == span - 1


@pytest.mark.parametrize("spacing", [12, 17, 20, 33])
def test_header_pilots_are_pilots_in_every_frame(spacing):
    cfg = FrameConfig(pilot_spacing=spacing)
    expected = header_pilot_positions(cfg)
    for payload in (1, 5, 100, 4096):
        layout = body_layout(hdr.HEADER_SYMBOLS + payload, cfg)
        assert set(expected) <= set(layout.pilot_positions)
        assert np.array_equal(
            layout.data_positions[: hdr.HEADER_SYMBOLS],
            body_layout(hdr.HEADER_SYMBOLS, cfg).data_positions,
        )
        assert expected.max() < header_span(cfg)


def test_frame_split_covers_every_symbol_once():
    for total, count in ((3072, 1), (12288, 3), (12289, 4), (7, 7)):
        slices = [frame_slice(total, count, i) for i in range(count)]
        assert slices[0][0] == 0 and slices[-1][1] == total
        assert all(a[1] == b[0] for a, b in zip(slices[:-1], slices[1:], strict=True))
        assert all(stop > start for start, stop in slices)


def test_pulse_shaping_is_nyquist_and_unit_power():
    cfg = FrameConfig()
    rng = np.random.default_rng(2)
    symbols = (rng.standard_normal(4000) + 1j * rng.standard_normal(4000)).astype(
        np.complex64
    ) / np.sqrt(2)
    x = shape(symbols, cfg)
    assert x.size == (symbols.size - 1) * cfg.sps + cfg.num_taps
    assert abs(np.mean(np.abs(x) ** 2) - 1.0) < 0.05
    y = matched_filter(x, 0.0, symbols.size, cfg) / np.sqrt(cfg.sps)
    err = np.mean(np.abs(y[20:-20] - symbols[20:-20]) ** 2)
    assert 10 * np.log10(err) < -40  # ISI of the truncated filter pair


def test_known_sequences_have_unit_modulus():
    assert preamble().size == PREAMBLE_LENGTH
    assert np.allclose(np.abs(preamble()), 1.0)
    assert np.allclose(np.abs(pilot_symbols(100)), 1.0)
    assert np.array_equal(pilot_symbols(50), pilot_symbols(80)[:50])


def _enc(n, shape=(64, 96), model="jscc-awgn-cbr1_384"):
    z = np.ones(n, dtype=np.complex64)
    return EncodedImage(z, shape, (2, 4, 6), model, 1.0)


def test_build_bursts_sizes_and_validation():
    cfg = FrameConfig(max_payload_symbols=20)
    bursts = build_bursts(_enc(2 * 4 * 6), image_id=5, cfg=cfg)
    assert len(bursts) == 3  # 48 symbols in frames of at most 20: 16 each
    assert all(b.dtype == np.complex64 for b in bursts)
    assert bursts[0].size == (frame_length(16, cfg) - 1) * cfg.sps + cfg.num_taps
    with pytest.raises(ConfigError, match="sends 48 symbols"):
        build_bursts(_enc(47), image_id=5, cfg=cfg)
    with pytest.raises(ConfigError, match="image_id"):
        build_bursts(_enc(48), image_id=70000, cfg=cfg)
    with pytest.raises(ConfigError):
        build_bursts(_enc(48, model="no-such-model"), image_id=1, cfg=cfg)
    with pytest.raises(ConfigError):
        build_bursts("not an image", image_id=1)
    with pytest.raises(ConfigError):
        FrameConfig(sps=1)


def test_config_accepts_numpy_integers():
    cfg = FrameConfig(sps=np.int64(4), pilot_spacing=np.int32(12))
    assert cfg.sps == 4 and type(cfg.sps) is int and cfg.num_taps == 65
    with pytest.raises(ConfigError):
        FrameConfig(sps=2.5)


HEADER_V2 = hdr.FrameHeader(513, 1, (500, 771), -2.5, 3, 9, version=hdr.VERSION_CONV)


def test_version_2_header_is_shorter_and_decodes_at_0_db():
    symbols = hdr.encode_symbols(HEADER_V2)
    assert symbols.size == hdr.header_symbols(2) == hdr.CONV_SYMBOLS == 240
    assert hdr.header_symbols(1) == hdr.HEADER_SYMBOLS
    assert hdr.decode_soft_conv(symbols) == HEADER_V2
    rng = np.random.default_rng(2)
    # 0 dB (Es/N0 of complex symbols: real noise of variance 1/2); about 1 in 1000 fails.
    decoded = sum(
        hdr.decode_version(symbols + rng.standard_normal(240) * np.sqrt(0.5), 2) == HEADER_V2
        for _ in range(50)
    )
    assert decoded == 50
    # Six wrong signs in a row are corrected (free distance 12).
    corrupt = symbols.copy()
    corrupt[100:106] *= -1
    assert hdr.decode_soft_conv(corrupt) == HEADER_V2


def test_each_version_refuses_the_others_header_and_noise():
    rng = np.random.default_rng(3)
    v1 = hdr.encode_symbols(HEADER)
    v2 = hdr.encode_symbols(HEADER_V2)
    assert hdr.decode_soft_conv(v1[:240]) is None
    assert hdr.decode_soft(np.concatenate([v2, rng.standard_normal(368)])) is None
    assert sum(hdr.decode_soft_conv(rng.standard_normal(240)) is not None for _ in range(200)) == 0
    assert hdr.decode_soft_conv(v2[:239]) is None  # too short: no header, no exception
    bits = hdr.pack(HEADER_V2)
    assert hdr.unpack(bits, 2) == HEADER_V2 and hdr.unpack(bits, 1) is None
    with pytest.raises(ValueError, match="version"):
        hdr.pack(hdr.FrameHeader(1, 1, (1, 1), 0.0, 0, 1, version=3))
    with pytest.raises(ConfigError, match="header_version"):
        FrameConfig(header_version=3)


def test_version_2_frames_spend_at_most_1_2_channel_uses_per_jscc_symbol():
    # 768x512 at CBR 1/384: 3072 JSCC symbols in one frame.
    assert frame_length(3072, FrameConfig(header_version=1)) == 4039  # version 1: 1.31
    uses = frame_length(3072, FrameConfig())  # version 2, the default
    assert uses == frame_length(3072, FrameConfig(), version=2) and uses / 3072 <= 1.2
    cfg = FrameConfig(header_version=2, max_payload_symbols=40)
    layout = body_layout(hdr.header_symbols(2) + 40, cfg)
    assert PREAMBLE_LENGTH + layout.length == frame_length(40, cfg)
    assert header_span(cfg, 2) == int(layout.data_positions[239]) + 1
    assert np.array_equal(header_pilot_positions(cfg, 2), layout.pilot_positions[:15])
