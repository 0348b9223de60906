"""The worker's wire format: GNU Radio PDUs serialised as PMT.

A request is the PDU ``pmt.cons(metadata dict, c32vector of symbols)`` passed
through ``pmt.serialize_str``; a reply is ``pmt.cons(metadata dict, u8vector
image)``. GNU Radio's stock ``zeromq`` message blocks send and receive exactly
these bytes, so a flowgraph can talk to the worker with no block of ours.
docs/worker.md lists every key; :data:`REQUEST_KEYS` and :data:`REPLY_KEYS`
below are the reference.

The bytes are read and written by :mod:`diffjscc.worker.pmt_wire`, not by GNU
Radio's ``pmt`` module: ``pmt.deserialize_str`` crashes or hangs on hostile
bytes, and its bindings take ~120 ms to build a 768x512 image vector. The
output is byte-identical to ``pmt.serialize_str`` (tested), so the worker needs
no GNU Radio at all, and nothing from the wire is ever unpickled.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from diffjscc.errors import ConfigError, DiffJSCCError
from diffjscc.registry import get_model_spec
from diffjscc.worker.pmt_wire import Pair, PMTDecodeError, ReadLimits, dumps, loads

# Request metadata: key -> what it holds. Anything else is refused.
REQUEST_KEYS: dict[str, str] = {
    "type": 'symbol "decode" (default) or "status" (a ping: the reply carries the status)',
    "request_id": "integer or symbol chosen by the sender; echoed in the reply",
    "image_id": "integer (the radio frame header's image id); echoed; default 0",
    "model": 'symbol: registry name ("jscc-awgn-cbr1_384") or CBR ("1/384"); or the integer rate code',
    "cbr": 'symbol "1/384": the channel bandwidth ratio; names the model when "model" is absent, '
    "must agree with it otherwise",
    "image_shape": "(H, W) as a tuple, vector or s32/s64/u16 vector of two positive integers",
    "snr_db": "number: the SNR the receiver estimated (CSI for the decoder)",
    "h": "complex channel gain, CSI for Rayleigh-trained models; default 1 (symbols already equalised)",
    "refine": "bool: also run the diffusion refiner; default #f",
    "steps": "integer: refiner sampling steps (default: the refiner's own)",
    "seed": "integer: refiner noise seed (default: the refiner's own)",
    "image_format": 'symbol "raw" (default: u8vector of H*W*3 bytes, row-major RGB) or "png"',
    "user": "dict of the sender's own values, echoed untouched in the reply",
}

REPLY_KEYS: dict[str, str] = {
    "type": 'symbol "decode_reply" or "status_reply"',
    "request_id": "the request's request_id (#nil when the request could not be read)",
    "image_id": "the request's image_id (#nil when the request could not be read)",
    "ok": "bool",
    "error": "symbol: why the request failed, empty when ok",
    "error_kind": 'symbol: "invalid" (do not retry), "unavailable" (retry elsewhere), "internal"',
    "image_shape": "(H, W) of the image in the PDU's vector",
    "image_format": '"raw" or "png", as requested',
    "refined": "u8vector: the refined image in the same format (only when refine was on and ok)",
    "metrics": "dict: model, cbr, num_symbols, symbol_power, refine_steps, ...",
    "timing": "dict of milliseconds: queue_ms, decode_ms, refine_ms, worker_ms; batch_size",
    "served_by": "symbol: the worker that answered (host:pid)",
    "status": "dict (status replies only): device, models, queue depth, served, latency percentiles",
    "user": "the request's user dict",
}

# Error kinds: whether a client should try again elsewhere.
INVALID = "invalid"  # the request itself is wrong: retrying cannot help
UNAVAILABLE = "unavailable"  # no capacity / worker died / timed out: retry or fall back
INTERNAL = "internal"  # the worker failed on a valid request: retry or fall back

IMAGE_FORMATS = ("raw", "png")


class WorkerError(DiffJSCCError):
    """A worker, broker or client setting or state that does not work."""


class ProtocolError(DiffJSCCError, ValueError):
    """A message that cannot be served; carries whatever ids could be read."""

    def __init__(self, message: str, request_id=None, image_id=None, kind: str = INVALID):
        super().__init__(message)
        self.request_id = request_id
        self.image_id = image_id
        self.kind = kind


@dataclass(frozen=True)
class Limits:
    """What a worker accepts. Larger messages are refused before they are read."""

    max_message_bytes: int = 32 << 20  # refused with an error reply above this
    max_image_side: int = 8192
    max_image_pixels: int = 4096 * 4096
    max_steps: int = 1000

    @property
    def zmq_max_message_bytes(self) -> int:
        """ZMQ_MAXMSGSIZE: beyond this ZMQ drops the connection without a reply (memory guard)."""
        return 2 * self.max_message_bytes

    @property
    def max_reply_bytes(self) -> int:
        """Largest reply: a raw image and its refined twin at the pixel limit, plus metadata."""
        return 2 * 3 * self.max_image_pixels + (1 << 20)

    def read_limits(self) -> ReadLimits:
        # Each vector item takes at least a byte; truncation checks do the rest.
        return ReadLimits(max_vector_items=self.max_message_bytes)


DEFAULT_LIMITS = Limits()


@dataclass
class DecodeRequest:
    """One image's received symbols, and what the decoder must know about them."""

    request_id: int | str
    image_shape: tuple[int, int]
    snr_db: float
    symbols: np.ndarray  # complex64, 1-D, equalised (x_hat = y / h); zeros where missing
    model: str = "jscc-awgn-cbr1_384"
    image_id: int = 0
    h: complex = 1 + 0j
    refine: bool = False
    steps: int | None = None
    seed: int | None = None
    image_format: str = "raw"
    user: dict | None = None


@dataclass
class StatusRequest:
    """A ping: the reply carries the status of the broker and its workers."""

    request_id: int | str = 0


@dataclass
class DecodeReply:
    request_id: int | str | None
    image_id: int | None
    ok: bool
    error: str = ""
    error_kind: str = ""
    image: np.ndarray | None = None  # uint8 HxWx3
    refined: np.ndarray | None = None  # uint8 HxWx3 when refined
    metrics: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)
    served_by: str = ""
    status: dict | None = None  # status replies only
    user: dict | None = None

    @classmethod
    def failure(cls, request, error: str, kind: str, served_by: str = "", **timing) -> DecodeReply:
        """An explicit failure for ``request`` (a DecodeRequest, a ProtocolError or None)."""
        return cls(
            request_id=getattr(request, "request_id", None),
            image_id=getattr(request, "image_id", None),
            ok=False,
            error=error,
            error_kind=kind,
            served_by=served_by,
            timing=dict(timing),
            user=getattr(request, "user", None),
        )


# ---------------------------------------------------------------- writing


def _pdu(meta: dict, vector: np.ndarray | bytes) -> bytes:
    return dumps(Pair(meta, vector))


def encode_request(request: DecodeRequest | StatusRequest) -> bytes:
    """A request as the bytes of a serialised PDU."""
    if isinstance(request, StatusRequest):
        return _pdu({"type": "status", "request_id": request.request_id}, np.zeros(0, np.complex64))
    symbols = np.ascontiguousarray(np.asarray(request.symbols, dtype=np.complex64).reshape(-1))
    meta = {
        "request_id": request.request_id,
        "image_id": int(request.image_id),
        "model": request.model,
        "image_shape": tuple(int(v) for v in request.image_shape),
        "snr_db": float(request.snr_db),
        "h": complex(request.h),
        "refine": bool(request.refine),
        "image_format": request.image_format,
    }
    for key in ("steps", "seed", "user"):
        if getattr(request, key) is not None:
            meta[key] = getattr(request, key)
    return _pdu(meta, symbols)


def _image_bytes(image: np.ndarray, image_format: str) -> bytes:
    if image_format == "png":
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(
            buf, format="PNG", compress_level=1
        )
        return buf.getvalue()
    return np.ascontiguousarray(image, dtype=np.uint8).tobytes()


def encode_reply(reply: DecodeReply, image_format: str = "raw") -> bytes:
    """A reply as the bytes of a serialised PDU (image in the PDU's u8vector)."""
    meta: dict[str, Any] = {
        "type": "status_reply" if reply.status is not None else "decode_reply",
        "request_id": reply.request_id,
        "image_id": reply.image_id,
        "ok": bool(reply.ok),
        "error": reply.error,
        "error_kind": reply.error_kind,
        "metrics": reply.metrics,
        "timing": reply.timing,
        "served_by": reply.served_by,
    }
    if reply.status is not None:
        meta["status"] = reply.status
    if reply.user is not None:
        meta["user"] = reply.user
    payload = b""
    if reply.image is not None:
        meta["image_shape"] = tuple(int(v) for v in reply.image.shape[:2])
        meta["image_format"] = image_format
        payload = _image_bytes(reply.image, image_format)
        if reply.refined is not None:
            meta["refined"] = _image_bytes(reply.refined, image_format)
    return _pdu(meta, payload)


def encode_status_reply(request: StatusRequest, status: dict, served_by: str) -> bytes:
    """The reply to a status request; an explicit failure when a value cannot be written
    (a worker's heartbeat may carry any JSON, e.g. an integer beyond 64 bits)."""
    try:
        return encode_reply(
            DecodeReply(request.request_id, None, ok=True, served_by=served_by, status=status)
        )
    except (TypeError, ValueError) as exc:
        return encode_reply(
            DecodeReply.failure(request, f"status not writable: {exc}", INTERNAL, served_by)
        )


# ---------------------------------------------------------------- reading (no pmt)


def _read_pdu(data: bytes, limits: Limits) -> tuple[dict, Any]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(f"expected bytes, got {type(data).__name__}")
    if len(data) > limits.max_message_bytes:
        raise ProtocolError(
            f"message of {len(data)} bytes exceeds the limit of {limits.max_message_bytes} bytes"
        )
    try:
        value = loads(data, limits.read_limits())
    except PMTDecodeError as exc:
        raise ProtocolError(f"not a serialised PMT: {exc}") from None
    if not isinstance(value, Pair):
        raise ProtocolError(f"expected a PDU (pmt.cons(dict, vector)), got a PMT {_kind(value)}")
    meta = {} if value.car is None else value.car
    if not isinstance(meta, dict):
        raise ProtocolError(f"PDU metadata must be a dict, got a PMT {_kind(meta)}")
    return meta, value.cdr


def _kind(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} vector"
    return {Pair: "pair", dict: "dict", tuple: "tuple", list: "vector", str: "symbol"}.get(
        type(value), type(value).__name__
    )


def _get_int(meta: dict, key: str, default=None, low=None, high=None, ids=(None, None)):
    value = meta.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"{key!r} must be an integer, got {_kind(value)}", *ids)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ProtocolError(f"{key!r} = {value} is outside [{low}, {high}]", *ids)
    return value


def _image_shape(shape: Any, limits: Limits, ids=(None, None), whose: str = "") -> tuple[int, int]:
    """(H, W) within the limits; ``whose`` prefixes the messages ("reply ")."""
    if isinstance(shape, np.ndarray) and shape.dtype.kind in "iu":
        shape = tuple(int(v) for v in shape)
    if (
        not isinstance(shape, tuple | list)
        or len(shape) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape)
    ):
        raise ProtocolError(
            f"{whose}'image_shape' must be two integers (H, W), got {shape!r}"[:200], *ids
        )
    height, width = shape
    if not (0 < height <= limits.max_image_side and 0 < width <= limits.max_image_side):
        raise ProtocolError(
            f"{whose}image_shape {height}x{width} outside 1..{limits.max_image_side} per side",
            *ids,
        )
    if height * width > limits.max_image_pixels:
        raise ProtocolError(
            f"{whose}image_shape {height}x{width} exceeds {limits.max_image_pixels} pixels", *ids
        )
    return height, width


def decode_request(data: bytes, limits: Limits = DEFAULT_LIMITS) -> DecodeRequest | StatusRequest:
    """Read and check a request; raises ProtocolError with a reason meant for the sender."""
    meta, vector = _read_pdu(data, limits)
    request_id = meta.get("request_id", 0)
    image_id = meta.get("image_id", 0)
    ids = (
        request_id if isinstance(request_id, int | str) else None,
        image_id if isinstance(image_id, int) else None,
    )
    unknown = sorted(str(k) for k in meta if k not in REQUEST_KEYS)
    if unknown:
        raise ProtocolError(
            f"unknown metadata key(s) {', '.join(unknown)}; known: {', '.join(REQUEST_KEYS)}", *ids
        )
    if isinstance(request_id, bool) or not isinstance(request_id, int | str):
        raise ProtocolError(f"'request_id' must be an integer or a symbol, got {_kind(request_id)}")
    if isinstance(request_id, str) and len(request_id) > 128:
        raise ProtocolError("'request_id' longer than 128 characters")
    kind = meta.get("type", "decode")
    if kind == "status":
        return StatusRequest(request_id=request_id)
    if kind != "decode":
        raise ProtocolError(f'\'type\' must be "decode" or "status", got {kind!r}', *ids)
    image_id = _get_int(meta, "image_id", 0, -(2**63), 2**64 - 1, ids)

    if "model" not in meta and "cbr" not in meta:
        raise ProtocolError("missing metadata key 'model' (or 'cbr')", *ids)
    for key in ("image_shape", "snr_db"):
        if key not in meta:
            raise ProtocolError(f"missing metadata key {key!r}", *ids)
    specs = []
    for key in ("model", "cbr"):
        if key not in meta:
            continue
        value = meta[key]
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ProtocolError(
                f"{key!r} must be a symbol or a rate code, got {_kind(value)}", *ids
            )
        try:
            specs.append(get_model_spec(value))
        except ConfigError as exc:
            raise ProtocolError(str(exc), *ids) from None
    spec = specs[0]
    if any(other.name != spec.name for other in specs):
        raise ProtocolError(f"'model' {meta['model']!r} and 'cbr' {meta['cbr']!r} disagree", *ids)

    height, width = _image_shape(meta["image_shape"], limits, ids)

    snr_db = meta["snr_db"]
    if isinstance(snr_db, bool) or not isinstance(snr_db, int | float):
        raise ProtocolError(f"'snr_db' must be a number, got {_kind(snr_db)}", *ids)
    if not -50.0 <= snr_db <= 100.0:  # also refuses NaN
        raise ProtocolError(f"'snr_db' = {snr_db} is not a usable SNR (-50..100 dB)", *ids)
    h = meta.get("h", 1 + 0j)
    if isinstance(h, bool) or not isinstance(h, int | float | complex):
        raise ProtocolError(f"'h' must be a number, got {_kind(h)}", *ids)
    h = complex(h)
    if not (math.isfinite(h.real) and math.isfinite(h.imag)) or h == 0:
        raise ProtocolError(f"'h' = {h} must be finite and non-zero", *ids)
    refine = meta.get("refine", False)
    if not isinstance(refine, bool):
        raise ProtocolError(f"'refine' must be #t or #f, got {_kind(refine)}", *ids)
    steps = _get_int(meta, "steps", None, 1, limits.max_steps, ids)
    seed = _get_int(meta, "seed", None, 0, 2**63 - 1, ids)
    image_format = meta.get("image_format", "raw")
    if image_format not in IMAGE_FORMATS:
        raise ProtocolError(
            f"'image_format' must be one of {IMAGE_FORMATS}, got {image_format!r}", *ids
        )
    user = meta.get("user")
    if user is not None and not isinstance(user, dict):
        raise ProtocolError(f"'user' must be a dict, got {_kind(user)}", *ids)

    if not isinstance(vector, np.ndarray) or vector.dtype != np.complex64:
        raise ProtocolError(
            f"the PDU's vector must be a c32vector of symbols, got a PMT {_kind(vector)}", *ids
        )
    expected = spec.num_symbols(height, width)
    if vector.size != expected:
        raise ProtocolError(
            f"{spec.name} needs {expected} symbols for a {height}x{width} image, got {vector.size}",
            *ids,
        )
    bad = int(np.count_nonzero(~np.isfinite(vector)))
    if bad:
        raise ProtocolError(f"{bad} of {vector.size} symbols are NaN or infinite", *ids)
    return DecodeRequest(
        request_id=request_id,
        image_id=image_id,
        model=spec.name,
        image_shape=(height, width),
        snr_db=float(snr_db),
        h=h,
        symbols=vector,
        refine=refine,
        steps=steps,
        seed=seed,
        image_format=image_format,
        user=user,
    )


def peek_ids(data: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[Any, Any]:
    """(request_id, image_id) of a message, or (None, None) when it cannot be read."""
    try:
        meta, _ = _read_pdu(data, limits)
    except ProtocolError:
        return None, None
    return meta.get("request_id"), meta.get("image_id")


def _decode_image(raw: Any, shape: tuple[int, int], image_format: str) -> np.ndarray:
    if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8:
        raise ProtocolError(f"reply image must be a u8vector, got a PMT {_kind(raw)}")
    height, width = shape
    if image_format == "png":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(raw.tobytes())) as img:
                if img.size != (width, height):
                    raise ProtocolError(
                        f"reply PNG is {img.size[0]}x{img.size[1]}, expected {width}x{height}"
                    )
                return np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:  # PIL's "broken image" errors
            raise ProtocolError(f"reply PNG cannot be read: {exc}") from None
    if image_format != "raw":
        raise ProtocolError(f"reply 'image_format' must be one of {IMAGE_FORMATS}")
    if raw.size != height * width * 3:
        raise ProtocolError(f"reply image of {raw.size} bytes does not fit {height}x{width}x3")
    return raw.reshape(height, width, 3)


def _reply_dict(meta: dict, key: str) -> dict:
    value = meta.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"reply {key!r} must be a dict, got a PMT {_kind(value)}")
    return dict(value)


def decode_reply(data: bytes, limits: Limits = DEFAULT_LIMITS) -> DecodeReply:
    """Read a reply written by :func:`encode_reply`; anything malformed is a ProtocolError."""
    meta, vector = _read_pdu(data, Limits(max_message_bytes=limits.max_reply_bytes))
    if meta.get("type") not in ("decode_reply", "status_reply"):
        raise ProtocolError(f"not a worker reply (type {meta.get('type')!r})")
    image = refined = None
    ok = bool(meta.get("ok", False))
    if ok and meta.get("type") == "decode_reply":
        # Checked before a PNG is decoded: a small PNG may claim an enormous image.
        shape = _image_shape(meta.get("image_shape"), limits, whose="reply ")
        fmt = meta.get("image_format", "raw")
        image = _decode_image(vector, shape, fmt)
        if "refined" in meta:
            refined = _decode_image(meta["refined"], shape, fmt)
    return DecodeReply(
        request_id=meta.get("request_id"),
        image_id=meta.get("image_id"),
        ok=ok,
        error=str(meta.get("error") or ""),
        error_kind=str(meta.get("error_kind") or ""),
        image=image,
        refined=refined,
        metrics=_reply_dict(meta, "metrics"),
        timing=_reply_dict(meta, "timing"),
        served_by=str(meta.get("served_by") or ""),
        status=meta.get("status"),
        user=meta.get("user"),
    )
