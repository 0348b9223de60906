"""Front-end corrections applied to the sample stream before any receiver sees it.

A direct-conversion receiver leaks its local oscillator: a DC offset, a constant
added to every sample. Neither waveform can tell it from the signal on its own:
the single carrier's matched filter passes DC into every symbol, and once the
receiver corrects a frequency offset the DC becomes a tone inside the OFDM band
(the waveform leaves only the DC subcarrier unused, and only before that
correction). Measured (``benchmarks/radio_impairments.py``, docs/radio.md): at 10
dB a DC offset 10 dB below the signal took 0.9 dB of PSNR from the single carrier
and 0.6 dB from OFDM.

``DcRemover`` subtracts a running mean of the stream. Both waveforms' signals have
zero mean, so over the time constant (65,536 samples by default: at 1 MS/s, 66 ms)
the mean is the offset, with the signal's own contribution about
``10 log10(1 / time_constant)`` = -48 dB below its power. The mean is updated once
per chunk, weighted by the chunk's length (``n / time_constant``; until that many
samples have come, the plain mean so far), so the result hardly depends on how the
stream is cut into chunks. It runs on every sample a receiver block gets, so the
chunk's sum and the subtraction are one compiled call (numba, loaded as the
receivers' kernels are: ``radio._numba``; ``DIFFJSCC_NUMBA=0`` or no numba: the numpy
twin, the same result to float32 rounding), with no array made but the output:
0.3-0.4 ns a sample against the twin's 1.4 on the development VM.
"""

from __future__ import annotations

import math

import numpy as np

from diffjscc.errors import ConfigError
from diffjscc.radio._numba import Kernel, KernelLoader

DEFAULT_TIME_CONSTANT = 65536  # samples

AVAILABLE = False  # the compiled DC removal is in use
REASON = "not loaded yet"


def _offset_update(offset: complex, seen: float, n: int, mean: complex, time_constant: float):
    """The running mean after a chunk of ``n`` samples of mean ``mean`` (see the module)."""
    # Until a time constant of samples has been seen, the estimate is the plain mean
    # so far (a long time constant would otherwise take that long to start).
    seen = min(seen + n, time_constant)
    return offset + min(1.0, n / seen) * (mean - offset), seen


def remove_dc_numpy(x, offset, seen, time_constant, out):
    """``out`` = ``x`` less the offset updated by ``x``'s mean; (offset, seen) after it."""
    n = x.size
    mean = complex(x.mean(dtype=np.complex128))
    # A chunk with NaN or inf must not poison the estimate of every later chunk.
    if math.isfinite(mean.real) and math.isfinite(mean.imag):
        offset, seen = _offset_update(offset, seen, n, mean, time_constant)
    np.subtract(x, np.complex64(offset), out=out)
    return offset, seen


def _remove_dc(x, offset, seen, time_constant, out):
    n = x.size
    sum_re = 0.0
    sum_im = 0.0
    for i in range(n):
        sum_re += x[i].real
        sum_im += x[i].imag
    if math.isfinite(sum_re) and math.isfinite(sum_im):
        seen_now = min(seen + n, time_constant)
        weight = min(1.0, n / seen_now)
        offset = offset + weight * (complex(sum_re / n, sum_im / n) - offset)
        seen = seen_now
    shift = np.complex64(offset)
    for i in range(n):
        out[i] = x[i] - shift
    return offset, seen


remove_dc = remove_dc_numpy  # the compiled kernel once ``load()`` succeeds


def _warm_up() -> None:
    """Both argument types a block passes: GNU Radio's input (writable or not)."""
    x = np.ones(4, np.complex64)
    out = np.empty_like(x)
    remove_dc(x, 0j, 0.0, 16.0, out)
    x.flags.writeable = False
    remove_dc(x, 0j, 0.0, 16.0, out)


_loader = KernelLoader(
    __name__,
    "DC removal",
    (Kernel("remove_dc", _remove_dc),),
    _warm_up,
    globals(),
)


def load() -> bool:
    """Compile (or load from numba's disk cache) the DC removal, once; ``AVAILABLE``."""
    return _loader.load()


class DcRemover:
    """Subtracts a slowly tracked mean from a complex sample stream (see the module)."""

    def __init__(self, time_constant: int = DEFAULT_TIME_CONSTANT):
        if not (isinstance(time_constant, int | float) and 16 <= time_constant <= 1 << 30):
            raise ConfigError(
                f"DC time constant must be 16 to 2**30 samples, got {time_constant!r}"
            )
        self.time_constant = float(time_constant)
        load()
        self.reset()

    def reset(self) -> None:
        self.offset = 0j
        self._seen = 0.0  # samples seen, capped at the time constant (start-up weighting)

    def process(self, samples: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The chunk less the DC estimate: a new complex64 array, or ``out`` (complex64,
        contiguous, of the chunk's size, not overlapping it: a receiver's buffer, so
        that the samples are written once); the input is untouched."""
        x = np.ascontiguousarray(np.asarray(samples, dtype=np.complex64).reshape(-1))
        if out is None:
            out = np.empty_like(x)
        elif out.dtype != np.complex64 or out.shape != x.shape or not out.flags.c_contiguous:
            raise ValueError(f"DC removal output {out.dtype} {out.shape} for {x.size} samples")
        if x.size:
            self.offset, self._seen = remove_dc(x, self.offset, self._seen, self.time_constant, out)
        return out
