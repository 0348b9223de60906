"""Throughput of one worker vs two behind one broker, one torch thread each.

    .venv/bin/python benchmarks/worker_scaleout.py --out /tmp/worker_scaleout.json

A broker process and worker processes (``--threads 1`` each, so each has its
own core on this 2-core machine) decoding ``--requests`` images of
``--height`` x ``--width`` submitted together by one client, in ``--rounds``
alternating 1-worker / 2-worker rounds (the second worker leaves and rejoins
between rounds, which also exercises joining a running broker). Throughput =
requests / wall time from first submit to last reply, after a warm-up;
speed-up = median two-worker throughput / median one-worker throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _worker_common import free_port, random_request, write_report  # noqa: E402
from diffjscc.registry import DEFAULT_MODEL  # noqa: E402
from diffjscc.worker.client import WorkerClient  # noqa: E402
from diffjscc.worker.local import LocalWorker  # noqa: E402

HERE = Path(__file__).resolve().parent


def start_worker(args, backend: str, name: str) -> LocalWorker:
    common = ["--connect", backend, "--max-batch", str(args.max_batch)]
    if args.engine == "synthetic":
        engine = ["--engine", "synthetic", "--synthetic-delay-ms", "100"]
        return LocalWorker([*common, *engine], name=name).start()
    codec = ["--device", "cpu", "--threads", "1", "--model", args.model]
    program = [sys.executable, str(HERE / "_worker_common.py")]
    return LocalWorker([*common, *codec], name=name, program=program).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="pairs of 1-worker and 2-worker runs")
    parser.add_argument("--max-batch", type=int, default=1)
    parser.add_argument(
        "--engine",
        choices=("codec", "synthetic"),
        default="codec",
        help="synthetic: a 100 ms sleep per image, no CPU: the service's own scaling",
    )
    args = parser.parse_args(argv)

    front, back = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    broker = subprocess.Popen(
        [sys.executable, "-m", "diffjscc", "worker", "broker", "--bind", front, "--backend", back],
        stderr=subprocess.DEVNULL,
    )
    workers: list[LocalWorker] = []
    runs = []
    try:
        with WorkerClient(front, timeout_s=600, retries=0) as client:
            for count in [1, 2] * args.rounds:
                while len(workers) > count:  # SIGTERM: the worker says BYE and leaves
                    workers.pop().close()
                while len(workers) < count:
                    workers.append(start_worker(args, back, f"w{len(workers) + 1}"))
                deadline = time.monotonic() + 300
                while client.status(timeout_s=30)["broker"]["workers"] != count:
                    if time.monotonic() > deadline:
                        raise SystemExit("workers did not join")
                    time.sleep(0.2)
                warm = [
                    client.submit(random_request(args.model, args.height, args.width, seed=i))
                    for i in range(2 * count)
                ]
                assert all(f.result().ok for f in warm)
                requests = [
                    random_request(args.model, args.height, args.width, seed=i)
                    for i in range(args.requests)
                ]
                start = time.perf_counter()
                replies = [f.result() for f in [client.submit(r) for r in requests]]
                elapsed = time.perf_counter() - start
                assert all(r.ok for r in replies), [r.error for r in replies if not r.ok][:3]
                served = {}
                for r in replies:
                    served[r.served_by] = served.get(r.served_by, 0) + 1
                run = {
                    "workers": count,
                    "elapsed_s": round(elapsed, 3),
                    "images_per_s": round(args.requests / elapsed, 3),
                    "served_by": served,
                    "load_average": os.getloadavg(),
                }
                runs.append(run)
                print(json.dumps(run), flush=True)
    finally:
        for worker in workers:
            worker.close()
        broker.terminate()
        for process in [broker]:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
    import torch

    report = {
        "machine": f"{platform.node()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "command": " ".join(
            ["benchmarks/worker_scaleout.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "image": f"{args.width}x{args.height}",
        "model": args.model,
        "engine": args.engine,
        "requests": args.requests,
        "max_batch": args.max_batch,
        "runs": runs,
        "speedup_2_vs_1": round(
            statistics.median(r["images_per_s"] for r in runs if r["workers"] == 2)
            / statistics.median(r["images_per_s"] for r in runs if r["workers"] == 1),
            3,
        ),
    }
    write_report(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
