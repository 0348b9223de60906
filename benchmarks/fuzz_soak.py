"""Fuzz soak: hostile messages against a broker and a worker, while valid requests are timed.

    nice -n 10 .venv/bin/python benchmarks/fuzz_soak.py --messages 100000 --out /tmp/fuzz_soak.json

Three processes, all real ``diffjscc`` commands with the synthetic engine (CPU-light):
a broker (``diffjscc worker broker`` with its PDU sockets), a worker joined to it,
and a second worker joined to a *rogue broker* in this process. The messages go to:

- the broker's client port (``frontend``): targeted requests (the kinds of issue 10:
  long refusal texts, exponent-form rates, vectors as ``type``, huge ``user``
  dicts, 4096x4096 shapes...), PDUs with hostile values for every key, mutated
  valid requests, random bytes, and hostile envelopes (11 frames, long frames);
- the broker's PDU socket (``pdu``): the same payloads, single frames and multipart;
- the broker's worker port (``backend``): a rogue worker's READY / HEARTBEAT /
  REPLY with infinite, deep, huge or mistyped JSON and replies to unknown tickets;
- the second worker, from the rogue broker (``worker``): REQUEST frames with the
  hostile payloads, and noise frames.

Every message to the client port, the PDU socket and the worker must be answered,
or counted by the service (its status counters); the worker port has no replies,
its messages must be counted. A client thread sends one valid request every
``--probe-interval`` seconds throughout and after the run: its latency
percentiles, and each service's resident memory at start and end, are reported.
Exit status 1 when a service stopped or a message went neither answered nor counted.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import random
import struct
import sys
import threading
import time
from pathlib import Path

import numpy as np
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _worker_common import rss_kib, write_report  # noqa: E402
from diffjscc.registry import get_model_spec  # noqa: E402
from diffjscc.worker.broker import BYE, HEARTBEAT, READY, REPLY, REQUEST, percentiles  # noqa: E402
from diffjscc.worker.client import WorkerClient  # noqa: E402
from diffjscc.worker.local import LocalWorker, free_tcp_address  # noqa: E402
from diffjscc.worker.pmt_wire import Pair, dumps  # noqa: E402
from diffjscc.worker.protocol import REQUEST_KEYS, DecodeRequest, decode_reply  # noqa: E402

MODEL = "jscc-awgn-cbr1_384"
SHAPE = (32, 48)
N_SYMBOLS = get_model_spec(MODEL).num_symbols(*SHAPE)
SYMBOLS = np.ones(N_SYMBOLS, np.complex64)


# ---------------------------------------------------------------- hostile payloads


def valid_meta(**overrides) -> dict:
    meta = {"request_id": 1, "model": MODEL, "image_shape": SHAPE, "snr_db": 1.0}
    meta.update(overrides)
    return meta


def pdu(meta, vector=None) -> bytes:
    return dumps(Pair(meta, SYMBOLS if vector is None else vector))


def targeted() -> list[bytes]:
    """The hand-built kinds of issue 10 and their relatives."""
    long, control = "x" * 256, "\x01" * 256
    n4096 = get_model_spec(MODEL).num_symbols(4096, 4096)
    out = [
        pdu({f"{i:03d}{long}"[:256]: 1 for i in range(250)}),
        pdu(valid_meta(type=[long] * 200)),
        pdu(valid_meta(image_format=[control] * 64)),
        pdu(valid_meta(model="1e10000000")),
        pdu(valid_meta(cbr="1e100000000")),
        pdu(valid_meta(model="1/" + "9" * 200)),
        pdu(valid_meta(type=np.frombuffer(b"status", np.uint8))),
        pdu(valid_meta(type=np.zeros(0, np.uint8))),
        pdu(valid_meta(image_format=np.frombuffer(b"png", np.uint8))),
        pdu(valid_meta(image_shape=(4096, 4096)), np.zeros(n4096, np.complex64)),
        pdu(valid_meta(user={f"k{i}": np.zeros(1 << 15, np.uint8) for i in range(8)})),
        pdu(valid_meta(user={f"k{i}": i for i in range(2000)})),
        pdu(valid_meta(refine=True, steps=10**6)),
        pdu(valid_meta(snr_db=float("nan"))),
        pdu(valid_meta(h=complex(float("inf"), 0))),
        pdu(valid_meta(request_id=long)),
        pdu(valid_meta(image_id=2**64 - 1)),
        pdu(valid_meta(), np.ones(N_SYMBOLS, np.complex64) * np.float32("nan")),
        pdu(valid_meta(), np.ones(3, np.complex64)),
        pdu(valid_meta(), np.zeros(0, np.uint8)),
        dumps(Pair({"type": "status"}, np.zeros(0, np.complex64))),
        dumps([1, 2, 3]),
        dumps(Pair(None, None)),
        b"\x09\x01\x00" * 5000,  # a dict that never ends
        b"\x07" * 20000,  # pairs nested 20,000 deep
        struct.pack(">BBIBB", 10, 10, 2**32 - 1, 1, 0),  # a vector claiming 4 G items
        b"",
    ]
    return out


HOSTILE_VALUES = [
    None,
    True,
    -1,
    0,
    2**31,
    2**63,
    2**64 - 1,
    -(2**63),
    1e308,
    float("nan"),
    float("inf"),
    -float("inf"),
    complex(float("nan"), 1),
    "",
    "x" * 256,
    "\x00\x01\x02",
    "é" * 120,
    "1e999",
    "-1/0",
    "1/384",
    "jscc-awgn-cbr1_96",
    "status",
    "decode",
    "png",
    "raw",
    (),
    (1,),
    (0, 0),
    (-1, 5),
    (2**40, 2),
    (1.5, 2.0),
    ("a", "b"),
    [32, 48],
    [[[[[[[[[[[[[[[1]]]]]]]]]]]]]]],
    {},
    {"a": {"b": {"c": {"d": 1}}}},
    np.zeros(0, np.uint8),
    np.zeros(2, np.int32),
    np.array([32, 48], np.int64),
    np.ones(4, np.complex128),
    np.ones(256, np.float32),
    Pair(1, 2),
]


def hostile_pdu(rng: random.Random) -> bytes:
    """A well-formed PDU whose metadata values are drawn from HOSTILE_VALUES."""
    meta = valid_meta(request_id=rng.randrange(1 << 30))
    for key in rng.sample(sorted(REQUEST_KEYS), rng.randint(1, 4)):
        meta[key] = rng.choice(HOSTILE_VALUES)
    if rng.random() < 0.1:
        meta[rng.choice(["colour", "x" * 200, "", "é" * 60])] = rng.choice(HOSTILE_VALUES)
    vector = rng.choice([None, None, np.zeros(5, np.complex64), np.zeros(4, np.float32)])
    return pdu(meta, vector)


VALID = pdu(valid_meta())


def mutated(rng: random.Random) -> bytes:
    data = bytearray(VALID)
    for _ in range(rng.randint(1, 8)):
        if not data:
            break
        choice = rng.random()
        at = rng.randrange(len(data))
        if choice < 0.5:
            data[at] = rng.randrange(256)
        elif choice < 0.7:
            del data[at : at + rng.randint(1, 64)]
        elif choice < 0.9:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        else:
            data = data[: rng.randrange(len(data))]
    return bytes(data)


def random_bytes(rng: random.Random) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))


class Payloads:
    """An endless mix of hostile request payloads, targeted kinds included."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.targeted = targeted()
        self.kinds = collections.Counter()

    def next(self) -> bytes:
        r = self.rng.random()
        if r < 0.15:
            kind, data = "targeted", self.rng.choice(self.targeted)
        elif r < 0.50:
            kind, data = "hostile_values", hostile_pdu(self.rng)
        elif r < 0.85:
            kind, data = "mutated", mutated(self.rng)
        elif r < 0.95:
            kind, data = "random_bytes", random_bytes(self.rng)
        else:
            kind, data = "valid", VALID
        self.kinds[kind] += 1
        return data


# ---------------------------------------------------------------- the attacks


def attack_frontend(address: str, count: int, seed: int, window: int = 32) -> dict:
    """Pipelined DEALER traffic; hostile envelopes now and then. Counts replies."""
    context = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(address)
    payloads = Payloads(seed)
    rng = random.Random(seed + 1)
    sent = answered = unreadable_replies = envelope_kinds = 0
    try:
        while sent < count:
            batch = min(window, count - sent)
            for _ in range(batch):
                payload = payloads.next()
                r = rng.random()
                if r < 0.03:
                    frames = [b"r"] * rng.randint(11, 20) + [b"", payload]
                    envelope_kinds += 1
                elif r < 0.05:
                    frames = [b"r" * rng.randint(257, 2000), b"", payload]
                    envelope_kinds += 1
                elif r < 0.5:
                    frames = [payload]  # no delimiter: the reply comes as [reply]
                else:
                    frames = [sent.to_bytes(8, "big"), b"", payload]
                sock.send_multipart(frames)
                sent += 1
            got = 0
            deadline = time.monotonic() + 10
            while got < batch and time.monotonic() < deadline:
                if not sock.poll(100):
                    continue
                reply = sock.recv_multipart()
                got += 1
                try:
                    decode_reply(reply[-1])
                except Exception:
                    unreadable_replies += 1
            answered += got
    finally:
        sock.close()
    return {
        "sent": sent,
        "answered": answered,
        "unanswered": sent - answered,
        "unreadable_replies": unreadable_replies,
        "hostile_envelopes": envelope_kinds,
        "kinds": dict(payloads.kinds),
    }


def attack_pdu(push_address: str, pull_address: str, count: int, seed: int) -> dict:
    context = zmq.Context.instance()
    push, pull = context.socket(zmq.PUSH), context.socket(zmq.PULL)
    for sock in (push, pull):
        sock.linger = 0
    push.connect(push_address)
    pull.connect(pull_address)
    payloads = Payloads(seed)
    rng = random.Random(seed + 2)
    sent = answered = unreadable = 0
    try:
        while sent < count:
            batch = min(32, count - sent)
            for _ in range(batch):
                if rng.random() < 0.05:
                    push.send_multipart([payloads.next(), b"extra"])
                else:
                    push.send(payloads.next())
                sent += 1
            got = 0
            deadline = time.monotonic() + 10
            while got < batch and time.monotonic() < deadline:
                if pull.poll(100):
                    data = pull.recv()
                    got += 1
                    try:
                        decode_reply(data)
                    except Exception:
                        unreadable += 1
            answered += got
    finally:
        push.close()
        pull.close()
    return {
        "sent": sent,
        "answered": answered,
        "unanswered": sent - answered,
        "unreadable_replies": unreadable,
    }


def link_messages(rng: random.Random) -> list[bytes]:
    deep = b"[" * rng.randint(20, 30000) + b"]" * 5
    bodies = [
        b'{"capacity": Infinity}',
        b'{"capacity": NaN}',
        b'{"capacity": 1e308}',
        b'{"capacity": 100000000000000000000000000}',
        b'{"capacity": "lots"}',
        b'{"capacity": -1}',
        b'{"capacity": 1, "info": ' + deep + b"}",
        deep,
        b"\xff\xfe",
        b"{" * 100,
        json.dumps({"note": "n" * 60000}).encode(),
        b" " * 70000,
        bytes(rng.randrange(256) for _ in range(rng.randint(0, 64))),
    ]
    command = rng.choice([READY, HEARTBEAT, REPLY, BYE, b"", b"NOISE"])
    if command == REPLY:
        return [REPLY, rng.randbytes(8), rng.choice([VALID, b"", random_bytes(rng)])]
    return [command, rng.choice(bodies)][: rng.randint(1, 2)] + [b"x"] * rng.randint(0, 1)


def attack_backend(address: str, count: int, seed: int) -> dict:
    """A rogue worker (a few identities) on the broker's worker port. No replies are due."""
    context = zmq.Context.instance()
    rng = random.Random(seed)
    socks = []
    for i in range(4):
        sock = context.socket(zmq.DEALER)
        sock.linger = 0
        sock.identity = f"rogue-{i}".encode()
        sock.connect(address)
        socks.append(sock)
    sent = 0
    try:
        while sent < count:
            sock = rng.choice(socks)
            sock.send_multipart(link_messages(rng))
            sent += 1
            while sock.poll(0):
                sock.recv_multipart()  # HEARTBEAT / RESYNC / REQUEST from the broker: ignored
            if sent % 256 == 0:
                time.sleep(0.01)
    finally:
        for sock in socks:
            sock.send_multipart([BYE])
            sock.close()
    return {"sent": sent}


class RogueBroker:
    """A ROUTER a real worker joins; it sends the worker hostile REQUEST frames."""

    def __init__(self):
        self.context = zmq.Context.instance()
        self.sock = self.context.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a worker that reconnects is still reached
        self.address = free_tcp_address()
        self.sock.bind(self.address)
        self.identity = None
        self.status: dict = {}
        self.unreadable = 0

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.sock.poll(200):
                frames = self.sock.recv_multipart()
                if frames[1] == READY:
                    self.identity = frames[0]
                    return
        raise SystemExit("the worker did not join the rogue broker")

    def _take(self, frames) -> bool:
        """True for a REPLY (counted when unreadable); a HEARTBEAT's status is kept."""
        if len(frames) >= 3 and frames[1] == HEARTBEAT:
            try:
                self.status = json.loads(frames[2])
            except ValueError:
                pass
        if len(frames) == 4 and frames[1] == REPLY:
            try:
                decode_reply(frames[3])
            except Exception:
                self.unreadable += 1
            return True
        return False

    def attack(self, count: int, seed: int) -> dict:
        payloads = Payloads(seed)
        rng = random.Random(seed + 3)
        sent = requests = answered = noise = 0
        while sent < count:
            batch = min(8, count - sent)  # the worker takes a few at a time (its capacity)
            batch_requests = 0
            for _ in range(batch):
                if rng.random() < 0.05:
                    frames = rng.choice([[b"NOISE"], [REQUEST, b"t"], [REQUEST, b"t", b"p", b"q"]])
                    noise += 1
                else:
                    frames = [REQUEST, sent.to_bytes(8, "big"), payloads.next()]
                    batch_requests += 1
                self.sock.send_multipart([self.identity, *frames])
                sent += 1
            requests += batch_requests
            got = 0
            deadline = time.monotonic() + 10
            while got < batch_requests and time.monotonic() < deadline:
                if self.sock.poll(100) and self._take(self.sock.recv_multipart()):
                    got += 1
            answered += got
            self.sock.send_multipart([self.identity, HEARTBEAT])
        self.settle(1.5)  # a last heartbeat from the worker carries its final counters
        return {
            "sent": sent,
            "requests": requests,
            "answered": answered,
            "unanswered": requests - answered,
            "unreadable_replies": self.unreadable,
            "noise": noise,
            "kinds": dict(payloads.kinds),
        }

    def settle(self, seconds: float) -> None:
        """Keep the link alive (heartbeats both ways) for a while."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.sock.send_multipart([self.identity, HEARTBEAT])
            if self.sock.poll(100):
                self._take(self.sock.recv_multipart())

    def valid_probe(self) -> float | None:
        """One valid request through the rogue link: ms, or None when unanswered."""
        start = time.perf_counter()
        self.sock.send_multipart([self.identity, REQUEST, b"probe", VALID])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.sock.poll(100):
                frames = self.sock.recv_multipart()
                if self._take(frames) and frames[2] == b"probe":
                    return (
                        (time.perf_counter() - start) * 1e3 if decode_reply(frames[3]).ok else None
                    )
        return None

    def close(self) -> None:
        self.sock.close()


def probe_loop(address: str, stop: threading.Event, interval: float, out: dict) -> None:
    """A valid request every ``interval`` s through the broker; latencies and failures."""
    with WorkerClient(address, timeout_s=10, retries=0) as client:
        i = 0
        while not stop.is_set():
            request = DecodeRequest(f"probe-{i}", SHAPE, 1.0, SYMBOLS)
            start = time.perf_counter()
            reply = client.submit(request).result(timeout=30)
            if reply.ok:
                out["latency_ms"].append((time.perf_counter() - start) * 1e3)
            else:
                out["failed"].append(reply.error[:100])
            i += 1
            stop.wait(interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON result path")
    parser.add_argument("--messages", type=int, default=100_000, help="hostile messages in all")
    parser.add_argument("--probe-interval", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    share = {"frontend": 0.55, "pdu": 0.15, "backend": 0.10, "worker": 0.20}
    counts = {name: int(args.messages * part) for name, part in share.items()}
    counts["frontend"] += args.messages - sum(counts.values())

    front, back = free_tcp_address(), free_tcp_address()
    pdu_in, pdu_out = free_tcp_address(), free_tcp_address()
    broker = LocalWorker(
        ["--backend", back, "--pdu-pull", pdu_in, "--pdu-push", pdu_out, "--heartbeat", "0.5"],
        bind=front,
        name=None,
        program=[sys.executable, "-m", "diffjscc", "worker", "broker"],
        wait_for_worker=False,
    )
    services: dict[str, LocalWorker] = {}
    rogue = RogueBroker()
    probes = {"latency_ms": [], "failed": []}
    stop = threading.Event()
    result: dict = {}
    try:
        services["broker"] = broker.start()
        services["worker"] = LocalWorker(
            ["--connect", back, "--engine", "synthetic", "--heartbeat", "0.5"], name="soak-w1"
        ).start()
        services["rogue_broker_worker"] = LocalWorker(
            ["--connect", rogue.address, "--engine", "synthetic", "--heartbeat", "0.5"],
            name="soak-w2",
        ).start()
        rogue.wait_ready()
        with WorkerClient(front, timeout_s=10, retries=0) as client:
            deadline = time.monotonic() + 60
            while client.status(timeout_s=10)["broker"]["workers"] < 1:
                if time.monotonic() > deadline:
                    raise SystemExit("the worker did not join the broker")
                time.sleep(0.1)
        rss_start = {name: rss_kib(s.process.pid) for name, s in services.items()}
        prober = threading.Thread(
            target=probe_loop, args=(front, stop, args.probe_interval, probes), daemon=True
        )
        prober.start()
        memory: dict[str, list[int]] = collections.defaultdict(list)

        def sample_memory():
            while not stop.wait(0.5):
                for name, service in services.items():
                    value = rss_kib(service.process.pid)
                    if value is not None:
                        memory[name].append(value)

        sampler = threading.Thread(target=sample_memory, daemon=True)
        sampler.start()
        start = time.monotonic()
        outcome = {}
        attacks = [
            threading.Thread(
                target=lambda: outcome.update(
                    frontend=attack_frontend(front, counts["frontend"], args.seed)
                )
            ),
            threading.Thread(
                target=lambda: outcome.update(
                    pdu=attack_pdu(pdu_in, pdu_out, counts["pdu"], args.seed + 10)
                )
            ),
            threading.Thread(
                target=lambda: outcome.update(
                    backend=attack_backend(back, counts["backend"], args.seed + 20)
                )
            ),
        ]
        for thread in attacks:
            thread.start()
        outcome["worker"] = rogue.attack(counts["worker"], args.seed + 30)
        for thread in attacks:
            thread.join()
        elapsed = time.monotonic() - start
        rogue.settle(1.0)  # the last probes
        stop.set()
        prober.join(40)
        after = rogue.valid_probe()
        with WorkerClient(front, timeout_s=10, retries=0) as client:
            final_reply = client.decode(DecodeRequest("final", SHAPE, 1.0, SYMBOLS))
            status = client.status(timeout_s=10)
        rss_end = {name: rss_kib(s.process.pid) for name, s in services.items()}
        alive = {name: s.alive for name, s in services.items()}
        counters = status["broker"]
        counted_front = counters.get("bad_envelopes", 0)
        answered_or_counted = {
            "frontend": outcome["frontend"]["answered"]
            >= outcome["frontend"]["sent"] - counted_front,
            "pdu": outcome["pdu"]["unanswered"] == 0,
            "worker": outcome["worker"]["unanswered"] == 0
            and rogue.status.get("ignored_messages", 0) >= outcome["worker"]["noise"],
            "backend": sum(
                counters.get(k, 0)
                for k in ("bad_worker_messages", "unknown_worker_messages", "late_replies")
            )
            > 0,
        }
        total = sum(o["sent"] for o in outcome.values())
        result = {
            "machine": f"{platform.node()}, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end",
            "command": " ".join(
                ["benchmarks/fuzz_soak.py", *(argv if argv is not None else sys.argv[1:])]
            ),
            "hostile_messages": total,
            "elapsed_s": round(elapsed, 1),
            "messages_per_s": round(total / elapsed, 1),
            "by_target": outcome,
            "services_alive": alive,
            "service_stops": sum(not a for a in alive.values()),
            "answered_or_counted": answered_or_counted,
            "broker_counters": {
                k: v for k, v in counters.items() if isinstance(v, int) and not isinstance(v, bool)
            },
            "worker_counters": {
                k: rogue.status.get(k)
                for k in (
                    "invalid",
                    "served",
                    "failed",
                    "ignored_messages",
                    "refused_busy",
                    "internal_errors",
                    "dropped_sends",
                )
            },
            "valid_probe": {
                "sent": len(probes["latency_ms"]) + len(probes["failed"]),
                "failed": len(probes["failed"]),
                "failures": collections.Counter(probes["failed"]).most_common(3),
                "latency_ms": percentiles(probes["latency_ms"], (50, 90, 99)),
                "after_run_ok": bool(final_reply.ok) and after is not None,
            },
            "rss_kib": {
                "start": rss_start,
                "end": rss_end,
                # A leak shows as a second half that peaks higher than the first.
                "peak_first_half": {n: max(v[: max(1, len(v) // 2)]) for n, v in memory.items()},
                "peak_second_half": {n: max(v[len(v) // 2 :]) for n, v in memory.items()},
                "samples": {n: len(v) for n, v in memory.items()},
            },
        }
    finally:
        stop.set()
        rogue.close()
        for service in services.values():
            service.close()
    write_report(args.out, result)
    good = (
        result
        and result["service_stops"] == 0
        and all(result["answered_or_counted"].values())
        and result["valid_probe"]["after_run_ok"]
    )
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
