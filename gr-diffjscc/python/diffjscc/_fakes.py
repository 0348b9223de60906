#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""A stand-in codec for the QA tests: no weights, no torch, exactly invertible.

Each 16x16 block of the image becomes its mean R, G, B and grey level: the
latent of the CBR 1/384 model has the same shape (4 real channels per block),
so the radio sees exactly the symbol count of the real codec, and the
decoder gives back a blocky version of the image whose quality tracks the
channel. Not installed with the module; only the tests use it.
"""

from __future__ import annotations

import concurrent.futures

import numpy as np

from diffjscc.registry import get_model_spec, padded_shape
from diffjscc.symbols import EncodedImage, latent_to_symbols, symbols_to_latent


class SyncDecoder:
    """The decoder interface of ``diffjscc.worker.client`` over ``self.decode(request)``.

    ``submit`` decodes at once, in the caller's thread, and returns the resolved
    future; a decode that raises gives a failure reply, as the real decoders do.
    """

    budget_s = 10.0

    def submit(self, request):
        from diffjscc.worker.protocol import INTERNAL, DecodeReply

        future = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        try:
            reply = self.decode(request)
        except Exception as exc:
            reply = DecodeReply.failure(request, f"{type(exc).__name__}: {exc}", INTERNAL, "fake")
        future.set_result(reply)
        return future

    def cancel(self, future) -> bool:
        return False  # resolved when submitted

    def close(self, timeout_s: float = 2.0) -> None:
        pass


class BlockMeanCodec(SyncDecoder):
    """``encode`` like OnnxJSCCEncoder, ``decode(request)`` and ``submit`` like LocalDecoder."""

    def __init__(self, model="jscc-awgn-cbr1_384"):
        self.spec = get_model_spec(model)
        if self.spec.channels != 4:
            raise ValueError("BlockMeanCodec only imitates 4-channel (CBR 1/384) models")
        self.encoded = 0
        self.decoded = []
        # The scale latent_to_symbols removes, per image shape, so decoding can restore it.
        self._scale = {}

    def encode(self, image, snr_db=7.0):
        image = np.asarray(image, dtype=np.uint8)
        h, w = image.shape[:2]
        ph, pw = padded_shape(h, w)
        padded = np.pad(image, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge").astype(np.float32)
        blocks = padded.reshape(ph // 16, 16, pw // 16, 16, 3).mean(axis=(1, 3)) / 255.0 - 0.5
        latent = np.concatenate([blocks.transpose(2, 0, 1), blocks.mean(axis=2)[None]], axis=0)
        self._scale[(h, w)] = float(np.sqrt(np.mean(latent[:2] ** 2 + latent[2:] ** 2)))
        self.encoded += 1
        return EncodedImage(
            symbols=latent_to_symbols(latent),
            image_shape=(h, w),
            latent_shape=(2, ph // 16, pw // 16),
            model=self.spec.name,
            snr_db=float(snr_db),
        )

    def decode(self, request):
        from diffjscc.worker.protocol import DecodeReply

        h, w = request.image_shape
        ph, pw = padded_shape(h, w)
        latent = symbols_to_latent(request.symbols, (2, ph // 16, pw // 16))
        latent *= self._scale.get((h, w), 0.25)
        rgb = np.clip((latent[:3].transpose(1, 2, 0) + 0.5) * 255.0, 0, 255)
        image = np.repeat(np.repeat(rgb, 16, axis=0), 16, axis=1)[:h, :w].round().astype(np.uint8)
        self.decoded.append(request)
        return DecodeReply(
            request_id=request.request_id,
            image_id=request.image_id,
            ok=True,
            image=image,
            refined=image if request.refine else None,
            metrics={"fake": True},
            served_by="fake",
        )


def noise(size, snr_db, rng, sps=2):
    """Complex AWGN per sample for a payload SNR, as the channel model adds it."""
    from diffjscc.radio import FrameConfig, noise_voltage

    sigma = noise_voltage(snr_db, FrameConfig(sps=sps))
    n = rng.standard_normal(size) + 1j * rng.standard_normal(size)
    return (n * sigma / np.sqrt(2)).astype(np.complex64)
