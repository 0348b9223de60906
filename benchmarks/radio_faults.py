"""Hostile streams into the receiver: damaged frames must never pass as complete,
and delivered frames must report the SNR of the symbols they deliver.

Streams from ``diffjscc.radio.faults.hostile_stream``: a burst cut short then
noise (random cut 30-95 % of its length), the same followed by another burst,
two equal bursts overlapping (offset 30-80 %), a burst 80 dB louder before a
normal one, streams scaled by 1e18 and 1e-20, and clean ones; random timing,
phase and frequency offset (+-1 % of the symbol rate), payloads whose power
changes from latent map to latent map. Targets (issue 10): 0 damaged frames
delivered as complete; for delivered frames, |reported SNR - SNR of the
delivered symbols| <= 1 dB.

    python benchmarks/radio_faults.py --snr 0 3 6 12 20 30 --streams 20 --json /tmp/radio_faults.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter

import numpy as np
from diffjscc.io import atomic_write_text
from diffjscc.radio import BurstReceiver
from diffjscc.radio.faults import KINDS, hostile_stream, score


def run(snr_db: float, kind: str, streams: int, seed: int) -> dict:
    counts: Counter = Counter()
    errors: list[float] = []
    for i in range(streams):
        rng = np.random.default_rng([seed, i, int(round(snr_db * 10)) + 1000, KINDS.index(kind)])
        stream = hostile_stream(kind, snr_db, rng)
        rx = BurstReceiver()
        x = stream.samples
        frames = []
        pos = 0
        while pos < x.size:  # random chunking: damage must not depend on it
            step = int(rng.integers(1000, 30000))
            frames += rx.feed(x[pos : pos + step])
            pos += step
        frames += rx.flush()
        got = score(stream, frames)
        errors += got.pop("snr_errors")
        counts.update(got)
        counts["frames_sent"] += 2
        counts["frames_damaged"] += len(stream.damaged)
        for key in ("frames_unusable", "header_crc_fail", "internal_errors"):
            counts[key] += rx.stats[key]
    e = np.abs(np.asarray(errors))
    counts["snr_within_1db"] += int(np.count_nonzero(e <= 1.0))
    return {
        "snr_db": snr_db,
        "kind": kind,
        **dict(counts),
        "snr_error_max_db": float(e.max()) if e.size else None,
        "snr_error_rms_db": float(np.sqrt(np.mean(e**2))) if e.size else None,
        "snr_error_p99_db": float(np.quantile(e, 0.99)) if e.size else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--snr", type=float, nargs="+", default=[0.0, 3.0, 6.0, 12.0, 20.0, 30.0])
    parser.add_argument("--streams", type=int, default=10, help="streams per kind and SNR")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="JSON report to write")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    rows = []
    for snr in args.snr:
        for kind in args.kinds:
            row = run(snr, kind, args.streams, args.seed)
            rows.append(row)
            print(
                f"{snr:5.1f} dB {kind:12s} sent {row['frames_sent']:4d} damaged {row['frames_damaged']:4d}"
                f" delivered {row.get('delivered', 0):4d} (partial {row.get('partial', 0):4d})"
                f" damaged-as-complete {row.get('damaged_as_complete', 0):3d}"
                f" unusable {row.get('frames_unusable', 0):3d}"
                f" |SNR error| max {row['snr_error_max_db'] or 0:.2f} dB"
                f" rms {row['snr_error_rms_db'] or 0:.2f} dB",
                flush=True,
            )
    damaged_complete = sum(r.get("damaged_as_complete", 0) for r in rows)
    worst = max((r["snr_error_max_db"] or 0.0) for r in rows)
    report = {
        "results": rows,
        "seconds": time.perf_counter() - t0,
        "damaged_as_complete": damaged_complete,
        "snr_error_max_db": worst,
        "targets_met": damaged_complete == 0 and worst <= 1.0,
        "command": " ".join(["python", "benchmarks/radio_faults.py", *(argv or sys.argv[1:])]),
    }
    print(
        f"damaged frames delivered as complete: {damaged_complete};"
        f" largest |SNR error| of a delivered frame: {worst:.2f} dB;"
        f" targets met: {report['targets_met']}"
    )
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
