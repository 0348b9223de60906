"""Latent maps <-> complex channel symbols, in numpy (no torch).

A latent of C real channels (C even) becomes C/2 complex maps: channel c is
the real part and channel c + C/2 the imaginary part of complex map c. The
symbols are that complex array flattened in C order (map, row, column).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from diffjscc.channels import normalise_power


@dataclass
class EncodedImage:
    """What the transmitter sends for one image, with what the receiver must know."""

    symbols: np.ndarray  # complex64, 1-D, unit average energy
    image_shape: tuple[int, int]  # (H, W) of the original image, before padding
    latent_shape: tuple[int, int, int]  # (C/2, H/16, W/16) of the padded image
    model: str  # registry name
    snr_db: float  # the SNR the encoder was told (its CSI input)
    meta: dict = field(default_factory=dict)

    @property
    def num_symbols(self) -> int:
        return int(self.symbols.size)


def latent_to_symbols(latent: np.ndarray) -> np.ndarray:
    """[C, H, W] real latent (one image) -> 1-D complex64 symbols, unit energy."""
    latent = np.asarray(latent, dtype=np.float32)
    if latent.ndim != 3 or latent.shape[0] % 2:
        raise ValueError(f"latent must be [C, H, W] with C even, got {latent.shape}")
    half = latent.shape[0] // 2
    z = latent[:half] + 1j * latent[half:]
    return normalise_power(z.reshape(-1).astype(np.complex64))


def symbols_to_latent(symbols: np.ndarray, latent_shape: tuple[int, int, int]) -> np.ndarray:
    """1-D complex symbols -> [C, H, W] float32 real latent, inverse of latent_to_symbols."""
    symbols = np.asarray(symbols, dtype=np.complex64).reshape(-1)
    expected = int(np.prod(latent_shape))
    if symbols.size != expected:
        raise ValueError(
            f"expected {expected} symbols for latent {latent_shape}, got {symbols.size}"
        )
    z = symbols.reshape(latent_shape)
    return np.concatenate([z.real, z.imag], axis=0).astype(np.float32)
