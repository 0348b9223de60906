"""The frame header: fields, CRC, and its robust code.

Layout, 112 bits, big-endian::

    version:4 rate_code:4 | image_id:16 | height:16 | width:16 |
    design_snr:8 (int8, 0.5 dB steps) | frame_index:16 | frame_count:16 | crc16:16

The CRC is CRC-16/CCITT-FALSE (``binascii.crc_hqx`` with initial value 0xFFFF).
The 112 bits are split into 19 blocks of 6 bits, each coded with the first-order
Reed-Muller code RM(1,5) (32 coded bits, minimum distance 16; decoded at soft
decision with a fast Walsh-Hadamard transform), interleaved across blocks, and
sent as scrambled BPSK: 608 symbols that decode at SNRs where JSCC images are
still worth receiving (about -3 dB). That is version 1 (``VERSION_RM``).

Version 2 (``VERSION_CONV``) codes the same 112 bits with the rate-1/2,
constraint-length-9 convolutional code of generators 561 and 753 (octal),
terminated by 8 zero bits: 240 scrambled BPSK symbols, decoded by a soft
Viterbi decoder (``_fast.viterbi`` where numba is installed, numpy otherwise).
It costs 368 fewer symbols a frame, and decodes about as well down to 0 dB.
Both are received; which one a transmitter sends is ``FrameHeader.version``
(1 unless set). The version also sits in the header's first nibble.
"""

from __future__ import annotations

import binascii
import functools
import struct
from dataclasses import dataclass

import numpy as np

from diffjscc.radio import _fast
from diffjscc.radio.sequences import header_scrambler

VERSION_RM = 1  # RM(1,5) blocks, 608 symbols
VERSION_CONV = 2  # convolutional K=9 r=1/2, 240 symbols
VERSIONS = (VERSION_RM, VERSION_CONV)
VERSION = VERSION_RM  # a FrameHeader's version unless set
_FIELDS = struct.Struct(">BHHHbHH")
HEADER_BITS = (_FIELDS.size + 2) * 8  # 112
RM_M = 5
RM_N = 1 << RM_M  # 32 coded bits per block
RM_K = RM_M + 1  # 6 message bits per block
HEADER_BLOCKS = -(-HEADER_BITS // RM_K)  # 19
HEADER_SYMBOLS = HEADER_BLOCKS * RM_N  # 608: version 1's length

# Version 2: K=9, rate 1/2; the register holds the input bit (bit 8) and the 8 before it.
CONV_K = 9
CONV_GENERATORS = (0o561, 0o753)
CONV_TAIL = CONV_K - 1  # zero bits that return the encoder to state 0
CONV_STATES = 1 << (CONV_K - 1)
CONV_SYMBOLS = len(CONV_GENERATORS) * (HEADER_BITS + CONV_TAIL)  # 240


def header_symbols(version: int = VERSION) -> int:
    """BPSK symbols of a header of this version."""
    if version == VERSION_RM:
        return HEADER_SYMBOLS
    if version == VERSION_CONV:
        return CONV_SYMBOLS
    raise ValueError(f"unknown header version {version!r} (known: {VERSIONS})")


# Generator: row 0 all ones, row j the j-th bit of the codeword position.
_POSITIONS = np.arange(RM_N)
_GENERATOR = np.vstack(
    [np.ones(RM_N, dtype=np.uint8)]
    + [((_POSITIONS >> j) & 1).astype(np.uint8) for j in range(RM_M)]
)
# Walsh-Hadamard matrix: _HADAMARD[x, a] = (-1) ** popcount(x & a).
_HADAMARD = np.array(
    [[1 - 2 * (bin(x & a).count("1") & 1) for a in range(RM_N)] for x in range(RM_N)],
    dtype=np.float32,
)


@dataclass(frozen=True)
class FrameHeader:
    image_id: int
    rate_code: int
    image_shape: tuple[int, int]
    design_snr_db: float
    frame_index: int
    frame_count: int
    version: int = VERSION  # the header code: VERSION_RM or VERSION_CONV

    def check_ranges(self) -> None:
        """Raise ValueError if a field does not fit the header."""
        if self.version not in VERSIONS:
            raise ValueError(f"header version {self.version!r} unknown (known: {VERSIONS})")
        h, w = self.image_shape
        for name, value, hi in (
            ("image_id", self.image_id, 0xFFFF),
            ("rate_code", self.rate_code, 0xF),
            ("height", h, 0xFFFF),
            ("width", w, 0xFFFF),
            ("frame_index", self.frame_index, 0xFFFF),
            ("frame_count", self.frame_count, 0xFFFF),
        ):
            if not 0 <= int(value) <= hi:
                raise ValueError(f"{name} {value} does not fit the frame header (0..{hi})")
        if not -64.0 <= self.design_snr_db <= 63.5:
            raise ValueError(
                f"design SNR {self.design_snr_db} dB does not fit the header (-64..63.5)"
            )


def pack(header: FrameHeader) -> np.ndarray:
    """Header -> 112 bits (uint8 0/1) including the CRC."""
    header.check_ranges()
    h, w = header.image_shape
    body = _FIELDS.pack(
        (header.version << 4) | header.rate_code,
        header.image_id,
        h,
        w,
        int(round(header.design_snr_db * 2.0)),
        header.frame_index,
        header.frame_count,
    )
    data = body + struct.pack(">H", binascii.crc_hqx(body, 0xFFFF))
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8))


def unpack(bits: np.ndarray, version: int = VERSION) -> FrameHeader | None:
    """112 bits -> header, or None when the CRC or the version does not match
    (``version``: the one whose code carried the bits)."""
    return unpack_bytes(
        np.packbits(np.asarray(bits[:HEADER_BITS], dtype=np.uint8)).tobytes(), version
    )


def unpack_bytes(data: bytes, version: int = VERSION) -> FrameHeader | None:
    """``unpack`` of the 14 bytes the 112 bits make (the first bit the most significant)."""
    body, crc = data[: _FIELDS.size], data[_FIELDS.size :]
    if binascii.crc_hqx(body, 0xFFFF) != struct.unpack(">H", crc)[0]:
        return None
    ver_rate, image_id, h, w, snr_q, index, count = _FIELDS.unpack(body)
    if ver_rate >> 4 != version:
        return None
    return FrameHeader(
        image_id=image_id,
        rate_code=ver_rate & 0xF,
        image_shape=(h, w),
        design_snr_db=snr_q / 2.0,
        frame_index=index,
        frame_count=count,
        version=version,
    )


def encode_symbols(header: FrameHeader) -> np.ndarray:
    """Header -> ``header_symbols(header.version)`` real BPSK symbols (+-1),
    coded (and for version 1 interleaved) and scrambled."""
    return _encode_cached(header).copy()


# The generators as an array, for the compiled encoder.
_CONV_GENERATOR_ARRAY = np.array(CONV_GENERATORS, dtype=np.int64)
_CONV_GENERATOR_ARRAY.flags.writeable = False


@functools.lru_cache(maxsize=64)
def _encode_cached(header: FrameHeader) -> np.ndarray:
    if header.version == VERSION_CONV:
        bits = np.concatenate([pack(header), np.zeros(CONV_TAIL, np.uint8)])
        if _fast.AVAILABLE:  # the receiver encodes every header it decodes: 1 us, not 10
            out = np.empty(CONV_SYMBOLS, dtype=np.float32)
            _fast.conv_symbols(bits, _CONV_GENERATOR_ARRAY, header_scrambler(CONV_SYMBOLS), out)
            return out
        code = conv_encode(bits)
        return (1.0 - 2.0 * code).astype(np.float32) * header_scrambler(CONV_SYMBOLS)
    bits = np.zeros(HEADER_BLOCKS * RM_K, dtype=np.uint8)
    bits[:HEADER_BITS] = pack(header)
    code = (bits.reshape(HEADER_BLOCKS, RM_K) @ _GENERATOR) & 1  # [blocks, 32]
    interleaved = code.T.reshape(-1)  # consecutive symbols come from different blocks
    return (1.0 - 2.0 * interleaved).astype(np.float32) * header_scrambler(HEADER_SYMBOLS)


def decode_soft(soft: np.ndarray) -> FrameHeader | None:
    """Soft BPSK values (positive means bit 0, any scale) -> header, or None."""
    soft = np.asarray(soft, dtype=np.float32)[:HEADER_SYMBOLS] * header_scrambler(HEADER_SYMBOLS)
    blocks = soft.reshape(RM_N, HEADER_BLOCKS).T  # undo the interleaver
    spectrum = np.einsum("ij,jk->ik", blocks, _HADAMARD)  # correlation with every RM(1,5) codeword
    best = np.argmax(np.abs(spectrum), axis=1)
    first = (spectrum[np.arange(HEADER_BLOCKS), best] < 0).astype(np.uint8)
    rest = ((best[:, None] >> np.arange(RM_M)[None, :]) & 1).astype(np.uint8)
    bits = np.concatenate([first[:, None], rest], axis=1).reshape(-1)
    return unpack(bits, VERSION_RM)


def _parity(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    for shift in (8, 4, 2, 1):
        x ^= x >> shift
    return x & 1


def _trellis():
    """For every state reached (last 8 input bits, newest at bit 7) and both of
    its predecessors (x: the bit that left): the predecessor, and the signs
    (+1 for a 0 bit) of the two code bits on that branch."""
    state = np.arange(CONV_STATES)[:, None]
    x = np.arange(2)[None, :]
    prev = ((state & (CONV_STATES // 2 - 1)) << 1) | x
    register = ((state >> (CONV_K - 2)) << (CONV_K - 1)) | prev
    signs = np.stack([1.0 - 2.0 * _parity(register & g) for g in CONV_GENERATORS])
    return prev.astype(np.int64), signs.astype(np.float64)


_PREV, _SIGNS = _trellis()


def _conv_encode_shift(bits: np.ndarray) -> np.ndarray:
    """The encoder as a shift register: code bits g0, g1 per input bit, from state 0."""
    bits = np.asarray(bits, dtype=np.int64)
    history = np.concatenate([np.zeros(CONV_K - 1, np.int64), bits])
    # register[i] = bits i-8 .. i, bit i (the newest) at bit 8.
    weights = 1 << np.arange(CONV_K)
    windows = np.lib.stride_tricks.sliding_window_view(history, CONV_K)
    register = windows @ weights
    code = np.stack([_parity(register & g) for g in CONV_GENERATORS], axis=1)
    return code.reshape(-1).astype(np.uint8)


# The code is linear: a header's code bits are the XOR of the responses to each of
# its one bits (the receiver encodes every decoded header again: 4 us, not 40).
_CONV_RESPONSES = np.stack(
    [_conv_encode_shift(row) for row in np.eye(HEADER_BITS + CONV_TAIL, dtype=np.uint8)]
)


# The same responses as Python integers (code bit 0 the most significant): XOR of
# 240-bit integers is one operation each, a tenth of numpy's per-row cost.
_CONV_RESPONSE_INTS = tuple(
    int.from_bytes(np.packbits(row).tobytes(), "big") for row in _CONV_RESPONSES
)
_CONV_CODE_BYTES = -(-_CONV_RESPONSES.shape[1] // 8)


def conv_encode(bits: np.ndarray) -> np.ndarray:
    """Bits (0/1, tail included) -> code bits g0, g1 per input bit, from state 0."""
    bits = np.asarray(bits).reshape(-1)
    if bits.size != _CONV_RESPONSES.shape[0]:
        return _conv_encode_shift(bits)
    code = 0
    for i in np.flatnonzero(bits).tolist():
        code ^= _CONV_RESPONSE_INTS[i]
    packed = np.frombuffer(code.to_bytes(_CONV_CODE_BYTES, "big"), dtype=np.uint8)
    return np.unpackbits(packed)[: _CONV_RESPONSES.shape[1]]


def _viterbi_numpy(soft: np.ndarray, steps: int) -> np.ndarray:
    """Most likely input bits of a terminated code from soft values (positive: 0)."""
    metric = np.full(CONV_STATES, -np.inf)
    metric[0] = 0.0
    choices = np.empty((steps, CONV_STATES), dtype=np.uint8)
    pairs = np.asarray(soft, dtype=np.float64).reshape(steps, 2)
    rows = np.arange(CONV_STATES)
    for i in range(steps):
        branch = _SIGNS[0] * pairs[i, 0] + _SIGNS[1] * pairs[i, 1]
        candidates = metric[_PREV] + branch
        choice = np.argmax(candidates, axis=1)
        choices[i] = choice
        metric = candidates[rows, choice]
    bits = np.empty(steps, dtype=np.uint8)
    state = 0  # terminated
    for i in range(steps - 1, -1, -1):
        bits[i] = state >> (CONV_K - 2)
        state = int(_PREV[state, choices[i, state]])
    return bits


def viterbi(soft: np.ndarray) -> np.ndarray:
    """Input bits (tail included) of the terminated K=9 code from 2 soft values per bit."""
    soft = np.ascontiguousarray(soft, dtype=np.float64)
    steps = soft.size // 2
    if _fast.AVAILABLE:
        bits = np.empty(steps, dtype=np.uint8)
        _fast.viterbi(soft[: 2 * steps], _PREV, _SIGNS, CONV_K - 2, bits)
        return bits
    return _viterbi_numpy(soft[: 2 * steps], steps)


def decode_soft_conv(soft: np.ndarray) -> FrameHeader | None:
    """Version 2: soft BPSK values of the 240 header symbols (positive: bit 0) -> header, or None."""
    soft = np.asarray(soft, dtype=np.float32)[:CONV_SYMBOLS]
    if soft.size < CONV_SYMBOLS:
        return None
    bits = viterbi(soft * header_scrambler(CONV_SYMBOLS))
    return unpack(bits[:HEADER_BITS], VERSION_CONV)


def decode_version(soft: np.ndarray, version: int) -> FrameHeader | None:
    """Soft values of a header of this version -> header, or None."""
    if version == VERSION_CONV:
        return decode_soft_conv(soft)
    if version == VERSION_RM:
        return decode_soft(soft)
    raise ValueError(f"unknown header version {version!r} (known: {VERSIONS})")
