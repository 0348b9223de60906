"""SNR estimation from pilots against the Cramer-Rao bound, -5..20 dB.

Two measurements per SNR, on frames of the default configuration (4096 JSCC
symbols, pilots every 17 symbols) with a frequency offset of 1 % of the symbol
rate, a random timing offset and a random phase:

- ``estimator``: the receiver's estimator (``equalise_frame``) at the true burst
  start and coarse frequency, so every frame counts, down to -5 dB;
- ``receiver``: the whole ``BurstReceiver`` (detection, timing, frequency,
  header) on the same frames; only decoded frames give an estimate.

The bound is the data-aided CRB for the known symbols the estimate uses
(preamble, header once decoded, pilots): var >= (2 snr + snr^2) / N.
Targets: |bias| <= 0.2 dB and RMSE <= 1.2 x sqrt(CRB) (both in dB).

    python benchmarks/radio_snr.py --plot /tmp/radio_snr.png --json /tmp/radio_snr.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np
from diffjscc.io import atomic_path, atomic_write_text
from diffjscc.radio import BurstReceiver, FrameConfig, snr_crb_db
from diffjscc.radio import header as hdr
from diffjscc.radio.frame import frame_symbols
from diffjscc.radio.pulse import matched_filter, shape
from diffjscc.radio.receiver import equalise_frame
from diffjscc.radio.sim import impair
from diffjscc.registry import get_model_spec


def _frame(cfg: FrameConfig, rng: np.random.Generator):
    payload_len = cfg.max_payload_symbols
    payload = (
        rng.standard_normal(payload_len) + 1j * rng.standard_normal(payload_len)
    ) / math.sqrt(2)
    # A header whose image needs exactly one full frame is not required: the
    # estimator only needs a valid header, so take a shape of the right size.
    spec = get_model_spec(1)
    header = hdr.FrameHeader(
        image_id=1,
        rate_code=spec.rate_code,
        image_shape=(512, 768),
        design_snr_db=0.0,
        frame_index=0,
        frame_count=1,
        version=cfg.header_version,  # the header the transmitter sends by default
    )
    return header, payload.astype(np.complex64)


def run(snrs, trials: int, seed: int, cfg: FrameConfig) -> dict:
    rng = np.random.default_rng(seed)
    results = []
    for snr_db in snrs:
        est_genie, est_rx, crb_n = [], [], None
        decoded = 0
        for _ in range(trials):
            header, payload = _frame(cfg, rng)
            symbols = frame_symbols(header, payload, cfg)
            burst = shape(symbols, cfg)
            delay = float(rng.uniform(50.0, 150.0))
            cfo = float(rng.choice([-1.0, 1.0])) * 0.01 / cfg.sps  # 1 % of the symbol rate
            phase = complex(np.exp(2j * np.pi * rng.uniform()))
            tail = np.zeros(400, np.complex64)
            x = impair(
                np.concatenate([burst, tail]),
                snr_db,
                cfg,
                cfo=cfo,
                delay=delay,
                gain=phase,
                rng=rng,
            )
            # Estimator alone: true start, true coarse frequency; the residual is still searched.
            n = np.arange(x.size)
            derot = (x * np.exp(-2j * np.pi * cfo * n)).astype(np.complex64)
            count = symbols.size
            y = matched_filter(derot, delay, count, cfg)
            _, est = equalise_frame(y, header, payload.size, cfg, 0.0, 0.15 / 775)
            est_genie.append(est.snr_db)
            crb_n = est.num_known
            # The whole receiver.
            rx = BurstReceiver(cfg)
            frames = rx.feed(x) + rx.flush()
            if frames:
                decoded += 1
                est_rx.append(frames[0].snr_db)
        row = {
            "snr_db": float(snr_db),
            "num_known": int(crb_n),
            "crb_std_db": snr_crb_db(snr_db, crb_n),
        }
        for name, values in (("estimator", est_genie), ("receiver", est_rx)):
            v = np.asarray(values)
            if v.size:
                row[name] = {
                    "frames": int(v.size),
                    "bias_db": float(np.mean(v) - snr_db),
                    "rmse_db": float(np.sqrt(np.mean((v - snr_db) ** 2))),
                    "std_db": float(np.std(v)),
                }
        row["receiver_decoded"] = decoded / trials
        results.append(row)
        est = row["estimator"]
        rxr = row.get("receiver", {})
        print(
            f"{snr_db:6.1f} dB  estimator bias {est['bias_db']:+.3f} rmse {est['rmse_db']:.3f}"
            f" (crb {row['crb_std_db']:.3f}, ratio {est['rmse_db'] / row['crb_std_db']:.2f})"
            f"  receiver decoded {decoded}/{trials}"
            + (f" bias {rxr['bias_db']:+.3f} rmse {rxr['rmse_db']:.3f}" if rxr else ""),
            flush=True,
        )
    return {"config": cfg.__dict__, "trials": trials, "seed": seed, "results": results}


def plot(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    snr = [r["snr_db"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(snr, [r["crb_std_db"] for r in rows], "k-", label="sqrt(CRB), data-aided")
    ax1.plot(snr, [1.2 * r["crb_std_db"] for r in rows], "k:", label="1.2 x sqrt(CRB) (target)")
    ax1.plot(snr, [r["estimator"]["rmse_db"] for r in rows], "o-", label="estimator (true timing)")
    rx = [(r["snr_db"], r["receiver"]["rmse_db"]) for r in rows if "receiver" in r]
    if rx:
        ax1.plot(*zip(*rx, strict=True), "s--", label="whole receiver (decoded frames)")
    ax1.set_xlabel("SNR (Es/N0 of the payload, dB)")
    ax1.set_ylabel("RMSE of the SNR estimate (dB)")
    ax1.set_yscale("log")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.axhspan(-0.2, 0.2, color="0.9", label="target |bias| <= 0.2 dB")
    ax2.plot(snr, [r["estimator"]["bias_db"] for r in rows], "o-", label="estimator")
    if rx:
        ax2.plot(
            [r["snr_db"] for r in rows if "receiver" in r],
            [r["receiver"]["bias_db"] for r in rows if "receiver" in r],
            "s--",
            label="receiver",
        )
    ax2.set_xlabel("SNR (dB)")
    ax2.set_ylabel("bias (dB)")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=8)
    n = rows[0]["num_known"]
    fig.suptitle(
        f"Data-aided SNR estimation, {n} known symbols per frame, {report['trials']} frames per point"
    )
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--snr", type=float, nargs="+", default=list(range(-5, 21)))
    parser.add_argument("--trials", type=int, default=200, help="frames per SNR")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--plot", help="PNG to write")
    parser.add_argument("--json", help="JSON report to write")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    report = run(args.snr, args.trials, args.seed, FrameConfig())
    report["seconds"] = time.perf_counter() - t0
    ok = all(
        abs(r["estimator"]["bias_db"]) <= 0.2 and r["estimator"]["rmse_db"] <= 1.2 * r["crb_std_db"]
        for r in report["results"]
    )
    report["targets_met"] = ok
    print(f"targets met (estimator, all SNRs): {ok}")
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=1))
    if args.plot:
        plot(report, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
