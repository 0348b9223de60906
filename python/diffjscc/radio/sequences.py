"""Known sequences of the frame: preamble, pilots and the header scrambler.

They are fixed by the format (a receiver built elsewhere must generate the
same ones), so they come from closed-form rules, not from a random generator
whose stream could change between numpy versions.
"""

from __future__ import annotations

import functools

import numpy as np

# The preamble is SEGMENTS repetitions of a Zadoff-Chu sequence of SEGMENT_LENGTH
# symbols, each repetition multiplied by a sign. The receiver correlates with one
# segment and multiplies neighbouring segment correlations: a frequency offset
# only rotates those products (detection works without knowing it, and their
# angle measures it), and the signs make the products add up only at the right
# timing, because the signs' differences form a Barker sequence (sidelobes <= 1/7).
SEGMENT_LENGTH = 16
BARKER_7 = np.array([1, 1, 1, -1, -1, 1, -1], dtype=np.float32)
SEGMENTS = BARKER_7.size + 1
PREAMBLE_LENGTH = SEGMENT_LENGTH * SEGMENTS


def _cover_signs() -> np.ndarray:
    signs = np.ones(SEGMENTS, dtype=np.float32)
    for k, diff in enumerate(BARKER_7):
        signs[k + 1] = signs[k] * diff
    return signs


COVER_SIGNS = _cover_signs()


@functools.lru_cache(maxsize=1)
def preamble_segment() -> np.ndarray:
    """Zadoff-Chu, root 1, even length: constant amplitude, zero periodic autocorrelation."""
    n = np.arange(SEGMENT_LENGTH)
    return np.exp(-1j * np.pi * n * n / SEGMENT_LENGTH).astype(np.complex64)


@functools.lru_cache(maxsize=1)
def preamble() -> np.ndarray:
    return (COVER_SIGNS[:, None] * preamble_segment()[None, :]).reshape(-1).astype(np.complex64)


@functools.lru_cache(maxsize=1)
def _pn_bits() -> np.ndarray:
    """One period (32767 bits) of the maximal-length sequence x^15 + x^14 + 1."""
    state = 0x7FFF
    bits = np.empty(2**15 - 1, dtype=np.uint8)
    for i in range(bits.size):
        bit = ((state >> 14) ^ (state >> 13)) & 1
        state = ((state << 1) | bit) & 0x7FFF
        bits[i] = bit
    return bits


def pilot_symbols(count: int) -> np.ndarray:
    """QPSK pilots of unit energy, the same for every frame (they repeat after 16383)."""
    table = _pilot_table()
    if count <= table.size:
        return table[:count].copy()
    return table[np.arange(count) % table.size]


@functools.lru_cache(maxsize=1)
def _pilot_table() -> np.ndarray:
    bits = _pn_bits()
    idx = np.arange(bits.size // 2)
    i = 1.0 - 2.0 * bits[2 * idx]
    q = 1.0 - 2.0 * bits[2 * idx + 1]
    table = ((i + 1j * q) / np.sqrt(2.0)).astype(np.complex64)
    table.flags.writeable = False
    return table


@functools.lru_cache(maxsize=4)
def header_scrambler(count: int) -> np.ndarray:
    """+-1 signs that whiten the BPSK header (taken from the far end of the PN period)."""
    bits = _pn_bits()[::-1]
    signs = (1.0 - 2.0 * bits[np.arange(count) % bits.size]).astype(np.float32)
    signs.flags.writeable = False
    return signs
