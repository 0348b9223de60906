"""``diffjscc worker``: the decoding service.

A worker joins a broker (:mod:`diffjscc.worker.broker`) and decodes what the
broker hands it, in dynamic batches::

    broker ROUTER ◄──► DEALER ─ I/O thread ──► batch queue ──► engine thread
                                   ▲  heartbeats, status          │ decode_batch
                                   └──── inproc PAIR ◄────────────┘ replies

The I/O thread owns the socket (ZMQ sockets are not thread-safe), reads and
checks requests, and sends heartbeats even while the engine is busy for
minutes on a refinement. The engine thread takes the first waiting request,
waits at most ``max_wait_s`` for more (up to ``max_batch``) and decodes them
together; while it decodes, new requests pile up and form the next batch.

``diffjscc worker`` alone starts a broker in the same process (one address,
PDU sockets for GNU Radio, limits and CURVE all there); ``--connect`` joins a
broker elsewhere instead, so more workers can be added at any time.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import queue
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass

import zmq

from diffjscc.registry import DEFAULT_MODEL
from diffjscc.worker.broker import (
    BYE,
    HEARTBEAT,
    READY,
    REPLY,
    REQUEST,
    RESYNC,
    add_broker_arguments,
    broker_from_args,
    check_positive,
    limits_from_args,
    percentiles,
    stop_on_sigterm,
)
from diffjscc.worker.keys import CurveClient, given_together
from diffjscc.worker.protocol import (
    DEFAULT_LIMITS,
    INTERNAL,
    UNAVAILABLE,
    DecodeReply,
    DecodeRequest,
    Limits,
    ProtocolError,
    StatusRequest,
    WorkerError,
    decode_request,
    encode_reply,
    encode_status_reply,
    peek_ids,
)

log = logging.getLogger(__name__)


def memory_kib() -> dict:
    """Resident and peak resident memory of this process (Linux /proc), in KiB."""
    out = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out["rss_kib" if line.startswith("VmRSS") else "peak_rss_kib"] = int(
                        line.split()[1]
                    )
    except OSError:
        pass
    return out


def supervise(threads: dict[str, threading.Thread], stop: threading.Event, poll_s=0.2) -> int:
    """Wait while every serving thread lives: 0 once ``stop`` is set, 1 as soon as one
    has died (a supervisor then restarts the process instead of it idling, half alive)."""
    while True:
        if stop.is_set():
            return 0
        dead = [name for name, thread in threads.items() if not thread.is_alive()]
        if dead:
            if stop.is_set():
                return 0
            log.error("serving thread(s) %s stopped: exiting so that a supervisor restarts", dead)
            return 1
        stop.wait(poll_s)


@dataclass
class _Job:
    ticket: bytes
    request: DecodeRequest
    received: float


class WorkerServer:
    """Serves one engine to a broker. ``start()`` / ``stop()``; or ``run()`` in the foreground."""

    def __init__(
        self,
        engine,
        broker: str,
        *,
        max_batch: int = 4,
        max_wait_s: float = 0.005,
        capacity: int | None = None,
        name: str | None = None,
        heartbeat_s: float = 1.0,
        liveness: int = 3,
        limits: Limits = DEFAULT_LIMITS,
        curve: CurveClient | None = None,
        context: zmq.Context | None = None,
    ):
        if max_batch < 1:
            raise WorkerError(f"max_batch must be >= 1, got {max_batch}")
        check_positive(heartbeat_s=heartbeat_s, liveness=liveness)
        if capacity is not None:
            check_positive(capacity=capacity)
        if not max_wait_s >= 0:
            raise WorkerError(f"max_wait_s must be >= 0, got {max_wait_s}")
        if not broker.startswith(("tcp://", "ipc://", "inproc://")):
            raise WorkerError(f"broker address {broker!r} must look like tcp://HOST:PORT")
        self.engine = engine
        self.broker = broker
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        # Room for the batch being decoded and the next one, so the engine never waits on the broker.
        self.capacity = capacity or 2 * max_batch
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        if len(self.name) > 64:
            raise WorkerError(f"worker name of {len(self.name)} characters: at most 64, please")
        self._identity = f"{self.name}:{uuid.uuid4().hex[:6]}".encode()
        self.heartbeat_s = heartbeat_s
        self.liveness = liveness
        self.limits = limits
        self.curve = curve
        self._own_context = context is None
        self.context = context or zmq.Context()
        self._pair_address = f"inproc://diffjscc-worker-{uuid.uuid4().hex}"
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._busy = 0
        self._latency_ms: collections.deque[float] = collections.deque(maxlen=4096)
        self._batch_sizes: collections.Counter = collections.Counter()
        self.counters = collections.Counter(served=0, failed=0, invalid=0)
        self._started = time.time()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> WorkerServer:
        # The PAIR link is bound before either thread runs: inproc needs bind before connect.
        self._pair_in = self.context.socket(zmq.PAIR)
        self._pair_in.bind(self._pair_address)
        self._threads = [
            threading.Thread(target=self._io_loop, name="diffjscc-worker-io", daemon=True),
            threading.Thread(target=self._engine_loop, name="diffjscc-worker-engine", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop both threads; False when one is still busy (e.g. mid-refinement) after the timeout."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            log.warning("worker threads did not stop within %.1f s", timeout_s)
            return False
        if self._own_context and not self.context.closed:
            self.context.term()
        return True

    def run(self) -> int:
        """Serve until stopped; 1 when a serving thread died (see :func:`supervise`)."""
        self.start()
        try:
            return supervise(self.threads(), self._stop)
        finally:
            self.stop()

    def threads(self) -> dict[str, threading.Thread]:
        return dict(zip(("io", "engine"), self._threads, strict=False))

    # ------------------------------------------------------------------ status
    def status(self) -> dict:
        return {
            "name": self.name,
            "uptime_s": round(time.time() - self._started, 1),
            "queue_depth": self._jobs.qsize() + self._busy,
            "max_batch": self.max_batch,
            "max_wait_ms": self.max_wait_s * 1e3,
            "threads_alive": {name: t.is_alive() for name, t in self.threads().items()},
            "latency_ms": percentiles(self._latency_ms),
            "batch_sizes": {str(k): v for k, v in sorted(self._batch_sizes.items())},
            **{k: int(v) for k, v in sorted(self.counters.items())},
            **memory_kib(),
            **self.engine.info(),
        }

    # ------------------------------------------------------------------ I/O thread
    def _connect(self) -> zmq.Socket:
        sock = self.context.socket(zmq.DEALER)
        sock.linger = 0
        sock.identity = self._identity
        sock.setsockopt(zmq.MAXMSGSIZE, self.limits.zmq_max_message_bytes)
        if self.curve is not None:
            self.curve.apply(sock)
        sock.connect(self.broker)
        self._register(sock)
        return sock

    def _register(self, dealer: zmq.Socket) -> None:
        info = {
            "capacity": self.capacity,
            "name": self.name,
            "pid": os.getpid(),
            "info": self.engine.info(),
        }
        self._send(dealer, [READY, json.dumps(info).encode()])

    def _io_loop(self) -> None:
        dealer = self._connect()
        pair = self._pair_in
        poller = zmq.Poller()
        poller.register(dealer, zmq.POLLIN)
        poller.register(pair, zmq.POLLIN)
        last_heard = next_heartbeat = time.monotonic()
        tick_ms = max(10, int(self.heartbeat_s * 1000 / 4))
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(tick_ms))
                now = time.monotonic()
                if dealer in events:
                    while True:
                        try:
                            frames = dealer.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        last_heard = now
                        self._on_broker_guarded(dealer, frames, now)
                if pair in events:
                    while True:
                        try:
                            ticket, payload = pair.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._send(dealer, [REPLY, ticket, payload])
                if now >= next_heartbeat:
                    self._send(dealer, [HEARTBEAT, json.dumps(self.status()).encode()])
                    next_heartbeat = now + self.heartbeat_s
                if now - last_heard > self.heartbeat_s * self.liveness:
                    # Broker gone: a fresh socket re-registers with whichever broker comes back.
                    log.warning(
                        "no word from broker %s for %.1f s; reconnecting",
                        self.broker,
                        now - last_heard,
                    )
                    poller.unregister(dealer)
                    dealer.close(linger=0)
                    dealer = self._connect()
                    poller.register(dealer, zmq.POLLIN)
                    last_heard = now
            try:
                dealer.send_multipart([BYE], zmq.NOBLOCK)
            except zmq.Again:
                pass
        except Exception:  # the guards failed: the thread ends, supervise() exits non-zero
            log.exception("worker I/O thread failed")
        finally:
            dealer.close(linger=100)
            pair.close(linger=0)

    def _send(self, dealer: zmq.Socket, frames: list) -> None:
        """Never block on the broker: what cannot be queued now is dropped (the broker re-dispatches)."""
        try:
            dealer.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self.counters["dropped_sends"] += 1

    def _on_broker_guarded(self, dealer: zmq.Socket, frames: list[bytes], now: float) -> None:
        try:
            self._on_broker(dealer, frames, now)
        except Exception as exc:  # one guard per message: count it, answer it, keep serving
            self.counters["internal_errors"] += 1
            log.exception("worker: a message from the broker could not be handled")
            if len(frames) == 3 and frames[0] == REQUEST:
                error = f"worker failed on this request: {type(exc).__name__}"
                request_id, image_id = peek_ids(frames[2], self.limits)
                reply = DecodeReply(
                    request_id, image_id, False, error, INTERNAL, served_by=self.name
                )
                self._send(dealer, [REPLY, frames[1], encode_reply(reply)])

    def _on_broker(self, dealer: zmq.Socket, frames: list[bytes], now: float) -> None:
        command = frames[0] if frames else b""
        if command == RESYNC:
            self._register(dealer)
            return
        if command != REQUEST or len(frames) != 3:
            if command != HEARTBEAT:
                self.counters["ignored_messages"] += 1  # noise: hearing anything is enough
            return
        ticket, payload = frames[1], frames[2]
        try:
            request = decode_request(payload, self.limits)
        except ProtocolError as exc:
            self.counters["invalid"] += 1
            log.debug("request %r refused: %s", exc.request_id, exc)
            reply = DecodeReply.failure(exc, str(exc), exc.kind, self.name)
            self._send(dealer, [REPLY, ticket, encode_reply(reply)])
            return
        if isinstance(request, StatusRequest):
            self._send(
                dealer, [REPLY, ticket, encode_status_reply(request, self.status(), self.name)]
            )
            return
        if self._jobs.qsize() >= 2 * self.capacity:  # more than the broker may send: refuse
            self.counters["refused_busy"] += 1
            reply = DecodeReply.failure(request, "worker busy", UNAVAILABLE, self.name)
            self._send(dealer, [REPLY, ticket, encode_reply(reply)])
            return
        self._jobs.put(_Job(ticket, request, now))

    # ------------------------------------------------------------------ engine thread
    def _next_batch(self) -> list[_Job]:
        try:
            first = self._jobs.get(timeout=0.1)
        except queue.Empty:
            return []
        batch = [first]
        deadline = first.received + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                batch.append(
                    self._jobs.get(timeout=remaining) if remaining > 0 else self._jobs.get_nowait()
                )
            except queue.Empty:
                break
        return batch

    def _engine_loop(self) -> None:
        pair = self.context.socket(zmq.PAIR)
        pair.linger = 1000
        pair.connect(self._pair_address)
        try:
            while not self._stop.is_set():
                batch = self._next_batch()
                if not batch:
                    continue
                try:
                    self._run_batch(batch, pair)
                except Exception as exc:  # one guard per batch: answer each, keep serving
                    self.counters["internal_errors"] += 1
                    log.exception("worker: a batch of %d could not be served", len(batch))
                    self._busy = 0
                    for job in batch:
                        error = f"worker failed on this batch: {type(exc).__name__}"
                        reply = DecodeReply.failure(job.request, error, INTERNAL, self.name)
                        pair.send_multipart([job.ticket, encode_reply(reply)], copy=False)
        finally:
            pair.close()

    def _run_batch(self, batch: list[_Job], pair: zmq.Socket) -> None:
        self._busy = len(batch)
        started = time.monotonic()
        requests = [job.request for job in batch]
        try:
            replies = self.engine.decode_batch(requests)
            if len(replies) != len(requests):
                raise RuntimeError(
                    f"engine returned {len(replies)} replies for {len(requests)} requests"
                )
        except Exception as exc:
            log.exception("engine failed on a batch of %d", len(batch))
            replies = [
                DecodeReply.failure(r, f"engine failed: {type(exc).__name__}: {exc}", INTERNAL)
                for r in requests
            ]
        finished = time.monotonic()
        self._batch_sizes[len(batch)] += 1
        for job, reply in zip(batch, replies, strict=True):
            reply.served_by = self.name
            reply.timing.update(
                queue_ms=round((started - job.received) * 1e3, 3),
                worker_ms=round((finished - job.received) * 1e3, 3),
                batch_size=len(batch),
            )
            self.counters["served" if reply.ok else "failed"] += 1
            self._latency_ms.append((finished - job.received) * 1e3)
            log.debug(
                "request %r image %r: %s in %.1f ms (batch %d)%s",
                job.request.request_id,
                job.request.image_id,
                "ok" if reply.ok else "failed",
                (finished - job.received) * 1e3,
                len(batch),
                "" if reply.ok else f": {reply.error}",
            )
            payload = encode_reply(reply, job.request.image_format)  # cannot fail
            pair.send_multipart([job.ticket, payload], copy=False)
        self._busy = 0


# ---------------------------------------------------------------------- command line


def build_engine(args) -> object:
    if args.engine == "synthetic":
        from diffjscc.worker.engine import SyntheticEngine

        return SyntheticEngine(delay_s=args.synthetic_delay_ms / 1e3)
    from diffjscc.worker.engine import CodecEngine

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    engine = CodecEngine(device=args.device, preload=args.model or [DEFAULT_MODEL])
    if args.refiner:
        import torch

        from diffjscc.refiner import DiffJSCCRefiner

        dtype = torch.float16 if engine.half else None
        engine.refiner = DiffJSCCRefiner.from_pretrained(args.refiner, torch_dtype=dtype).to(
            engine.device, dtype
        )
    return engine


def default_max_batch(engine) -> int:
    """What benchmarks/worker_batching.py showed: batches pay on a GPU, not on a small CPU."""
    device = str(engine.info().get("device", "cpu"))
    if device.startswith("cuda"):
        return 8
    return 4 if device == "none" else 1  # "none": the synthetic engine, batching is free


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffjscc worker",
        description=(
            "Decode (and refine) received JSCC symbols for GNU Radio over ZMQ. "
            "Alone it serves --bind itself; with --connect it joins a broker "
            "('diffjscc worker broker --help'). 'diffjscc worker status' asks one for its status."
        ),
    )
    add_broker_arguments(parser)
    parser.add_argument(
        "--connect", metavar="ADDRESS", help="join the broker whose worker address is ADDRESS"
    )
    parser.add_argument(
        "--engine",
        choices=("codec", "synthetic"),
        default="codec",
        help="synthetic: no model, for transport tests",
    )
    parser.add_argument("--synthetic-delay-ms", type=float, default=0.0)
    parser.add_argument(
        "--model", action="append", default=[], help="load this model at start (repeatable)"
    )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 ..."
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: torch's default)"
    )
    parser.add_argument(
        "--refiner",
        metavar="PATH",
        help="DiffJSCC refiner folder (save_pretrained); refine off when absent",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        help="largest batch (default: 8 on a GPU, 1 on a CPU, where batching measured no gain)",
    )
    parser.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="longest wait for a batch to fill"
    )
    parser.add_argument("--name", help="worker name in replies and status (default host:pid)")
    parser.add_argument(
        "--broker-key", metavar="FILE", help="with --connect: the broker's public NAME.key (CURVE)"
    )
    parser.add_argument(
        "--worker-secret",
        metavar="FILE",
        help="with --connect: this worker's NAME.key_secret (CURVE)",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="-v info, -vv a line per request"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["broker"]:
        from diffjscc.worker import broker

        return broker.main(argv[1:])
    if argv[:1] == ["status"]:
        return status_main(argv[1:])
    args = build_parser().parse_args(argv)
    return serve(args)


def status_main(argv: list[str]) -> int:
    """``diffjscc worker status``: ask a worker or broker for its status, print JSON."""
    from diffjscc.worker.client import WorkerClient

    parser = argparse.ArgumentParser(prog="diffjscc worker status", description=status_main.__doc__)
    parser.add_argument("--address", default="tcp://127.0.0.1:5555")
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--curve-secret", metavar="FILE", help="this client's NAME.key_secret")
    parser.add_argument("--curve-server", metavar="FILE", help="the server's public NAME.key")
    args = parser.parse_args(argv)
    curve = None
    if given_together(curve_secret=args.curve_secret, curve_server=args.curve_server):
        curve = CurveClient.from_files(args.curve_secret, args.curve_server)
    with WorkerClient(args.address, timeout_s=args.timeout, retries=0, curve=curve) as client:
        print(json.dumps(client.status(), indent=2, default=str))
    return 0


def serve(args: argparse.Namespace, engine=None) -> int:
    """Run a worker (with its own broker unless --connect) until SIGTERM / Ctrl-C."""
    logging.basicConfig(
        level=logging.DEBUG
        if args.verbose > 1
        else logging.INFO
        if args.verbose
        else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    curve = None
    if given_together(worker_secret=args.worker_secret, broker_key=args.broker_key):
        curve = CurveClient.from_files(args.worker_secret, args.broker_key)
    context = zmq.Context()
    broker = None
    if args.connect:
        backend = args.connect
    else:
        # Settings are checked here, before a model (or the refiner) takes seconds to load.
        backend = f"inproc://diffjscc-backend-{uuid.uuid4().hex}"
        broker = broker_from_args(args, backend, context=context)
    engine = engine if engine is not None else build_engine(args)
    stop_on_sigterm()
    if broker is not None:
        broker.start()
    worker = WorkerServer(
        engine,
        backend,
        max_batch=args.max_batch or default_max_batch(engine),
        max_wait_s=args.max_wait_ms / 1e3,
        name=args.name,
        heartbeat_s=args.heartbeat,
        limits=limits_from_args(args),
        curve=curve,
        context=context,
    )
    where = (
        f"joined broker {args.connect}" if broker is None else f"serving {broker.frontend_address}"
    )
    extra = ""
    if broker is not None and broker.bound.get("pdu_pull"):
        extra = f", PDUs in {broker.bound['pdu_pull']} out {broker.bound.get('pdu_push', '-')}"
    print(f"diffjscc worker {worker.name}: {where}{extra}; engine {engine.info()}", flush=True)
    status = 0
    try:
        worker.start()
        threads = worker.threads()
        if broker is not None:
            threads["broker"] = broker._thread
        status = supervise(threads, worker._stop)
    except KeyboardInterrupt:
        pass
    finally:
        stopped = worker.stop()
        if broker is not None:
            broker.stop()
        if stopped:  # a thread stuck in a long decode keeps its socket: exit without term()
            context.term()
    return status
