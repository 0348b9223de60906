"""The figure of ``diffjscc eval --plot``: PSNR and MS-SSIM against SNR per CBR."""

from __future__ import annotations

import os
from pathlib import Path

from diffjscc.io import atomic_path


def plot_results(result: dict, path: str | os.PathLike) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = result["records"]
    cbrs = list(dict.fromkeys(r["cbr"] for r in records))
    styles = {
        "jscc": dict(color="C3", marker="o", lw=2.2, label="deep JSCC"),
        "jscc_tx_opt": dict(color="C4", marker="v", lw=1.8, label="JSCC, symbols optimised at TX"),
        "jscc_refined": dict(color="C1", marker="D", lw=1.6, label="JSCC + diffusion refiner"),
        "jpeg2000": dict(color="C0", marker="s", ls="--", label="JPEG 2000 @ capacity"),
        "avif": dict(color="C2", marker="^", ls="--", label="AVIF @ capacity"),
        "best_separation": dict(color="k", marker="", ls=":", label="best separation"),
    }
    fig, axes = plt.subplots(1, len(cbrs), figsize=(4.3 * len(cbrs), 3.4), squeeze=False)
    for ax, cbr in zip(axes[0], cbrs, strict=True):
        for method, style in styles.items():
            rows = sorted(
                (r for r in records if r["cbr"] == cbr and r["method"] == method),
                key=lambda r: r["snr_db"],
            )
            if not rows:
                continue
            xs = [r["snr_db"] for r in rows]
            ax.plot(xs, [r["psnr"] for r in rows], ms=4, **style)
            for r in rows:
                if r["undelivered"]:
                    ax.annotate(
                        f"{r['undelivered']} undeliv.",
                        (r["snr_db"], r["psnr"]),
                        fontsize=6,
                        textcoords="offset points",
                        xytext=(2, -9),
                        color=style["color"],
                    )
        ax.set_title(f"CBR {cbr}, AWGN, {result['num_images']} images", fontsize=9)
        ax.set_xlabel("SNR (dB)")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".").lower(), dpi=90)
    plt.close(fig)
