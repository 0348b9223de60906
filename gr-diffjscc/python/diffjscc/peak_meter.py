#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""Peak and clipping meter for the samples going to a DAC or coming from an ADC.

JSCC bursts are Gaussian-like and peak at several times their RMS, so the amplitude
that a radio can take without clipping is found by watching the peaks, not the power.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from gnuradio import gr


def window_peaks(samples: np.ndarray, window: int) -> np.ndarray:
    """Largest |x| of each whole window of ``window`` complex samples."""
    n = len(samples) // window * window
    mags = np.abs(samples[:n]).reshape(-1, window)
    return mags.max(axis=1).astype(np.float32)


def clipped_count(samples: np.ndarray, clip_level: float) -> int:
    """Samples whose I or Q reaches the full-scale level (what a DAC/ADC clips)."""
    return int(
        np.count_nonzero(
            (np.abs(samples.real) >= clip_level) | (np.abs(samples.imag) >= clip_level)
        )
    )


class peak_meter(gr.decim_block):
    """Complex samples in; the peak magnitude of each ``window`` samples out (float).

    Counts the samples whose I or Q reach ``clip_level`` (1.0 is full scale for
    ``uhd.usrp_sink`` / ``usrp_source`` with fc32 samples). ``stats()`` gives samples,
    clipped samples and the largest peak so far; with ``print_interval_s`` > 0 a
    warning line is printed at most that often while samples clip. Connect the output
    to a ``qtgui_number_sink`` (GUI) or a null sink.
    """

    def __init__(self, window=4096, clip_level=1.0, print_interval_s=5.0, label=""):
        window = int(window)
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window!r}")
        gr.decim_block.__init__(
            self,
            name="diffjscc_peak_meter",
            in_sig=[np.complex64],
            out_sig=[np.float32],
            decim=window,
        )
        self.window = window
        self.clip_level = float(clip_level)
        if not self.clip_level > 0:
            raise ValueError(f"clip_level must be > 0, got {clip_level!r}")
        self.print_interval_s = float(print_interval_s)
        self.label = str(label)
        self._samples = 0
        self._clipped = 0
        self._max_peak = 0.0
        self._last_print = -float("inf")
        self._clipped_at_print = 0

    def stats(self) -> dict:
        return {
            "samples": self._samples,
            "clipped_samples": self._clipped,
            "max_peak": self._max_peak,
            "clip_level": self.clip_level,
        }

    def set_clip_level(self, clip_level) -> None:
        if float(clip_level) > 0:
            self.clip_level = float(clip_level)

    def work(self, input_items, output_items):
        out = output_items[0]
        samples = input_items[0][: len(out) * self.window]
        peaks = window_peaks(samples, self.window)
        out[: len(peaks)] = peaks
        self._samples += len(samples)
        if len(peaks):
            self._max_peak = max(self._max_peak, float(peaks.max()))
            if peaks.max() >= self.clip_level:
                self._clipped += clipped_count(samples, self.clip_level)
                self._maybe_warn()
        return len(peaks)

    def _maybe_warn(self) -> None:
        now = time.monotonic()
        if self.print_interval_s <= 0 or now - self._last_print < self.print_interval_s:
            return
        new = self._clipped - self._clipped_at_print
        self._last_print, self._clipped_at_print = now, self._clipped
        prefix = f"[{self.label}] " if self.label else ""
        print(
            f"{prefix}CLIPPING: {new} samples at |I| or |Q| >= {self.clip_level:g} "
            f"(largest peak {self._max_peak:.2f}): lower the amplitude or the gain",
            file=sys.stderr,
            flush=True,
        )
