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

import math
import os
import resource
import shlex
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from diffjscc.baselines import (
    SCALES,
    ImageRateDistortion,
    byte_budget,
    jscc_num_symbols,
    make_codecs,
    select_best,
    undelivered_image,
)
from diffjscc.datasets import data_root
from diffjscc.errors import ConfigError
from diffjscc.eval.records import (
    CODECS,
    CONVENTIONS,
    FORMAT,
    METHODS,
    PLOT_SUFFIXES,
    PSNR_CAP,
    build_records,
    machine_info,
)
from diffjscc.image import list_images, load_image
from diffjscc.io import check_output_path
from diffjscc.metrics import ms_ssim_batch, ms_ssim_scales, psnr
from diffjscc.registry import get_model_spec


def check_args(args) -> None:
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
    for flag, out in (("--json", args.json), ("--plot", args.plot)):
        if out:
            check_output_path(out, flag)
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
    from diffjscc.refiner.preprocess import get_preprocessing, resize_to, upsize_short_side

    # --reproduce-official: x_hat prepared and the result scored as official inference does
    prep = get_preprocessing(
        "official" if getattr(args, "reproduce_official", False) else "default"
    )
    out = {}
    for snr, row in jscc_rows.items():
        result = refiner.refine(
            upsize_short_side(row.pop("first_decoded"), prep.resize_short_side),
            snr,
            caption=args.caption,
            steps=args.refine_steps,
            sampler=args.refine_sampler,
            seed=args.refine_seed + image_index,
            padding=prep.padding,
            quantize=prep.quantize,
        )
        refined = resize_to(result.image, *image.shape[:2])
        out[snr] = {
            "psnr": min(psnr(image, refined), PSNR_CAP),
            "ms_ssim": float(ms_ssim_batch(image, [refined])[0]),
            "lpips": lpips_alex(image, refined),
            "caption": result.caption,
            "seed": result.seed,
        }
    return out


def evaluate(args, argv: Sequence[str]) -> dict:
    started = time.time()
    check_args(args)
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
            refine_preprocess=("official" if args.reproduce_official else "default")
            if args.refiner
            else None,
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
