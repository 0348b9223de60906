"""The worker with a real JSCC decoder (tiny, seeded) and a tiny refiner.

The decoder through the worker must give the same image as the same decoder
in this process, for single requests, mixed batches and the local fallback.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from diffjscc.codec import JSCCCodec  # noqa: E402
from diffjscc.worker.broker import Broker  # noqa: E402
from diffjscc.worker.client import LocalDecoder, WorkerClient  # noqa: E402
from diffjscc.worker.engine import CodecEngine  # noqa: E402
from diffjscc.worker.local import LocalWorker  # noqa: E402
from diffjscc.worker.protocol import DecodeRequest  # noqa: E402
from diffjscc.worker.server import WorkerServer  # noqa: E402

pytestmark = pytest.mark.timeout(120)

MODEL = "jscc-awgn-cbr1_384"


@pytest.fixture(scope="module")
def codec(tiny_codec) -> JSCCCodec:
    return tiny_codec


def make_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)


def request_for(codec, request_id, height, width, snr_db=5.0, **extra) -> DecodeRequest:
    enc = codec.encode(make_image(height, width, seed=request_id), snr_db=snr_db)
    return DecodeRequest(
        request_id=request_id,
        image_id=request_id,
        model=MODEL,
        image_shape=(height, width),
        snr_db=snr_db,
        symbols=enc.symbols,
        **extra,
    )


@contextlib.contextmanager
def service(engine, max_wait_s=0.005):
    broker = Broker("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", heartbeat_s=0.2).start()
    server = WorkerServer(engine, broker.backend_address, heartbeat_s=0.2, max_wait_s=max_wait_s)
    server.start()
    try:
        yield broker
    finally:
        server.stop()
        broker.stop()


def close_enough(a: np.ndarray, b: np.ndarray) -> bool:
    # Batched and single forward passes may round a value differently.
    return a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_worker_decodes_like_the_codec_in_process(codec):
    engine = CodecEngine(device="cpu", codec_loader=lambda name: codec)
    # Two sizes arriving together: one batch, two forward passes.
    requests = [
        request_for(codec, i, *shape) for i, shape in enumerate([(40, 56), (64, 64), (40, 56)])
    ]
    with service(engine, max_wait_s=0.2) as broker, WorkerClient(broker.frontend_address) as client:
        replies = [f.result(timeout=60) for f in [client.submit(r) for r in requests]]
    for request, reply in zip(requests, replies, strict=True):
        assert reply.ok, reply.error
        expected = codec.decode(
            request.symbols, image_shape=request.image_shape, snr_db=request.snr_db
        )
        assert close_enough(reply.image, expected)
        assert reply.metrics["model"] == MODEL and reply.metrics["cbr"] == "1/384"
        assert abs(reply.metrics["symbol_power"] - 1.0) < 1e-3
    assert max(r.timing["batch_size"] for r in replies) == 3
    assert engine.info()["models"] == [MODEL]


def test_local_fallback_decodes_the_same(codec):
    request = request_for(codec, 1, 48, 48)
    reply = LocalDecoder(codec_loader=lambda name: codec).decode(request)
    assert reply.ok and reply.served_by == "local"
    assert np.array_equal(reply.image, codec.decode(request.symbols, (48, 48), 5.0))


def test_decoder_errors_become_internal_failures_for_their_group_only(codec):
    class Flaky:
        def decode_batch(self, symbols, shapes, snrs, hs):
            if shapes[0] == (16, 16):
                raise RuntimeError("out of memory (simulated)")
            return codec.decode_batch(symbols, shapes, snrs, hs)

    engine = CodecEngine(device="cpu", codec_loader=lambda name: Flaky())
    good, bad = request_for(codec, 1, 32, 32), request_for(codec, 2, 16, 16)
    replies = engine.decode_batch([good, bad])
    assert replies[0].ok and not replies[1].ok and "out of memory" in replies[1].error


def test_refine_with_a_tiny_refiner(codec):
    pytest.importorskip("diffusers")
    from diffjscc.refiner.tiny import tiny_refiner

    engine = CodecEngine(
        device="cpu", codec_loader=lambda name: codec, refiner=tiny_refiner(steps=2)
    )
    with service(engine) as broker, WorkerClient(broker.frontend_address, timeout_s=60) as client:
        reply = client.decode(request_for(codec, 3, 32, 48, refine=True, steps=2, seed=5))
    assert reply.ok, reply.error
    assert reply.refined.shape == (32, 48, 3) and reply.refined.dtype == np.uint8
    assert reply.metrics["refine_steps"] == 2 and reply.metrics["refine_seed"] == 5


def test_diffjscc_worker_command_serves_the_default_weights():
    """The real command, the shipped weights, one small image end to end."""
    from diffjscc.errors import WeightsNotFoundError
    from diffjscc.zoo import load_codec

    try:
        shipped = load_codec(MODEL)
    except WeightsNotFoundError:
        pytest.skip("default weights not present")
    local = LocalWorker(["--device", "cpu", "--threads", "1"], ready_timeout_s=120).start()
    address = local.address
    try:
        request = request_for(shipped, 1, 64, 96, snr_db=10.0)
        with WorkerClient(address, timeout_s=60, retries=0) as client:
            reply = client.decode(request)
            # The broker's view of a worker is its last heartbeat: poll until it shows the request.
            deadline = time.monotonic() + 20
            while True:
                (entry,) = client.status(timeout_s=10)["workers"]
                if entry["served"] == 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        assert reply.ok, reply.error
        assert close_enough(reply.image, shipped.decode(request.symbols, (64, 96), 10.0))
        assert entry["device"] == "cpu" and entry["models"] == [MODEL] and entry["served"] == 1
    finally:
        local.close()
