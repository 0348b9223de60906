"""Image quality metrics of the evaluation: PSNR and MS-SSIM on uint8 RGB images.

MS-SSIM is pytorch-msssim's, as in the official DiffJSCC evaluation: RGB in [0, 1]
(data range 1), Gaussian window of 11 px (sigma 1.5), the five scale weights of
Wang, Simoncelli and Bovik (2003). Five scales need images of at least 161 px a side;
for smaller images :func:`ms_ssim_scales` drops the coarsest scales (the remaining
weights are renormalised to sum to 1), and below 11 px the window shrinks to the
largest odd size that fits (plain single-scale SSIM). Papers report 5-scale values,
so results on images under 161 px a side are comparable with each other only; the
evaluation records the number of scales used per image.

torch is imported only when MS-SSIM is computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Wang, Simoncelli, Bovik, "Multiscale structural similarity for image quality assessment", 2003.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW = 11


def _check_pair(reference: np.ndarray, image: np.ndarray) -> None:
    if reference.shape != image.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {image.shape}")
    if reference.dtype != np.uint8 or image.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {reference.dtype} and {image.dtype}")


def mse(reference: np.ndarray, image: np.ndarray) -> float:
    _check_pair(reference, image)
    diff = reference.astype(np.float64) - image.astype(np.float64)
    return float(np.mean(diff * diff))


def psnr(reference: np.ndarray, image: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (peak 255); inf when they are equal."""
    err = mse(reference, image)
    return math.inf if err == 0 else 10.0 * math.log10(255.0**2 / err)


def ms_ssim_scales(height: int, width: int, window: int = WINDOW) -> tuple[int, int]:
    """(scales, window) used for an image of this size: 5 scales of an 11 px window when
    the image is large enough (> 160 px a side), fewer scales or a smaller window when not.

    pytorch-msssim halves the image between scales and needs the smallest side to exceed
    ``(window - 1) * 2 ** (scales - 1)``.
    """
    side = min(int(height), int(width))
    if side < 1:
        raise ValueError(f"image of {height}x{width} has no pixels")
    for scales in range(len(MS_SSIM_WEIGHTS), 0, -1):
        if side > (window - 1) * 2 ** (scales - 1):
            return scales, window
    # Too small even for one scale of the standard window: the largest odd window that fits.
    small = side if side % 2 else side - 1
    return 1, max(1, small)


def _to_tensor(images: Sequence[np.ndarray]):
    import torch

    batch = np.stack([np.ascontiguousarray(a) for a in images])
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)


def ms_ssim_batch(reference: np.ndarray, images: Sequence[np.ndarray]) -> np.ndarray:
    """MS-SSIM of each image in ``images`` against one uint8 HxWx3 reference (one pass)."""
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim
    from pytorch_msssim import ssim as _ssim

    images = list(images)
    if not images:
        return np.zeros(0)
    for image in images:
        _check_pair(reference, image)
    scales, window = ms_ssim_scales(*reference.shape[:2])
    x = _to_tensor(images)
    y = _to_tensor([reference]).expand_as(x)
    with torch.inference_mode():
        if scales == len(MS_SSIM_WEIGHTS):
            values = _ms_ssim(x, y, data_range=1.0, size_average=False, win_size=window)
        elif scales == 1 and window >= 3:
            values = _ssim(x, y, data_range=1.0, size_average=False, win_size=window)
        else:  # also images under 3 px a side, which pytorch-msssim's ssim() cannot take
            values = _fewer_scales(x, y, scales, window)
    return values.double().numpy()


def _fewer_scales(x, y, scales: int, window: int):
    """MS-SSIM over the first ``scales`` scales, weights renormalised; the same steps as
    pytorch-msssim's ``ms_ssim``, whose public function insists on five scales."""
    import torch
    import torch.nn.functional as F
    from pytorch_msssim.ssim import _fspecial_gauss_1d
    from pytorch_msssim.ssim import _ssim as _ssim_and_cs

    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=x.dtype)
    weights = weights / weights.sum()
    win = _fspecial_gauss_1d(window, 1.5).repeat([x.shape[1], 1, 1, 1])
    factors = []
    for level in range(scales):
        ssim_per_channel, cs = _ssim_and_cs(x, y, data_range=1.0, win=win, size_average=False)
        if level < scales - 1:
            factors.append(torch.relu(cs))
            padding = [s % 2 for s in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=padding)
            y = F.avg_pool2d(y, kernel_size=2, padding=padding)
    factors.append(torch.relu(ssim_per_channel))
    stacked = torch.stack(factors, dim=0)  # (scale, batch, channel)
    return torch.prod(stacked ** weights.view(-1, 1, 1), dim=0).mean(1)


def ms_ssim(reference: np.ndarray, image: np.ndarray) -> float:
    """MS-SSIM of two uint8 HxWx3 images (1 when equal); see the module notes on small images."""
    return float(ms_ssim_batch(reference, [image])[0])
