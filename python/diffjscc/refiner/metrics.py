"""Quality of refined images: PSNR and MS-SSIM always; LPIPS (AlexNet) and FID where their weights exist.

LPIPS uses the ``lpips`` package with the AlexNet backbone, as the official
DiffJSCC evaluation does; FID uses ``torchmetrics``' FrechetInceptionDistance.
Both need pretrained networks that cannot be downloaded here, so every function
returns ``None`` for a metric it cannot compute and ``metric_status()`` says why.
"""

from __future__ import annotations

import importlib

import numpy as np

from diffjscc.metrics import ms_ssim as _ms_ssim
from diffjscc.metrics import psnr

_LPIPS = None
_STATUS: dict[str, str] = {}


def ms_ssim(reference: np.ndarray, image: np.ndarray) -> float | None:
    """5-scale MS-SSIM (:func:`diffjscc.metrics.ms_ssim`); None for images under 161 px a side.

    The refined column reports only values comparable with the papers': where the
    evaluation would drop scales, this says so in ``metric_status()`` instead.
    """
    if min(reference.shape[:2]) <= 160:
        _STATUS["ms_ssim"] = "images under 161 px a side are too small for 5-scale MS-SSIM"
        return None
    return _ms_ssim(reference, image)


def _lpips_model():
    global _LPIPS
    if _LPIPS is not None:
        return _LPIPS
    try:
        lpips = importlib.import_module("lpips")
    except ImportError:
        _STATUS["lpips"] = "the lpips package is not installed (pip install lpips)"
        return None
    try:
        _LPIPS = lpips.LPIPS(net="alex", verbose=False).eval()
    except Exception as exc:  # torchvision's AlexNet weights are fetched on first use
        _STATUS["lpips"] = (
            f"LPIPS AlexNet weights unavailable ({exc.__class__.__name__}); put torchvision's "
            "alexnet-owt-7be5be79.pth into ~/.cache/torch/hub/checkpoints/"
        )
        return None
    return _LPIPS


def lpips_alex(reference: np.ndarray, image: np.ndarray) -> float | None:
    import torch

    model = _lpips_model()
    if model is None:
        return None

    def to_t(a):
        return torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].float() / 127.5 - 1

    with torch.no_grad():
        return float(model(to_t(reference), to_t(image)))


def fid(references: list[np.ndarray], images: list[np.ndarray]) -> float | None:
    """FID between two image sets (torchmetrics, Inception features); None when unavailable."""
    import torch

    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError:
        _STATUS["fid"] = "torchmetrics[image] is not installed (pip install 'torchmetrics[image]')"
        return None
    try:
        metric = FrechetInceptionDistance(feature=2048)
    except Exception as exc:  # the Inception weights are fetched on first use
        _STATUS["fid"] = f"FID Inception weights unavailable ({exc.__class__.__name__})"
        return None
    for batch, real in ((references, True), (images, False)):
        for a in batch:
            metric.update(torch.from_numpy(np.array(a)).permute(2, 0, 1)[None], real=real)
    return float(metric.compute())


def image_metrics(reference: np.ndarray, image: np.ndarray) -> dict:
    """{"psnr", "ms_ssim", "lpips"} for one pair; a value is None when it cannot be computed."""
    return {
        "psnr": psnr(reference, image),
        "ms_ssim": ms_ssim(reference, image),
        "lpips": lpips_alex(reference, image),
    }


def metric_status() -> dict[str, str]:
    """Why each skipped metric was skipped (empty when all ran)."""
    return dict(_STATUS)
