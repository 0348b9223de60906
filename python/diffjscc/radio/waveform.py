"""Waveforms behind one interface, chosen by name from one table.

A waveform turns an encoded image into bursts of complex baseband samples and
builds receivers that turn a sample stream back into ``ReceivedFrame`` records.
Everything after the receiver (assembler, image sink, worker, decoder) sees only
``ReceivedFrame`` and never asks which waveform carried the symbols::

    wf = get_waveform("sc", sps=2)            # or "ofdm"; settings are the waveform's own
    bursts = wf.build_bursts(enc, image_id=7)  # list of complex64 arrays, unit average power
    rx = wf.make_receiver()                    # tuning=ReceiverTuning(...) optional
    frames = rx.feed(samples)                  # any chunking; list[ReceivedFrame]
    frames += rx.flush()                       # end of stream
    rx.stats                                   # dict[str, int] of counters

What a waveform must provide (subclass ``Waveform``):

- ``name``: its key in ``WAVEFORMS`` (also written into every ``ReceivedFrame.waveform``).
- ``__init__(**settings)``: keyword settings with working defaults (plain ints,
  floats, strings, so that GRC and the CLI can pass them); a value that does not
  fit raises ``diffjscc.errors.ConfigError`` with a one-line reason, an unknown
  keyword too. ``settings()`` returns them as a dict that rebuilds an equal
  waveform; ``setting_names`` lists the keywords (blocks pass every waveform's
  parameters through ``from_block_params``, which keeps only those).
- ``build_bursts(enc, image_id)``: ``enc`` a ``diffjscc.symbols.EncodedImage``;
  one burst per frame, complex64, unit average power per sample over the burst,
  ramp-up and ramp-down included so bursts may be sent back to back.
  ``ConfigError`` for an image it cannot send.
- ``make_receiver(tuning=None)``: a new, independent ``Receiver`` (below).
- ``noise_voltage(snr_db, amplitude=1.0)``: per-sample complex noise standard
  deviation (GNU Radio ``channel_model``'s ``noise_voltage``) that gives the
  payload symbols an SNR of ``snr_db`` in the convention the decoder was trained
  with, for bursts scaled by ``amplitude``.
- ``frame_samples(payload_symbols)``: samples of a burst carrying that many
  JSCC symbols (for channel-use accounting and buffer sizing).

A ``Receiver`` has ``feed(samples) -> list[ReceivedFrame]`` (never raises on
bad input: counts it in ``stats``), ``flush() -> list[ReceivedFrame]`` (end
of stream: complete what has arrived), ``reset()`` (forget buffered samples,
keep counters) and ``stats`` (``dict[str, int]``; keys of ``RECEIVER_STAT_KEYS``
at least, more allowed). The frames it returns follow ``ReceivedFrame``:
equalised payload (x_hat = y / h, unit-energy JSCC symbols for a perfect
channel), ``snr_db`` the SNR of the delivered symbols in the training convention,
``h`` and ``noise_var`` with ``|h|^2 / noise_var`` equal to it, ``timing`` the
sample index since the receiver started where the burst starts; a frame only
partly received carries ``received_mask`` (its other symbols zeros), and
``symbol_noise_var`` when the noise differs from symbol to symbol (OFDM).

New waveforms are added to ``WAVEFORMS``: a class, or "module:Class" loaded on
first use so that importing this module stays cheap.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Protocol, runtime_checkable

import numpy as np

from diffjscc.errors import ConfigError

# Counters every receiver keeps (it may keep more).
RECEIVER_STAT_KEYS = (
    "samples_in",
    "bursts_detected",
    "header_crc_fail",
    "header_invalid",
    "frames_ok",
    "frames_partial",
    "frames_truncated",
    "frames_collided",
    "invalid_input",
    "nonfinite_samples",
    "internal_errors",
)


@runtime_checkable
class Receiver(Protocol):
    stats: dict

    def feed(self, samples) -> list: ...

    def flush(self) -> list: ...

    def reset(self) -> None: ...


class Waveform(ABC):
    """A waveform: bursts out of encoded images, receivers for them."""

    name: str = ""
    # Keyword settings the constructor takes (what ``from_block_params`` passes on).
    setting_names: tuple[str, ...] = ()

    @classmethod
    def from_block_params(cls, **params) -> Waveform:
        """From the parameters of a block or command line, which name the settings
        of every waveform: those this one does not take are ignored, and 0, None
        or "" means this waveform's default."""
        own = set(cls.setting_names)
        return cls(**{k: v for k, v in params.items() if k in own and v not in (0, None, "")})

    @abstractmethod
    def settings(self) -> dict:
        """Keyword settings that rebuild an equal waveform."""

    @abstractmethod
    def build_bursts(self, enc, image_id: int) -> list[np.ndarray]:
        """One complex64 burst per frame, unit average power per sample."""

    @abstractmethod
    def make_receiver(self, tuning=None) -> Receiver:
        """A new streaming receiver for this waveform."""

    @abstractmethod
    def noise_voltage(self, snr_db: float, amplitude: float = 1.0) -> float:
        """Per-sample complex noise std that gives the payload an SNR of ``snr_db``."""

    @abstractmethod
    def frame_samples(self, payload_symbols: int) -> int:
        """Samples of a burst carrying ``payload_symbols`` JSCC symbols."""

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({inner})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.settings() == other.settings()

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.settings().items()))))


class SingleCarrier(Waveform):
    """Pulse-shaped single-carrier bursts (``diffjscc.radio.frame``) and ``BurstReceiver``."""

    name = "sc"
    setting_names = (
        "sps",
        "rolloff",
        "filter_span",
        "pilot_spacing",
        "max_payload_symbols",
        "header_version",
    )

    def __init__(self, cfg=None, **settings):
        from diffjscc.radio.config import FrameConfig

        if cfg is not None and settings:
            raise ConfigError("give either a FrameConfig or settings, not both")
        if cfg is None:
            try:
                cfg = FrameConfig(**settings)
            except TypeError as exc:
                raise ConfigError(f"single-carrier waveform: {exc}") from None
        self.cfg = cfg

    def settings(self) -> dict:
        c = self.cfg
        return {
            "sps": c.sps,
            "rolloff": c.rolloff,
            "filter_span": c.filter_span,
            "pilot_spacing": c.pilot_spacing,
            "max_payload_symbols": c.max_payload_symbols,
            "header_version": c.header_version,
        }

    def build_bursts(self, enc, image_id: int) -> list[np.ndarray]:
        from diffjscc.radio.frame import build_bursts

        return build_bursts(enc, image_id, self.cfg)

    def make_receiver(self, tuning=None):
        from diffjscc.radio.receiver import BurstReceiver

        return BurstReceiver(self.cfg, tuning)

    def noise_voltage(self, snr_db: float, amplitude: float = 1.0) -> float:
        from diffjscc.radio.config import noise_voltage

        return noise_voltage(snr_db, self.cfg, amplitude)

    def frame_samples(self, payload_symbols: int) -> int:
        from diffjscc.radio.frame import frame_length

        return (frame_length(payload_symbols, self.cfg) - 1) * self.cfg.sps + self.cfg.num_taps


# name -> Waveform subclass, or "module:Class" imported on first use.
WAVEFORMS: dict[str, type[Waveform] | str] = {
    "sc": SingleCarrier,
    "ofdm": "diffjscc.radio.ofdm:OfdmWaveform",
}


def waveform_class(name: str) -> type[Waveform]:
    """The class registered as ``name``; ConfigError for an unknown one."""
    entry = WAVEFORMS.get(str(name))
    if entry is None:
        known = ", ".join(sorted(WAVEFORMS))
        raise ConfigError(f"unknown waveform {str(name)[:40]!r} (known: {known})")
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        try:
            entry = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"waveform {name!r} is not available: {exc}") from exc
        WAVEFORMS[str(name)] = entry
    return entry


def waveform_from_block_params(name: str = "sc", **params) -> Waveform:
    """``get_waveform`` for blocks and commands: see ``Waveform.from_block_params``."""
    return waveform_class(name).from_block_params(**params)


def get_waveform(name: str = "sc", **settings) -> Waveform:
    """A waveform by name with its settings (each waveform's defaults otherwise)."""
    if isinstance(name, Waveform):
        if settings:
            raise ConfigError("settings given with a waveform object")
        return name
    return waveform_class(name)(**settings)
