"""Broker + worker + client over real ZMQ sockets, in threads of this process.

The engine is the synthetic one (or a tiny fake codec), so these tests cover
the service: routing, batching, refusals, limits, fallback, CURVE and the
stock GNU Radio zeromq blocks. Worker processes and SIGKILL are in
test_worker_faults.py; the real decoder in test_worker_codec.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import stat
import threading
import time

import numpy as np
import pytest
import zmq
from diffjscc.registry import get_model_spec
from diffjscc.worker import keys as keys_cli
from diffjscc.worker.broker import (
    HEARTBEAT,
    READY,
    REPLY,
    REQUEST,
    Broker,
    add_broker_arguments,
    broker_from_args,
)
from diffjscc.worker.client import LocalDecoder, WorkerClient
from diffjscc.worker.engine import CodecEngine, SyntheticEngine
from diffjscc.worker.keys import CurveClient, CurveServer
from diffjscc.worker.pmt_wire import Pair, dumps
from diffjscc.worker.protocol import (
    DEFAULT_LIMITS,
    INVALID,
    UNAVAILABLE,
    DecodeReply,
    DecodeRequest,
    Limits,
    WorkerError,
    decode_reply,
    encode_reply,
    encode_request,
)
from diffjscc.worker.server import WorkerServer

pytestmark = pytest.mark.timeout(60)

MODEL = "jscc-awgn-cbr1_384"
SHAPE = (32, 48)
N_SYMBOLS = get_model_spec(MODEL).num_symbols(32, 48)
ANY_PORT = "tcp://127.0.0.1:*"


def make_request(i: int, power: float = 1.0, **overrides) -> DecodeRequest:
    fields = dict(
        request_id=i,
        image_id=i % 256,
        image_shape=SHAPE,
        snr_db=1.0,
        symbols=np.full(N_SYMBOLS, np.sqrt(power), np.complex64),
    )
    fields.update(overrides)
    return DecodeRequest(**fields)


@contextlib.contextmanager
def service(engine=None, workers: int = 1, limits: Limits = DEFAULT_LIMITS, **broker_options):
    broker = Broker(
        ANY_PORT, ANY_PORT, ANY_PORT, ANY_PORT, limits=limits, heartbeat_s=0.1, **broker_options
    )
    broker.start()
    servers = []
    try:
        for _ in range(workers):
            servers.append(
                WorkerServer(
                    engine or SyntheticEngine(),
                    broker.backend_address,
                    heartbeat_s=0.1,
                    limits=limits,
                ).start()
            )
        wait_for(lambda: len(broker._workers) == workers, "workers to join")
        yield broker, servers
    finally:
        for server in servers:
            server.stop()
        broker.stop()


def wait_for(condition, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def raw_exchange(address: str, payload: bytes, timeout_s: float = 5.0):
    """Send one message on a fresh REQ socket; the decoded reply, or None on timeout."""
    context = zmq.Context.instance()
    sock = context.socket(zmq.REQ)
    sock.linger = 0
    sock.connect(address)
    try:
        sock.send(payload)
        if not sock.poll(int(timeout_s * 1000)):
            return None
        return decode_reply(sock.recv())
    finally:
        sock.close()


class FakeCodec:
    """Stands in for JSCCCodec: grey level = 100 * mean symbol power."""

    def __init__(self):
        self.batches = []

    def decode_batch(self, symbols, shapes, snrs, hs):
        self.batches.append(len(symbols))
        return [
            np.full((*shape, 3), min(255, round(float(np.mean(np.abs(s) ** 2)) * 100)), np.uint8)
            for s, shape in zip(symbols, shapes, strict=True)
        ]


class FakeRefiner:
    def refine(self, image, snr_db, h=None, *, steps=None, seed=None):
        return argparse.Namespace(image=255 - image, steps=steps or 4, seed=seed or 0)


# ---------------------------------------------------------------- routing and batching


def test_each_reply_reaches_its_requester():
    with service(workers=2) as (broker, _):
        results: dict[int, list] = {}

        def run_client(offset: int):
            with WorkerClient(broker.frontend_address, timeout_s=10) as client:
                futures = [
                    client.submit(make_request(offset + i, power=(offset + i) / 100))
                    for i in range(25)
                ]
                results[offset] = [f.result(timeout=20) for f in futures]

        threads = [threading.Thread(target=run_client, args=(k * 100,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for offset, replies in results.items():
            for i, reply in enumerate(replies):
                assert reply.ok, reply.error
                assert reply.request_id == offset + i and reply.image_id == (offset + i) % 256
                assert reply.image.shape == (*SHAPE, 3)
                assert reply.image[0, 0, 0] == min(255, round((offset + i) / 100 * 100))
        assert len(results) == 4
        served = {r.served_by for replies in results.values() for r in replies}
        assert len(served) == 1  # two workers of one process share the host:pid name ...
        assert all(w.served > 0 for w in broker._workers.values())  # ... but both took work


def test_requests_arriving_together_are_decoded_as_one_batch():
    codec = FakeCodec()
    engine = CodecEngine(device="cpu", codec_loader=lambda name: codec)
    with service(engine) as (broker, (server,)):
        server.max_wait_s = 0.05
        with WorkerClient(broker.frontend_address) as client:
            replies = [
                f.result(timeout=10) for f in [client.submit(make_request(i)) for i in range(8)]
            ]
    assert all(r.ok for r in replies)
    assert max(codec.batches) > 1 and sum(codec.batches) == 8
    assert max(r.timing["batch_size"] for r in replies) == max(codec.batches)


def test_user_dict_and_png_are_honoured():
    with service() as (broker, _), WorkerClient(broker.frontend_address) as client:
        reply = client.decode(make_request(1, user={"frame": 3}, image_format="png"))
    assert reply.ok and reply.user == {"frame": 3} and reply.image.shape == (*SHAPE, 3)


# ---------------------------------------------------------------- refusals


HOSTILE = {
    "random bytes": (bytes(range(15, 200)), "not a serialised PMT"),
    "deep nesting": (b"\x07" * 50_000 + b"\x06" * 50_001, "nested deeper"),
    "wrong pmt": (dumps({"request_id": 1}), "expected a PDU"),
    "wrong symbol count": (
        encode_request(make_request(1, symbols=np.ones(5, np.complex64))),
        "needs",
    ),
    "nan symbols": (
        encode_request(make_request(1, symbols=np.full(N_SYMBOLS, np.nan, np.complex64))),
        "NaN",
    ),
    "huge shape": (encode_request(make_request(1, image_shape=(65536, 65536))), "outside 1..8192"),
    "unknown key": (
        dumps(Pair({"request_id": 1, "x": 1}, np.zeros(1, np.complex64))),
        "unknown metadata key",
    ),
    "oversized": (b"\x00" * (300 << 10), "exceeds the limit of 262144 bytes"),
}


def test_hostile_messages_get_error_replies_and_the_worker_keeps_serving():
    limits = Limits(max_message_bytes=256 << 10)
    with service(limits=limits) as (broker, (server,)):
        for name, (payload, reason) in HOSTILE.items():
            reply = raw_exchange(broker.frontend_address, payload)
            assert reply is not None, f"{name}: no reply"
            assert not reply.ok and reply.error_kind == INVALID and reason in reply.error, (
                name,
                reply.error,
            )
            assert reply.served_by == "broker"
        ok = raw_exchange(broker.frontend_address, encode_request(make_request(5)))
        assert ok.ok and ok.request_id == 5
        assert broker.counters["invalid"] == len(HOSTILE)


def test_a_message_beyond_zmqs_limit_is_dropped_and_the_service_goes_on():
    limits = Limits(max_message_bytes=64 << 10)  # ZMQ_MAXMSGSIZE is twice that
    with service(limits=limits) as (broker, _):
        assert raw_exchange(broker.frontend_address, b"\x00" * (1 << 20), timeout_s=1.0) is None
        reply = raw_exchange(broker.frontend_address, encode_request(make_request(6)))
        assert reply.ok and reply.request_id == 6


def test_the_worker_itself_refuses_what_it_cannot_read():
    """A worker behind a broker still checks everything it is handed."""
    context = zmq.Context.instance()
    router = context.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    server = WorkerServer(SyntheticEngine(), f"tcp://127.0.0.1:{port}", heartbeat_s=0.1).start()
    try:
        assert router.poll(5000)
        identity, command, _ = router.recv_multipart()
        assert command == b"READY"
        router.send_multipart([identity, b"REQUEST", b"t1", b"\xff\x00garbage"])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and router.poll(1000):
            frames = router.recv_multipart()
            if frames[1] == b"REPLY":
                reply = decode_reply(frames[3])
                assert frames[2] == b"t1" and not reply.ok and "not a serialised PMT" in reply.error
                break
        else:
            raise AssertionError("no reply from the worker")
    finally:
        server.stop()
        router.close()


def test_refine_without_a_refiner_is_an_explicit_error():
    engine = CodecEngine(device="cpu", codec_loader=lambda name: FakeCodec())
    with service(engine) as (broker, _), WorkerClient(broker.frontend_address) as client:
        reply = client.decode(make_request(1, refine=True))
    assert not reply.ok and reply.error_kind == INVALID and "no refiner" in reply.error


def test_refine_with_a_refiner():
    engine = CodecEngine(device="cpu", codec_loader=lambda name: FakeCodec(), refiner=FakeRefiner())
    with service(engine) as (broker, _), WorkerClient(broker.frontend_address) as client:
        reply = client.decode(make_request(1, refine=True, steps=3))
    assert reply.ok and np.array_equal(reply.refined, 255 - reply.image)
    assert reply.metrics["refine_steps"] == 3 and "refine_ms" in reply.timing


# ---------------------------------------------------------------- status


def test_status_reports_workers_and_latency():
    with service(workers=2) as (broker, _), WorkerClient(broker.frontend_address) as client:
        for f in [client.submit(make_request(i)) for i in range(10)]:
            assert f.result(timeout=10).ok
        # Heartbeats carry the workers' figures to the broker: poll until they show the run.
        deadline = time.monotonic() + 10
        while True:
            status = client.status(timeout_s=5)
            if sum(w["served"] for w in status["workers"]) == 10 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert status["broker"]["workers"] == 2 and status["broker"]["replies"] >= 10
    assert set(status["broker"]["latency_ms"]) == {"p50", "p90", "p99"}
    for worker in status["workers"]:
        assert worker["engine"] == "synthetic" and worker["peak_rss_kib"] > 0
        assert "queue_depth" in worker and set(worker["latency_ms"]) == {"p50", "p90", "p99"}
    assert sum(w["served"] for w in status["workers"]) == 10


# ---------------------------------------------------------------- failures the client absorbs


def test_no_worker_gives_an_explicit_failure():
    broker = Broker(ANY_PORT, ANY_PORT, queue_timeout_s=0.3, heartbeat_s=0.1).start()
    try:
        with WorkerClient(broker.frontend_address, timeout_s=5, retries=0) as client:
            reply = client.submit(make_request(1)).result(timeout=10)
        assert not reply.ok and reply.error_kind == UNAVAILABLE and "no worker free" in reply.error
    finally:
        broker.stop()


def test_dead_address_falls_back_to_local_decoding_in_time():
    codec = FakeCodec()
    fallback = LocalDecoder(codec_loader=lambda name: codec)
    dead = "tcp://127.0.0.1:9"  # discard port: nothing answers there
    with WorkerClient(dead, timeout_s=0.3, retries=1, fallback=fallback) as client:
        start = time.monotonic()
        reply = client.submit(make_request(4, refine=True)).result(timeout=10)
        elapsed = time.monotonic() - start
    assert reply.ok and reply.served_by == "local" and reply.image.shape == (*SHAPE, 3)
    assert reply.metrics["refine_skipped"] and "not reachable" in reply.metrics["fallback_reason"]
    assert reply.timing["attempts"] == 2 and elapsed < 5


def test_without_fallback_the_future_still_resolves():
    with WorkerClient(
        ["tcp://127.0.0.1:9", "tcp://127.0.0.1:7"], timeout_s=0.2, retries=1
    ) as client:
        futures = [client.submit(make_request(i)) for i in range(5)]
        replies = [f.result(timeout=10) for f in futures]
    assert all(
        not r.ok and r.error_kind == UNAVAILABLE and "gave up after 2" in r.error for r in replies
    )


def test_a_silent_worker_times_out_then_another_address_answers():
    # A ROUTER that takes requests and never answers, then a real service.
    context = zmq.Context.instance()
    silent = context.socket(zmq.ROUTER)
    silent.linger = 0
    port = silent.bind_to_random_port("tcp://127.0.0.1")
    try:
        with service() as (broker, _):
            addresses = [f"tcp://127.0.0.1:{port}", broker.frontend_address]
            with WorkerClient(addresses, timeout_s=0.3, retries=1) as client:
                replies = [
                    f.result(timeout=10) for f in [client.submit(make_request(i)) for i in range(4)]
                ]
        assert all(r.ok for r in replies)
        assert {r.timing["attempts"] for r in replies} == {
            1,
            2,
        }  # round robin: half went to the silent one
    finally:
        silent.close()


def test_a_malformed_reply_is_retried_and_the_client_keeps_working():
    # A ROUTER that answers with an "ok" reply lacking its image_shape, then a real service.
    context = zmq.Context.instance()
    liar = context.socket(zmq.ROUTER)
    liar.linger = 0
    port = liar.bind_to_random_port("tcp://127.0.0.1")
    bad_reply = dumps(Pair({"type": "decode_reply", "ok": True}, np.zeros(3, np.uint8)))

    done = threading.Event()

    def answer_badly():
        while not done.is_set():
            if liar.poll(20):
                identity, tag, empty, _ = liar.recv_multipart()
                liar.send_multipart([identity, tag, empty, bad_reply])

    thread = threading.Thread(target=answer_badly, daemon=True)
    thread.start()
    try:
        with service() as (broker, _):
            addresses = [f"tcp://127.0.0.1:{port}", broker.frontend_address]
            with WorkerClient(addresses, timeout_s=2, retries=1) as client:
                replies = [client.submit(make_request(i)).result(timeout=10) for i in range(4)]
                assert client.stats["bad_replies"] == 2
                assert client.submit(make_request(9)).result(timeout=10).ok
        assert all(r.ok for r in replies)
    finally:
        done.set()
        thread.join(5)
        liar.close()


def test_local_decoder_refuses_what_a_worker_would_refuse():
    fallback = LocalDecoder(codec_loader=lambda name: FakeCodec())
    reply = fallback.decode(make_request(1, symbols=np.ones(3, np.complex64)))
    assert not reply.ok and reply.error_kind == INVALID and "needs" in reply.error


def test_submit_never_raises_on_a_bad_request():
    with WorkerClient("tcp://127.0.0.1:9", timeout_s=0.2, retries=0) as client:
        reply = client.submit(make_request(1, symbols="not symbols")).result(timeout=5)
    assert not reply.ok and reply.error_kind == INVALID


def test_close_resolves_everything_pending():
    client = WorkerClient("tcp://127.0.0.1:9", timeout_s=30, retries=0)
    futures = [client.submit(make_request(i)) for i in range(3)]
    client.close()
    assert all(f.done() and not f.result().ok for f in futures)
    assert not client.submit(make_request(9)).result(timeout=1).ok


# ---------------------------------------------------------------- GNU Radio's own blocks


@pytest.mark.gnuradio
def test_stock_gnuradio_zeromq_blocks_exchange_a_pdu_with_the_worker():
    gr = pytest.importorskip("gnuradio.gr")
    import pmt
    from gnuradio import blocks, zeromq

    with service() as (broker, _):
        request = pmt.deserialize_str(encode_request(make_request(42, power=0.5)))
        flowgraph = gr.top_block()
        strobe = blocks.message_strobe(request, 200)
        push = zeromq.push_msg_sink(broker.bound["pdu_pull"], 100, False)
        pull = zeromq.pull_msg_source(broker.bound["pdu_push"], 100, False)
        sink = blocks.message_debug()
        flowgraph.msg_connect(strobe, "strobe", push, "in")
        flowgraph.msg_connect(pull, "out", sink, "store")
        flowgraph.start()
        try:
            wait_for(lambda: sink.num_messages() >= 1, "a reply in the flowgraph")
        finally:
            flowgraph.stop()
            flowgraph.wait()
        reply_pdu = sink.get_message(0)
        assert pmt.is_pair(reply_pdu) and pmt.is_u8vector(pmt.cdr(reply_pdu))
        reply = decode_reply(pmt.serialize_str(reply_pdu))
        assert reply.ok and reply.request_id == 42 and reply.image[0, 0, 0] == 50


def test_settings_that_would_stop_the_service_serving_are_refused():
    with pytest.raises(WorkerError, match="heartbeat 0"):
        Broker(ANY_PORT, ANY_PORT, heartbeat_s=0)
    with pytest.raises(WorkerError, match="queue_timeout -1"):
        Broker(ANY_PORT, ANY_PORT, queue_timeout_s=-1)
    with pytest.raises(WorkerError, match="heartbeat nan"):
        WorkerServer(SyntheticEngine(), "inproc://x", heartbeat_s=float("nan"))
    with pytest.raises(WorkerError, match="max_wait_s"):
        WorkerServer(SyntheticEngine(), "inproc://x", max_wait_s=-0.001)


# ---------------------------------------------------------------- security


def test_binding_beyond_loopback_needs_an_explicit_option():
    with pytest.raises(WorkerError, match="--allow-remote"):
        Broker("tcp://0.0.0.0:*", ANY_PORT)
    parser = argparse.ArgumentParser()
    add_broker_arguments(parser)
    args = parser.parse_args(["--bind", "tcp://0.0.0.0:0", "--allow-remote"])
    with pytest.raises(WorkerError, match="clear text"):
        broker_from_args(args, "inproc://x")
    args = parser.parse_args(["--bind", "tcp://0.0.0.0:0", "--allow-remote", "--insecure"])
    assert broker_from_args(args, "inproc://x") is not None
    # GNU Radio's blocks cannot do CURVE: a PDU socket beyond loopback must be asked for plainly.
    args = parser.parse_args(["--pdu-pull", "tcp://0.0.0.0:0", "--allow-remote"])
    with pytest.raises(WorkerError, match="cannot use CURVE"):
        broker_from_args(args, "inproc://x")


def test_keys_command_writes_a_private_secret(tmp_path):
    assert keys_cli.main(["--dir", str(tmp_path), "server"]) == 0
    secret = tmp_path / "server.key_secret"
    assert (tmp_path / "server.key").is_file() and stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    with pytest.raises(WorkerError, match="exists"):
        keys_cli.main(["--dir", str(tmp_path), "server"])


def test_curve_admits_authorised_clients_only(tmp_path):
    keys_dir, allowed = tmp_path / "keys", tmp_path / "allowed"
    allowed.mkdir()
    keys_cli.main(["--dir", str(keys_dir), "server", "client", "stranger"])
    (allowed / "client.key").write_bytes((keys_dir / "client.key").read_bytes())
    curve = CurveServer.from_files(keys_dir / "server.key_secret", allowed)
    # CURVE on the front needs it on the worker port too, or a worker in this process.
    broker = Broker(ANY_PORT, "inproc://curve-test-backend", heartbeat_s=0.1, curve=curve)
    broker.start()
    worker = WorkerServer(
        SyntheticEngine(), broker.backend_address, heartbeat_s=0.1, context=broker.context
    ).start()
    try:
        wait_for(lambda: len(broker._workers) == 1, "the worker to join")
        good = CurveClient.from_files(keys_dir / "client.key_secret", keys_dir / "server.key")
        stranger = CurveClient.from_files(keys_dir / "stranger.key_secret", keys_dir / "server.key")
        with WorkerClient(broker.frontend_address, timeout_s=5, curve=good) as client:
            assert client.decode(make_request(1)).ok
        requests_before = broker.counters["requests"]
        with WorkerClient(
            broker.frontend_address, timeout_s=0.5, retries=0, curve=stranger
        ) as client:
            refused = client.decode(make_request(2))
        with WorkerClient(broker.frontend_address, timeout_s=0.5, retries=0) as client:
            plain = client.decode(make_request(3))
        assert not refused.ok and not plain.ok
        assert broker.counters["requests"] == requests_before  # nothing of theirs got in
    finally:
        worker.stop()
        broker.stop()


def test_replies_larger_than_the_request_limit_make_it_back():
    # Requests are small (symbols), replies are whole images: limits differ per direction.
    limits = Limits(max_message_bytes=1 << 20)
    n = get_model_spec(MODEL).num_symbols(1024, 1024)
    request = make_request(
        1, image_shape=(1024, 1024), symbols=np.ones(n, np.complex64), refine=False
    )
    with (
        service(limits=limits) as (broker, _),
        WorkerClient(broker.frontend_address, limits=limits) as client,
    ):
        reply = client.submit(request).result(timeout=20)
    assert reply.ok, reply.error
    assert reply.image.shape == (1024, 1024, 3)


def test_a_restarted_broker_gets_its_workers_back():
    first = Broker(ANY_PORT, ANY_PORT, heartbeat_s=0.1).start()
    frontend, backend = first.frontend_address, first.backend_address
    server = WorkerServer(SyntheticEngine(), backend, heartbeat_s=0.1).start()
    second = None
    try:
        wait_for(lambda: len(first._workers) == 1, "the worker to join")
        first.stop()
        second = Broker(frontend, backend, heartbeat_s=0.1).start()  # same addresses
        wait_for(lambda: len(second._workers) == 1, "the worker to rejoin the new broker")
        with WorkerClient(frontend, timeout_s=5) as client:
            assert client.decode(make_request(1)).ok
    finally:
        server.stop()
        if second is not None:
            second.stop()


def test_a_worker_presumed_dead_cannot_answer_twice():
    """A worker that stalls past its heartbeats loses its request to another worker;
    its late reply is dropped, so the client sees exactly one answer."""
    broker = Broker(ANY_PORT, ANY_PORT, heartbeat_s=0.1).start()
    context = zmq.Context.instance()
    stalled = context.socket(zmq.DEALER)
    stalled.linger = 0
    stalled.connect(broker.backend_address)
    server = None
    try:
        stalled.send_multipart([READY, b'{"capacity": 1}'])
        wait_for(lambda: len(broker._workers) == 1, "the stalling worker to join")
        with WorkerClient(broker.frontend_address, timeout_s=10) as client:
            future = client.submit(make_request(1))
            while True:  # take the request, then stay silent
                assert stalled.poll(5000)
                frames = stalled.recv_multipart()
                if frames[0] == REQUEST:
                    ticket = frames[1]
                    break
                assert frames[0] == HEARTBEAT
            server = WorkerServer(
                SyntheticEngine(), broker.backend_address, heartbeat_s=0.1
            ).start()
            reply = future.result(timeout=10)
            assert reply.ok and reply.served_by == server.name
            # Now the stalled worker wakes up and answers: nobody may hear it.
            stalled.send_multipart(
                [REPLY, ticket, encode_reply(DecodeReply(1, 0, True, served_by="zombie"))]
            )
            wait_for(lambda: broker.counters["late_replies"] >= 1, "the late reply to be dropped")
            assert client.stats["late_replies"] == 0 and client.stats["ok"] == 1
        assert broker.counters["redispatched"] == 1
    finally:
        if server is not None:
            server.stop()
        stalled.close()
        broker.stop()


def test_a_worker_with_odd_status_json_cannot_stop_the_broker():
    broker = Broker(ANY_PORT, ANY_PORT, heartbeat_s=0.1).start()
    context = zmq.Context.instance()
    odd = [context.socket(zmq.DEALER) for _ in range(2)]
    try:
        for sock in odd:
            sock.linger = 0
            sock.connect(broker.backend_address)
        odd[0].send_multipart([READY, b'{"capacity": 1, "info": 5}'])  # refused
        odd[1].send_multipart([READY, b'{"capacity": 1}'])
        wait_for(lambda: len(broker._workers) == 1, "the second worker to join")
        odd[1].send_multipart([HEARTBEAT, b"[1, 2]"])  # not an object: dropped
        with WorkerClient(broker.frontend_address, timeout_s=5, retries=0) as client:
            assert client.status()["broker"]["workers"] == 1
            odd[1].send_multipart([HEARTBEAT, b'{"served": 1208925819614629174706176}'])
            wait_for(lambda: next(iter(broker._workers.values())).status, "the heartbeat")
            # Beyond a PMT integer: written as a short text, the status stays readable.
            assert client.status()["workers"][0]["served"] == "1.209e+24"
        assert broker._thread.is_alive()
    finally:
        for sock in odd:
            sock.close()
        broker.stop()


def test_status_command_prints_json(capsys):
    from diffjscc.worker import server as server_cli

    with service() as (broker, _):
        assert server_cli.main(["status", "--address", broker.frontend_address]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["broker"]["workers"] == 1


def test_curve_key_options_come_in_pairs(tmp_path):
    from diffjscc.worker import server as server_cli

    keys_cli.main(["--dir", str(tmp_path), "client"])
    secret = str(tmp_path / "client.key_secret")
    with pytest.raises(WorkerError, match="--curve-secret and --curve-server"):
        server_cli.main(["status", "--address", "tcp://127.0.0.1:9", "--curve-secret", secret])
    with pytest.raises(WorkerError, match="--worker-secret and --broker-key"):
        server_cli.main(["--connect", "tcp://127.0.0.1:9", "--worker-secret", secret])


def test_one_debug_line_per_request(caplog):
    with service() as (broker, _), WorkerClient(broker.frontend_address) as client:
        with caplog.at_level(logging.DEBUG, logger="diffjscc.worker.server"):
            for i in range(3):
                assert client.decode(make_request(100 + i, image_id=7)).ok
    lines = [r.getMessage() for r in caplog.records if r.name == "diffjscc.worker.server"]
    assert len([line for line in lines if line.startswith("request 10")]) == 3
    assert any("request 100 image 7: ok" in line for line in lines)
