"""The wire format: the strict PMT reader/writer and request/reply checks (no sockets)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from diffjscc.registry import get_model_spec
from diffjscc.worker import pmt_wire
from diffjscc.worker.pmt_wire import Pair, PMTDecodeError, dumps, loads
from diffjscc.worker.protocol import (
    INVALID,
    DecodeReply,
    DecodeRequest,
    Limits,
    ProtocolError,
    StatusRequest,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)

MODEL = "jscc-awgn-cbr1_384"


def symbols_for(height: int, width: int, model: str = MODEL, seed: int = 0) -> np.ndarray:
    n = get_model_spec(model).num_symbols(height, width)
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(np.complex64) / np.sqrt(2)


def request(**overrides) -> DecodeRequest:
    fields = dict(
        request_id=7, image_id=3, image_shape=(40, 56), snr_db=2.5, symbols=symbols_for(40, 56)
    )
    fields.update(overrides)
    return DecodeRequest(**fields)


# ---------------------------------------------------------------- against GNU Radio's pmt

try:  # GNU Radio's pmt is the reference for the wire format; the rest runs without it
    import pmt
except ImportError:
    pmt = None
needs_pmt = pytest.mark.skipif(pmt is None, reason="needs GNU Radio's pmt module")


def _reference(value):
    """The same value built with GNU Radio's pmt API."""
    if isinstance(value, Pair):
        return pmt.cons(_reference(value.car), _reference(value.cdr))
    if isinstance(value, dict):
        out = pmt.make_dict()
        for key, item in value.items():
            out = pmt.dict_add(out, pmt.intern(key), _reference(item))
        return out
    if isinstance(value, bytes):
        return pmt.init_u8vector(len(value), list(value))
    if isinstance(value, np.ndarray):
        names = {
            "u1": "u8",
            "i1": "s8",
            "u2": "u16",
            "i2": "s16",
            "u4": "u32",
            "i4": "s32",
            "u8": "u64",
            "i8": "s64",
            "f4": "f32",
            "f8": "f64",
            "c8": "c32",
            "c16": "c64",
        }
        init = getattr(pmt, f"init_{names[value.dtype.str[1:]]}vector")
        return init(value.size, value.tolist())
    if isinstance(value, tuple):
        return pmt.make_tuple(*[_reference(v) for v in value])
    if isinstance(value, list):
        vec = pmt.make_vector(len(value), pmt.PMT_NIL)
        for i, item in enumerate(value):
            pmt.vector_set(vec, i, _reference(item))
        return vec
    if isinstance(value, int) and not isinstance(value, bool) and value >= 2**63:
        return pmt.from_uint64(value)
    return pmt.to_pmt(value)


VALUES = [
    None,
    True,
    False,
    0,
    -(2**31),
    2**31,
    -(2**40),
    2**63 + 5,
    1.25,
    -0.0,
    1 - 2j,
    "",
    "request-äö",
    b"\x00\x01\xff",
    (1, "x", 2.5),
    (),
    [1, [2, "y"]],
    {"a": 1, "b": {"c": (1, 2)}, "d": "e"},
    *[
        np.arange(5).astype(dt)
        for dt in ("u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8")
    ],
    np.array([1 + 2j, -3j], dtype=np.complex64),
    np.array([1 + 2j], dtype=np.complex128),
    Pair({"request_id": 5, "image_shape": (32, 48)}, np.zeros(6, np.complex64)),
]


@needs_pmt
@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_writer_matches_pmt_byte_for_byte(value):
    assert dumps(value) == pmt.serialize_str(_reference(value))


@needs_pmt
@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_reader_reads_what_pmt_writes(value):
    back = loads(pmt.serialize_str(_reference(value)))
    if isinstance(value, np.ndarray):
        assert back.dtype == value.dtype and np.array_equal(back, value)
    elif isinstance(value, bytes):
        assert back.tobytes() == value
    elif isinstance(value, Pair):
        assert back.car == value.car and np.array_equal(back.cdr, value.cdr)
    else:
        assert back == value


@needs_pmt
def test_request_bytes_are_what_a_gnuradio_pdu_serialises_to():
    req = request(request_id="r1", h=0.5 - 0.25j, refine=True, steps=10, seed=4, user={"run": 2})
    wire = encode_request(req)
    pdu = pmt.deserialize_str(wire)  # our bytes are valid input for GNU Radio
    assert pmt.is_pair(pdu) and pmt.is_c32vector(pmt.cdr(pdu))
    meta = pmt.to_python(pmt.car(pdu))
    assert meta["request_id"] == "r1" and meta["image_shape"] == (40, 56) and meta["refine"] is True
    assert np.array_equal(pmt.c32vector_elements(pmt.cdr(pdu)), req.symbols)
    # ... and a PDU built with pmt is a valid request.
    again = decode_request(pmt.serialize_str(pdu))
    assert again.request_id == "r1" and again.h == 0.5 - 0.25j and again.steps == 10
    assert np.array_equal(again.symbols, req.symbols)


# ---------------------------------------------------------------- hostile bytes


def test_reader_refuses_what_crashes_or_hangs_pmt():
    # pmt.deserialize_str segfaults on the first and spins for minutes on the others.
    with pytest.raises(PMTDecodeError, match="nested deeper"):
        loads(b"\x07" * 100_000 + b"\x06" * 100_001)
    with pytest.raises(PMTDecodeError, match="exceeds the limit"):
        loads(b"\x0a\x0a" + struct.pack(">I", 0xFFFFFFF0) + b"\x01\x00" + b"\x00" * 16)
    with pytest.raises(PMTDecodeError, match="exceeds the limit"):
        loads(b"\x0c" + struct.pack(">I", 0xFFFFFFF0) + b"\x03\x00\x00\x00\x01")
    with pytest.raises(PMTDecodeError, match="claims 200 items"):
        loads(b"\x0c" + struct.pack(">I", 200) + b"\x03\x00\x00\x00\x01")
    with pytest.raises(PMTDecodeError, match="truncated"):
        loads(b"\x0a\x0a" + struct.pack(">I", 100) + b"\x01\x00" + b"\x00" * 16)


def test_reader_survives_random_bytes():
    rng = np.random.default_rng(1)
    for _ in range(3000):
        data = rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes()
        try:
            loads(data)
        except PMTDecodeError:
            pass


def test_reader_survives_mutated_requests():
    wire = bytearray(encode_request(request()))
    rng = np.random.default_rng(2)
    for _ in range(1000):
        mutated = bytearray(wire)
        for pos in rng.integers(0, len(mutated), 3):
            mutated[pos] = int(rng.integers(0, 256))
        try:
            decode_request(bytes(mutated[: int(rng.integers(1, len(mutated) + 1))]))
        except ProtocolError:
            pass


def test_long_dicts_do_not_count_as_nesting():
    meta = {f"k{i}": i for i in range(200)}
    assert loads(dumps(meta)) == meta


# ---------------------------------------------------------------- requests


def test_request_round_trip():
    req = request(
        request_id="abc",
        h=0.8 + 0.6j,
        refine=True,
        steps=20,
        seed=9,
        image_format="png",
        user={"x": [1, 2]},
    )
    back = decode_request(encode_request(req))
    assert back.request_id == "abc" and back.image_id == 3 and back.model == MODEL
    assert back.image_shape == (40, 56) and back.snr_db == 2.5 and back.h == 0.8 + 0.6j
    assert back.refine and back.steps == 20 and back.seed == 9 and back.image_format == "png"
    assert back.user == {"x": [1, 2]}
    assert back.symbols.dtype == np.complex64 and np.array_equal(back.symbols, req.symbols)


@pytest.mark.parametrize("model", ["1/384", 1, "jscc-awgn-cbr1_384"])
def test_model_by_name_cbr_or_rate_code(model):
    assert decode_request(encode_request(request(model=model))).model == MODEL


def test_cbr_key_names_or_checks_the_model():
    meta = {"request_id": 1, "cbr": "1/384", "image_shape": (40, 56), "snr_db": 1.0}
    assert decode_request(_pdu(meta, GOOD_SYMBOLS)).model == MODEL
    with pytest.raises(ProtocolError, match="disagree"):
        decode_request(_pdu({**meta, "model": "1/96"}, GOOD_SYMBOLS))


def test_status_request():
    assert decode_request(encode_request(StatusRequest(request_id=5))) == StatusRequest(
        request_id=5
    )


def _pdu(meta: dict, vector) -> bytes:
    return dumps(Pair(meta, vector))


def _meta(**overrides) -> dict:
    meta = {"request_id": 1, "model": MODEL, "image_shape": (40, 56), "snr_db": 1.0}
    meta.update(overrides)
    return {k: v for k, v in meta.items() if v is not None}


GOOD_SYMBOLS = symbols_for(40, 56)

MALFORMED = {
    "random bytes": (bytes(range(15, 79)), "not a serialised PMT"),
    "not a pdu": (dumps({"request_id": 1}), "expected a PDU"),
    "metadata not a dict": (_pdu((1, 2), GOOD_SYMBOLS), "metadata must be a dict"),
    "float vector": (_pdu(_meta(), GOOD_SYMBOLS.view(np.float32)), "c32vector"),
    "u8 vector": (_pdu(_meta(), b"abc"), "c32vector"),
    "wrong symbol count": (_pdu(_meta(), GOOD_SYMBOLS[:-1]), f"needs {GOOD_SYMBOLS.size} symbols"),
    "nan symbols": (
        _pdu(
            _meta(),
            np.where(np.arange(GOOD_SYMBOLS.size) == 3, np.nan, GOOD_SYMBOLS).astype(np.complex64),
        ),
        "NaN",
    ),
    "inf symbols": (
        _pdu(_meta(), np.full(GOOD_SYMBOLS.size, np.inf, np.complex64)),
        "are NaN or infinite",
    ),
    "huge shape": (_pdu(_meta(image_shape=(100000, 100000)), GOOD_SYMBOLS), "outside 1..8192"),
    "too many pixels": (
        _pdu(_meta(image_shape=(8000, 8000)), GOOD_SYMBOLS),
        "exceeds 4194304 pixels",
    ),
    "zero shape": (_pdu(_meta(image_shape=(0, 5)), GOOD_SYMBOLS), "outside"),
    "shape of three": (_pdu(_meta(image_shape=(1, 2, 3)), GOOD_SYMBOLS), "two integers"),
    "shape of floats": (_pdu(_meta(image_shape=(1.0, 2.0)), GOOD_SYMBOLS), "two integers"),
    "unknown key": (_pdu(_meta(colour="red"), GOOD_SYMBOLS), "unknown metadata key(s) colour"),
    "unknown model": (_pdu(_meta(model="jscc-foo"), GOOD_SYMBOLS), "unknown JSCC model"),
    "missing model": (
        _pdu(_meta(model=None), GOOD_SYMBOLS),
        "missing metadata key 'model' (or 'cbr')",
    ),
    "missing snr": (_pdu(_meta(snr_db=None), GOOD_SYMBOLS), "missing metadata key 'snr_db'"),
    "nan snr": (_pdu(_meta(snr_db=float("nan")), GOOD_SYMBOLS), "not a usable SNR"),
    "string snr": (_pdu(_meta(snr_db="high"), GOOD_SYMBOLS), "must be a number"),
    "zero h": (_pdu(_meta(h=0j), GOOD_SYMBOLS), "non-zero"),
    "refine not bool": (_pdu(_meta(refine=1), GOOD_SYMBOLS), "#t or #f"),
    "steps too many": (_pdu(_meta(steps=10**6), GOOD_SYMBOLS), "outside"),
    "bad format": (_pdu(_meta(image_format="jpeg"), GOOD_SYMBOLS), "image_format"),
    "bad type": (_pdu(_meta(type="train"), GOOD_SYMBOLS), "'type' must be"),
    "request id list": (_pdu(_meta(request_id=[1]), GOOD_SYMBOLS), "request_id"),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_requests_are_refused_with_a_reason(case):
    data, reason = MALFORMED[case]
    with pytest.raises(ProtocolError) as err:
        decode_request(data)
    assert reason in str(err.value)
    assert err.value.kind == INVALID


def test_refusals_carry_the_ids_they_could_read():
    with pytest.raises(ProtocolError) as err:
        decode_request(_pdu(_meta(request_id="r9", image_id=4), GOOD_SYMBOLS[:5]))
    assert err.value.request_id == "r9" and err.value.image_id == 4


def test_oversized_message_is_refused_before_reading():
    limits = Limits(max_message_bytes=1000)
    with pytest.raises(ProtocolError, match="exceeds the limit of 1000 bytes"):
        decode_request(b"\x00" * 1001, limits)


def test_metadata_dict_from_an_empty_pmt_dict_is_accepted_for_status():
    # pmt.make_dict() serialises as #nil: a PDU with an empty dict is still a PDU.
    with pytest.raises(ProtocolError, match="missing metadata key 'model'"):
        decode_request(_pdu({}, GOOD_SYMBOLS))


# ---------------------------------------------------------------- replies


@pytest.mark.parametrize("image_format", ["raw", "png"])
def test_reply_round_trip(image_format):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    refined = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    reply = DecodeReply(
        request_id="a",
        image_id=2,
        ok=True,
        image=image,
        refined=refined,
        metrics={"model": MODEL, "symbol_power": 1.0},
        timing={"decode_ms": 3.5, "batch_size": 2},
        served_by="host:1",
        user={"k": "v"},
    )
    back = decode_reply(encode_reply(reply, image_format))
    assert back.ok and back.request_id == "a" and back.image_id == 2 and back.served_by == "host:1"
    assert np.array_equal(back.image, image) and np.array_equal(back.refined, refined)
    assert back.metrics == reply.metrics and back.timing == reply.timing and back.user == {"k": "v"}


def test_failure_reply_round_trip():
    back = decode_reply(encode_reply(DecodeReply.failure(None, "bad thing", INVALID, "broker")))
    assert not back.ok and back.error == "bad thing" and back.error_kind == INVALID
    assert back.request_id is None and back.image is None


BAD_REPLIES = {
    "no shape": ({}, b"abc", "must be two integers"),
    "shape not two integers": ({"image_shape": "xy"}, b"abc", "must be two integers"),
    "negative side": ({"image_shape": (2, -2)}, b"abc", "outside 1..8192"),
    "huge PNG claimed": (
        {"image_shape": (8000, 8000), "image_format": "png"},
        b"abc",
        "exceeds 4194304 pixels",
    ),
    "not a PNG": ({"image_shape": (2, 2), "image_format": "png"}, b"abc", "cannot be read"),
    "unknown format": ({"image_shape": (2, 2), "image_format": "jpg"}, bytes(12), "image_format"),
    "metrics not a dict": ({"image_shape": (2, 2), "metrics": 5}, bytes(12), "'metrics'"),
}


@pytest.mark.parametrize("case", list(BAD_REPLIES), ids=list(BAD_REPLIES))
def test_malformed_replies_are_protocol_errors(case):
    meta, vector, reason = BAD_REPLIES[case]
    data = _pdu({"type": "decode_reply", "ok": True, **meta}, np.frombuffer(vector, np.uint8))
    with pytest.raises(ProtocolError, match=reason):
        decode_reply(data)


@needs_pmt
def test_reply_is_a_pdu_gnuradio_reads():
    image = np.zeros((16, 16, 3), np.uint8)
    pdu = pmt.deserialize_str(encode_reply(DecodeReply(1, 2, True, image=image)))
    assert pmt.is_u8vector(pmt.cdr(pdu)) and pmt.length(pmt.cdr(pdu)) == 16 * 16 * 3
    assert pmt.to_python(pmt.dict_ref(pmt.car(pdu), pmt.intern("image_shape"), pmt.PMT_NIL)) == (
        16,
        16,
    )


def test_reader_module_does_not_import_gnuradio():
    assert "pmt" not in pmt_wire.__dict__
