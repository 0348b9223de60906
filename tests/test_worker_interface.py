"""The decoder interface shared by LocalDecoder and WorkerClient (docs/CONTRACTS.md):
submit -> Future that always resolves within budget_s, cancel, close, bounded pending."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import zmq
from diffjscc.registry import get_model_spec
from diffjscc.worker.client import CANCELLED, LocalDecoder, WorkerClient
from diffjscc.worker.pmt_wire import Pair, dumps
from diffjscc.worker.protocol import UNAVAILABLE, DecodeRequest

pytestmark = pytest.mark.timeout(60)

SHAPE = (32, 48)
N_SYMBOLS = get_model_spec("jscc-awgn-cbr1_384").num_symbols(*SHAPE)


def make_request(i: int) -> DecodeRequest:
    return DecodeRequest(
        request_id=i, image_shape=SHAPE, snr_db=1.0, symbols=np.ones(N_SYMBOLS, np.complex64)
    )


class GatedCodec:
    """Decodes a grey image once ``gate`` is set: lets a test hold a decode in progress."""

    def __init__(self, open_at_start: bool = True):
        self.gate = threading.Event()
        if open_at_start:
            self.gate.set()
        self.started = threading.Semaphore(0)

    def decode_batch(self, symbols, shapes, snrs, hs):
        self.started.release()
        self.gate.wait(30)
        return [np.full((*shape, 3), 7, np.uint8) for shape in shapes]


def local_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("diffjscc-local")]


def test_local_submit_decodes_on_its_own_thread_and_close_ends_it():
    decoder = LocalDecoder(codec_loader=lambda name: GatedCodec())
    assert not local_threads()  # nothing runs before start() or the first submit
    reply = decoder.submit(make_request(1)).result(timeout=10)
    assert reply.ok and reply.served_by == "local" and reply.image.shape == (*SHAPE, 3)
    assert local_threads()
    start = time.monotonic()
    decoder.close()
    assert time.monotonic() - start < 2 and not local_threads()
    after = decoder.submit(make_request(2)).result(timeout=1)
    assert not after.ok and after.error_kind == UNAVAILABLE
    assert decoder.decode(make_request(3)).ok  # the blocking path still works


def test_local_submit_refuses_beyond_max_pending_and_counts():
    codec = GatedCodec(open_at_start=False)
    decoder = LocalDecoder(codec_loader=lambda name: codec, max_pending=2)
    try:
        futures = [decoder.submit(make_request(i)) for i in range(4)]
        refused = [f.result(timeout=1) for f in futures[2:]]
        assert all(not r.ok and r.error.startswith("busy") for r in refused)
        assert decoder.stats["refused_busy"] == 2
        codec.gate.set()
        assert all(f.result(timeout=10).ok for f in futures[:2])
    finally:
        decoder.close()


def test_local_cancel_resolves_at_once_and_the_late_result_is_counted():
    codec = GatedCodec(open_at_start=False)
    decoder = LocalDecoder(codec_loader=lambda name: codec)
    try:
        future = decoder.submit(make_request(1))
        assert codec.started.acquire(timeout=10)  # the decode is under way
        assert decoder.cancel(future)
        reply = future.result(timeout=0.5)
        assert not reply.ok and reply.error_kind == CANCELLED and reply.request_id == 1
        assert not decoder.cancel(future)  # once only
        codec.gate.set()
        deadline = time.monotonic() + 10
        while decoder.stats["late_results"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert decoder.stats["late_results"] == 1
    finally:
        decoder.close()


def test_local_future_resolves_within_its_budget_even_when_the_decode_hangs():
    codec = GatedCodec(open_at_start=False)
    decoder = LocalDecoder(codec_loader=lambda name: codec, timeout_s=0.3)
    try:
        assert decoder.budget_s == pytest.approx(0.3)
        future = decoder.submit(make_request(5))
        reply = future.result(timeout=decoder.budget_s + 2)
        assert not reply.ok and reply.error_kind == UNAVAILABLE and "within" in reply.error
        assert reply.request_id == 5
    finally:
        codec.gate.set()
        decoder.close()


def test_local_close_resolves_what_is_pending():
    codec = GatedCodec(open_at_start=False)
    decoder = LocalDecoder(codec_loader=lambda name: codec)
    futures = [decoder.submit(make_request(i)) for i in range(3)]
    assert codec.started.acquire(timeout=10)
    decoder.close(timeout_s=0.2)
    assert all(f.done() and not f.result().ok for f in futures)
    codec.gate.set()


@pytest.fixture
def silent_server():
    """A ROUTER that keeps what it receives; the test answers by hand."""
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.linger = 0
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    yield sock, f"tcp://127.0.0.1:{port}"
    sock.close()


def test_client_cancel_resolves_at_once_and_a_later_reply_is_ignored(silent_server):
    sock, address = silent_server
    with WorkerClient(address, timeout_s=10, retries=0) as client:
        future = client.submit(make_request(1))
        assert sock.poll(5000)
        identity, tag, empty, _ = sock.recv_multipart()
        assert client.cancel(future)
        reply = future.result(timeout=0.5)
        assert not reply.ok and reply.error_kind == CANCELLED and reply.request_id == 1
        good = dumps(
            Pair(
                {"type": "decode_reply", "request_id": 1, "ok": True, "image_shape": SHAPE},
                np.zeros(SHAPE[0] * SHAPE[1] * 3, np.uint8),
            )
        )
        sock.send_multipart([identity, tag, empty, good])
        deadline = time.monotonic() + 5
        while client.stats["ignored_replies"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert client.stats["ignored_replies"] == 1
        assert future.result().error_kind == CANCELLED


def test_client_budget_covers_the_fallback_and_is_kept(silent_server):
    _, address = silent_server
    codec = GatedCodec(open_at_start=False)
    fallback = LocalDecoder(codec_loader=lambda name: codec, timeout_s=0.4)
    client = WorkerClient(address, timeout_s=0.2, retries=1, fallback=fallback)
    try:
        assert client.budget_s == pytest.approx(0.2 * 2 + 0.4)
        start = time.monotonic()
        reply = client.submit(make_request(2)).result(timeout=client.budget_s + 2)
        assert time.monotonic() - start < client.budget_s + 1
        assert not reply.ok and "fallback did not finish" in reply.error
    finally:
        codec.gate.set()
        start = time.monotonic()
        client.close()
        assert time.monotonic() - start < 2.5
