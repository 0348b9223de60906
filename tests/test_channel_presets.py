"""Static multipath draws at the same average received SNR as the flat channel."""

from __future__ import annotations

import numpy as np
import pytest
from diffjscc.errors import ConfigError
from diffjscc.radio.channel_presets import (
    NORMALISATIONS,
    band_gain,
    draw_taps,
    flat_band,
    gnuradio_channel,
    normalise_taps,
    signal_spectrum,
)
from diffjscc.radio.waveform import get_waveform

SELECTIVE = ("indoor", "epa", "eva")


@pytest.fixture(scope="module", params=["sc", "ofdm"])
def spectrum(request):
    return signal_spectrum(get_waveform(request.param))


def test_band_gain_is_the_received_power_of_a_signal_of_that_spectrum(spectrum):
    rng = np.random.default_rng(1)
    taps = draw_taps("eva", rng=2, normalise="none")
    # one period of a periodic signal with that spectrum (random phases), through the taps
    x = np.fft.ifft(np.sqrt(spectrum) * np.exp(2j * np.pi * rng.random(spectrum.size)))
    y = np.convolve(np.tile(x, 2), taps)[x.size : 2 * x.size]  # the periodic steady state
    assert band_gain(taps, spectrum) == pytest.approx(
        np.mean(np.abs(y) ** 2) / np.mean(np.abs(x) ** 2), rel=1e-6
    )
    assert band_gain([1.0], spectrum) == pytest.approx(1.0)
    assert band_gain([0, 0, 0, -1j], spectrum) == pytest.approx(1.0)  # a delay changes nothing


def test_band_gain_of_taps_longer_than_the_grid():
    taps = np.random.default_rng(0).standard_normal(3000) * np.exp(-np.arange(3000) / 500)
    f = np.fft.fftfreq(1024)
    dtft = np.exp(-2j * np.pi * np.outer(f, np.arange(taps.size))) @ taps
    band = flat_band(0.5)
    assert band_gain(taps, band) == pytest.approx(np.sum(band * np.abs(dtft) ** 2), rel=1e-9)


@pytest.mark.parametrize("preset", SELECTIVE)
def test_normalisations_scale_one_and_the_same_draw(preset, spectrum):
    raw = draw_taps(preset, rng=7, normalise="none")
    band = draw_taps(preset, rng=7, normalise="band", spectrum=spectrum)
    energy = draw_taps(preset, rng=7)  # the default
    assert band_gain(band, spectrum) == pytest.approx(1.0)
    assert np.sum(np.abs(energy) ** 2) == pytest.approx(1.0)
    for scaled in (band, energy):  # the same realisation, only scaled
        ratio = scaled[raw != 0] / raw[raw != 0]
        assert np.allclose(ratio, ratio[0]) and ratio[0].real > 0 and abs(ratio[0].imag) < 1e-12
    assert np.array_equal(draw_taps(preset, rng=7, normalise=True), energy)
    assert np.array_equal(draw_taps(preset, rng=7, normalise=False), raw)


def test_the_band_is_what_energy_normalised_draws_miss():
    """Unit energy spreads |H|^2 over the whole sample band; over the signal's half, single
    EPA draws are several dB off: what the "band" normalisation takes out."""
    gains = [10 * np.log10(band_gain(draw_taps("epa", rng=s))) for s in range(40)]
    assert max(gains) - min(gains) > 3.0
    band = [band_gain(draw_taps("epa", rng=s, normalise="band")) for s in range(40)]
    assert np.allclose(band, 1.0)


def test_flat_presets_keep_their_gain():
    for how in NORMALISATIONS:
        assert np.array_equal(draw_taps("awgn", rng=3, normalise=how), [1.0])
        h = draw_taps("rayleigh", rng=3, normalise=how)
        assert h.size == 1 and h[0] == draw_taps("rayleigh", rng=3, normalise="none")[0]


def test_signal_spectrum_is_the_waveforms_band():
    sc = get_waveform("sc")
    ofdm = get_waveform("ofdm")
    f = np.abs(np.fft.fftfreq(1024))
    edges = {
        "sc": (1 + sc.cfg.rolloff) / (2 * sc.cfg.sps),  # the RRC's band
        "ofdm": 1 / (2 * ofdm.cfg.oversampling),  # used subcarriers / FFT size, halved
    }
    for name, wave in (("sc", sc), ("ofdm", ofdm)):
        s = signal_spectrum(wave)
        assert s.sum() == pytest.approx(1.0)
        assert s[f <= edges[name] + 0.01].sum() > 0.99, name
        assert s[f <= edges[name] * 0.8].sum() < 0.99, name  # and it fills that band


def test_bad_normalisation():
    with pytest.raises(ConfigError, match="normalisation must be one of"):
        draw_taps("epa", rng=1, normalise="peak")
    with pytest.raises(ConfigError, match="normalisation must be one of"):
        normalise_taps([1, 0.5], "rms")
    with pytest.raises(ConfigError, match="band fraction"):
        flat_band(1.5)


def test_gnuradio_channel_takes_the_normalisation():
    pytest.importorskip("gnuradio")
    spectrum = signal_spectrum(get_waveform("ofdm"))
    (model,) = gnuradio_channel("epa", seed=4, normalise="band", spectrum=spectrum)
    taps = np.array(model.taps())
    assert np.allclose(taps, draw_taps("epa", 4, normalise="band", spectrum=spectrum))
    assert band_gain(taps, spectrum) == pytest.approx(1.0, rel=1e-5)  # complex64 taps
