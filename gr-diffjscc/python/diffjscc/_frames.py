#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""What the blocks share: frame settings, and received frames <-> PDUs.

A received frame leaves the receiver as a PDU, the convention of gr-ieee802-11
and friends: ``pmt.cons(metadata dict, c32vector of equalised symbols)``.
"""

from __future__ import annotations

import ctypes
import itertools
import math
import numbers
import struct

import numpy as np
import pmt

from diffjscc.errors import DiffJSCCError


class BadPDU(DiffJSCCError, ValueError):
    """A message that is not a well-formed received-frame PDU."""


# A frame PDU is refused before it is converted when it is larger than any frame can be:
# the payload limit of the frame header, and a metadata dict of a few dozen fields.
MAX_PDU_SYMBOLS = 65535
MAX_META_FIELDS = 64
# Reported SNRs outside this range are not estimates (and overflow 10 ** (snr / 10)).
SNR_RANGE_DB = (-100.0, 100.0)
# |h| beyond this is not a channel gain of a unit-power source.
MAX_GAIN = 1e6


def frame_config(sps=2, rolloff=0.35, pilot_spacing=0, max_payload_symbols=0, header_version=0):
    """A ``diffjscc.radio.FrameConfig``; 0 for the spacing, payload size or header version
    means the default."""
    from diffjscc.radio import FrameConfig

    kwargs = {"sps": int(sps), "rolloff": float(rolloff)}
    if pilot_spacing:
        kwargs["pilot_spacing"] = int(pilot_spacing)
    if max_payload_symbols:
        kwargs["max_payload_symbols"] = int(max_payload_symbols)
    if header_version:
        kwargs["header_version"] = int(header_version)
    return FrameConfig(**kwargs)  # ConfigError with the reason when a value does not fit


def _plain(value):
    """numpy scalars and arrays -> the plain Python values pmt.to_pmt understands."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def meta_to_pmt(meta: dict):
    """A dict of plain values (numpy scalars and arrays welcome) -> PMT, exactly what
    ``pmt.to_pmt`` makes of it with numpy values made plain (arrays become vectors)."""
    return _to_pmt(meta)


# Key symbols already interned (a frame's meta has about 20 keys, always the same).
_KEY_SYMBOLS: dict[str, object] = {}
_MAX_KEY_SYMBOLS = 256


def _key_symbol(key) -> object:
    key = str(key)
    symbol = _KEY_SYMBOLS.get(key)
    if symbol is None:
        symbol = pmt.string_to_symbol(key)
        if len(_KEY_SYMBOLS) < _MAX_KEY_SYMBOLS:
            _KEY_SYMBOLS[key] = symbol
    return symbol


def _to_pmt(value):
    """``pmt.to_pmt(_plain(value))`` by exact type first: pmt's own converter tries
    every type in turn through Python wrappers, 0.2 ms for a frame's metadata."""
    kind = type(value)
    if kind is float:
        return pmt.from_double(value)
    if kind is int:
        return pmt.from_long(value)
    if kind is bool:
        return pmt.from_bool(value)
    if kind is str:
        return pmt.string_to_symbol(value)
    if kind is complex:
        return pmt.from_complex(value)
    if kind is dict:
        out = pmt.make_dict()
        for k, v in value.items():
            out = pmt.dict_add(out, _key_symbol(k), _to_pmt(v))
        return out
    if kind is list:
        out = pmt.make_vector(len(value), pmt.PMT_NIL)
        for i, v in enumerate(value):
            pmt.vector_set(out, i, _to_pmt(v))
        return out
    if kind is tuple:
        return pmt.make_tuple(*(_to_pmt(v) for v in value))
    if isinstance(value, (np.generic, np.ndarray)):
        return _to_pmt(_plain(value))
    return pmt.to_pmt(_plain(value))  # None, subclasses: pmt's rules


def _c32vector_by_list(symbols: np.ndarray):
    # From a list: the bindings take a numpy array element by element, 7x slower.
    return pmt.init_c32vector(symbols.size, symbols.tolist())


# A c32vector deserialised from PMT's wire format (tag, type, big-endian length, one
# pad byte, big-endian floats) costs half of building it from a list; checked once
# against the list route, which is used if the two ever differ.
_C32_HEADER = bytes([0x0A, 0x0A])
_C32_PAD = bytes([0x01, 0x00])


def _c32vector_by_bytes(symbols: np.ndarray):
    head = _C32_HEADER + symbols.size.to_bytes(4, "big") + _C32_PAD
    return pmt.deserialize_str(head + symbols.astype(">c8").tobytes())


# Fastest of all: a vector made by PMT and the symbols copied into its storage, whose
# address the bindings hand out in a capsule (``uniform_vector_writable_elements``):
# 7 us for 3072 symbols, against 30 us through the wire format. Trusted only where a
# probe reads back through that address what PMT holds (``_storage_address_works``).
_capsule_name = ctypes.pythonapi.PyCapsule_GetName
_capsule_name.restype = ctypes.c_char_p
_capsule_name.argtypes = [ctypes.py_object]
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def _storage_address(vector) -> int:
    capsule = pmt.uniform_vector_writable_elements(vector, 0)
    return _capsule_pointer(capsule, _capsule_name(capsule))


def _uniform_vector_by_memory(make, values: np.ndarray):
    vector = make(values.size, 0)
    if values.size:
        ctypes.memmove(_storage_address(vector), values.ctypes.data, values.nbytes)
    return vector


def _c32vector_by_memory(symbols: np.ndarray):
    symbols = np.ascontiguousarray(symbols, dtype=np.complex64)
    return _uniform_vector_by_memory(pmt.make_c32vector, symbols)


def _f32vector_by_memory(values: np.ndarray):
    values = np.ascontiguousarray(values, dtype=np.float32)
    return _uniform_vector_by_memory(pmt.make_f32vector, values)


def _storage_address_works() -> bool:
    """The capsule's address is the vectors' elements: read before anything is written."""
    try:
        for make, fill, dtype in (
            (pmt.make_c32vector, 1.5 - 2.25j, np.complex64),
            (pmt.make_f32vector, -0.75, np.float32),
        ):
            vector = make(3, fill)
            seen = ctypes.string_at(_storage_address(vector), 3 * np.dtype(dtype).itemsize)
            if seen != np.full(3, fill, dtype).tobytes():
                return False
        return True
    except Exception:  # noqa: BLE001 - bindings without the capsule: not usable
        return False


def _c32vector_route():
    probe = np.array([1 + 2j, -3.5 + 0j, 0.25 - 1e-3j], dtype=np.complex64)
    routes = ([_c32vector_by_memory] if _storage_address_works() else []) + [_c32vector_by_bytes]
    for route in routes:
        try:
            if pmt.equal(route(probe), _c32vector_by_list(probe)):
                return route
        except Exception:  # noqa: BLE001 - any failure means: the next route
            pass
    return _c32vector_by_list


c32vector = _c32vector_route()


# PMT's wire format (pmt_serialize.cc) for the plain values of a frame's metadata:
# a PDU written as bytes and deserialised in one call costs a quarter of building
# it from some forty pmt calls. Checked once against those calls (``_pdu_route``).
_PST_TRUE, _PST_FALSE, _PST_SYMBOL, _PST_INT32, _PST_DOUBLE = (
    b"\x00",
    b"\x01",
    b"\x02",
    b"\x03",
    b"\x04",
)
_PST_COMPLEX, _PST_NULL, _PST_PAIR, _PST_VECTOR, _PST_DICT = (
    b"\x05",
    b"\x06",
    b"\x07",
    b"\x08",
    b"\x09",
)
_PST_INT64 = b"\x0d"
_F32_HEADER = bytes([0x0A, 0x08])  # uniform vector of float32
_INT32 = struct.Struct(">i")
_INT64 = struct.Struct(">q")
_DOUBLE = struct.Struct(">d")
_COMPLEX = struct.Struct(">dd")
_LENGTH16 = struct.Struct(">H")
_LENGTH32 = struct.Struct(">I")


class _NotPlain(Exception):
    """A value the byte route does not write (it goes through the pmt calls)."""


_KEY_BYTES: dict[str, bytes] = {}  # dictionary keys written already (a frame's are always the same)


def _symbol_bytes(text: str) -> bytes:
    data = text.encode()
    if len(data) > 0xFFFF:
        raise _NotPlain
    return _PST_SYMBOL + _LENGTH16.pack(len(data)) + data


def _entry_bytes(key) -> bytes:
    """A dictionary entry's start: PST_DICT, PST_PAIR and the key's symbol."""
    key = str(key)
    out = _KEY_BYTES.get(key)
    if out is None:
        out = _PST_DICT + _PST_PAIR + _symbol_bytes(key)
        if len(_KEY_BYTES) < _MAX_KEY_SYMBOLS:
            _KEY_BYTES[key] = out
    return out


def _big_endian_bytes(values: np.ndarray) -> bytes:
    """float32 (or complex64, part by part) values as big-endian bytes: a byte swap
    of the 4-byte words, several times faster than numpy's cast to '>f4'."""
    words = np.ascontiguousarray(values).view(np.uint32)
    return (words.byteswap() if np.little_endian else words).tobytes()


def _serialise(value, out: list) -> None:
    """Append the wire bytes of ``value`` as ``_to_pmt`` would make it."""
    kind = type(value)
    if kind is float:
        out.append(_PST_DOUBLE + _DOUBLE.pack(value))
    elif kind is bool:
        out.append(_PST_TRUE if value else _PST_FALSE)
    elif kind is int:
        if -(1 << 31) <= value < (1 << 31):
            out.append(_PST_INT32 + _INT32.pack(value))
        elif -(1 << 63) <= value < (1 << 63):
            out.append(_PST_INT64 + _INT64.pack(value))
        else:
            raise _NotPlain
    elif kind is str:
        out.append(_symbol_bytes(value))
    elif kind is complex:
        out.append(_PST_COMPLEX + _COMPLEX.pack(value.real, value.imag))
    elif kind is list:
        out.append(_PST_VECTOR + _LENGTH32.pack(len(value)))
        for v in value:
            _serialise(v, out)
    elif kind is dict:
        # pmt.dict_add puts a new key first: the entries in reverse order of insertion.
        for k, v in reversed(value.items()):
            out.append(_entry_bytes(k))
            _serialise(v, out)
        out.append(_PST_NULL)
    elif isinstance(value, np.generic):
        _serialise(value.item(), out)
    else:
        raise _NotPlain


def _f32vector_bytes(values: np.ndarray) -> bytes:
    return _F32_HEADER + values.size.to_bytes(4, "big") + _C32_PAD + _big_endian_bytes(values)


def _pdu_by_calls(meta: dict, symbols: np.ndarray, noise: np.ndarray | None):
    meta_pmt = meta_to_pmt(meta)
    if noise is not None:
        # An f32vector from the array, not a list of thousands of pmt numbers: that cost
        # 17 ms a frame, most of the OFDM receiver block's time.
        meta_pmt = pmt.dict_add(meta_pmt, pmt.intern("symbol_noise_var"), pmt.to_pmt(noise))
    return pmt.cons(meta_pmt, c32vector(symbols))


def _pdu_by_bytes(meta: dict, symbols: np.ndarray, noise: np.ndarray | None):
    try:
        out = [_PST_PAIR]
        if noise is not None:
            out.append(_entry_bytes("symbol_noise_var"))
            out.append(_f32vector_bytes(noise))
        _serialise(meta, out)
    except _NotPlain:
        return _pdu_by_calls(meta, symbols, noise)
    out.append(_C32_HEADER + symbols.size.to_bytes(4, "big") + _C32_PAD)
    out.append(_big_endian_bytes(symbols))
    return pmt.deserialize_str(b"".join(out))


# A flat dictionary's scalar entries: the bytes before the value, per key and tag, so that
# an entry is one lookup and one pack (a frame's metadata is some 20 of them; the general
# writer's call per value cost twice as much).
_SCALAR_PREFIX: dict[tuple[str, bytes], bytes] = {}


def _scalar_prefix(key: str, tag: bytes) -> bytes:
    prefix = _SCALAR_PREFIX.get((key, tag))
    if prefix is None:
        prefix = _entry_bytes(key) + tag
        if len(_SCALAR_PREFIX) < _MAX_KEY_SYMBOLS:
            _SCALAR_PREFIX[(key, tag)] = prefix
    return prefix


def _flat_dict_bytes(meta: dict) -> bytes:
    """``_serialise(meta)``'s bytes, the scalar values written in line."""
    out = []
    append = out.append
    for key, value in reversed(meta.items()):
        kind = type(value)
        if kind is float:
            append(_scalar_prefix(key, _PST_DOUBLE) + _DOUBLE.pack(value))
        elif kind is int and -(1 << 31) <= value < (1 << 31):
            append(_scalar_prefix(key, _PST_INT32) + _INT32.pack(value))
        elif kind is complex:
            append(_scalar_prefix(key, _PST_COMPLEX) + _COMPLEX.pack(value.real, value.imag))
        else:
            append(_entry_bytes(key))
            _serialise(value, out)
    append(_PST_NULL)
    return b"".join(out)


def _meta_by_bytes(meta: dict):
    if type(meta) is not dict:
        raise _NotPlain
    return pmt.deserialize_str(_flat_dict_bytes(meta))


def _pdu_by_memory(meta: dict, symbols: np.ndarray, noise: np.ndarray | None):
    """The metadata from its wire bytes, the vectors copied into PMT's storage."""
    try:
        meta_pmt = _meta_by_bytes(meta)
    except _NotPlain:
        meta_pmt = meta_to_pmt(meta)
    return _pdu_with_vectors(meta_pmt, symbols, noise)


def _pdu_from_meta_bytes(meta_bytes: bytes, symbols: np.ndarray, noise: np.ndarray | None):
    return _pdu_with_vectors(pmt.deserialize_str(meta_bytes), symbols, noise)


def _pdu_with_vectors(meta_pmt, symbols: np.ndarray, noise: np.ndarray | None):
    if noise is not None:
        meta_pmt = pmt.dict_add(
            meta_pmt, _key_symbol("symbol_noise_var"), _f32vector_by_memory(noise)
        )
    return pmt.cons(meta_pmt, _c32vector_by_memory(symbols))


def _pdu_route():
    probe = {
        "image_id": 3,
        "big": 1 << 40,
        "model": "jscc",
        "image_shape": [512, 768],
        "snr_db": -1.25,
        "h": 0.5 - 0.25j,
        "complete": True,
        "partial": False,
        "received_ranges": [[0, 10], [20, 30]],
        "nested": {"a": 1.0},
    }
    symbols = np.array([1 + 2j, -3.5 + 0j], dtype=np.complex64)
    noise = np.array([0.5, 2.0], dtype=np.float32)
    routes = ([_pdu_by_memory] if _storage_address_works() else []) + [_pdu_by_bytes]
    for route in routes:
        try:
            if all(
                pmt.equal(route(probe, symbols, n), _pdu_by_calls(probe, symbols, n))
                for n in (None, noise)
            ):
                return route
        except Exception:  # noqa: BLE001 - any failure means: the next route
            pass
    return _pdu_by_calls


_make_pdu = _pdu_route()


# A complete frame's metadata, as wire bytes, is mostly the same from frame to frame of
# one image shape and rate: the keys, the model, shape, counts and received ranges. Those
# are written once per such kind of frame (a template) and only the per-frame fields
# packed for each frame, in one call: 3 us against 10 (``meta()``) + 7 (writing its bytes)
# in a loop, twice that in the GNU Radio chain. A template is made from ``meta()`` itself
# and used only when its keys are these and ``meta()``'s, and its first frame's bytes are
# ``meta()``'s bytes; any other frame takes the general route. The layout: ``meta()``'s
# keys in its order, True where a key is packed per frame.
_META_LAYOUT = (
    ("image_id", True),
    ("frame_index", True),
    ("frame_count", False),
    ("rate_code", False),
    ("model", False),
    ("image_shape", False),
    ("design_snr_db", True),
    ("snr_db", True),
    ("h", True),
    ("cfo", True),
    ("timing", True),
    ("noise_var", True),
    ("num_known", True),
    ("num_symbols", False),
    ("sample_rate_offset", True),
    ("h_sample", True),
    ("complete", False),
    ("received_symbols", False),
    ("received_ranges", False),
    ("waveform", False),
)
_META_KEYS = tuple(key for key, _ in _META_LAYOUT)
_PER_FRAME_FIELDS = frozenset(key for key, per_frame in _META_LAYOUT if per_frame)
_FIELD_CODES = {float: ("d", _PST_DOUBLE), int: ("i", _PST_INT32), complex: ("dd", _PST_COMPLEX)}


class _MetaTemplate:
    """The wire bytes of a complete frame's metadata with its per-frame fields left
    open: ``pack(frame)`` fills them in (struct.error or TypeError where one does not
    fit the template's type, e.g. an integer beyond 32 bits)."""

    __slots__ = ("_struct", "_prefixes", "_names", "_complex", "_tail")

    def __init__(self, meta: dict):
        prefixes, names, codes = [], [], [">"]
        constant = []
        for key, value in reversed(meta.items()):
            if key not in _PER_FRAME_FIELDS:
                constant.append(_entry_bytes(key))
                _serialise(value, constant)
                continue
            code, tag = _FIELD_CODES[type(value)]
            prefixes.append(b"".join([*constant, _entry_bytes(key), tag]))
            constant = []
            names.append(key)
            if code == "dd":  # the imaginary part follows the real part, no bytes between
                prefixes.append(b"")
                codes.append(f"{len(prefixes[-2])}sd0sd")
            else:
                codes.append(f"{len(prefixes[-1])}s{code}")
        constant.append(_PST_NULL)
        self._tail = b"".join(constant)
        self._struct = struct.Struct("".join(codes))
        self._prefixes = tuple(prefixes)
        self._names = tuple(names)
        self._complex = names.index("h")

    def pack(self, frame) -> bytes:
        values = [getattr(frame, name) for name in self._names]
        h = complex(values[self._complex])
        values[self._complex : self._complex + 1] = (h.real, h.imag)
        fields = itertools.chain.from_iterable(zip(self._prefixes, values, strict=True))
        return self._struct.pack(*fields) + self._tail


_META_TEMPLATES: dict[tuple, _MetaTemplate | None] = {}
_MAX_META_TEMPLATES = 256
_RECEIVED_FRAME: list[type] = []


def _received_frame_type() -> type:
    """``diffjscc.radio.ReceivedFrame``, imported on first use (as ``pdu_to_frame`` does)."""
    if not _RECEIVED_FRAME:
        from diffjscc.radio.frame import ReceivedFrame

        _RECEIVED_FRAME.append(ReceivedFrame)
    return _RECEIVED_FRAME[0]


def _complete_meta_bytes(frame) -> bytes | None:
    """``_flat_dict_bytes(frame.meta(symbol_noise=False))`` from a template, for a
    complete ``ReceivedFrame``; None where the general route must write them."""
    if type(frame) is not _received_frame_type() or frame.received_mask is not None:
        return None
    try:
        kind = (
            frame.rate_code,
            frame.image_shape,
            frame.frame_count,
            np.size(frame.symbols),
            frame.waveform,
        )
        template = _META_TEMPLATES.get(kind, False)
        if template is False:
            template = _new_template(frame, kind)
        return None if template is None else template.pack(frame)
    except (TypeError, ValueError, KeyError, OverflowError, struct.error):
        return None


def _new_template(frame, kind: tuple) -> _MetaTemplate | None:
    meta = frame.meta(symbol_noise=False)
    template = None
    if tuple(meta) == _META_KEYS and all(
        type(meta[key]) in _FIELD_CODES for key in _PER_FRAME_FIELDS
    ):
        template = _MetaTemplate(meta)
        if template.pack(frame) != _flat_dict_bytes(meta):
            template = None
    if len(_META_TEMPLATES) < _MAX_META_TEMPLATES:
        _META_TEMPLATES[kind] = template
    return template


def frame_to_pdu(frame):
    """A ``ReceivedFrame`` -> PDU (metadata dict, equalised symbols)."""
    symbols = np.asarray(frame.symbols, dtype=np.complex64).reshape(-1)
    noise = None
    if frame.symbol_noise_var is not None:
        noise = np.ascontiguousarray(frame.symbol_noise_var, dtype=np.float32).reshape(-1)
    if _make_pdu is _pdu_by_memory:
        meta_bytes = _complete_meta_bytes(frame)
        if meta_bytes is not None:
            return _pdu_from_meta_bytes(meta_bytes, symbols, noise)
    return _make_pdu(frame.meta(symbol_noise=False), symbols, noise)


def pdu_parts(pdu) -> tuple[dict, np.ndarray]:
    """PDU -> (metadata as a Python dict, complex64 symbols); BadPDU if malformed."""
    if not pmt.is_pair(pdu):
        raise BadPDU("not a PDU (a pair of metadata and vector)")
    meta_pmt, vector = pmt.car(pdu), pmt.cdr(pdu)
    if not pmt.is_dict(meta_pmt):
        raise BadPDU("PDU metadata is not a dictionary")
    if not pmt.is_c32vector(vector):
        raise BadPDU("PDU payload is not a c32vector")
    if pmt.length(vector) > MAX_PDU_SYMBOLS:
        raise BadPDU(f"PDU of {pmt.length(vector)} symbols; a frame has at most {MAX_PDU_SYMBOLS}")
    if pmt.length(meta_pmt) > MAX_META_FIELDS:
        raise BadPDU(f"PDU metadata of {pmt.length(meta_pmt)} fields (at most {MAX_META_FIELDS})")
    try:
        meta = pmt.to_python(meta_pmt)
    except (RecursionError, ValueError, TypeError, OverflowError) as exc:
        raise BadPDU(f"PDU metadata unreadable: {type(exc).__name__}") from None
    if not isinstance(meta, dict):
        raise BadPDU("PDU metadata is not a dictionary")
    symbols = np.asarray(pmt.c32vector_elements(vector), dtype=np.complex64)
    return meta, symbols


def _number(meta: dict, key: str, default=None):
    value = meta.get(key, default)
    if isinstance(value, bool) or not isinstance(value, numbers.Number):
        raise BadPDU(f"frame field {key!r} is not a number: {str(value)[:40]!r}")
    return value


def check_frame_meta(meta: dict) -> None:
    """BadPDU unless the numbers a sink computes with are finite and in range.

    The assembler checks how the fields fit together; this keeps values that are
    well-typed but absurd (an SNR of 5000 dB, an infinite gain) out of it.
    """
    snr_db = float(_number(meta, "snr_db"))
    if not (math.isfinite(snr_db) and SNR_RANGE_DB[0] <= snr_db <= SNR_RANGE_DB[1]):
        raise BadPDU(f"frame SNR estimate {snr_db!r} dB is outside {SNR_RANGE_DB}")
    design = float(_number(meta, "design_snr_db", float("nan")))
    if math.isinf(design) or abs(design) > 1e3:
        raise BadPDU(f"frame design SNR {design!r} dB is not a number of dB")
    h = complex(_number(meta, "h", 1.0))
    if not (math.isfinite(h.real) and math.isfinite(h.imag) and abs(h) <= MAX_GAIN):
        raise BadPDU(f"frame gain h {h!r} is not a channel gain")
    for key in ("image_id", "frame_index", "frame_count", "rate_code"):
        value = _number(meta, key)
        if not isinstance(value, numbers.Integral):
            raise BadPDU(f"frame field {key!r} is not an integer: {value!r}")


def pdu_to_frame(pdu):
    """PDU -> ``ReceivedFrame``; BadPDU when it is malformed or does not describe a frame."""
    from diffjscc.radio import FrameError, ReceivedFrame

    meta, symbols = pdu_parts(pdu)
    try:
        return ReceivedFrame.from_meta(meta, symbols)
    except FrameError as exc:
        raise BadPDU(str(exc)) from exc
