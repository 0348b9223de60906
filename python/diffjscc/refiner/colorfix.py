"""Colour correction of the diffusion output against the JSCC image.

The wavelet fix keeps the high frequencies of the refined image and takes the
low frequencies (colour, overall brightness) from the JSCC image x_hat, which
at the SNRs of interest is blurry but right in colour. The decomposition is an
a-trous ("with holes") transform: five passes of a 3x3 binomial blur whose
taps are spread 1, 2, 4, 8, 16 pixels apart, edges replicated; the low band is
the last blur, the high band is everything the blurs removed. This is the
StableSR / DiffBIR colour fix that DiffJSCC's sampler offers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

WAVELET_LEVELS = 5
COLOR_FIXES = ("wavelet", "adain", "none")


def _binomial_blur(image: torch.Tensor, dilation: int) -> torch.Tensor:
    taps = torch.tensor([0.25, 0.5, 0.25], dtype=image.dtype, device=image.device)
    kernel = torch.outer(taps, taps).repeat(image.shape[1], 1, 1, 1)
    padded = F.pad(image, (dilation,) * 4, mode="replicate")
    return F.conv2d(padded, kernel, groups=image.shape[1], dilation=dilation)


def wavelet_bands(
    image: torch.Tensor, levels: int = WAVELET_LEVELS
) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) bands of an NCHW image; high + low == image."""
    low = image
    for level in range(levels):
        low = _binomial_blur(low, 2**level)
    return image - low, low


def wavelet_color_fix(
    refined: torch.Tensor, reference: torch.Tensor, levels: int = WAVELET_LEVELS
) -> torch.Tensor:
    """High frequencies of ``refined`` plus low frequencies of ``reference`` (NCHW, same size)."""
    if refined.shape != reference.shape:
        raise ValueError(
            f"colour fix needs equal shapes, got {tuple(refined.shape)} and {tuple(reference.shape)}"
        )
    high, _ = wavelet_bands(refined, levels)
    _, low = wavelet_bands(reference.to(refined.dtype), levels)
    return high + low


def adain_color_fix(
    refined: torch.Tensor, reference: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """Match the per-channel mean and standard deviation of ``refined`` to ``reference``."""
    dims = (2, 3)
    ref = reference.to(refined.dtype)
    mean_r, std_r = refined.mean(dims, keepdim=True), (refined.var(dims, keepdim=True) + eps).sqrt()
    mean_s, std_s = ref.mean(dims, keepdim=True), (ref.var(dims, keepdim=True) + eps).sqrt()
    return (refined - mean_r) / std_r * std_s + mean_s


def color_fix(refined: torch.Tensor, reference: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "wavelet":
        return wavelet_color_fix(refined, reference)
    if kind == "adain":
        return adain_color_fix(refined, reference)
    if kind == "none":
        return refined
    raise ValueError(f"unknown colour fix {kind!r}; choose from {', '.join(COLOR_FIXES)}")
