"""PSNR and MS-SSIM of the evaluation, including images too small for five MS-SSIM scales."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("pytorch_msssim")

from diffjscc.metrics import MS_SSIM_WEIGHTS, ms_ssim, ms_ssim_batch, ms_ssim_scales, psnr  # noqa: E402


def _image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 200 / w, y * 200 / h, np.full((h, w), 90.0)], axis=-1)
    return np.clip(base + rng.normal(0, 10, (h, w, 3)), 0, 255).astype(np.uint8)


def test_psnr_known_values():
    a = np.full((4, 5, 3), 100, np.uint8)
    assert psnr(a, a) == math.inf
    assert psnr(a, a + 1) == pytest.approx(10 * math.log10(255**2))  # MSE 1: 48.13 dB
    b = a.copy()
    b[0, 0, 0] = 110  # one error of 10 among 60 values: MSE 100/60
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 * 60 / 100))


def test_psnr_rejects_mismatched_images():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        psnr(np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 3), np.float32))


@pytest.mark.parametrize(
    "shape,expected",
    [
        ((512, 768), (5, 11)),
        ((161, 300), (5, 11)),  # 5 scales need more than 10 * 2**4 = 160 px
        ((160, 300), (4, 11)),
        ((96, 128), (4, 11)),
        ((64, 64), (3, 11)),
        ((11, 40), (1, 11)),
        ((8, 8), (1, 7)),  # smaller than the window: the largest odd window that fits
        ((1, 9), (1, 1)),
    ],
)
def test_ms_ssim_scales_for_small_images(shape, expected):
    assert ms_ssim_scales(*shape) == expected


def test_ms_ssim_identical_is_one_and_drops_with_noise():
    ref = _image(192, 200)
    rng = np.random.default_rng(1)
    light = np.clip(ref + rng.normal(0, 4, ref.shape), 0, 255).astype(np.uint8)
    heavy = np.clip(ref + rng.normal(0, 40, ref.shape), 0, 255).astype(np.uint8)
    values = ms_ssim_batch(ref, [ref, light, heavy])
    assert values[0] == pytest.approx(1.0, abs=1e-6)
    assert 1.0 > values[1] > values[2] > 0.0
    assert ms_ssim(ref, heavy) == pytest.approx(values[2], rel=1e-6)


@pytest.mark.parametrize("shape", [(64, 80), (20, 30), (6, 9)])
def test_ms_ssim_small_images_give_finite_values(shape):
    ref = _image(*shape)
    noisy = np.clip(ref.astype(int) + 25, 0, 255).astype(np.uint8)
    value = ms_ssim(ref, noisy)
    assert math.isfinite(value) and 0.0 <= value < 1.0
    assert ms_ssim(ref, ref) == pytest.approx(1.0, abs=1e-6)


def test_fewer_scales_loop_matches_the_library_at_five_scales():
    import torch
    from diffjscc.metrics import _fewer_scales
    from pytorch_msssim import ms_ssim as library_ms_ssim

    ref = _image(176, 180)
    noisy = np.clip(ref.astype(int) + np.random.default_rng(2).normal(0, 20, ref.shape), 0, 255)
    x = torch.from_numpy(noisy.astype(np.uint8)).permute(2, 0, 1)[None].float() / 255
    y = torch.from_numpy(ref).permute(2, 0, 1)[None].float() / 255
    ours = _fewer_scales(x, y, 5, 11)
    # the standard weights sum to 1.0001; ours are renormalised to 1
    weights = (np.array(MS_SSIM_WEIGHTS) / sum(MS_SSIM_WEIGHTS)).tolist()
    theirs = library_ms_ssim(x, y, data_range=1.0, size_average=False, weights=weights)
    assert float(ours[0]) == pytest.approx(float(theirs[0]), rel=1e-6)
