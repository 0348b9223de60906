"""Decoder CSI: AWGN models get the image's own estimate, Rayleigh models the link form."""

from __future__ import annotations

import cmath
import math

import numpy as np
import pytest
from diffjscc.radio.csi import LinkCSI


def test_awgn_models_get_the_estimate_unchanged():
    csi = LinkCSI()
    assert csi.for_decoder("awgn", 7.3, 0.4 + 0.2j, 7.0) == (7.3, 0.4 + 0.2j)
    assert csi.average_snr_db is None  # nothing kept for AWGN models


def test_rayleigh_link_form_keeps_phase_and_instantaneous_snr():
    csi = LinkCSI(window=4)
    snr, h = csi.for_decoder("rayleigh", 10.0, 3.0 * cmath.exp(1j * 0.7), design_snr_db=10.0)
    # First image at the design SNR: average 10 dB, |h| = 1, phase kept.
    assert snr == pytest.approx(10.0)
    assert abs(h) == pytest.approx(1.0) and cmath.phase(h) == pytest.approx(0.7)
    # A faded image: the decoder sees the average SNR and |h|^2 = SNR_inst / SNR_avg.
    snr, h = csi.for_decoder("rayleigh", 4.0, 0.01j, design_snr_db=10.0)
    expected_avg = 10 * math.log10((10.0 + 10.0 + 10**0.4) / 3)
    assert snr == pytest.approx(expected_avg)
    assert abs(h) ** 2 * 10 ** (snr / 10) == pytest.approx(10**0.4)
    assert cmath.phase(h) == pytest.approx(math.pi / 2)


def test_the_average_converges_to_the_link_mean_of_rayleigh_draws():
    rng = np.random.default_rng(1)
    csi = LinkCSI(window=400)
    gains = (rng.standard_normal(400) + 1j * rng.standard_normal(400)) / math.sqrt(2)
    for g in gains:
        snr, h = csi.for_decoder("rayleigh", 10 * math.log10(abs(g) ** 2 * 10.0), g, 10.0)
    assert snr == pytest.approx(10.0, abs=0.5)
    assert abs(h) == pytest.approx(abs(gains[-1]) * math.sqrt(10.0 / 10 ** (snr / 10)), rel=1e-6)


def test_absurd_estimates_neither_overflow_nor_poison_the_average():
    csi = LinkCSI(window=8)
    csi.for_decoder("rayleigh", 5000.0, 1.0, design_snr_db=5.0)
    snr, h = csi.for_decoder("rayleigh", float("nan"), 1.0, 5.0)
    assert math.isnan(snr)  # passed on: the sink refuses non-finite SNRs before this
    assert math.isfinite(csi.average_snr_db)


def test_window_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        LinkCSI(window=0)
