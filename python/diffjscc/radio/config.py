"""Settings of the single-carrier waveform, and the tuning of its receiver.

``FrameConfig`` is the waveform: the transmitter and the receiver must agree on
``sps``, ``rolloff``, ``filter_span`` and ``pilot_spacing``; ``max_payload_symbols``
is the transmitter's frame size (everything else in the frame: shape, rate,
frame count, ... travels in the header). ``ReceiverTuning`` only tunes a
receiver (detection threshold, searched frequency offset, trackers, limits) and
never has to match anything on the other side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral

from diffjscc.errors import ConfigError

# Larger images announced by a header are refused, by the receiver and the assembler.
MAX_IMAGE_SYMBOLS = 1 << 22
# JSCC symbols in one frame at most: the transmitter's limit, and what a receiver waits for.
MAX_PAYLOAD_SYMBOLS = 65535


@dataclass(frozen=True)
class FrameConfig:
    """The single-carrier waveform: what transmitter and receiver must agree on."""

    sps: int = 2  # samples per symbol
    rolloff: float = 0.35  # root raised cosine excess bandwidth
    filter_span: int = 8  # RRC length in symbols on each side of its peak
    pilot_spacing: int = 17  # one known pilot every this many body symbols (1/17 = 5.9 %)
    max_payload_symbols: int = 4096  # JSCC symbols per frame at most (transmitter)
    # Frame header code the transmitter sends (``diffjscc.radio.header``): 1, RM(1,5) in
    # 608 symbols; 2, convolutional in 240. The receiver decodes either, whatever this says.
    header_version: int = 2

    def __post_init__(self) -> None:
        # numpy integers (from GRC or argparse-free code) are welcome; store plain ints.
        for name in (
            "sps",
            "filter_span",
            "pilot_spacing",
            "max_payload_symbols",
            "header_version",
        ):
            value = getattr(self, name)
            if isinstance(value, Integral) and not isinstance(value, bool):
                object.__setattr__(self, name, int(value))
        if not isinstance(self.sps, Integral) or not 2 <= self.sps <= 64:
            raise ConfigError(f"sps must be an integer in 2..64, got {self.sps!r}")
        if not 0.0 < float(self.rolloff) <= 1.0:
            raise ConfigError(f"rolloff must be in (0, 1], got {self.rolloff!r}")
        if not isinstance(self.filter_span, Integral) or not 2 <= self.filter_span <= 32:
            raise ConfigError(f"filter_span must be an integer in 2..32, got {self.filter_span!r}")
        if not isinstance(self.pilot_spacing, Integral) or not 4 <= self.pilot_spacing <= 256:
            raise ConfigError(
                f"pilot_spacing must be an integer in 4..256, got {self.pilot_spacing!r}"
            )
        if (
            not isinstance(self.max_payload_symbols, Integral)
            or not 1 <= self.max_payload_symbols <= MAX_PAYLOAD_SYMBOLS
        ):
            raise ConfigError(
                f"max_payload_symbols must be an integer in 1..{MAX_PAYLOAD_SYMBOLS}, "
                f"got {self.max_payload_symbols!r}"
            )

        if self.header_version not in (1, 2):
            raise ConfigError(f"header_version must be 1 or 2, got {self.header_version!r}")

    @property
    def num_taps(self) -> int:
        return 2 * self.filter_span * self.sps + 1

    @property
    def pilot_overhead(self) -> float:
        """Fraction of body symbols that are pilots (ignoring the closing pilot)."""
        return 1.0 / self.pilot_spacing


@dataclass(frozen=True)
class ReceiverTuning:
    """How a receiver works; nothing here has to match the transmitter."""

    # On the normalised preamble metric (about snr / (sps + snr) at the peak), for
    # sps = 2 and scaled by 2 / sps. Pure noise stays below 0.08 over 4e6 samples.
    detection_threshold: float = 0.11
    max_cfo: float = 0.03  # largest |frequency offset| searched, in cycles per symbol
    phase_track_window: int = 16  # pilots averaged by the phase tracker; 0 turns it off
    max_image_symbols: int = MAX_IMAGE_SYMBOLS
    # Clock offset between transmitter and receiver that the timing tracker follows
    # (GNU Radio channel_model's epsilon - 1); 0 turns the tracker off.
    max_sample_rate_offset_ppm: float = 200.0

    def __post_init__(self) -> None:
        for name in ("phase_track_window", "max_image_symbols"):
            value = getattr(self, name)
            if isinstance(value, Integral) and not isinstance(value, bool):
                object.__setattr__(self, name, int(value))
        if not 0.0 < float(self.detection_threshold) < 1.0:
            raise ConfigError(
                f"detection_threshold must be in (0, 1), got {self.detection_threshold!r}"
            )
        # The preamble's differential detector is unambiguous up to half a cycle per segment.
        if not 0.0 < float(self.max_cfo) <= 0.03:
            raise ConfigError(f"max_cfo must be in (0, 0.03] cycles/symbol, got {self.max_cfo!r}")
        if not isinstance(self.phase_track_window, Integral) or self.phase_track_window < 0:
            raise ConfigError(
                f"phase_track_window must be an integer >= 0, got {self.phase_track_window!r}"
            )
        if not 0.0 <= float(self.max_sample_rate_offset_ppm) <= 2000.0:
            raise ConfigError(
                f"max_sample_rate_offset_ppm must be in [0, 2000], got {self.max_sample_rate_offset_ppm!r}"
            )
        if not isinstance(self.max_image_symbols, Integral) or self.max_image_symbols < 1:
            raise ConfigError(
                f"max_image_symbols must be a positive integer, got {self.max_image_symbols!r}"
            )


def sample_snr_db(symbol_snr_db: float, cfg: FrameConfig) -> float:
    """Per-sample SNR that gives ``symbol_snr_db`` (payload Es/N0 after matched filtering).

    The transmitter emits unit average power per sample, so noise of variance
    ``10 ** (-sample_snr_db / 10)`` per sample (``diffjscc.channels.awgn`` on the
    samples) gives the payload symbols an SNR of ``symbol_snr_db``.
    """
    return float(symbol_snr_db) - 10.0 * math.log10(cfg.sps)


def noise_voltage(symbol_snr_db: float, cfg: FrameConfig, amplitude: float = 1.0) -> float:
    """Standard deviation of complex noise per sample for a payload SNR, for a
    transmitter scaled by ``amplitude`` (GNU Radio ``channel_model``'s noise_voltage)."""
    return float(amplitude) * 10.0 ** (-sample_snr_db(symbol_snr_db, cfg) / 20.0)
