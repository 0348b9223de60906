"""Channel conventions shared by training (torch) and simulation (numpy).

Conventions, the same in both back ends:
- transmitted symbols have unit average energy per image: mean(|x|^2) = 1;
- AWGN: y = h x + n with n ~ CN(0, sigma^2), SNR = 1 / sigma^2 (so SNR in dB is
  the ratio of average received signal energy to noise energy when |h| = 1);
- block Rayleigh fading: one h ~ CN(0, 1) per image, constant over its symbols;
- channel state information (CSI) handed to the models is [SNR_dB] for AWGN
  models and [SNR_dB, Re h, Im h] for Rayleigh models;
- equalisation is zero forcing: x_hat = y / h.

Every function dispatches on its input type: numpy arrays in, numpy out; torch
tensors in, torch out. torch is only imported when given a tensor.
"""

from __future__ import annotations

import math

import numpy as np


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def noise_std(snr_db):
    """Standard deviation sigma of complex noise CN(0, sigma^2) for an SNR in dB."""
    if _is_torch(snr_db):
        return 10.0 ** (-snr_db / 20.0)
    return np.power(10.0, -np.asarray(snr_db, dtype=np.float64) / 20.0)


def normalise_power(symbols, axis=None):
    """Scale to unit average energy. numpy: over ``axis`` (all by default);
    torch: over every dimension but the first (one image per batch row)."""
    if _is_torch(symbols):
        dims = tuple(range(1, symbols.dim()))
        power = symbols.abs().pow(2).mean(dim=dims, keepdim=True)
        return symbols / power.clamp_min(1e-12).sqrt()
    power = np.mean(np.abs(symbols) ** 2, axis=axis, keepdims=axis is not None)
    return (symbols / np.sqrt(np.maximum(power, 1e-12))).astype(
        np.result_type(symbols, np.complex64)
    )


def complex_noise(shape, snr_db, rng: np.random.Generator | None = None):
    """numpy CN(0, sigma^2) noise of ``shape`` for a scalar SNR in dB."""
    rng = np.random.default_rng() if rng is None else rng
    sigma = float(noise_std(snr_db))
    noise = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    return (noise * (sigma / math.sqrt(2.0))).astype(np.complex64)


def rayleigh_gain(rng: np.random.Generator | None = None, size=None):
    """h ~ CN(0, 1): a scalar (size None) or an array of gains."""
    rng = np.random.default_rng() if rng is None else rng
    h = (rng.standard_normal(size) + 1j * rng.standard_normal(size)) / math.sqrt(2.0)
    return complex(h) if size is None else h.astype(np.complex64)


def rayleigh_gain_torch(n: int, device=None, generator=None):
    """torch: [n] gains h ~ CN(0, 1), one per image of a batch."""
    import torch

    real = torch.randn(n, device=device, generator=generator)
    imag = torch.randn(n, device=device, generator=generator)
    return torch.complex(real, imag) / math.sqrt(2.0)


def awgn(symbols, snr_db, rng: np.random.Generator | None = None, generator=None):
    """y = x + n. numpy: scalar SNR; torch: SNR per batch row (shape [N] or [N, 1])."""
    if _is_torch(symbols):
        import torch

        snr = torch.as_tensor(snr_db, dtype=torch.float32, device=symbols.device).reshape(-1)
        sigma = noise_std(snr).reshape((-1,) + (1,) * (symbols.dim() - 1)) / math.sqrt(2.0)
        noise = torch.complex(
            torch.randn(symbols.shape, device=symbols.device, generator=generator),
            torch.randn(symbols.shape, device=symbols.device, generator=generator),
        )
        return symbols + noise * sigma
    return (symbols + complex_noise(np.shape(symbols), snr_db, rng)).astype(np.complex64)


def rayleigh_block_fading(
    symbols, snr_db, h=None, rng: np.random.Generator | None = None, generator=None
):
    """y = h x + n with one h per image. Returns (y, h).

    numpy: ``h`` a complex scalar (drawn when None). torch: ``h`` shape [N] (drawn when None).
    """
    if _is_torch(symbols):
        if h is None:
            h = rayleigh_gain_torch(symbols.shape[0], symbols.device, generator)
        gain = h.reshape((-1,) + (1,) * (symbols.dim() - 1))
        return awgn(symbols * gain, snr_db, generator=generator), h
    rng = np.random.default_rng() if rng is None else rng
    h = rayleigh_gain(rng) if h is None else complex(h)
    return awgn(np.asarray(symbols) * np.complex64(h), snr_db, rng), h


def zf_equalise(received, h):
    """Zero-forcing equalisation x_hat = y / h (h scalar, or one per batch row in torch)."""
    if _is_torch(received):
        import torch

        h = torch.as_tensor(h, device=received.device)
        if h.dim() > 0:
            h = h.reshape((-1,) + (1,) * (received.dim() - 1))
        return received / h
    return (np.asarray(received) / np.complex64(h)).astype(np.complex64)


def csi_vector(snr_db, h=None, channel_type: str = "awgn"):
    """CSI fed to the models: [snr_db] (AWGN) or [snr_db, Re h, Im h] (Rayleigh).

    numpy: scalars in, float32 vector out. torch: per-row tensors in, [N, k] out.
    """
    if channel_type not in ("awgn", "rayleigh"):
        raise ValueError(f"channel_type must be 'awgn' or 'rayleigh', not {channel_type!r}")
    if _is_torch(snr_db):
        import torch

        snr = snr_db.reshape(-1, 1).float()
        if channel_type == "awgn":
            return snr
        h = torch.ones_like(snr[:, 0], dtype=torch.complex64) if h is None else h.reshape(-1)
        return torch.cat([snr, h.real.reshape(-1, 1).float(), h.imag.reshape(-1, 1).float()], dim=1)
    if channel_type == "awgn":
        return np.array([snr_db], dtype=np.float32)
    h = 1.0 + 0.0j if h is None else complex(h)
    return np.array([snr_db, h.real, h.imag], dtype=np.float32)
