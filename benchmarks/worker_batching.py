"""Decoder throughput at batch 1, 4 and 8, on the CPU here or on a GPU.

    .venv/bin/python benchmarks/worker_batching.py --out /tmp/worker_batching_cpu.json
    python benchmarks/worker_batching.py --device cuda --out /tmp/worker_batching_gpu.json   # fp16

Times ``CodecEngine.decode_batch`` (what a worker runs per batch: the codec's
``decode_batch`` plus the reply images) on ``--sizes`` images, ``--repeats``
timed runs after a warm-up, median reported, throughput = batch / median.
Uses the default model's trained weights when present, else a randomly
initialised model of the same config (timing is the same; the JSON says which).
No downloads. JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _worker_common import make_codec, random_request, write_report  # noqa: E402
from diffjscc.registry import DEFAULT_MODEL  # noqa: E402
from diffjscc.worker.engine import CodecEngine  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (fp16 on cuda)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--sizes", default="256x256,512x768", help="HxW list")
    parser.add_argument("--batches", default="1,4,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    half = args.device.startswith("cuda")
    codec, weights = make_codec(args.model, args.device, half=half)
    engine = CodecEngine(device=args.device, codec_loader=lambda name: codec, half=half)
    # Decode in a non-main thread, as the worker's engine thread does (on this machine
    # torch runs measurably slower from the main thread).
    engine_thread = concurrent.futures.ThreadPoolExecutor(1)
    if args.threads:
        engine_thread.submit(torch.set_num_threads, args.threads).result()

    def decode_batch(requests):
        return engine_thread.submit(engine.decode_batch, requests).result()

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    results = []
    for size in args.sizes.split(","):
        height, width = (int(v) for v in size.split("x"))
        for batch in (int(b) for b in args.batches.split(",")):
            requests = [random_request(args.model, height, width, seed=i) for i in range(batch)]
            decode_batch(requests)  # warm-up (cuDNN autotune, allocator)
            times = []
            for _ in range(args.repeats):
                sync()
                start = time.perf_counter()
                replies = decode_batch(requests)
                sync()
                times.append(time.perf_counter() - start)
                assert all(r.ok for r in replies), replies[0].error
            median = statistics.median(times)
            row = {
                "height": height,
                "width": width,
                "batch": batch,
                "median_s": round(median, 4),
                "images_per_s": round(batch / median, 3),
            }
            results.append(row)
            print(json.dumps(row), flush=True)
    for row in results:
        base = next(
            r
            for r in results
            if (r["height"], r["width"], r["batch"]) == (row["height"], row["width"], 1)
        )
        row["speedup_vs_batch1"] = round(row["images_per_s"] / base["images_per_s"], 2)
    device_name = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else platform.processor() or platform.machine()
    )
    report = {
        "machine": f"{platform.node()}, {device_name}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "command": " ".join(
            ["benchmarks/worker_batching.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "device": args.device,
        "fp16": half,
        "model": args.model,
        "weights": weights,
        "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "results": results,
    }
    engine_thread.shutdown()
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
