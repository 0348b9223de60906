"""A local decode that is given up stops at its next torch layer, and frees the decoder.

A decode cannot be interrupted from outside, but every torch module's forward passes an
interruption point (a global forward pre-hook) that ends a decode whose request was
cancelled, timed out or whose decoder was closed. Without it a cancelled decode holds the
CPU for its whole length, and a process that exits meanwhile aborts (a daemon thread
inside torch at exit: "terminate called without an active exception", exit 134).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from diffjscc.worker.client import CANCELLED, LocalDecoder  # noqa: E402
from diffjscc.worker.protocol import DecodeRequest  # noqa: E402


class EndlessCodec:
    """decode_batch runs a small layer until told to stop (or 60 s): a decode that never ends."""

    def __init__(self):
        self.layer = torch.nn.Linear(4, 4)
        self.started = threading.Event()
        self.calls = 0

    def decode_batch(self, symbols, shapes, snrs, hs):
        self.calls += 1
        self.started.set()
        x = torch.zeros(1, 4)
        deadline = time.monotonic() + 60
        with torch.no_grad():
            while time.monotonic() < deadline and self.calls == 1:
                self.layer(x)
        return [np.zeros((h, w, 3), np.uint8) for h, w in shapes]


def _request(request_id):
    from diffjscc.registry import get_model_spec

    n = get_model_spec("1/384").num_symbols(32, 32)
    return DecodeRequest(
        request_id=request_id,
        image_id=request_id,
        model="jscc-awgn-cbr1_384",
        image_shape=(32, 32),
        snr_db=7.0,
        h=1 + 0j,
        symbols=np.full(n, 0.5 + 0.5j, np.complex64),
        refine=False,
    )


def _until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


def test_a_cancelled_decode_stops_and_the_next_one_is_served():
    codec = EndlessCodec()
    decoder = LocalDecoder(codec_loader=lambda name: codec, max_pending=2)
    try:
        first = decoder.submit(_request(1))
        assert codec.started.wait(20)
        assert decoder.cancel(first)
        assert first.result(0).error_kind == CANCELLED
        # The endless decode ended at its next layer: the thread is free for the next one.
        assert _until(lambda: decoder.stats["interrupted"] == 1)
        second = decoder.submit(_request(2)).result(20)
        assert second.ok and codec.calls == 2
    finally:
        decoder.close()


def test_close_interrupts_the_decode_in_flight():
    codec = EndlessCodec()
    decoder = LocalDecoder(codec_loader=lambda name: codec)
    future = decoder.submit(_request(3))
    assert codec.started.wait(20)
    threads = list(decoder._running)
    decoder.close(timeout_s=20)  # returns once the decode thread has ended
    assert not future.result(0).ok
    assert decoder.stats["interrupted"] == 1
    assert threads and not any(t.is_alive() for t in threads)
