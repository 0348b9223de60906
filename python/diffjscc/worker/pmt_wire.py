"""A strict reader of GNU Radio's PMT serialisation, safe on untrusted bytes.

``pmt.deserialize_str`` from GNU Radio 3.10 trusts its input: a few kilobytes of
nested pairs overflow its C++ stack (the process dies with SIGSEGV), and a
vector whose header claims 2**32 items makes it allocate and spin for minutes
(both seen on this machine with GNU Radio 3.10.5). A worker reachable over the
network cannot hand wire bytes to it, so the worker reads them here instead:
an iterative reader that checks every length against the bytes actually
present and caps nesting, item counts and sizes *before* allocating anything.

It covers the whole serialisation format (the tags of ``pmt_serial_tags.h``)
and returns plain Python values, so no ``pmt`` import is needed to read:

=================  ====================================================
PMT                Python
=================  ====================================================
#t / #f            True / False
PMT_NIL ``()``     None
symbol             str
int32/int64/u64    int
double             float
complex            complex
pair               :class:`Pair` (``car``, ``cdr``); a PDU is a Pair
dict               dict (keys must be symbols, ints or bools)
tuple              tuple
vector             list
uniform vector     1-D numpy array of the native dtype (c32 -> complex64)
=================  ====================================================

:func:`dumps` writes the same format, byte for byte what ``pmt.serialize_str``
writes for the same value (checked in tests/test_worker_protocol.py). It exists
because the bindings are slow on bulk data: ``pmt.init_u8vector`` on a 768x512
RGB image takes about 120 ms on this machine, here about 1 ms.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

# Tags of the PMT serialisation (gnuradio-runtime/lib/pmt/pmt_serial_tags.h).
_TRUE, _FALSE, _SYMBOL, _INT32, _DOUBLE, _COMPLEX, _NULL, _PAIR = range(8)
_VECTOR, _DICT, _UNIFORM_VECTOR, _UINT64, _TUPLE, _INT64 = range(8, 14)

# Uniform vector element types, in tag order, as big-endian numpy dtypes.
_UNIFORM_DTYPES = (
    ">u1",
    ">i1",
    ">u2",
    ">i2",
    ">u4",
    ">i4",
    ">u8",
    ">i8",
    ">f4",
    ">f8",
    ">c8",
    ">c16",
)


class PMTDecodeError(ValueError):
    """The bytes are not a PMT this reader accepts; the message says where and why."""


class Pair(NamedTuple):
    """A PMT pair (cons cell). A GNU Radio PDU is ``Pair(metadata dict, uniform vector)``."""

    car: Any
    cdr: Any


@dataclass(frozen=True)
class ReadLimits:
    """Caps applied while reading, before any allocation."""

    max_depth: int = 16  # containers inside containers
    max_items: int = 256  # entries of one dict, tuple or vector
    max_total_items: int = 4096  # every value read, all containers together
    max_symbol_bytes: int = 256
    max_vector_items: int = 1 << 24  # items of one uniform vector


def loads(data: bytes, limits: ReadLimits | None = None) -> Any:
    """Read one serialised PMT; every byte must be consumed."""
    reader = _Reader(memoryview(bytes(data)), limits or ReadLimits())
    value = reader.read()
    if reader.pos != len(reader.buf):
        raise PMTDecodeError(
            f"{len(reader.buf) - reader.pos} trailing bytes after the PMT at offset {reader.pos}"
        )
    return value


class _Reader:
    def __init__(self, buf: memoryview, limits: ReadLimits):
        self.buf = buf
        self.pos = 0
        self.limits = limits
        self.items = 0

    def _take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise PMTDecodeError(
                f"truncated PMT: {what} needs {n} bytes at offset {self.pos}, "
                f"{len(self.buf) - self.pos} left"
            )
        chunk = self.buf[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def _unpack(self, fmt: str, what: str):
        return struct.unpack(fmt, self._take(struct.calcsize(fmt), what))[0]

    def _count(self, n: int, what: str) -> None:
        if n > self.limits.max_items:
            raise PMTDecodeError(
                f"{what} of {n} entries exceeds the limit of {self.limits.max_items}"
            )
        self.items += n
        if self.items > self.limits.max_total_items:
            raise PMTDecodeError(f"PMT has more than {self.limits.max_total_items} values")

    def read(self) -> Any:
        # An explicit stack instead of recursion: nesting is capped by max_depth
        # and Python's own stack is never at risk.
        # Each frame: [kind, remaining, collected values]
        stack: list[list] = []
        while True:
            value, frame = self._read_scalar_or_open()
            if frame is not None:
                if len(stack) >= self.limits.max_depth:
                    raise PMTDecodeError(
                        f"PMT nested deeper than {self.limits.max_depth} at offset {self.pos}"
                    )
                if frame[1] > 0:
                    stack.append(frame)
                    continue
                value = _close(frame)
            # Hand the finished value to the enclosing containers.
            while True:
                if not stack:
                    return value
                top = stack[-1]
                top[2].append(value)
                top[1] -= 1
                if top[1] > 0:
                    break
                if top[0] == "dict" and self._dict_continues(len(top[2])):
                    top[1] = 1
                    break
                stack.pop()
                value = _close(top)

    def _dict_continues(self, entries: int) -> bool:
        """After a dict entry: DICT means another entry of the same dict, NIL its end."""
        tag = self._unpack(">B", "dict continuation")
        if tag == _NULL:
            return False
        if tag != _DICT:
            raise PMTDecodeError(f"dict continues with tag 0x{tag:02x} at offset {self.pos - 1}")
        self._count(1, "dict")
        if entries >= self.limits.max_items:
            raise PMTDecodeError(f"dict of more than {self.limits.max_items} entries")
        return True

    def _read_scalar_or_open(self):
        """One value, or a container frame whose children are read next."""
        tag = self._unpack(">B", "a tag")
        if tag == _TRUE:
            return True, None
        if tag == _FALSE:
            return False, None
        if tag == _NULL:
            return None, None
        if tag == _SYMBOL:
            n = self._unpack(">H", "symbol length")
            if n > self.limits.max_symbol_bytes:
                raise PMTDecodeError(
                    f"symbol of {n} bytes exceeds the limit of {self.limits.max_symbol_bytes}"
                )
            raw = bytes(self._take(n, "symbol"))
            try:
                return raw.decode("utf-8"), None
            except UnicodeDecodeError as exc:
                raise PMTDecodeError(f"symbol at offset {self.pos - n} is not UTF-8") from exc
        if tag == _INT32:
            return self._unpack(">i", "int32"), None
        if tag == _INT64:
            return self._unpack(">q", "int64"), None
        if tag == _UINT64:
            return self._unpack(">Q", "uint64"), None
        if tag == _DOUBLE:
            return self._unpack(">d", "double"), None
        if tag == _COMPLEX:
            re = self._unpack(">d", "complex")
            im = self._unpack(">d", "complex")
            return complex(re, im), None
        if tag == _PAIR:
            self._count(2, "pair")
            return None, ["pair", 2, []]
        if tag == _DICT:
            # A dict is serialised as DICT (key . value) DICT (key . value) ... NIL:
            # one frame collects its entries, so a long dict does not nest deeper.
            self._count(1, "dict")
            return None, ["dict", 1, []]
        if tag in (_VECTOR, _TUPLE):
            n = self._unpack(">I", "vector length")
            kind = "vector" if tag == _VECTOR else "tuple"
            self._count(n, kind)
            # Every item takes at least one byte: refuse counts the data cannot hold.
            if n > len(self.buf) - self.pos:
                raise PMTDecodeError(
                    f"{kind} claims {n} items but only {len(self.buf) - self.pos} bytes follow"
                )
            return None, [kind, n, []]
        if tag == _UNIFORM_VECTOR:
            return self._read_uniform_vector(), None
        raise PMTDecodeError(f"unknown PMT tag 0x{tag:02x} at offset {self.pos - 1}")

    def _read_uniform_vector(self) -> np.ndarray:
        utype = self._unpack(">B", "uniform vector type")
        if utype >= len(_UNIFORM_DTYPES):
            raise PMTDecodeError(f"unknown uniform vector type 0x{utype:02x}")
        dtype = np.dtype(_UNIFORM_DTYPES[utype])
        n = self._unpack(">I", "uniform vector length")
        if n > self.limits.max_vector_items:
            raise PMTDecodeError(
                f"uniform vector of {n} items exceeds the limit of {self.limits.max_vector_items}"
            )
        npad = self._unpack(">B", "uniform vector padding")
        self._take(npad, "uniform vector padding")
        raw = self._take(n * dtype.itemsize, f"uniform vector of {n} items")
        return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))


def _close(frame: list) -> Any:
    kind, _, values = frame
    if kind == "pair":
        return Pair(values[0], values[1])
    if kind == "tuple":
        return tuple(values)
    if kind == "vector":
        return values
    # dict: values = its (key . value) pairs in serialised order, which pmt writes
    # newest first; read oldest first so the dict keeps insertion order and, as
    # pmt.dict_ref would, the newest value of a repeated key wins.
    out: dict = {}
    for entry in reversed(values):
        if not isinstance(entry, Pair):
            raise PMTDecodeError("dict entry is not a (key . value) pair")
        if not isinstance(entry.car, str | int | bool):
            raise PMTDecodeError(f"dict key of type {type(entry.car).__name__} is not supported")
        out[entry.car] = entry.cdr
    return out


# ---------------------------------------------------------------- writing

_NATIVE_TO_UTYPE = {np.dtype(d).newbyteorder("="): i for i, d in enumerate(_UNIFORM_DTYPES)}


def dumps(value: Any) -> bytes:
    """Serialise plain Python values (the table above, read backwards) as PMT.

    bytes become a u8vector; numpy arrays of the twelve uniform types become
    uniform vectors (flattened). Dict keys are written as symbols.
    """
    chunks: list[bytes] = []
    _write(value, chunks, 0)
    return b"".join(chunks)


def _write(value: Any, out: list[bytes], depth: int) -> None:
    if depth > 64:
        raise ValueError("value nested too deeply for a PMT")
    if value is None:
        out.append(b"\x06")
    elif isinstance(value, bool | np.bool_):
        out.append(b"\x00" if value else b"\x01")
    elif isinstance(value, int | np.integer):
        value = int(value)
        if -(2**31) <= value < 2**31:
            out.append(struct.pack(">Bi", _INT32, value))
        elif -(2**63) <= value < 2**63:
            out.append(struct.pack(">Bq", _INT64, value))
        elif 0 <= value < 2**64:
            out.append(struct.pack(">BQ", _UINT64, value))
        else:
            raise ValueError(f"integer {value} does not fit a PMT")
    elif isinstance(value, float | np.floating):
        out.append(struct.pack(">Bd", _DOUBLE, float(value)))
    elif isinstance(value, complex | np.complexfloating):
        value = complex(value)
        out.append(struct.pack(">Bdd", _COMPLEX, value.real, value.imag))
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) > 0xFFFF:
            raise ValueError("symbol longer than 65535 bytes")
        out.append(struct.pack(">BH", _SYMBOL, len(raw)) + raw)
    elif isinstance(value, bytes | bytearray | memoryview):
        _write_uniform(np.frombuffer(value, dtype=np.uint8), out)
    elif isinstance(value, np.ndarray):
        _write_uniform(value, out)
    elif isinstance(value, Pair):
        out.append(bytes([_PAIR]))
        _write(value.car, out, depth + 1)
        _write(value.cdr, out, depth + 1)
    elif isinstance(value, dict):
        # pmt.dict_add puts the newest key first; write in that order so the
        # bytes match pmt.serialize_str of a dict built in insertion order.
        for key, item in reversed(list(value.items())):
            out.append(bytes([_DICT, _PAIR]))
            _write(str(key), out, depth + 1)
            _write(item, out, depth + 1)
        out.append(b"\x06")
    elif isinstance(value, tuple | list):
        out.append(struct.pack(">BI", _TUPLE if isinstance(value, tuple) else _VECTOR, len(value)))
        for item in value:
            _write(item, out, depth + 1)
    else:
        raise TypeError(f"cannot write a {type(value).__name__} as a PMT")


def _write_uniform(array: np.ndarray, out: list[bytes]) -> None:
    native = array.dtype.newbyteorder("=")
    if native not in _NATIVE_TO_UTYPE:
        raise TypeError(f"no PMT uniform vector holds {array.dtype}")
    utype = _NATIVE_TO_UTYPE[native]
    # Header as pmt writes it: type, item count, one byte of padding.
    out.append(struct.pack(">BBIBB", _UNIFORM_VECTOR, utype, array.size, 1, 0))
    out.append(np.ascontiguousarray(array.reshape(-1), dtype=_UNIFORM_DTYPES[utype]).tobytes())
