"""Load and fault run: many requests, concurrent clients, worker processes, optional SIGKILL.

    .venv/bin/python benchmarks/worker_load.py --out /tmp/worker_load.json
    .venv/bin/python benchmarks/worker_load.py --kill-after 300 --restart --out /tmp/worker_kill.json
    .venv/bin/python benchmarks/worker_load.py --engine codec --height 64 --width 96 --out ...

A broker process and ``--workers`` worker processes (``diffjscc worker``),
``--clients`` WorkerClients in threads of this process each submitting its
share of ``--requests``. Reports: answered / ok / failed / duplicated / lost,
latency percentiles (submit to result, as the client sees it), throughput,
and each worker's resident memory sampled every 0.2 s (after warm-up, peak,
end). JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _worker_common import free_port, random_request, rss_kib, write_report  # noqa: E402
from diffjscc.worker.broker import percentiles  # noqa: E402
from diffjscc.worker.client import WorkerClient  # noqa: E402
from diffjscc.worker.local import LocalWorker  # noqa: E402


def start_worker(args, backend: str, name: str) -> LocalWorker:
    options = ["--connect", backend, "--heartbeat", "0.25"]
    if args.max_batch:
        options += ["--max-batch", str(args.max_batch)]
    if args.engine == "synthetic":
        options += ["--engine", "synthetic", "--synthetic-delay-ms", str(args.synthetic_delay_ms)]
    else:
        options += ["--engine", "codec", "--device", "cpu", "--threads", "1", "--model", args.model]
    return LocalWorker(options, name=name).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON result path")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--engine", choices=("synthetic", "codec"), default="synthetic")
    parser.add_argument("--synthetic-delay-ms", type=float, default=5.0)
    parser.add_argument("--model", default="jscc-awgn-cbr1_384")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--max-batch", type=int, default=0, help="0: the worker's default")
    parser.add_argument(
        "--inflight", type=int, default=8, help="requests each client keeps outstanding"
    )
    parser.add_argument(
        "--kill-after", type=int, default=0, help="SIGKILL worker 1 after this many answers"
    )
    parser.add_argument("--restart", action="store_true", help="start a new worker after the kill")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)

    front, back = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    broker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "diffjscc",
            "worker",
            "broker",
            "--bind",
            front,
            "--backend",
            back,
            "--heartbeat",
            "0.25",
        ],
        stdout=subprocess.DEVNULL,
    )
    workers = {f"w{i + 1}": start_worker(args, back, f"w{i + 1}") for i in range(args.workers)}
    memory: dict[str, list[int]] = collections.defaultdict(list)
    stop_sampling = threading.Event()

    def sample_memory():
        while not stop_sampling.is_set():
            for name, worker in list(workers.items()):
                value = rss_kib(worker.process.pid)
                if value is not None and worker.alive:
                    memory[name].append(value)
            time.sleep(0.2)

    # Every request carries the same symbols: the service's cost does not depend on them.
    template = random_request(args.model, args.height, args.width, seed=0)

    answers: collections.Counter = collections.Counter()
    replies: dict = {}
    latencies: list[float] = []
    lock = threading.Lock()
    all_answered = threading.Event()
    killed_at = None
    try:
        with WorkerClient(
            front, timeout_s=60
        ) as probe:  # wait until every worker has joined and warmed up
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                status = probe.status(timeout_s=70)
                if status["broker"]["workers"] == args.workers:
                    break
                time.sleep(0.2)
            else:
                raise SystemExit("workers did not join within 120 s")
            warm = [
                probe.submit(dataclasses.replace(template, request_id="warm"))
                # Enough at once to fill every worker's batches: warm at the run's batch size.
                for _ in range(4 * args.workers * (args.max_batch or 4))
            ]
            assert all(f.result().ok for f in warm), [f.result().error for f in warm]
        threading.Thread(target=sample_memory, daemon=True).start()
        time.sleep(0.5)
        memory_after_warmup = {name: values[-1] for name, values in memory.items() if values}

        def record(request_id, submitted, future):
            reply = future.result()
            with lock:
                answers[request_id] += 1
                replies[request_id] = reply
                latencies.append((time.monotonic() - submitted) * 1e3)
                if sum(answers.values()) >= args.requests:
                    all_answered.set()

        def run_client(k: int, client: WorkerClient, count: int):
            window = threading.Semaphore(args.inflight)
            for i in range(count):
                window.acquire()
                request_id = f"c{k}-{i}"
                request = dataclasses.replace(template, request_id=request_id)
                submitted = time.monotonic()
                future = client.submit(request)
                future.add_done_callback(
                    lambda f, r=request_id, s=submitted: (record(r, s, f), window.release())
                )

        clients = [
            WorkerClient(front, timeout_s=args.timeout, retries=1) for _ in range(args.clients)
        ]
        shares = [
            args.requests // args.clients + (k < args.requests % args.clients)
            for k in range(args.clients)
        ]
        start = time.monotonic()
        threads = [
            threading.Thread(target=run_client, args=(k, c, n))
            for k, (c, n) in enumerate(zip(clients, shares, strict=True))
        ]
        for t in threads:
            t.start()
        if args.kill_after:
            while sum(answers.values()) < args.kill_after and not all_answered.is_set():
                time.sleep(0.005)
            os.kill(workers["w1"].process.pid, signal.SIGKILL)
            killed_at = sum(answers.values())
            if args.restart:
                workers["w1-restarted"] = start_worker(args, back, "w1-restarted")
        all_answered.wait(args.timeout * 4 + args.requests)
        elapsed = time.monotonic() - start
        for client in clients:
            client.close()
        stop_sampling.set()
        ok = sum(r.ok for r in replies.values())
        result = {
            "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
            "command": " ".join(
                [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
            ),
            "settings": vars(args),
            "answered": len(answers),
            "ok": ok,
            "failed": len(answers) - ok,
            "duplicated": sum(1 for v in answers.values() if v > 1),
            "lost": args.requests - len(answers),
            "killed_after_answers": killed_at,
            "errors": collections.Counter(
                r.error.split(":")[0] for r in replies.values() if not r.ok
            ).most_common(5),
            "served_by": dict(collections.Counter(r.served_by for r in replies.values())),
            "elapsed_s": round(elapsed, 3),
            "throughput_per_s": round(len(answers) / elapsed, 2),
            "latency_ms": percentiles(latencies, (50, 90, 99)),
            "late_replies_dropped_by_clients": sum(c.stats["late_replies"] for c in clients),
            "worker_rss_kib": {
                name: {
                    "after_warmup": memory_after_warmup.get(name),
                    "peak": max(values),
                    # A leak shows as a second half that peaks higher than the first.
                    "peak_first_half": max(values[: max(1, len(values) // 2)]),
                    "peak_second_half": max(values[len(values) // 2 :]),
                    "end": values[-1],
                }
                for name, values in memory.items()
                if values
            },
        }
    finally:
        stop_sampling.set()
        for worker in workers.values():
            worker.close()
        if broker.poll() is None:
            broker.terminate()
        for process in [broker]:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
    write_report(args.out, result)
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
