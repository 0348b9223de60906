"""Fault suite for the worker side: the hostile messages of issue 10 (D1-D6, D11, D14,
D15), a rogue worker against the broker, a rogue server against the client.

Each test sends what once stopped or fooled a service, then checks that the
refusal is a reply the project's own reader accepts and that a valid request
is still served. Broker and worker run in threads of this process (synthetic
engine). The long version is benchmarks/fuzz_soak.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import struct
import threading
import time
import zlib

import numpy as np
import pytest
import zmq
from diffjscc.errors import ConfigError
from diffjscc.registry import get_model_spec
from diffjscc.worker.broker import BYE, HEARTBEAT, READY, REPLY, REQUEST, Broker
from diffjscc.worker.client import LocalDecoder, WorkerClient
from diffjscc.worker.engine import SyntheticEngine
from diffjscc.worker.keys import CurveClient, CurveServer, create_keys
from diffjscc.worker.pmt_wire import Pair, ReadLimits, dumps, loads
from diffjscc.worker.protocol import (
    DEFAULT_LIMITS,
    INTERNAL,
    INVALID,
    DecodeReply,
    DecodeRequest,
    Limits,
    WorkerError,
    decode_reply,
    encode_reply,
)
from diffjscc.worker.server import WorkerServer

pytestmark = pytest.mark.timeout(60)

MODEL = "jscc-awgn-cbr1_384"
SHAPE = (32, 48)
N_SYMBOLS = get_model_spec(MODEL).num_symbols(*SHAPE)
ANY = "tcp://127.0.0.1:*"
SYMBOL_LIMIT = ReadLimits().max_symbol_bytes  # what the project's own reader accepts


def valid_meta(**overrides) -> dict:
    meta = {"request_id": 1, "model": MODEL, "image_shape": SHAPE, "snr_db": 1.0}
    meta.update(overrides)
    return meta


def pdu(meta: dict, vector=None) -> bytes:
    return dumps(Pair(meta, np.ones(N_SYMBOLS, np.complex64) if vector is None else vector))


def make_request(i) -> DecodeRequest:
    return DecodeRequest(
        request_id=i, image_shape=SHAPE, snr_db=1.0, symbols=np.ones(N_SYMBOLS, np.complex64)
    )


def wait_for(condition, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@contextlib.contextmanager
def service(workers: int = 1, limits: Limits = DEFAULT_LIMITS, **options):
    broker = Broker(ANY, ANY, ANY, ANY, limits=limits, heartbeat_s=0.1, **options).start()
    servers = []
    try:
        for _ in range(workers):
            servers.append(
                WorkerServer(
                    SyntheticEngine(), broker.backend_address, heartbeat_s=0.1, limits=limits
                ).start()
            )
        wait_for(lambda: len(broker._workers) == workers, "workers to join")
        yield broker, servers
    finally:
        for server in servers:
            server.stop()
        broker.stop()


def exchange(address: str, frames: list[bytes], timeout_s: float = 5.0) -> list[bytes] | None:
    """Send frames on a fresh DEALER; the frames of the answer, or None on timeout."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(address)
    try:
        sock.send_multipart(frames)
        if not sock.poll(int(timeout_s * 1000)):
            return None
        return sock.recv_multipart()
    finally:
        sock.close()


def ask(address: str, payload: bytes, timeout_s: float = 5.0) -> DecodeReply | None:
    frames = exchange(address, [b"", payload], timeout_s)
    return None if frames is None else decode_reply(frames[-1])


def assert_still_serving(broker: Broker) -> None:
    assert broker._thread.is_alive(), "broker thread died"
    with WorkerClient(broker.frontend_address, timeout_s=5, retries=0) as client:
        reply = client.submit(make_request("after")).result(timeout=10)
    assert reply.ok, reply.error


def assert_readable_refusal(reply: DecodeReply | None, kind: str = INVALID) -> None:
    assert reply is not None, "no reply"
    assert not reply.ok and reply.error_kind == kind, (reply.error_kind, reply.error)
    assert 0 < len(reply.error.encode()) <= SYMBOL_LIMIT


# ---------------------------------------------------------------- D1, D3, D6: refusals


LONG = "x" * 256
CONTROL = "\x01" * 256
HOSTILE_METAS = {
    "256 unknown keys of 256 bytes": {f"{i:03d}{LONG}"[:256]: 1 for i in range(250)},
    "type of 256 symbols of 256 bytes": valid_meta(type=[LONG] * 200),
    "image_format of 64 control-character symbols": valid_meta(image_format=[CONTROL] * 64),
    "type as a u8vector": valid_meta(type=np.frombuffer(b"status", np.uint8)),
    "type as an empty vector": valid_meta(type=np.zeros(0, np.uint8)),
    "image_format as a u8vector": valid_meta(image_format=np.frombuffer(b"raw", np.uint8)),
    "model as a u8vector": valid_meta(model=np.zeros(3, np.uint8)),
    "model of 250 bytes": valid_meta(model="m" * 250),
    "cbr of 250 bytes": valid_meta(cbr="9" * 250),
    "request_id of 256 bytes": valid_meta(request_id=LONG),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_METAS))
def test_every_refusal_is_a_short_readable_reply_and_serving_goes_on(case):
    with service() as (broker, _):
        reply = ask(broker.frontend_address, pdu(HOSTILE_METAS[case]))
        assert_readable_refusal(reply)
        assert_still_serving(broker)


@pytest.mark.parametrize("vector", [np.frombuffer(b"status", np.uint8), np.zeros(0, np.uint8)])
def test_a_vector_as_type_is_refused_by_its_type_never_compared(vector):
    """D3: numpy compares a vector with a text elementwise (numpy 1.26: ValueError; an
    empty vector compared equal to nothing and was taken as a decode request)."""
    from diffjscc.worker.protocol import ProtocolError, decode_request

    with pytest.raises(ProtocolError, match="'type' must be a symbol"):
        decode_request(pdu(valid_meta(type=vector)))


def test_refusals_through_the_pdu_sockets_too():
    with service() as (broker, _):
        context = zmq.Context.instance()
        push, pull = context.socket(zmq.PUSH), context.socket(zmq.PULL)
        for sock in (push, pull):
            sock.linger = 0
        push.connect(broker.bound["pdu_pull"])
        pull.connect(broker.bound["pdu_push"])
        try:
            # A reply pushed before this PULL's connection is up has no peer and is dropped
            # (and counted) by the broker, which never blocks: wait for the first reply.
            deadline = time.monotonic() + 10
            while not pull.poll(0):
                assert time.monotonic() < deadline, "no reply on the PDU sockets"
                push.send(pdu(valid_meta(type="bogus")))
                pull.poll(300)
            while pull.poll(300):
                pull.recv()
            for case in sorted(HOSTILE_METAS):
                push.send(pdu(HOSTILE_METAS[case]))
                assert pull.poll(5000), case
                assert_readable_refusal(decode_reply(pull.recv()))
            push.send_multipart([b"a", b"b"])  # D14: one frame per message on this socket
            assert pull.poll(5000)
            assert_readable_refusal(decode_reply(pull.recv()))
        finally:
            push.close()
            pull.close()
        assert_still_serving(broker)


def test_an_invalid_request_is_reported_at_once_not_retried_as_unreadable():
    """D6: the project's own client reads every refusal: one attempt, error_kind invalid."""
    with service() as (broker, _):
        with WorkerClient(broker.frontend_address, timeout_s=5, retries=2) as client:
            request = make_request(1)
            request.model = "m" * 250
            reply = client.submit(request).result(timeout=10)
        assert_readable_refusal(reply)
        assert reply.timing["attempts"] == 1 and client.stats["bad_replies"] == 0


def test_the_reply_writer_cannot_fail_on_a_reply_the_service_builds():
    huge = DecodeReply(
        request_id=1,
        image_id=2,
        ok=False,
        error="e" * 100_000,
        error_kind=INTERNAL,
        metrics={"caption": "c" * 100_000, "n": 2**70, "nan": float("nan"), "obj": object()},
        timing={f"k{i}": i for i in range(10_000)},
        served_by="s" * 1000,
    )
    reply = decode_reply(encode_reply(huge))
    assert reply.request_id == 1 and not reply.ok
    assert reply.error.endswith("[truncated]") and len(reply.error.encode()) <= SYMBOL_LIMIT


# ---------------------------------------------------------------- D2: bounded grammars


@pytest.mark.parametrize("key", ["model", "cbr"])
def test_a_rate_in_exponent_form_is_refused_at_once(key):
    # Fraction("1e100000000") ran for minutes: without the bounded grammar this test
    # outlives its timeout instead of failing on an assertion.
    with pytest.raises(ConfigError, match="unknown JSCC model or CBR"):
        get_model_spec("1e100000000")
    with service() as (broker, _):
        reply = ask(broker.frontend_address, pdu(valid_meta(**{key: "1e100000000"})))
        assert_readable_refusal(reply)
        assert_still_serving(broker)


# ---------------------------------------------------------------- D4, D5: a rogue worker


@contextlib.contextmanager
def rogue_worker(broker: Broker, ready: bytes | None = b'{"capacity": 1}'):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.identity = b"rogue"
    sock.connect(broker.backend_address)
    try:
        if ready is not None:
            sock.send_multipart([READY, ready])
        yield sock
    finally:
        sock.close()


@pytest.mark.parametrize(
    "message",
    [
        [READY, b'{"capacity": Infinity}'],
        [READY, b'{"capacity": NaN}'],
        [READY, b'{"capacity": 1e308}'],
        [READY, b'{"capacity": 100000000000000000000000000000}'],
        [READY, b'{"capacity": -5}'],
        [READY, b"[" * 30000 + b"]" * 30000],
        [READY, b'{"info": ' + b"[" * 30000 + b"]" * 30000 + b"}"],
        [READY, b"{" + b'"a":' * 1 + b"1" + b"}" + b" " * 200_000],
    ],
    ids=["inf", "nan", "1e308", "bigint", "negative", "deep", "deep-info", "large"],
)
def test_hostile_ready_messages_are_refused_and_the_broker_lives(message):
    with service() as (broker, _):
        with rogue_worker(broker, ready=None) as sock:
            sock.send_multipart(message)
            wait_for(lambda: broker.counters["bad_worker_messages"] >= 1, "the refusal")
        assert len(broker._workers) == 1  # only the real worker
        assert_still_serving(broker)
        with WorkerClient(broker.frontend_address, timeout_s=5, retries=0) as client:
            assert client.status(timeout_s=5)["broker"]["workers"] == 1


def test_hostile_heartbeats_are_refused_and_status_stays_readable():
    with service() as (broker, _):
        with rogue_worker(broker) as sock:
            wait_for(lambda: len(broker._workers) == 2, "the rogue to join")
            for body in (
                b"[" * 30000 + b"]" * 30000,
                b'{"x": Infinity}',
                json.dumps(
                    {"note": "n" * 10_000, "n": 10**30, "deep": [[[[[[[[[[1]]]]]]]]]]}
                ).encode(),
            ):
                sock.send_multipart([HEARTBEAT, body])
            wait_for(lambda: broker.counters["bad_worker_messages"] >= 2, "the refusals")
            # Still alive: the broker's liveness (3 heartbeats of 0.1 s) would otherwise run
            # out while a loaded machine answers the status request (a fixed 0.3 s sleep did).
            sock.send_multipart([HEARTBEAT])
            with WorkerClient(broker.frontend_address, timeout_s=5, retries=0) as client:
                status = client.status(timeout_s=5)
            assert status["broker"]["workers"] == 2
            sock.send_multipart([BYE])
        assert_still_serving(broker)


@pytest.mark.parametrize(
    "meta_overrides",
    [
        {"ok": np.ones(2, np.uint8)},
        {"ok": True, "error": np.zeros(2, np.uint8)},
        {"ok": True, "request_id": "someone-else"},
        {"ok": True, "image_shape": (20000, 20000)},
    ],
    ids=["ok-vector", "error-vector", "wrong-id", "huge-shape"],
)
def test_the_broker_checks_a_workers_reply_before_passing_it_on(meta_overrides):
    with service(workers=0) as (broker, _):
        with rogue_worker(broker) as sock:
            wait_for(lambda: len(broker._workers) == 1, "the rogue to join")
            with WorkerClient(broker.frontend_address, timeout_s=5, retries=0) as client:
                future = client.submit(make_request(7))
                assert sock.poll(5000)
                command, ticket, _ = sock.recv_multipart()
                assert command == REQUEST
                meta = {"type": "decode_reply", "request_id": 7, "image_shape": SHAPE}
                meta.update(meta_overrides)
                image = np.zeros(SHAPE[0] * SHAPE[1] * 3, np.uint8)
                sock.send_multipart([REPLY, ticket, dumps(Pair(meta, image))])
                reply = future.result(timeout=10)
        assert not reply.ok and "sent an unusable reply" in reply.error
        assert broker.counters["bad_worker_replies"] == 1
        assert broker._thread.is_alive()


# ---------------------------------------------------------------- D5: a rogue server


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG file whose header declares width x height."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


ROGUE_REPLIES = {
    "ok as a u8vector": ({"ok": np.ones(2, np.uint8)}, np.zeros(3, np.uint8)),
    "error as a u8vector": ({"ok": False, "error": np.ones(2, np.uint8)}, np.zeros(0, np.uint8)),
    "error_kind as a number": ({"ok": False, "error": "x", "error_kind": 5}, np.zeros(0, np.uint8)),
    "PNG claiming 20000x20000": (
        {"ok": True, "image_shape": SHAPE, "image_format": "png"},
        np.frombuffer(png_claiming(20000, 20000), np.uint8),
    ),
    "PNG claiming 20000x20000 in the shape too": (
        {"ok": True, "image_shape": (20000, 20000), "image_format": "png"},
        np.frombuffer(png_claiming(20000, 20000), np.uint8),
    ),
    "status as a vector": ({"type": "status_reply", "ok": True, "status": [1, 2]}, None),
}


class GreyCodec:
    def decode_batch(self, symbols, shapes, snrs, hs):
        return [np.full((*shape, 3), 9, np.uint8) for shape in shapes]


@pytest.mark.parametrize("case", sorted(ROGUE_REPLIES))
def test_a_rogue_server_cannot_stop_the_client_and_the_fallback_serves(case):
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.linger = 0
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    overrides, vector = ROGUE_REPLIES[case]
    meta = {"type": "decode_reply", "request_id": 1}
    meta.update(overrides)
    payload = dumps(Pair(meta, np.zeros(0, np.uint8) if vector is None else vector))
    fallback = LocalDecoder(codec_loader=lambda name: GreyCodec())
    try:
        with WorkerClient(
            f"tcp://127.0.0.1:{port}", timeout_s=2, retries=0, fallback=fallback
        ) as client:
            futures = []
            for i in range(2):
                futures.append(client.submit(make_request(i)))
                assert sock.poll(5000)
                identity, tag, empty, _ = sock.recv_multipart()
                sock.send_multipart([identity, tag, empty, payload])
                reply = futures[-1].result(timeout=10)
                assert reply.ok and reply.served_by == "local", reply.error
            assert client._thread.is_alive() and client.stats["bad_replies"] == 2
    finally:
        sock.close()


# ---------------------------------------------------------------- D11: cost limits


def test_costly_requests_are_refused_by_default():
    with service() as (broker, _):
        n = get_model_spec(MODEL).num_symbols(4096, 4096)
        big = pdu(valid_meta(image_shape=(4096, 4096)), np.zeros(n, np.complex64))
        assert_readable_refusal(ask(broker.frontend_address, big))
        user = {f"k{i}": np.zeros(1 << 16, np.uint8) for i in range(4)}  # 256 KiB of metadata
        assert_readable_refusal(ask(broker.frontend_address, pdu(valid_meta(user=user))))
        many_steps = pdu(valid_meta(refine=True, steps=DEFAULT_LIMITS.max_steps + 1))
        assert_readable_refusal(ask(broker.frontend_address, many_steps))
        assert_still_serving(broker)


def test_the_broker_queue_has_a_byte_budget():
    payload = pdu(valid_meta())
    broker = Broker(ANY, ANY, heartbeat_s=0.1, queue_bytes=3 * len(payload)).start()
    try:
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(broker.frontend_address)
        for i in range(5):
            sock.send_multipart([b"", pdu(valid_meta(request_id=i))])
        assert sock.poll(5000)
        reply = decode_reply(sock.recv_multipart()[-1])
        assert not reply.ok and "queue" in reply.error and reply.request_id == 3
        sock.close()
        wait_for(lambda: broker.counters["refused_queue_bytes"] == 2, "both refusals")
    finally:
        broker.stop()


# ---------------------------------------------------------------- D14: envelopes


@pytest.mark.parametrize(
    "frames",
    [[b"r"] * 11 + [b"", b"payload"], [b"r" * 300, b"", b"payload"]],
    ids=["11-frame envelope", "300-byte envelope frame"],
)
def test_a_bad_envelope_gets_a_reply(frames):
    with service() as (broker, _):
        answer = exchange(broker.frontend_address, frames)
        assert answer is not None
        assert_readable_refusal(decode_reply(answer[-1]))
        assert broker.counters["bad_envelopes"] == 1
        assert_still_serving(broker)


# ---------------------------------------------------------------- D15: CURVE


def test_a_removed_client_key_is_refused_without_a_restart(tmp_path):
    keys, clients = tmp_path / "keys", tmp_path / "clients"
    for name in ("server", "client", "other"):
        create_keys(keys, name)
    clients.mkdir()
    for name in ("client", "other"):
        shutil.copy(keys / f"{name}.key", clients)
    server = CurveServer.from_files(keys / "server.key_secret", clients)
    broker = Broker(
        ANY, "inproc://fault-backend-d15", heartbeat_s=0.1, curve=server, keys_reload_s=0.2
    ).start()
    worker = WorkerServer(
        SyntheticEngine(), broker.backend_address, heartbeat_s=0.1, context=broker.context
    ).start()
    try:
        wait_for(lambda: len(broker._workers) == 1, "the worker")
        curve = CurveClient.from_files(keys / "client.key_secret", keys / "server.key")
        with WorkerClient(broker.frontend_address, timeout_s=5, retries=0, curve=curve) as client:
            assert client.decode(make_request(1)).ok
        (clients / "client.key").unlink()
        time.sleep(0.6)
        with WorkerClient(broker.frontend_address, timeout_s=1, retries=0, curve=curve) as client:
            assert not client.decode(make_request(2)).ok
    finally:
        worker.stop()
        broker.stop()


def test_curve_on_the_front_needs_curve_on_the_worker_port(tmp_path):
    create_keys(tmp_path, "server")
    create_keys(tmp_path / "clients", "client")
    server = CurveServer.from_files(tmp_path / "server.key_secret", tmp_path / "clients")
    with pytest.raises(WorkerError, match="worker port"):
        Broker(ANY, ANY, curve=server)


# ---------------------------------------------------------------- guards


def test_an_unexpected_error_on_one_message_is_answered_internal_and_counted(monkeypatch):
    import diffjscc.worker.broker as broker_module

    with service() as (broker, _):
        real = broker_module.decode_request
        calls = iter([RuntimeError("injected")])

        def flaky(data, limits):
            error = next(calls, None)
            if error is not None:
                raise error
            return real(data, limits)

        monkeypatch.setattr(broker_module, "decode_request", flaky)
        reply = ask(broker.frontend_address, pdu(valid_meta()))
        assert_readable_refusal(reply, INTERNAL)
        assert broker.counters["internal_errors"] == 1
        assert_still_serving(broker)


def test_the_worker_guards_each_message_too(monkeypatch):
    import diffjscc.worker.server as server_module

    with service() as (broker, (server,)):
        real = server_module.decode_request
        calls = iter([RuntimeError("injected")])

        def flaky(data, limits):
            error = next(calls, None)
            if error is not None:
                raise error
            return real(data, limits)

        monkeypatch.setattr(server_module, "decode_request", flaky)
        assert_readable_refusal(ask(broker.frontend_address, pdu(valid_meta())), INTERNAL)
        assert server.counters["internal_errors"] == 1
        assert all(server.status()["threads_alive"].values())
        assert_still_serving(broker)


def test_a_dead_serving_thread_makes_the_process_exit_non_zero():
    from diffjscc.worker.server import supervise

    stop = threading.Event()
    alive = threading.Thread(target=stop.wait, name="alive")
    dead = threading.Thread(target=lambda: None, name="dead")
    alive.start()
    dead.start()
    dead.join()
    try:
        assert supervise({"alive": alive, "dead": dead}, stop, poll_s=0.01) == 1
    finally:
        stop.set()
        alive.join()
    assert supervise({"alive": alive}, threading.Event(), poll_s=0.01) == 1  # died meanwhile
    stopping = threading.Event()
    stopping.set()
    assert supervise({}, stopping, poll_s=0.01) == 0  # asked to stop: a clean exit


def test_status_says_which_threads_are_alive():
    with service() as (broker, (server,)):
        with WorkerClient(broker.frontend_address, timeout_s=5, retries=0) as client:
            wait_for(
                lambda: "threads_alive" in client.status(timeout_s=5)["workers"][0],
                "a heartbeat",
            )
            status = client.status(timeout_s=5)
        assert status["broker"]["threads_alive"] == {"broker": True}
        assert status["workers"][0]["threads_alive"] == {"io": True, "engine": True}


def test_pmt_reader_limits_match_the_bounds_of_what_is_written():
    """Every text the service writes fits the reader's symbol limit (D6's class)."""
    reply = DecodeReply.failure(None, "é" * 1000, INVALID, "w" * 300)
    value = loads(encode_reply(reply))
    assert len(value.car["error"].encode()) <= SYMBOL_LIMIT
    assert len(value.car["served_by"].encode()) <= SYMBOL_LIMIT
    io.BytesIO()  # keep the import list honest for png_claiming's users


# ---------------------------------------------------------------- batches


class PickyCodec:
    """Fails any batch holding a symbol equal to 7 (a request the decoder chokes on)."""

    def decode_batch(self, symbols, shapes, snrs, hs):
        if any(np.any(s == 7) for s in symbols):
            raise OverflowError("cannot convert float infinity to integer")
        return [np.full((*shape, 3), 1, np.uint8) for shape in shapes]


def test_one_request_that_fails_the_decoder_does_not_sink_its_batch():
    from diffjscc.worker.engine import CodecEngine

    engine = CodecEngine(device="cpu", codec_loader=lambda name: PickyCodec(), half=False)
    bad = make_request("bad")
    bad.symbols = np.full(N_SYMBOLS, 7, np.complex64)
    replies = engine.decode_batch([make_request("a"), bad, make_request("b")])
    assert [r.ok for r in replies] == [True, False, True]
    assert replies[1].error_kind == INTERNAL


def test_symbols_of_absurd_magnitude_are_refused():
    with service() as (broker, _):
        huge = np.full(N_SYMBOLS, 1e30, np.complex64)  # finite, but its energy overflows
        assert_readable_refusal(ask(broker.frontend_address, pdu(valid_meta(), huge)))
        assert_still_serving(broker)


def test_a_status_of_many_workers_stays_readable():
    """The reader refuses PMTs of more than 4,096 values: a status of 100 workers is cut."""
    from diffjscc.worker.protocol import StatusRequest, encode_status_reply

    workers = [{f"key{j}": j for j in range(40)} for _ in range(100)]
    data = encode_status_reply(
        StatusRequest(1), {"broker": {"workers": 100}, "workers": workers}, "b"
    )
    reply = decode_reply(data)
    assert reply.ok and reply.status["broker"]["workers"] == 100
    assert 10 < len(reply.status["workers"]) < 100


def test_a_reply_echoing_the_largest_user_dict_stays_readable():
    user = {f"g{g}": {f"k{i}": i for i in range(200)} for g in range(5)}  # ~1,000 values
    reply = DecodeReply(1, 2, False, "e", metrics={f"m{i}": i for i in range(2000)}, user=user)
    back = decode_reply(encode_reply(reply))
    assert back.user == user and 0 < len(back.metrics) < 2000
