"""Score the refiner on a set of images: the "refined" column of the evaluation.

``evaluate_refiner`` refines each JSCC image, scores the JSCC and the refined
image against the original (PSNR, MS-SSIM, LPIPS-Alex) and, over the set, FID;
a metric that cannot run here is None, and ``skipped`` says why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from diffjscc.refiner.metrics import fid, image_metrics, metric_status


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else None


def evaluate_refiner(
    refiner,
    originals: Sequence[np.ndarray],
    x_hats: Sequence[np.ndarray],
    snr_db: float | Sequence[float],
    *,
    steps: int | None = None,
    sampler: str | None = None,
    seed: int = 0,
    caption: str | None = None,
    with_fid: bool = True,
    keep_images: bool = False,
) -> dict:
    """{"rows": [...], "mean": {"jscc": {...}, "refined": {...}}, "fid": {...}, "skipped": {...}}.

    Image i is refined with seed ``seed + i``, so a run is repeatable.
    """
    if len(originals) != len(x_hats):
        raise ValueError("originals and x_hats differ in length")
    snrs = [float(snr_db)] * len(x_hats) if np.isscalar(snr_db) else [float(s) for s in snr_db]
    rows, refined_images = [], []
    for i, (original, x_hat) in enumerate(zip(originals, x_hats, strict=True)):
        result = refiner.refine(
            x_hat, snrs[i], caption=caption, steps=steps, sampler=sampler, seed=seed + i
        )
        refined_images.append(result.image)
        row = {
            "index": i,
            "snr_db": snrs[i],
            "caption": result.caption,
            "seed": result.seed,
            "sample_s": result.timing["sample_s"],
            "jscc": image_metrics(original, x_hat),
            "refined": image_metrics(original, result.image),
        }
        if keep_images:
            row["image"] = result.image
        rows.append(row)
    mean = {
        column: {m: _mean(r[column][m] for r in rows) for m in ("psnr", "ms_ssim", "lpips")}
        for column in ("jscc", "refined")
    }
    fids = {"jscc": None, "refined": None}
    if with_fid:
        fids = {
            "jscc": fid(list(originals), list(x_hats)),
            "refined": fid(list(originals), refined_images),
        }
    return {"rows": rows, "mean": mean, "fid": fids, "skipped": metric_status()}
