"""The frame header: fields, CRC, and its robust code.

Layout, 112 bits, big-endian::

    version:4 rate_code:4 | image_id:16 | height:16 | width:16 |
    design_snr:8 (int8, 0.5 dB steps) | frame_index:16 | frame_count:16 | crc16:16

The CRC is CRC-16/CCITT-FALSE (``binascii.crc_hqx`` with initial value 0xFFFF).
The 112 bits are split into 19 blocks of 6 bits, each coded with the first-order
Reed-Muller code RM(1,5) (32 coded bits, minimum distance 16; decoded at soft
decision with a fast Walsh-Hadamard transform), interleaved across blocks, and
sent as scrambled BPSK: 608 symbols that decode at SNRs where JSCC images are
still worth receiving (about -3 dB).
"""

from __future__ import annotations

import binascii
import functools
import struct
from dataclasses import dataclass

import numpy as np

from diffjscc.radio.sequences import header_scrambler

VERSION = 1
_FIELDS = struct.Struct(">BHHHbHH")
HEADER_BITS = (_FIELDS.size + 2) * 8  # 112
RM_M = 5
RM_N = 1 << RM_M  # 32 coded bits per block
RM_K = RM_M + 1  # 6 message bits per block
HEADER_BLOCKS = -(-HEADER_BITS // RM_K)  # 19
HEADER_SYMBOLS = HEADER_BLOCKS * RM_N  # 608

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

    def check_ranges(self) -> None:
        """Raise ValueError if a field does not fit the header."""
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
        (VERSION << 4) | header.rate_code,
        header.image_id,
        h,
        w,
        int(round(header.design_snr_db * 2.0)),
        header.frame_index,
        header.frame_count,
    )
    data = body + struct.pack(">H", binascii.crc_hqx(body, 0xFFFF))
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8))


def unpack(bits: np.ndarray) -> FrameHeader | None:
    """112 bits -> header, or None when the CRC or the version does not match."""
    data = np.packbits(np.asarray(bits[:HEADER_BITS], dtype=np.uint8)).tobytes()
    body, crc = data[: _FIELDS.size], data[_FIELDS.size :]
    if binascii.crc_hqx(body, 0xFFFF) != struct.unpack(">H", crc)[0]:
        return None
    ver_rate, image_id, h, w, snr_q, index, count = _FIELDS.unpack(body)
    if ver_rate >> 4 != VERSION:
        return None
    return FrameHeader(
        image_id=image_id,
        rate_code=ver_rate & 0xF,
        image_shape=(h, w),
        design_snr_db=snr_q / 2.0,
        frame_index=index,
        frame_count=count,
    )


def encode_symbols(header: FrameHeader) -> np.ndarray:
    """Header -> 608 real BPSK symbols (+-1), coded, interleaved and scrambled."""
    return _encode_cached(header).copy()


@functools.lru_cache(maxsize=64)
def _encode_cached(header: FrameHeader) -> np.ndarray:
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
    return unpack(bits)
