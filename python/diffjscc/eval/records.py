"""The result format of ``diffjscc eval``: records per method, CBR and SNR, machine facts, tables."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import numpy as np

from diffjscc.baselines import (
    UNDELIVERED_FILL,
    byte_budget,
    capacity_bits_per_symbol,
    jscc_num_symbols,
)

FORMAT = "diffjscc-eval/1"


CODECS = ("jpeg2000", "avif")


# The JSCC's own columns: one encoder pass, with transmitter-side symbol optimisation
# (--tx-opt-steps), and refined by the diffusion model (--refiner).
JSCC_METHODS = ("jscc", "jscc_tx_opt", "jscc_refined")


METHODS = (*JSCC_METHODS, *CODECS, "best_separation")


# Identical images have infinite PSNR; capped so that means stay finite and JSON stays valid.
PSNR_CAP = 100.0


PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _r(value, digits=4):
    return None if value is None else round(float(value), digits)


def _record(method, common, noise_draws, psnrs, ssims, delivered=None, lpips=None, **per_image):
    """One record: means over all images and over the delivered ones, and per-image values.

    ``delivered`` (one bool per image) is given by the codecs only: JSCC always delivers."""
    if delivered is None:
        delivered = [True] * len(psnrs)
    else:
        per_image = dict(delivered=delivered, **per_image)
    record = dict(
        method=method,
        **common,
        noise_draws=noise_draws,
        psnr=_r(_mean(psnrs)),
        ms_ssim=_r(_mean(ssims), 5),
    )
    if lpips is not None:
        record["lpips"] = _r(_mean(lpips), 5)
        per_image = dict(lpips=[_r(v, 5) for v in lpips], **per_image)
    record.update(
        undelivered=delivered.count(False),
        psnr_delivered=_r(_mean(v for v, ok in zip(psnrs, delivered, strict=True) if ok)),
        ms_ssim_delivered=_r(_mean(v for v, ok in zip(ssims, delivered, strict=True) if ok), 5),
        per_image=dict(psnr=[_r(v) for v in psnrs], ms_ssim=[_r(v, 5) for v in ssims], **per_image),
    )
    return record


def build_records(
    names, images, specs, snrs, methods, jscc, separation, draws, refined=None, tx_opt=None
) -> list[dict]:
    records = []
    for spec in specs:
        for snr in snrs:
            common = dict(
                cbr=spec.cbr_str,
                model=spec.name,
                snr_db=snr,
                capacity_bits_per_symbol=_r(capacity_bits_per_symbol(snr), 6),
                num_images=len(images),
            )
            symbols = [jscc_num_symbols(img.shape[:2], spec) for img in images]
            for method, rows in (("jscc", jscc), ("jscc_tx_opt", tx_opt)):
                if not rows:
                    continue
                per = [rows[spec.name][i][snr] for i in range(len(images))]
                psnrs = [float(np.mean(p["psnr"])) for p in per]
                ssims = [float(np.mean(p["ms_ssim"])) for p in per]
                records.append(
                    _record(
                        method,
                        common,
                        draws,
                        psnrs,
                        ssims,
                        psnr_std_over_draws=[_r(np.std(p["psnr"]), 3) for p in per],
                        num_symbols=symbols,
                    )
                )
            if refined:
                per = [refined[spec.name][i][snr] for i in range(len(images))]
                records.append(
                    _record(
                        "jscc_refined",
                        common,
                        1,
                        [p["psnr"] for p in per],
                        [p["ms_ssim"] for p in per],
                        lpips=[p["lpips"] for p in per],
                        caption=[p["caption"] for p in per],
                        seed=[p["seed"] for p in per],
                    )
                )
            budgets = [byte_budget(n, snr) for n in symbols]
            for method in [m for m in METHODS if m not in JSCC_METHODS]:
                if not separation or method not in separation[0]:
                    continue
                rows = [separation[i][method][budgets[i]] for i in range(len(images))]
                records.append(
                    _record(
                        method,
                        common,
                        None,
                        [r["psnr"] for r in rows],
                        [r["ms_ssim"] for r in rows],
                        [r["delivered"] for r in rows],
                        budget_bytes=budgets,
                        bytes=[r["bytes"] for r in rows],
                        codec=[r["codec"] for r in rows],
                        scale=[r["scale"] for r in rows],
                        param=[r["param"] for r in rows],
                    )
                )
    return records


def machine_info() -> dict:
    from PIL import __version__ as pillow_version
    from PIL import features

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = dict(
        platform=platform.platform(),
        cpu=cpu,
        cpu_count=os.cpu_count(),
        python=platform.python_version(),
        numpy=np.__version__,
        pillow=pillow_version,
        openjpeg=features.version("jpg_2000"),
        libavif=features.version("avif"),
    )
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    return info


CONVENTIONS = {
    "averaging": "mean over images of per-image values (PSNR in dB); JSCC per-image values "
    "are means over the noise draws",
    "undelivered": f"an image that fits in no codec setting is counted as a uniform gray image "
    f"(value {UNDELIVERED_FILL}) in psnr / ms_ssim; psnr_delivered / ms_ssim_delivered "
    "average the delivered images only; per_image.delivered tells which",
    "budget": "budget_bytes = floor(num_symbols * log2(1 + 10**(snr_db/10)) / 8), num_symbols "
    "of the JSCC model for the image (padded to a multiple of 16)",
    "jpeg2000_bytes": "raw J2K codestream (no JP2 container), main header included",
    "psnr_cap_db": PSNR_CAP,
    "ms_ssim": "pytorch-msssim, data range 1, 11 px Gaussian window; fewer scales for images "
    "under 161 px a side (ms_ssim_scales per image)",
    "best_separation": "per image, the codec with the higher PSNR within the budget",
}


def markdown_table(result: dict) -> str:
    """PSNR (dB) / MS-SSIM per CBR and SNR; the JSCC column's mark says whether it beats
    JPEG 2000 and the best separation baseline at that point."""
    by_key = {(r["method"], r["cbr"], r["snr_db"]): r for r in result["records"]}
    methods = [m for m in METHODS if any(r["method"] == m for r in result["records"])]
    head = ["CBR", "SNR (dB)"] + [m.replace("_", " ") for m in methods]
    has_sep = {"jpeg2000", "best_separation"} <= set(methods)
    compared = [m for m in ("jscc", "jscc_tx_opt") if has_sep and m in methods]
    codecs = [m for m in methods if m not in JSCC_METHODS]
    if codecs:
        head.append("undelivered (" + " / ".join(m.replace("_", " ") for m in codecs) + ")")
    for m in compared:
        name = m.replace("_", " ")
        head += [f"{name} - JPEG2000 (dB)", f"{name} - best sep. (dB)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = sorted({(r["cbr"], r["snr_db"]) for r in result["records"]}, key=_order)
    for cbr, snr in keys:
        cells = [cbr, f"{snr:g}"]
        for m in methods:
            r = by_key.get((m, cbr, snr))
            if r is None:
                cells.append("")
                continue
            cell = f"{r['psnr']:.2f} / {r['ms_ssim']:.4f}"
            if r.get("lpips") is not None:
                cell += f" / LPIPS {r['lpips']:.4f}"
            cells.append(cell)
        if codecs:
            cells.append(" / ".join(str(by_key[(m, cbr, snr)]["undelivered"]) for m in codecs))
        for m in compared:
            jscc = by_key[(m, cbr, snr)]["psnr"]
            for base in ("jpeg2000", "best_separation"):
                d = jscc - by_key[(base, cbr, snr)]["psnr"]
                cells.append(f"{d:+.2f} {'win' if d > 0 else 'loss'}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _order(key):
    from fractions import Fraction

    return (Fraction(key[0]), key[1])
