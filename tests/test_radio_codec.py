"""The radio between a real (tiny, seeded) JSCC encoder and decoder: the contract end to end."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from diffjscc.codec import JSCCCodec  # noqa: E402
from diffjscc.radio import BurstReceiver, FrameConfig, ImageAssembler, build_bursts  # noqa: E402
from diffjscc.radio.sim import impair  # noqa: E402

MODEL = "jscc-awgn-cbr1_384"


@pytest.fixture(scope="module")
def codec(tiny_codec) -> JSCCCodec:
    return tiny_codec


def _image(height, width, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)


def test_encode_send_receive_decode(codec):
    cfg = FrameConfig(max_payload_symbols=60)
    image = _image(100, 150)  # not a multiple of 16: padded by the codec, cropped back
    enc = codec.encode(image, snr_db=10.0)
    bursts = build_bursts(enc, image_id=21, cfg=cfg)
    assert len(bursts) == 3  # 2 maps of 7 x 10 latent positions: 140 symbols
    rng = np.random.default_rng(0)
    x = impair(
        np.concatenate([*bursts, np.zeros(300, np.complex64)]),
        15.0,
        cfg,
        cfo=0.004,
        delay=5.5,
        rng=rng,
    )
    rx = BurstReceiver(cfg)
    asm = ImageAssembler(timeout_s=1.0)
    images = []
    for frame in rx.feed(x) + rx.flush():
        images += asm.add(frame, now=0.0)
    (got,) = images
    assert got.model == MODEL and got.image_shape == (100, 150) and not got.partial
    assert abs(got.snr_db - 15.0) < 1.0
    decoded = codec.decode(got.symbols, image_shape=got.image_shape, snr_db=got.snr_db)
    clean = codec.decode(enc.symbols, image_shape=(100, 150), snr_db=got.snr_db)
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    assert np.mean(np.abs(decoded.astype(float) - clean.astype(float))) < 8.0


def test_missing_frame_still_decodes(codec):
    cfg = FrameConfig(max_payload_symbols=100)
    enc = codec.encode(_image(160, 240, seed=1), snr_db=5.0)  # 300 symbols
    bursts = build_bursts(enc, image_id=3, cfg=cfg)
    assert len(bursts) == 3
    rx = BurstReceiver(cfg)
    asm = ImageAssembler(timeout_s=1.0)
    for frame in rx.feed(np.concatenate([bursts[0], bursts[2]])) + rx.flush():
        assert asm.add(frame, now=0.0) == []
    (got,) = asm.poll(now=5.0)
    assert got.partial and got.missing_frames == (1,)
    assert not got.received_mask.all() and np.all(got.symbols[~got.received_mask] == 0)
    decoded = codec.decode(got.symbols, image_shape=got.image_shape, snr_db=got.snr_db)
    assert decoded.shape == (160, 240, 3)
