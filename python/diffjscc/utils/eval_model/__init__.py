"""``diffjscc eval``: PSNR and MS-SSIM of the JSCC codec and of separation baselines.

For every CBR and SNR, each image is sent

- through the JSCC codec over an AWGN channel (``diffjscc.channels.awgn``), decoded
  with the true SNR as CSI, averaged over ``--noise-draws`` noise draws;
- through JPEG 2000 and AVIF at the capacity of the same channel uses
  (``diffjscc.baselines``): the best PSNR that fits ``n_symbols * log2(1 + SNR)`` bits,
  at full size or downscaled by 2, 4 or 8; ``best_separation`` is, per image, the better
  of the two codecs.

With ``--refiner FOLDER`` the JSCC image of the first noise draw is also refined by the
diffusion refiner (``jscc_refined``: PSNR, MS-SSIM and, where its weights are present, LPIPS).
With ``--tx-opt-steps N``, also the JSCC with its symbols optimised at the transmitter
(``jscc_tx_opt``, diffjscc.symbol_opt), decoded through the same channel draws.

Averages are over all images, in dB for PSNR. An image a codec cannot fit in its budget is
*undelivered* and counted as a uniform mid-gray image (the receiver's zero-rate guess);
each record also gives the count and the averages over delivered images only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shlex
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from diffjscc.baselines import (
    AVIF_BYTES,
    SCALES,
    UNDELIVERED_FILL,
    ImageRateDistortion,
    byte_budget,
    capacity_bits_per_symbol,
    jscc_num_symbols,
    make_codecs,
    select_best,
    undelivered_image,
)
from diffjscc.datasets import data_root
from diffjscc.errors import ConfigError, DiffJSCCError
from diffjscc.image import list_images, load_image
from diffjscc.io import atomic_path, atomic_write_text
from diffjscc.metrics import ms_ssim_batch, ms_ssim_scales, psnr
from diffjscc.registry import get_model_spec

FORMAT = "diffjscc-eval/1"
CODECS = ("jpeg2000", "avif")
# The JSCC's own columns: one encoder pass, with transmitter-side symbol optimisation
# (--tx-opt-steps), and refined by the diffusion model (--refiner).
JSCC_METHODS = ("jscc", "jscc_tx_opt", "jscc_refined")
METHODS = (*JSCC_METHODS, *CODECS, "best_separation")
# Identical images have infinite PSNR; capped so that means stay finite and JSON stays valid.
PSNR_CAP = 100.0
PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="diffjscc eval",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", help="image folder (default: $DIFFJSCC_DATA/kodak)")
    p.add_argument("--cbr", nargs="+", default=["1/384", "1/96"], help="models, by CBR or name")
    p.add_argument("--snr", nargs="+", type=float, default=[1, 4, 7, 10, 13], help="dB")
    p.add_argument("--noise-draws", type=int, default=5, help="AWGN draws per image (JSCC)")
    p.add_argument("--seed", type=int, default=0, help="seed of the channel noise")
    p.add_argument(
        "--methods",
        nargs="+",
        default=["jscc", *CODECS],
        choices=["jscc", *CODECS],
        help="best_separation is added when both codecs run",
    )
    p.add_argument("--scales", nargs="+", type=int, default=list(SCALES), help="downscalings")
    p.add_argument("--avif-speed", type=int, default=6, help="libavif speed 0 (slow) .. 10")
    p.add_argument(
        "--avif-bytes",
        choices=AVIF_BYTES,
        default="payload",
        help="count the AV1 bitstream (payload) or the whole AVIF file",
    )
    p.add_argument("--weights", help="folder of JSCC weights (default: the packaged ones)")
    p.add_argument("--limit", type=int, default=0, help="first N images only (0: all)")
    p.add_argument(
        "--workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="processes for the codec baselines",
    )
    tx_opt = p.add_argument_group("symbol optimisation at the transmitter (the jscc_tx_opt column)")
    tx_opt.add_argument(
        "--tx-opt-steps",
        type=int,
        default=0,
        help="gradient steps on each image's symbols (0: no jscc_tx_opt column)",
    )
    tx_opt.add_argument(
        "--tx-opt-lr", type=float, default=None, help="first step size (default: 0.03)"
    )
    refine = p.add_argument_group("diffusion refiner (the jscc_refined column)")
    refine.add_argument("--refiner", help="refiner folder (DiffJSCCRefiner.from_pretrained)")
    refine.add_argument("--refine-steps", type=int, default=None, help="default: the refiner's")
    refine.add_argument("--refine-sampler", default=None, help="ddpm, ddim or dpm-solver")
    refine.add_argument("--refine-seed", type=int, default=0, help="seed of image i: this + i")
    refine.add_argument("--caption", default=None, help="fixed caption (default: the refiner's)")
    refine.add_argument("--device", default="auto", help="refiner device: auto, cpu, cuda")
    p.add_argument("--json", help="write the results here (JSON)")
    p.add_argument("--plot", help="write PSNR vs SNR here (.png, .svg or .pdf)")
    p.add_argument("--no-progress", action="store_true")
    return p


# -- inputs ----------------------------------------------------------------------------------


def _check_args(args) -> None:
    if args.noise_draws < 1:
        raise ConfigError(f"--noise-draws must be at least 1, not {args.noise_draws}")
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {args.workers}")
    if args.limit < 0:
        raise ConfigError(f"--limit must be 0 (all) or positive, not {args.limit}")
    bad = [s for s in args.snr if not math.isfinite(s) or not -30 <= s <= 60]
    if bad:
        raise ConfigError(f"SNR values must be finite dB in [-30, 60], got {bad}")
    bad = [s for s in args.scales if s < 1]
    if bad or 1 not in args.scales:
        raise ConfigError(f"--scales must be positive integers including 1, got {args.scales}")
    if args.plot and Path(args.plot).suffix.lower() not in PLOT_SUFFIXES:
        raise ConfigError(f"--plot must end in one of {PLOT_SUFFIXES}: {args.plot}")
    for out in (args.json, args.plot):
        if out and Path(out).is_dir():
            raise ConfigError(f"{out} is a folder; give a file name")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            raise ConfigError("--plot needs matplotlib: pip install matplotlib") from exc
    if args.refiner and "jscc" not in args.methods:
        raise ConfigError("--refiner refines the JSCC images: keep jscc in --methods")
    if args.tx_opt_steps < 0:
        raise ConfigError(f"--tx-opt-steps must be 0 or positive, not {args.tx_opt_steps}")
    if args.tx_opt_steps and "jscc" not in args.methods:
        raise ConfigError("--tx-opt-steps optimises the JSCC symbols: keep jscc in --methods")
    if args.tx_opt_steps:
        _tx_opt_config(args, 0)  # a bad --tx-opt-lr fails here, before any work
    make_codecs([m for m in args.methods if m in CODECS], args.avif_speed, args.avif_bytes)


def load_images(folder: str | os.PathLike, limit: int = 0) -> tuple[list[str], list[np.ndarray]]:
    """All images of a folder (sorted by name), read before any work starts so that a bad
    file stops the run at once, naming the file."""
    paths = list_images(folder)
    if limit:
        paths = paths[:limit]
    if not paths:
        raise ConfigError(f"no images (.png, .jpg, ...) found in {folder}")
    return [p.name for p in paths], [load_image(p) for p in paths]


def load_jscc_codecs(names: Sequence[str], weights: str | None):
    """One JSCC codec per requested CBR, from the ``--weights`` folder or the packaged one."""
    from diffjscc.zoo import load_codec

    return {get_model_spec(name).name: load_codec(name, folder=weights) for name in names}


# -- separation baselines --------------------------------------------------------------------


def _limit_threads() -> None:
    # One image per worker process: more threads per process only oversubscribe the cores.
    import torch

    torch.set_num_threads(1)


def separation_for_image(
    image: np.ndarray,
    budgets: Sequence[int],
    codecs: Sequence[str] = CODECS,
    scales: Sequence[int] = SCALES,
    avif_speed: int = 6,
    avif_bytes: str = "payload",
) -> dict:
    """Per codec (and "best_separation" when several) and budget: the chosen setting and its
    metrics, or the undelivered marker with the gray image's metrics."""
    gray = undelivered_image(image.shape)
    results: dict[str, dict[int, dict]] = {}
    chosen: dict[str, dict[int, object]] = {}
    for codec in make_codecs(codecs, avif_speed, avif_bytes):
        rd = ImageRateDistortion(image, codec, scales)
        chosen[codec.name] = {b: rd.best_fit(b) for b in budgets}
    if len(codecs) > 1:
        chosen["best_separation"] = {
            b: select_best([c[b] for c in chosen.values() if c[b] is not None], b) for b in budgets
        }
    gray_psnr = min(psnr(image, gray), PSNR_CAP)
    gray_ms_ssim = float(ms_ssim_batch(image, [gray])[0])
    for method, per_budget in chosen.items():
        results[method] = {}
        fits = {b: c for b, c in per_budget.items() if c is not None}
        values = dict(
            zip(fits, ms_ssim_batch(image, [c.image for c in fits.values()]), strict=True)
        )
        for b, cand in per_budget.items():
            if cand is None:
                results[method][b] = dict(
                    delivered=False,
                    psnr=gray_psnr,
                    ms_ssim=gray_ms_ssim,
                    bytes=0,
                    codec=None,
                    scale=None,
                    param=None,
                )
            else:
                results[method][b] = dict(
                    delivered=True,
                    psnr=min(cand.psnr, PSNR_CAP),
                    ms_ssim=float(values[b]),
                    bytes=cand.num_bytes,
                    codec=cand.codec,
                    scale=cand.scale,
                    param=round(cand.param, 2),
                )
    return results


def _run_separation(images, budgets_per_image, args, progress) -> list[dict]:
    codecs = [m for m in args.methods if m in CODECS]
    kwargs = dict(
        codecs=codecs, scales=args.scales, avif_speed=args.avif_speed, avif_bytes=args.avif_bytes
    )
    out: list[dict | None] = [None] * len(images)
    bar = progress(total=len(images), desc="separation baselines")
    if args.workers == 1 or len(images) == 1:
        for i, image in enumerate(images):
            out[i] = separation_for_image(image, budgets_per_image[i], **kwargs)
            bar.update()
    else:
        import multiprocessing

        # spawn, not fork: the parent may hold torch/OpenMP threads that fork would break.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            min(args.workers, len(images)), mp_context=context, initializer=_limit_threads
        ) as pool:
            futures = {
                pool.submit(separation_for_image, image, budgets_per_image[i], **kwargs): i
                for i, image in enumerate(images)
            }
            for fut in as_completed(futures):
                out[futures[fut]] = fut.result()
                bar.update()
    bar.close()
    return out  # type: ignore[return-value]


# -- JSCC ------------------------------------------------------------------------------------


def _noise_rng(seed: int, image_index: int, cbr, snr_db: float) -> np.random.Generator:
    # Keyed on values, not loop positions: adding an SNR or a CBR leaves other draws unchanged.
    key = [seed, image_index, cbr.numerator, cbr.denominator, int(round((snr_db + 100) * 1000))]
    return np.random.default_rng(np.random.SeedSequence(key))


def _tx_opt_config(args, image_index: int):
    from diffjscc.symbol_opt import SymbolOptConfig

    lr = {} if args.tx_opt_lr is None else {"lr": args.tx_opt_lr}
    return SymbolOptConfig(steps=args.tx_opt_steps, seed=args.seed * 100003 + image_index, **lr)


def jscc_for_image(
    codec,
    image: np.ndarray,
    image_index: int,
    snrs,
    draws: int,
    seed: int,
    keep_first=False,
    optimise=None,
):
    """{snr: {"psnr": [per draw], "ms_ssim": [per draw]}} for one image.

    ``keep_first`` also keeps the decoded image of the first draw (for the refiner).
    ``optimise`` (a SymbolOptConfig) optimises the symbols at the transmitter first; the
    channel draws are the same as without, so the two columns compare image by image.
    """
    from diffjscc.channels import awgn

    out = {}
    shape = image.shape[:2]
    for snr in snrs:
        enc = codec.encode(image, snr, optimise=optimise)
        rng = _noise_rng(seed, image_index, codec.spec.cbr, snr)
        received = [awgn(enc.symbols, snr, rng) for _ in range(draws)]
        decoded = codec.decode_batch(received, [shape] * draws, [snr] * draws)
        out[snr] = {
            "psnr": [min(psnr(image, d), PSNR_CAP) for d in decoded],
            "ms_ssim": ms_ssim_batch(image, decoded).tolist(),
            "num_symbols": enc.num_symbols,
        }
        if keep_first:
            out[snr]["first_decoded"] = decoded[0]
    return out


def load_refiner(args):
    """The diffusion refiner of ``--refiner``, on its device (CUDA fp16 when available)."""
    from diffjscc.refiner import DiffJSCCRefiner

    refiner = DiffJSCCRefiner.from_pretrained(args.refiner)
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    return refiner.to(device, dtype)


def refine_for_image(refiner, image: np.ndarray, image_index: int, jscc_rows: dict, args) -> dict:
    """{snr: {"psnr", "ms_ssim", "lpips", "caption", "seed"}} of the refined first draw."""
    from diffjscc.refiner.metrics import lpips_alex

    out = {}
    for snr, row in jscc_rows.items():
        result = refiner.refine(
            row.pop("first_decoded"),
            snr,
            caption=args.caption,
            steps=args.refine_steps,
            sampler=args.refine_sampler,
            seed=args.refine_seed + image_index,
        )
        out[snr] = {
            "psnr": min(psnr(image, result.image), PSNR_CAP),
            "ms_ssim": float(ms_ssim_batch(image, [result.image])[0]),
            "lpips": lpips_alex(image, result.image),
            "caption": result.caption,
            "seed": result.seed,
        }
    return out


# -- records ---------------------------------------------------------------------------------


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


# -- outputs ---------------------------------------------------------------------------------


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


# -- main ------------------------------------------------------------------------------------


def evaluate(args, argv: Sequence[str]) -> dict:
    started = time.time()
    _check_args(args)
    folder = Path(args.data) if args.data else data_root() / "kodak"
    specs = list(dict.fromkeys(get_model_spec(c) for c in args.cbr))
    snrs = list(dict.fromkeys(float(s) for s in args.snr))
    names, images = load_images(folder, args.limit)
    codecs = (
        load_jscc_codecs([s.name for s in specs], args.weights) if "jscc" in args.methods else {}
    )
    refiner = load_refiner(args) if args.refiner else None

    from tqdm import tqdm

    def progress(**kw):
        return tqdm(disable=args.no_progress, dynamic_ncols=True, **kw)

    timing = {}
    separation: list[dict] = []
    if any(m in CODECS for m in args.methods):
        t0 = time.perf_counter()
        budgets = [
            sorted(
                {
                    byte_budget(jscc_num_symbols(img.shape[:2], spec), snr)
                    for spec in specs
                    for snr in snrs
                }
            )
            for img in images
        ]
        separation = _run_separation(images, budgets, args, progress)
        timing["separation_s"] = round(time.perf_counter() - t0, 1)

    jscc: dict[str, list[dict]] = {}
    tx_opt: dict[str, list[dict]] = {}
    refined: dict[str, list[dict]] = {}
    if codecs:
        t0 = time.perf_counter()
        bar = progress(total=len(specs) * len(images), desc="deep JSCC")
        for spec in specs:
            jscc[spec.name] = []
            if refiner is not None:
                refined[spec.name] = []
            for i, image in enumerate(images):
                rows = jscc_for_image(
                    codecs[spec.name],
                    image,
                    i,
                    snrs,
                    args.noise_draws,
                    args.seed,
                    keep_first=refiner is not None,
                )
                jscc[spec.name].append(rows)
                if refiner is not None:
                    refined[spec.name].append(refine_for_image(refiner, image, i, rows, args))
                bar.update()
        bar.close()
        timing["jscc_s"] = round(time.perf_counter() - t0, 1)
    if codecs and args.tx_opt_steps:
        t0 = time.perf_counter()
        bar = progress(total=len(specs) * len(images), desc="JSCC, symbols optimised")
        for spec in specs:
            tx_opt[spec.name] = []
            for i, image in enumerate(images):
                tx_opt[spec.name].append(
                    jscc_for_image(
                        codecs[spec.name],
                        image,
                        i,
                        snrs,
                        args.noise_draws,
                        args.seed,
                        optimise=_tx_opt_config(args, i),
                    )
                )
                bar.update()
        bar.close()
        timing["jscc_tx_opt_s"] = round(time.perf_counter() - t0, 1)

    records = build_records(
        names,
        images,
        specs,
        snrs,
        args.methods,
        jscc,
        separation,
        args.noise_draws,
        refined,
        tx_opt,
    )
    timing["wall_s"] = round(time.time() - started, 1)
    # CPU seconds of this process and its workers: the wall time depends on what else runs.
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    timing["cpu_s"] = round(sum(u.ru_utime + u.ru_stime for u in usage), 1)
    timing["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    return dict(
        format=FORMAT,
        command=shlex.join(["diffjscc", "eval", *argv]),
        started_utc=datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
        timing=timing,
        machine=machine_info(),
        data=str(folder),
        num_images=len(images),
        images=names,
        image_shapes=[list(img.shape[:2]) for img in images],
        ms_ssim_scales=[ms_ssim_scales(*img.shape[:2])[0] for img in images],
        settings=dict(
            cbr=[s.cbr_str for s in specs],
            snr_db=snrs,
            noise_draws=args.noise_draws,
            seed=args.seed,
            methods=[m for m in METHODS if any(r["method"] == m for r in records)],
            scales=list(args.scales),
            avif_speed=args.avif_speed,
            avif_bytes=args.avif_bytes,
            weights=args.weights or "packaged",
            tx_opt_steps=args.tx_opt_steps,
            tx_opt_lr=_tx_opt_config(args, 0).lr if args.tx_opt_steps else None,
            refiner=args.refiner,
            refine_steps=args.refine_steps,
            refine_sampler=args.refine_sampler,
            refine_seed=args.refine_seed if args.refiner else None,
        ),
        conventions=dict(
            CONVENTIONS,
            avif_bytes="AV1 bitstream only (mdat payload; the HEIF boxes are a function of "
            "image size and settings)"
            if args.avif_bytes == "payload"
            else "whole AVIF file",
        ),
        records=records,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = setup_args().parse_args(argv)
    try:
        result = evaluate(args, argv)
        # Both outputs are complete or absent: the plot is drawn before the JSON is renamed.
        if args.plot:
            plot_results(result, args.plot)
        if args.json:
            atomic_write_text(args.json, json.dumps(result, separators=(",", ":")) + "\n")
    except DiffJSCCError as exc:
        print(f"diffjscc eval: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an output that cannot be written: a full disk, no permission
        print(
            f"diffjscc eval: error: cannot write {exc.filename or 'output'}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    print(markdown_table(result))
    t = result["timing"]
    print(f"\n{result['num_images']} images, wall time {t['wall_s']:.0f} s", file=sys.stderr)
    return 0
