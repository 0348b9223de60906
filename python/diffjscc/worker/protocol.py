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

# Every text written on the wire fits the reader's symbol limit (pmt_wire.ReadLimits,
# 256 bytes), so the project's own client reads every reply the service writes.
MAX_TEXT_BYTES = 240
TRUNCATED = "…[truncated]"


def bounded_text(text: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """``text`` cut to ``max_bytes`` of UTF-8, ending in a marker when cut."""
    if not isinstance(text, str):
        text = str(text)
    raw = text.encode("utf-8", "replace")
    if len(raw) <= max_bytes:
        return text
    keep = max_bytes - len(TRUNCATED.encode())
    return raw[:keep].decode("utf-8", "ignore") + TRUNCATED


def show(value: Any, max_chars: int = 48) -> str:
    """A short repr of a value from the wire, for refusal messages."""
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} vector of {value.size} items"
    if isinstance(value, list | tuple | dict) and len(value) > 8:
        return f"a {_kind(value)} of {len(value)} items"
    text = repr(value)
    return text if len(text) <= max_chars else text[:max_chars] + TRUNCATED


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
    # One 4096x4096 image took 29 s and 5.6 GB to decode on a CPU (issue 10): 4 Mpx
    # (2048x2048) bounds one request to about a quarter of that. Kodak images are 0.4 Mpx.
    max_image_pixels: int = 2048 * 2048
    max_steps: int = 250  # refiner sampling steps (its default is 100)
    max_user_bytes: int = 64 << 10  # the serialised 'user' dict, echoed in the reply

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


def _wire_id(value: Any) -> int | str | None:
    """An id as it may be echoed: a 64-bit integer or a short symbol, else #nil."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | np.integer) and -(2**63) <= int(value) < 2**64:
        return int(value)
    if isinstance(value, str) and len(value.encode("utf-8", "replace")) <= MAX_TEXT_BYTES:
        return value
    return None


class _Budget:
    """What is left of the reader's total-item limit (``ReadLimits.max_total_items``), in
    its units: a dict entry costs 3 (its DICT tag and its pair), a vector item 1."""

    def __init__(self, items: int):
        self.items = items


def _reader_cost(value: Any) -> int:
    """What reading ``value`` costs against the reader's total-item limit."""
    cost, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            cost += 3 * len(item)
            stack.extend(item.values())
        elif isinstance(item, list | tuple) and not isinstance(item, Pair):
            cost += len(item)
            stack.extend(item)
        elif isinstance(item, Pair):
            cost += 2
            stack.extend(item)
    return cost


def bounded_value(value: Any, depth: int = 0, budget: _Budget | None = None) -> Any:
    """A copy of plain values that the PMT writer can write and the project's reader
    can read back: texts cut to :data:`MAX_TEXT_BYTES`, containers to 128 entries and
    depth 6, integers beyond 64 bits and unknown types written as short texts; with a
    ``budget``, entries beyond it are left out (the reader's total-item limit)."""
    budget = budget or _Budget(3000)
    if value is None or isinstance(value, bool | np.bool_):
        return None if value is None else bool(value)
    if isinstance(value, int | np.integer):
        value = int(value)
        return value if -(2**63) <= value < 2**64 else bounded_text(f"{value:.3e}")
    if isinstance(value, float | np.floating):
        return float(value)
    if isinstance(value, complex | np.complexfloating):
        return complex(value)
    if isinstance(value, str):
        return bounded_text(value)
    if isinstance(value, dict | list | tuple):
        if depth >= 6:
            return TRUNCATED
        is_dict = isinstance(value, dict)
        entries = list(value.items() if is_dict else enumerate(value))[:128]
        out = []
        for key, item in entries:
            budget.items -= 3 if is_dict else 1
            if budget.items < 0:
                break
            out.append((key, bounded_value(item, depth + 1, budget)))
        if is_dict:
            return {bounded_text(str(k), 64): v for k, v in out}
        items = [v for _, v in out]
        return tuple(items) if isinstance(value, tuple) else items
    return bounded_text(f"<{type(value).__name__}>")


def _reply_meta(reply: DecodeReply) -> dict[str, Any]:
    # One budget for the whole reply: the reader refuses a PMT of more than its
    # max_total_items values, so metrics, timing and status share what the user dict
    # (bounded when its request was read) and the reply's own keys leave.
    budget = _Budget(ReadLimits().max_total_items - 96 - _reader_cost(reply.user))
    meta: dict[str, Any] = {
        "type": "status_reply" if reply.status is not None else "decode_reply",
        "request_id": _wire_id(reply.request_id),
        "image_id": _wire_id(reply.image_id),
        "ok": bool(reply.ok),
        "error": bounded_text(reply.error or ""),
        "error_kind": bounded_text(reply.error_kind or "", 32),
        "metrics": bounded_value(dict(reply.metrics or {}), budget=budget),
        "timing": bounded_value(dict(reply.timing or {}), budget=budget),
        "served_by": bounded_text(reply.served_by or "", 128),
    }
    if reply.status is not None:
        meta["status"] = bounded_value(reply.status, budget=budget)
    if reply.user is not None:
        meta["user"] = reply.user  # as the reader accepted it (size-checked there)
    return meta


def encode_reply(reply: DecodeReply, image_format: str = "raw") -> bytes:
    """A reply as the bytes of a serialised PDU (image in the PDU's u8vector).

    It cannot fail: every text is bounded, and a reply that still cannot be
    written (an unwritable ``user`` value, an image PIL refuses) becomes an
    "internal" failure reply carrying only what can be written.
    """
    try:
        meta = _reply_meta(reply)
        payload = b""
        if reply.image is not None:
            meta["image_shape"] = tuple(int(v) for v in reply.image.shape[:2])
            meta["image_format"] = image_format
            payload = _image_bytes(reply.image, image_format)
            if reply.refined is not None:
                meta["refined"] = _image_bytes(reply.refined, image_format)
        return _pdu(meta, payload)
    except Exception as exc:
        error = bounded_text(f"reply not writable: {type(exc).__name__}: {exc}")
        meta = {
            "type": "decode_reply",
            "request_id": _wire_id(getattr(reply, "request_id", None)),
            "image_id": _wire_id(getattr(reply, "image_id", None)),
            "ok": False,
            "error": error,
            "error_kind": INTERNAL,
            "metrics": {},
            "timing": {},
            "served_by": bounded_text(str(getattr(reply, "served_by", "") or ""), 128),
        }
        return _pdu(meta, b"")


def encode_status_reply(request: StatusRequest, status: dict, served_by: str) -> bytes:
    """The reply to a status request (bounded like every reply)."""
    return encode_reply(
        DecodeReply(request.request_id, None, ok=True, served_by=served_by, status=status)
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
            f"{whose}'image_shape' must be two integers (H, W), got {show(shape)}", *ids
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


MAX_SYMBOL_MAGNITUDE = 1e6
MAX_USER_VALUES = 1024  # so the echoed dict and the reply's own keys fit the reader's limits


def _count_values(value: Any, budget: int = MAX_USER_VALUES + 1) -> int:
    """Values in a container (stops counting past ``budget``)."""
    count, stack = 0, [value]
    while stack and count <= budget:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple | Pair):
            stack.extend(item)
    return count


def decode_request(data: bytes, limits: Limits = DEFAULT_LIMITS) -> DecodeRequest | StatusRequest:
    """Read and check a request; raises ProtocolError with a reason meant for the sender."""
    meta, vector = _read_pdu(data, limits)
    request_id = meta.get("request_id", 0)
    image_id = meta.get("image_id", 0)
    ids = (
        request_id if isinstance(request_id, int | str) else None,
        image_id if isinstance(image_id, int) else None,
    )
    unknown = sorted(bounded_text(str(k), 32) for k in meta if k not in REQUEST_KEYS)
    if unknown:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise ProtocolError(
            f"unknown metadata key(s) {', '.join(unknown[:3])}{more}; see docs/worker.md", *ids
        )
    if isinstance(request_id, bool) or not isinstance(request_id, int | str):
        raise ProtocolError(f"'request_id' must be an integer or a symbol, got {_kind(request_id)}")
    if isinstance(request_id, str) and len(request_id.encode()) > 128:
        raise ProtocolError("'request_id' longer than 128 bytes")
    kind = meta.get("type", "decode")
    if not isinstance(kind, str):  # before any comparison: a numpy array compares elementwise
        raise ProtocolError(f"'type' must be a symbol, got {show(kind)}", *ids)
    if kind == "status":
        return StatusRequest(request_id=request_id)
    if kind != "decode":
        raise ProtocolError(f'\'type\' must be "decode" or "status", got {show(kind)}', *ids)
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
    if not isinstance(image_format, str) or image_format not in IMAGE_FORMATS:
        raise ProtocolError(
            f"'image_format' must be one of {IMAGE_FORMATS}, got {show(image_format)}", *ids
        )
    user = meta.get("user")
    if user is not None:
        if not isinstance(user, dict):
            raise ProtocolError(f"'user' must be a dict, got {_kind(user)}", *ids)
        size = len(dumps(user))
        if size > limits.max_user_bytes:
            raise ProtocolError(
                f"'user' of {size} bytes exceeds the limit of {limits.max_user_bytes} bytes", *ids
            )
        if _count_values(user) > MAX_USER_VALUES:
            raise ProtocolError(f"'user' holds more than {MAX_USER_VALUES} values", *ids)

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
    # Symbols have unit average energy; beyond this their energy overflows float32 and
    # the decoder computes garbage (or fails the whole batch the request shares).
    if vector.size and float(np.max(np.abs(vector))) > MAX_SYMBOL_MAGNITUDE:
        raise ProtocolError(
            f"symbol magnitudes beyond {MAX_SYMBOL_MAGNITUDE:g} are not received symbols", *ids
        )
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


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, or None when it is not a PNG."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _check_image(raw: Any, shape: tuple[int, int], image_format: Any) -> None:
    """The reply's image vector fits its declared shape (a PNG by its header: no decoding)."""
    if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8:
        raise ProtocolError(f"reply image must be a u8vector, got a PMT {_kind(raw)}")
    height, width = shape
    if not isinstance(image_format, str) or image_format not in IMAGE_FORMATS:
        raise ProtocolError(f"reply 'image_format' must be one of {IMAGE_FORMATS}")
    if image_format == "png":
        size = png_size(raw[:24].tobytes())
        if size is None:
            raise ProtocolError("reply PNG cannot be read: no PNG header")
        if size != (width, height):
            raise ProtocolError(f"reply PNG is {size[0]}x{size[1]}, expected {width}x{height}")
    elif raw.size != height * width * 3:
        raise ProtocolError(f"reply image of {raw.size} bytes does not fit {height}x{width}x3")


def _decode_image(raw: Any, shape: tuple[int, int], image_format: str) -> np.ndarray:
    _check_image(raw, shape, image_format)
    height, width = shape
    if image_format == "png":
        from PIL import Image

        try:
            with Image.open(io.BytesIO(raw.tobytes())) as img:
                if img.size != (width, height):
                    raise ProtocolError(
                        f"reply PNG is {img.size[0]}x{img.size[1]}, expected {width}x{height}"
                    )
                image = np.asarray(img.convert("RGB"))
        except ProtocolError:
            raise
        except Exception as exc:  # PIL's "broken image" errors are of many kinds
            raise ProtocolError(
                bounded_text(f"reply PNG cannot be read: {type(exc).__name__}: {exc}")
            ) from None
        if image.shape != (height, width, 3):
            raise ProtocolError("reply PNG does not decode to its declared shape")
        return image
    return raw.reshape(height, width, 3)


def _reply_dict(meta: dict, key: str) -> dict:
    value = meta.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"reply {key!r} must be a dict, got a PMT {_kind(value)}")
    return dict(value)


def _reply_text(meta: dict, key: str) -> str:
    value = meta.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ProtocolError(f"reply {key!r} must be a symbol, got a PMT {_kind(value)}")
    return value


def _read_reply(meta: dict, vector: Any, limits: Limits, decode_images: bool) -> DecodeReply:
    kind = meta.get("type")
    if not isinstance(kind, str) or kind not in ("decode_reply", "status_reply"):
        raise ProtocolError(f"not a worker reply (type {show(kind)})")
    ok = meta.get("ok", False)
    if not isinstance(ok, bool):
        raise ProtocolError(f"reply 'ok' must be #t or #f, got a PMT {_kind(ok)}")
    request_id, image_id = meta.get("request_id"), meta.get("image_id")
    if isinstance(request_id, bool) or not isinstance(request_id, int | str | None):
        raise ProtocolError(
            f"reply 'request_id' must be an integer or a symbol, got {_kind(request_id)}"
        )
    if isinstance(image_id, bool) or not isinstance(image_id, int | None):
        raise ProtocolError(f"reply 'image_id' must be an integer, got {_kind(image_id)}")
    status, user = meta.get("status"), meta.get("user")
    if status is not None and not isinstance(status, dict):
        raise ProtocolError(f"reply 'status' must be a dict, got a PMT {_kind(status)}")
    if user is not None and not isinstance(user, dict):
        raise ProtocolError(f"reply 'user' must be a dict, got a PMT {_kind(user)}")
    image = refined = None
    if ok and kind == "decode_reply":
        # Checked before a PNG is decoded: a small PNG may claim an enormous image.
        shape = _image_shape(meta.get("image_shape"), limits, whose="reply ")
        fmt = meta.get("image_format", "raw")
        read = _decode_image if decode_images else _check_image
        image = read(vector, shape, fmt)
        if "refined" in meta:
            refined = read(meta["refined"], shape, fmt)
    return DecodeReply(
        request_id=request_id,
        image_id=image_id,
        ok=ok,
        error=_reply_text(meta, "error"),
        error_kind=_reply_text(meta, "error_kind"),
        image=image,
        refined=refined,
        metrics=_reply_dict(meta, "metrics"),
        timing=_reply_dict(meta, "timing"),
        served_by=_reply_text(meta, "served_by"),
        status=status,
        user=user,
    )


def decode_reply(data: bytes, limits: Limits = DEFAULT_LIMITS) -> DecodeReply:
    """Read a reply written by :func:`encode_reply`; anything malformed is a ProtocolError."""
    meta, vector = _read_pdu(data, Limits(max_message_bytes=limits.max_reply_bytes))
    return _read_reply(meta, vector, limits, decode_images=True)


def check_reply(data: bytes, limits: Limits = DEFAULT_LIMITS, request_id: Any = None) -> None:
    """What the broker checks before passing a worker's reply on: everything
    :func:`decode_reply` checks except decoding a PNG (its header must match),
    and that it answers ``request_id``. Raises ProtocolError."""
    meta, vector = _read_pdu(data, Limits(max_message_bytes=limits.max_reply_bytes))
    reply = _read_reply(meta, vector, limits, decode_images=False)
    if reply.request_id != request_id:
        raise ProtocolError(
            f"reply for request {show(reply.request_id)} where {show(request_id)} was asked"
        )
