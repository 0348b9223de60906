"""Cost of decoding through the worker vs in-process, side by side.

    .venv/bin/python benchmarks/worker_overhead.py --out /tmp/worker_overhead.json

One 768x512 image, decoded ``--repeats`` times in this process
(``codec.decode``) and as many times through a standalone worker on this
machine (``WorkerClient.decode``: request written, sent, checked, decoded,
reply written and read back), alternating so both see the same machine
state. Both use ``--threads`` torch threads and the same codec (trained
weights if present, else random init of the default config), and both decode
in a non-main thread, as the worker's engine and the GNU Radio sink's decoding
thread do (on this machine torch decodes measurably slower from the main
thread). Reports the medians and overhead = worker / in-process - 1.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _worker_common import make_codec, random_request, write_report  # noqa: E402
from diffjscc.registry import DEFAULT_MODEL  # noqa: E402
from diffjscc.worker.client import WorkerClient  # noqa: E402
from diffjscc.worker.local import LocalWorker  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import concurrent.futures

    import torch

    torch.set_num_threads(args.threads)
    codec, weights = make_codec(args.model, "cpu")
    decoder_thread = concurrent.futures.ThreadPoolExecutor(1)

    def decode_in_process():
        def run():
            torch.set_num_threads(args.threads)
            return codec.decode(
                request.symbols, image_shape=request.image_shape, snr_db=request.snr_db
            )

        return decoder_thread.submit(run).result()

    request = random_request(args.model, args.height, args.width, seed=1)
    script = str(Path(__file__).resolve().parent / "_worker_common.py")
    options = ["--device", "cpu", "--threads", str(args.threads), "--max-batch", "1"]
    worker = LocalWorker(
        [*options, "--model", args.model], program=[sys.executable, script], ready_timeout_s=300
    ).start()
    address = worker.address
    inproc, through_worker, worker_ms = [], [], []
    try:
        with WorkerClient(address, timeout_s=120, retries=0) as client:
            for _ in range(2):  # warm-up both, and wait for the worker to load its model
                reply = client.decode(request)
                assert reply.ok, reply.error
                codec.decode(
                    request.symbols, image_shape=request.image_shape, snr_db=request.snr_db
                )
            for _ in range(args.repeats):
                start = time.perf_counter()
                local = codec.decode(
                    request.symbols, image_shape=request.image_shape, snr_db=request.snr_db
                )
                inproc.append(time.perf_counter() - start)
                start = time.perf_counter()
                reply = client.decode(request)
                through_worker.append(time.perf_counter() - start)
                worker_ms.append(reply.timing.get("decode_ms", 0.0))
                assert reply.ok and reply.image.shape == local.shape
                assert abs(reply.image.astype(int) - local.astype(int)).max() <= 1  # same decoder
    finally:
        decoder_thread.shutdown()
        worker.close()
    median_inproc, median_worker = statistics.median(inproc), statistics.median(through_worker)
    report = {
        "machine": f"{platform.node()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "command": " ".join(
            ["benchmarks/worker_overhead.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "image": f"{args.width}x{args.height}",
        "model": args.model,
        "weights": weights,
        "threads": args.threads,
        "load_average_at_end": os.getloadavg(),
        "repeats": args.repeats,
        "in_process_median_s": round(median_inproc, 4),
        "through_worker_median_s": round(median_worker, 4),
        "worker_decode_median_ms": round(statistics.median(worker_ms), 2),
        "overhead_percent": round((median_worker / median_inproc - 1) * 100, 2),
        # Wall time through the worker minus the worker's own decode, per run: what the
        # service adds (writing, sending, checking, reading), free of the decode's noise.
        "service_overhead_median_ms": round(
            statistics.median(t * 1e3 - d for t, d in zip(through_worker, worker_ms, strict=True)),
            2,
        ),
        "in_process_s": [round(t, 4) for t in inproc],
        "through_worker_s": [round(t, 4) for t in through_worker],
    }
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
