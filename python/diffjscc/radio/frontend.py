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
stream is cut into chunks, and it costs two passes over the samples.
"""

from __future__ import annotations

import math

import numpy as np

from diffjscc.errors import ConfigError

DEFAULT_TIME_CONSTANT = 65536  # samples


class DcRemover:
    """Subtracts a slowly tracked mean from a complex sample stream (see the module)."""

    def __init__(self, time_constant: int = DEFAULT_TIME_CONSTANT):
        if not (isinstance(time_constant, int | float) and 16 <= time_constant <= 1 << 30):
            raise ConfigError(
                f"DC time constant must be 16 to 2**30 samples, got {time_constant!r}"
            )
        self.time_constant = float(time_constant)
        self.reset()

    def reset(self) -> None:
        self.offset = 0j
        self._seen = 0.0  # samples seen, capped at the time constant (start-up weighting)

    def process(self, samples: np.ndarray) -> np.ndarray:
        """The chunk less the DC estimate (a new complex64 array; the input is untouched)."""
        x = np.asarray(samples, dtype=np.complex64).reshape(-1)
        n = x.size
        if n == 0:
            return x.copy()
        mean = complex(x.mean(dtype=np.complex128))
        if not (math.isfinite(mean.real) and math.isfinite(mean.imag)):
            # A chunk with NaN or inf must not poison the estimate of every later chunk.
            return x - np.complex64(self.offset)
        # Until a time constant of samples has been seen, the estimate is the plain mean
        # so far (a long time constant would otherwise take that long to start).
        self._seen = min(self._seen + n, self.time_constant)
        self.offset += min(1.0, n / self._seen) * (mean - self.offset)
        return x - np.complex64(self.offset)
