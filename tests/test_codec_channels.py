import math

import numpy as np
import pytest
import torch
from diffjscc import channels


def test_awgn_numpy_has_the_requested_snr(rng):
    x = channels.normalise_power(rng.standard_normal(200_000) + 1j * rng.standard_normal(200_000))
    assert np.mean(np.abs(x) ** 2) == pytest.approx(1.0, rel=1e-5)
    for snr_db in (-5.0, 1.0, 13.0):
        y = channels.awgn(x, snr_db, rng)
        noise_power = np.mean(np.abs(y - x) ** 2)
        assert 10 * math.log10(1.0 / noise_power) == pytest.approx(snr_db, abs=0.05)
        # circular noise: real and imaginary parts carry half the power each
        assert np.var((y - x).real) == pytest.approx(noise_power / 2, rel=0.03)


def test_awgn_torch_follows_the_same_convention():
    torch.manual_seed(0)
    x = torch.ones(4, 50_000, dtype=torch.complex64)
    snr = torch.tensor([0.0, 5.0, 10.0, 20.0])
    y = channels.awgn(x, snr)
    measured = 10 * torch.log10(1.0 / (y - x).abs().pow(2).mean(dim=1))
    assert torch.allclose(measured, snr, atol=0.1)
    assert float(channels.noise_std(torch.tensor(10.0))) == pytest.approx(
        float(channels.noise_std(10.0))
    )


def test_rayleigh_gain_is_cn01_and_zero_forcing_inverts_it(rng):
    h = channels.rayleigh_gain(rng, size=100_000)
    assert np.mean(np.abs(h) ** 2) == pytest.approx(1.0, rel=0.02)
    assert abs(np.mean(h)) < 0.01
    x = channels.normalise_power(rng.standard_normal(1000) + 1j * rng.standard_normal(1000))
    y, h1 = channels.rayleigh_block_fading(x, 200.0, rng=rng)  # practically noiseless
    assert np.allclose(channels.zf_equalise(y, h1), x, atol=1e-4)
    xt = torch.from_numpy(np.stack([x, x]).astype(np.complex64))
    yt, ht = channels.rayleigh_block_fading(xt, torch.tensor([200.0, 200.0]))
    assert ht.shape == (2,)
    assert torch.allclose(channels.zf_equalise(yt, ht), xt, atol=1e-3)


def test_power_normalisation_is_per_image_in_torch():
    z = torch.randn(3, 2, 4, 4, dtype=torch.complex64) * torch.tensor([1.0, 10.0, 0.1]).view(
        3, 1, 1, 1
    )
    p = channels.normalise_power(z).abs().pow(2).mean(dim=(1, 2, 3))
    assert torch.allclose(p, torch.ones(3), atol=1e-5)


def test_csi_vector_layout():
    assert channels.csi_vector(7.0).tolist() == [7.0]
    assert np.allclose(channels.csi_vector(3.0, 0.5 - 0.25j, "rayleigh"), [3.0, 0.5, -0.25])
    t = channels.csi_vector(torch.tensor([1.0, 2.0]), torch.tensor([1j, 2 + 0j]), "rayleigh")
    assert t.shape == (2, 3) and t[0].tolist() == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError):
        channels.csi_vector(1.0, channel_type="rician")
