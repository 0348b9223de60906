"""Worker processes that die: SIGKILL mid-run, restart, and a small load run.

Workers are real ``diffjscc worker --connect`` processes with the synthetic
engine; the broker runs in this process so the test can read its counters.
The full-size runs (1,000 requests, memory, latency) are in
benchmarks/worker_load.py.
"""

from __future__ import annotations

import collections
import os
import signal
import threading
import time

import numpy as np
import pytest
from diffjscc.registry import get_model_spec
from diffjscc.worker.broker import Broker
from diffjscc.worker.client import WorkerClient
from diffjscc.worker.local import LocalWorker
from diffjscc.worker.protocol import DecodeRequest

pytestmark = pytest.mark.timeout(120)

SHAPE = (32, 48)
N_SYMBOLS = get_model_spec("jscc-awgn-cbr1_384").num_symbols(32, 48)


def start_worker(backend: str, name: str, delay_ms: float = 20.0) -> LocalWorker:
    options = ["--connect", backend, "--engine", "synthetic", "--heartbeat", "0.2"]
    return LocalWorker([*options, "--synthetic-delay-ms", str(delay_ms)], name=name).start()


def wait_for(condition, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def make_request(request_id: str) -> DecodeRequest:
    return DecodeRequest(
        request_id=request_id,
        image_shape=SHAPE,
        snr_db=1.0,
        symbols=np.ones(N_SYMBOLS, np.complex64),
    )


def test_sigkill_mid_run_loses_and_duplicates_nothing_and_a_restart_rejoins():
    broker = Broker(
        "tcp://127.0.0.1:*", "tcp://127.0.0.1:*", heartbeat_s=0.2, max_attempts=3
    ).start()
    workers = {}
    try:
        for name in ("w1", "w2"):
            workers[name] = start_worker(broker.backend_address, name)
        wait_for(lambda: len(broker._workers) == 2, "two workers to join")

        answers = collections.Counter()
        replies = {}
        lock = threading.Lock()
        done = threading.Event()

        def record(request_id, future):
            reply = future.result()
            with lock:
                answers[request_id] += 1
                replies[request_id] = reply
                if sum(answers.values()) == 200:
                    done.set()

        def run_client(k: int, client: WorkerClient):
            for i in range(50):
                request_id = f"c{k}-{i}"
                future = client.submit(make_request(request_id))
                future.add_done_callback(lambda f, rid=request_id: record(rid, f))
                time.sleep(0.005)

        clients = [WorkerClient(broker.frontend_address, timeout_s=10, retries=1) for _ in range(4)]
        try:
            threads = [
                threading.Thread(target=run_client, args=(k, c)) for k, c in enumerate(clients)
            ]
            for t in threads:
                t.start()
            wait_for(lambda: sum(answers.values()) >= 40, "the run to get going")
            os.kill(workers["w1"].process.pid, signal.SIGKILL)
            for t in threads:
                t.join(30)
            assert done.wait(30), f"only {sum(answers.values())} of 200 answered"
        finally:
            for client in clients:
                client.close()

        assert len(answers) == 200 and set(answers.values()) == {1}  # each exactly once
        failures = [r for r in replies.values() if not r.ok]
        assert not failures, failures[:3]  # the broker gave w1's requests to w2
        assert broker.counters["redispatched"] >= 1
        assert sum(c.stats["late_replies"] for c in clients) == 0
        served = collections.Counter(r.served_by for r in replies.values())
        assert served["w1"] > 0 and served["w2"] > 0

        # A restarted worker joins the running broker and takes work.
        workers["w3"] = start_worker(broker.backend_address, "w3")
        wait_for(lambda: len(broker._workers) == 2, "the new worker to join")
        with WorkerClient(broker.frontend_address, timeout_s=10) as client:
            after = [
                f.result(30) for f in [client.submit(make_request(f"late-{i}")) for i in range(40)]
            ]
        assert all(r.ok for r in after)
        assert "w3" in {r.served_by for r in after}
    finally:
        for worker in workers.values():
            worker.close()
        broker.stop()


def test_worker_process_answers_sigterm_by_leaving_cleanly():
    broker = Broker("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", heartbeat_s=0.2).start()
    worker = start_worker(broker.backend_address, "w-term")
    try:
        wait_for(lambda: len(broker._workers) == 1, "the worker to join")
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(10) == 0, worker.output_tail()
        # It said BYE: gone from the broker before any heartbeat could expire.
        wait_for(lambda: not broker._workers, "the worker to leave", timeout_s=0.5)
    finally:
        worker.close()
        broker.stop()
