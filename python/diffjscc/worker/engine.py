"""What a worker runs on a batch of requests: the pluggable "engine".

An engine is any object with

- ``decode_batch(requests: list[DecodeRequest]) -> list[DecodeReply]``, one
  reply per request in the same order (a failed item is a reply with ok False,
  never an exception that sinks the batch), and
- ``info() -> dict`` of plain values (device, loaded models, ...) for status.

:class:`CodecEngine` is the real one (JSCC decoder, optionally the diffusion
refiner); :class:`SyntheticEngine` answers without a model, for tests and for
measuring the transport alone.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from diffjscc.registry import get_model_spec
from diffjscc.worker.protocol import INTERNAL, INVALID, DecodeReply, DecodeRequest

log = logging.getLogger(__name__)


class Engine(Protocol):
    def decode_batch(self, requests: list[DecodeRequest]) -> list[DecodeReply]: ...

    def info(self) -> dict: ...


def _metrics(request: DecodeRequest) -> dict:
    spec = get_model_spec(request.model)
    symbols = request.symbols
    return {
        "model": spec.name,
        "cbr": spec.cbr_str,
        "num_symbols": int(symbols.size),
        "symbol_power": float(np.mean(np.abs(symbols) ** 2)) if symbols.size else 0.0,
        "snr_db": float(request.snr_db),
    }


class SyntheticEngine:
    """Answers every request with a flat grey image, after an optional delay.

    ``delay_s`` per batch plus ``per_item_s`` per image imitate a batched model
    (a batch of n costs delay_s + n * per_item_s); the grey level follows the
    symbols' mean power, so a test can tell replies apart.
    """

    def __init__(self, delay_s: float = 0.0, per_item_s: float = 0.0):
        self.delay_s = float(delay_s)
        self.per_item_s = float(per_item_s)

    def info(self) -> dict:
        return {"engine": "synthetic", "device": "none", "models": []}

    def decode_batch(self, requests: list[DecodeRequest]) -> list[DecodeReply]:
        start = time.perf_counter()
        time.sleep(self.delay_s + self.per_item_s * len(requests))
        decode_ms = (time.perf_counter() - start) * 1e3
        replies = []
        for req in requests:
            height, width = req.image_shape
            power = float(np.mean(np.abs(req.symbols.astype(np.complex128)) ** 2))
            level = int(min(255.0, round(power * 100))) if np.isfinite(power) else 255
            replies.append(
                DecodeReply(
                    request_id=req.request_id,
                    image_id=req.image_id,
                    ok=True,
                    image=np.full((height, width, 3), level, dtype=np.uint8),
                    metrics=_metrics(req),
                    timing={"decode_ms": decode_ms},
                    user=req.user,
                )
            )
        return replies


def pick_device(device: str = "auto") -> str:
    """ "auto" -> "cuda" when torch sees a GPU, else "cpu"; anything else as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class CodecEngine:
    """The JSCC decoder (one codec per model, loaded on first use) and the refiner.

    ``codec_loader(model_name) -> JSCCCodec`` defaults to
    ``diffjscc.zoo.load_codec(name, device=...)``; tests pass a loader that builds
    a tiny seeded model. ``refiner`` is an object with
    ``refine(image_u8, snr_db, h, steps=..., seed=...)`` returning a result with
    ``.image`` (``diffjscc.refiner.DiffJSCCRefiner``), or None: then requests with
    refine on get an error reply saying the worker has no refiner.
    """

    def __init__(
        self,
        device: str = "auto",
        codec_loader: Callable[[str], Any] | None = None,
        refiner: Any = None,
        half: bool | None = None,
        preload: list[str] | tuple[str, ...] = (),
    ):
        self.device = pick_device(device)
        # fp16 halves memory traffic on a GPU; CPUs gain nothing and lose precision.
        self.half = self.device.startswith("cuda") if half is None else bool(half)
        self._loader = codec_loader or self._load_from_zoo
        self._codecs: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.refiner = refiner
        for name in preload:
            self.codec(get_model_spec(name).name)

    def _load_from_zoo(self, name: str):
        from diffjscc.zoo import load_codec

        codec = load_codec(name, device=self.device)
        if self.half:
            codec.model.half()
        return codec

    def codec(self, name: str):
        with self._lock:
            if name not in self._codecs:
                start = time.perf_counter()
                self._codecs[name] = self._loader(name)
                log.info(
                    "loaded %s on %s in %.1f s", name, self.device, time.perf_counter() - start
                )
            return self._codecs[name]

    def info(self) -> dict:
        return {
            "engine": "codec",
            "device": self.device,
            "fp16": self.half,
            "models": sorted(self._codecs),
            "refiner": None if self.refiner is None else type(self.refiner).__name__,
        }

    def decode_batch(self, requests: list[DecodeRequest]) -> list[DecodeReply]:
        replies: list[DecodeReply | None] = [None] * len(requests)
        # One forward pass per (model, shape): images of one size stack into a batch.
        groups: dict[tuple, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault((req.model, tuple(req.image_shape)), []).append(i)
        for (model, _), indices in groups.items():
            group = [requests[i] for i in indices]
            start = time.perf_counter()
            try:
                images = self.codec(model).decode_batch(
                    [r.symbols for r in group],
                    [tuple(r.image_shape) for r in group],
                    [r.snr_db for r in group],
                    [r.h for r in group],
                )
            except Exception as exc:  # one bad group must not sink the others
                log.exception("decoding a batch of %d for %s failed", len(group), model)
                if len(indices) > 1:  # nor one bad request the others of its group
                    for i in indices:  # refined below, once
                        alone = dataclasses.replace(requests[i], refine=False)
                        replies[i] = self.decode_batch([alone])[0]
                    continue
                for i in indices:
                    replies[i] = DecodeReply.failure(
                        requests[i], f"decoder failed: {type(exc).__name__}: {exc}", INTERNAL
                    )
                continue
            decode_ms = (time.perf_counter() - start) * 1e3
            for i, image in zip(indices, images, strict=True):
                replies[i] = DecodeReply(
                    request_id=requests[i].request_id,
                    image_id=requests[i].image_id,
                    ok=True,
                    image=np.asarray(image, dtype=np.uint8),
                    metrics=_metrics(requests[i]),
                    timing={"decode_ms": decode_ms, "group_size": len(group)},
                    user=requests[i].user,
                )
        for i, req in enumerate(requests):
            if req.refine and replies[i].ok:
                replies[i] = self._refine(req, replies[i])
        return replies

    def _refine(self, req: DecodeRequest, reply: DecodeReply) -> DecodeReply:
        if self.refiner is None:
            failure = DecodeReply.failure(
                req,
                "refine requested but this worker has no refiner (start it with --refiner PATH)",
                INVALID,
            )
            failure.metrics = reply.metrics
            return failure
        start = time.perf_counter()
        try:
            result = self.refiner.refine(
                reply.image, req.snr_db, req.h, steps=req.steps, seed=req.seed
            )
        except Exception as exc:
            log.exception("refining request %r failed", req.request_id)
            failure = DecodeReply.failure(
                req, f"refiner failed: {type(exc).__name__}: {exc}", INTERNAL
            )
            failure.metrics = reply.metrics
            return failure
        reply.refined = np.asarray(result.image, dtype=np.uint8)
        reply.timing["refine_ms"] = (time.perf_counter() - start) * 1e3
        for key in ("steps", "seed", "sampler", "caption"):
            if hasattr(result, key):
                reply.metrics[f"refine_{key}"] = getattr(result, key)
        return reply
