"""Frame layout and the transmitter: JSCC symbols -> pulse-shaped bursts.

One frame, in symbols::

    preamble (128) | body: pilot, 16 data, pilot, 16 data, ..., pilot

The body's data are the BPSK header symbols (``header.header_symbols``: 608 for
version 1, 240 for version 2; ``FrameConfig.header_version`` chooses what
``build_bursts`` sends) followed by this frame's share of the image's JSCC symbols. A pilot opens every run of ``pilot_spacing - 1``
data symbols and one more closes the body, so the phase between two pilots is
always interpolated, never extrapolated. The payload split is fixed by the
header alone: an image of N symbols sent in F frames puts ceil(N / F) symbols
in every frame but the last.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from diffjscc.errors import ConfigError, DiffJSCCError
from diffjscc.radio import header as hdr
from diffjscc.radio.config import MAX_IMAGE_SYMBOLS, FrameConfig
from diffjscc.radio.pulse import shape
from diffjscc.radio.sequences import PREAMBLE_LENGTH, pilot_symbols, preamble
from diffjscc.registry import get_model_spec


def image_symbol_count(rate_code: int, image_shape: tuple[int, int]) -> int:
    """JSCC symbols of a whole image, from the rate and the unpadded shape."""
    return get_model_spec(int(rate_code)).num_symbols(*image_shape)


def frame_slice(total: int, frame_count: int, frame_index: int) -> tuple[int, int]:
    """[start, stop) of frame ``frame_index`` in an image of ``total`` symbols."""
    per = -(-total // frame_count)
    start = min(total, frame_index * per)
    return start, min(total, start + per)


@dataclass(frozen=True)
class BodyLayout:
    """Positions in the body (after the preamble) of pilots and data symbols."""

    length: int
    pilot_positions: np.ndarray
    data_positions: np.ndarray


@functools.lru_cache(maxsize=256)
def body_layout(num_data: int, cfg: FrameConfig) -> BodyLayout:
    run = cfg.pilot_spacing - 1
    runs = max(1, -(-num_data // run))
    length = num_data + runs + 1
    is_pilot = np.zeros(length, dtype=bool)
    is_pilot[np.arange(runs) * cfg.pilot_spacing] = True
    is_pilot[-1] = True
    positions = np.arange(length)
    pilots, data = positions[is_pilot], positions[~is_pilot]
    pilots.flags.writeable = False  # shared through the cache
    data.flags.writeable = False
    return BodyLayout(length, pilots, data)


def header_pilot_positions(cfg: FrameConfig, version: int = hdr.VERSION) -> np.ndarray:
    """Body positions of the pilots opening the runs that hold header symbols.

    They are where they are in every frame, whatever its payload; the pilot
    after the header is not, when the header's last run is shared with payload.
    """
    runs = -(-hdr.header_symbols(version) // (cfg.pilot_spacing - 1))
    return np.arange(runs) * cfg.pilot_spacing


def header_span(cfg: FrameConfig, version: int = hdr.VERSION) -> int:
    """Body symbols up to and including the last header symbol."""
    return int(body_layout(hdr.header_symbols(version), cfg).data_positions[-1]) + 1


def frame_symbols(header: hdr.FrameHeader, payload: np.ndarray, cfg: FrameConfig) -> np.ndarray:
    """All symbols of one frame, before pulse shaping."""
    data = np.concatenate(
        [hdr.encode_symbols(header).astype(np.complex64), payload.astype(np.complex64)]
    )
    layout = body_layout(data.size, cfg)
    body = np.empty(layout.length, dtype=np.complex64)
    body[layout.pilot_positions] = pilot_symbols(layout.pilot_positions.size)
    body[layout.data_positions] = data
    return np.concatenate([preamble(), body])


def frame_length(payload_symbols: int, cfg: FrameConfig, version: int | None = None) -> int:
    """Symbols in a frame carrying ``payload_symbols`` JSCC symbols, with a header
    of ``version`` (the one ``cfg`` sends unless given)."""
    version = cfg.header_version if version is None else version
    return PREAMBLE_LENGTH + body_layout(hdr.header_symbols(version) + payload_symbols, cfg).length


def check_encoded_image(enc) -> tuple:
    """What every waveform's ``build_bursts`` needs from an ``EncodedImage``, checked.

    Returns ``(spec, (h, w), symbols, design_snr_db, total)``; raises ``ConfigError``
    with the reason for anything that cannot be sent.
    """
    try:
        spec = get_model_spec(enc.model)
        h, w = (int(v) for v in enc.image_shape)
        symbols = np.asarray(enc.symbols)
        design_snr = float(enc.snr_db)
    except (AttributeError, TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(
            f"build_bursts needs an EncodedImage, got {type(enc).__name__}: {exc}"
        ) from exc
    if symbols.ndim != 1 or not np.iscomplexobj(symbols):
        raise ConfigError(
            f"encoded symbols must be a 1-D complex array, got {symbols.dtype} {symbols.shape}"
        )
    if not np.all(np.isfinite(symbols)):
        raise ConfigError("encoded symbols contain NaN or infinity")
    if h < 1 or w < 1:
        raise ConfigError(f"image shape must be positive, got {(h, w)}")
    total = image_symbol_count(spec.rate_code, (h, w))
    if symbols.size != total:
        raise ConfigError(
            f"{spec.name} sends {total} symbols for a {h}x{w} image, the encoded image has {symbols.size}"
        )
    if total > MAX_IMAGE_SYMBOLS:
        raise ConfigError(f"image of {total} symbols exceeds the limit of {MAX_IMAGE_SYMBOLS}")
    return spec, (h, w), symbols, design_snr, total


def frame_header(
    spec, image_shape, design_snr_db: float, image_id: int, index: int, count: int, version: int = 1
) -> hdr.FrameHeader:
    """The header of frame ``index`` of ``count``, its ranges checked (``ConfigError``)."""
    header = hdr.FrameHeader(
        image_id=int(image_id),
        rate_code=spec.rate_code,
        image_shape=tuple(image_shape),
        design_snr_db=design_snr_db,
        frame_index=index,
        frame_count=count,
        version=version,
    )
    try:
        header.check_ranges()
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return header


def build_bursts(enc, image_id: int, cfg: FrameConfig | None = None) -> list[np.ndarray]:
    """One pulse-shaped burst (complex64 samples, unit average power) per frame.

    ``enc`` is a ``diffjscc.symbols.EncodedImage``. Bursts include the filter's
    ramp-up and ramp-down, so they may be sent back to back.
    """
    cfg = FrameConfig() if cfg is None else cfg
    spec, (h, w), symbols, design_snr, total = check_encoded_image(enc)
    frame_count = math.ceil(total / cfg.max_payload_symbols)
    bursts = []
    for index in range(frame_count):
        header = frame_header(
            spec, (h, w), design_snr, image_id, index, frame_count, cfg.header_version
        )
        start, stop = frame_slice(total, frame_count, index)
        bursts.append(shape(frame_symbols(header, symbols[start:stop], cfg), cfg))
    return bursts


class FrameError(DiffJSCCError, ValueError):
    """Frame metadata that does not describe a usable frame."""


@dataclass
class ReceivedFrame:
    """One frame taken off the air: header fields, CSI, and equalised payload.

    The record every waveform's receiver delivers (``diffjscc.radio.waveform``).
    A frame whose payload was only partly received (a burst cut short, a
    collision) carries ``received_mask``: True where a payload symbol is usable;
    its other symbols are zeros (erasures) and ``snr_db`` describes the usable
    ones only. ``symbol_noise_var``, when a receiver knows it, is the noise
    variance of each equalised symbol (x_hat = x + e, var(e)); None means the
    same for every symbol: ``noise_var / |h|^2``.
    """

    image_id: int
    frame_index: int
    frame_count: int
    rate_code: int
    image_shape: tuple[int, int]
    design_snr_db: float
    symbols: np.ndarray  # complex64, equalised payload (x_hat = y / h)
    snr_db: float  # data-aided estimate, payload Es/N0
    # Channel gain in the training convention (y = h x + n, unit-energy x): 1 for a
    # unit channel; its phase is the received phase at sample h_sample, frequency
    # offset included, as a narrowband receiver would see the channel there.
    h: complex
    cfo: float  # frequency offset, cycles per sample
    timing: float  # sample index (since the receiver started) where the burst starts
    noise_var: float = 0.0  # noise variance in the units of |h|^2 (snr = |h|^2 / noise_var)
    num_known: int = 0  # known symbols the estimates used
    sample_rate_offset: float = 0.0  # receiver clock / transmitter clock - 1, as tracked
    h_sample: float = 0.0  # sample index (counted like timing) of the payload symbol h is for
    received_mask: np.ndarray | None = None  # bool per payload symbol; None: all received
    symbol_noise_var: np.ndarray | None = None  # float32 per payload symbol, of x_hat
    waveform: str = "sc"  # name in diffjscc.radio.waveform.WAVEFORMS

    @property
    def complete(self) -> bool:
        """Whether every payload symbol was received."""
        return self.received_mask is None or bool(np.all(self.received_mask))

    @property
    def received_count(self) -> int:
        if self.received_mask is None:
            return int(np.size(self.symbols))
        return int(np.count_nonzero(self.received_mask))

    def mask(self) -> np.ndarray:
        """``received_mask``, all True when the frame is complete."""
        if self.received_mask is None:
            return np.ones(np.size(self.symbols), dtype=bool)
        return np.asarray(self.received_mask, dtype=bool)

    @property
    def model(self) -> str:
        return get_model_spec(self.rate_code).name

    @property
    def image_symbols(self) -> int:
        return image_symbol_count(self.rate_code, self.image_shape)

    @property
    def payload_slice(self) -> tuple[int, int]:
        return frame_slice(self.image_symbols, self.frame_count, self.frame_index)

    def meta(self, symbol_noise: bool = True) -> dict:
        """Plain Python values, for a PDU's metadata dictionary.

        ``received_ranges``: [start, stop) pairs of received payload symbols;
        ``symbol_noise_var`` only when the receiver gives one per symbol (and
        ``symbol_noise``: a PDU carries the array itself, not a list of floats).
        """
        meta = {
            "image_id": int(self.image_id),
            "frame_index": int(self.frame_index),
            "frame_count": int(self.frame_count),
            "rate_code": int(self.rate_code),
            "model": self.model,
            "image_shape": [int(self.image_shape[0]), int(self.image_shape[1])],
            "design_snr_db": float(self.design_snr_db),
            "snr_db": float(self.snr_db),
            "h": complex(self.h),
            "cfo": float(self.cfo),
            "timing": float(self.timing),
            "noise_var": float(self.noise_var),
            "num_known": int(self.num_known),
            "num_symbols": int(np.size(self.symbols)),
            "sample_rate_offset": float(self.sample_rate_offset),
            "h_sample": float(self.h_sample),
            "complete": self.complete,
            "received_symbols": self.received_count,
            "received_ranges": (
                [[0, int(np.size(self.symbols))]]
                if self.received_mask is None and np.size(self.symbols)
                else mask_to_ranges(self.mask())
            ),
            "waveform": str(self.waveform),
        }
        if symbol_noise and self.symbol_noise_var is not None:
            meta["symbol_noise_var"] = [float(v) for v in np.asarray(self.symbol_noise_var)]
        return meta

    @classmethod
    def from_meta(cls, meta: dict, symbols) -> ReceivedFrame:
        """Rebuild a frame from ``meta()`` and its symbols (e.g. from a PDU).

        Raises FrameError when a field is missing or does not fit the symbols.
        """
        try:
            shape = tuple(int(v) for v in meta["image_shape"])
            symbols = np.asarray(symbols, dtype=np.complex64).reshape(-1)
            mask = None
            if meta.get("received_ranges") is not None:
                mask = ranges_to_mask(meta["received_ranges"], symbols.size)
                if mask.all():
                    mask = None
            noise = meta.get("symbol_noise_var")
            if noise is not None:
                noise = np.asarray(noise, dtype=np.float32).reshape(-1)
            frame = cls(
                image_id=int(meta["image_id"]),
                frame_index=int(meta["frame_index"]),
                frame_count=int(meta["frame_count"]),
                rate_code=int(meta["rate_code"]),
                image_shape=(shape[0], shape[1]),
                design_snr_db=float(meta.get("design_snr_db", float("nan"))),
                symbols=symbols,
                snr_db=float(meta["snr_db"]),
                h=complex(meta.get("h", 1.0)),
                cfo=float(meta.get("cfo", 0.0)),
                timing=float(meta.get("timing", 0.0)),
                noise_var=float(meta.get("noise_var", 0.0)),
                num_known=int(meta.get("num_known", 0)),
                sample_rate_offset=float(meta.get("sample_rate_offset", 0.0)),
                h_sample=float(meta.get("h_sample", 0.0)),
                received_mask=mask,
                symbol_noise_var=noise,
                waveform=str(meta.get("waveform", "sc"))[:32],
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise FrameError(f"frame metadata unusable: {exc!r}") from exc
        frame.validate()
        return frame

    def validate(self, max_image_symbols: int = MAX_IMAGE_SYMBOLS) -> None:
        """Raise FrameError unless the header fields are consistent with each other and the symbols."""
        start, stop = header_payload_slice(
            self.rate_code, self.image_shape, self.frame_count, self.frame_index, max_image_symbols
        )
        if np.size(self.symbols) != stop - start:
            raise FrameError(
                f"frame {self.frame_index} should carry {stop - start} symbols, got {np.size(self.symbols)}"
            )
        if not math.isfinite(self.snr_db):
            raise FrameError("SNR estimate is not finite")
        if not np.all(np.isfinite(self.symbols)):
            raise FrameError("symbols contain NaN or infinity")
        if self.received_mask is not None:
            if np.shape(self.received_mask) != np.shape(self.symbols):
                raise FrameError("received mask does not match the symbols")
            if not np.any(self.received_mask):
                raise FrameError("frame has no received symbol")
        if self.symbol_noise_var is not None:
            noise = np.asarray(self.symbol_noise_var)
            if noise.shape != np.shape(self.symbols):
                raise FrameError("per-symbol noise variance does not match the symbols")
            if not np.all(noise >= 0):  # NaN fails too
                raise FrameError("per-symbol noise variance negative or NaN")


# A PDU's received_ranges holds at most this many pairs (a mask with more runs is refused).
MAX_RANGES = 4096


def mask_to_ranges(mask: np.ndarray) -> list[list[int]]:
    """Bool mask -> [start, stop) pairs of its True runs."""
    m = np.concatenate([[False], np.asarray(mask, dtype=bool), [False]])
    edges = np.flatnonzero(m[1:] != m[:-1])
    return [[int(a), int(b)] for a, b in zip(edges[0::2], edges[1::2], strict=True)]


def ranges_to_mask(ranges, size: int) -> np.ndarray:
    """[start, stop) pairs -> bool mask of ``size``; FrameError when they do not fit."""
    if len(ranges) > MAX_RANGES:
        raise FrameError(f"{len(ranges)} received ranges (at most {MAX_RANGES})")
    mask = np.zeros(size, dtype=bool)
    for pair in ranges:
        a, b = (int(v) for v in pair)
        if not 0 <= a < b <= size:
            raise FrameError(f"received range {[a, b]} outside the {size} symbols")
        mask[a:b] = True
    return mask


def header_payload_slice(
    rate_code: int,
    image_shape: tuple[int, int],
    frame_count: int,
    frame_index: int,
    max_image_symbols: int = MAX_IMAGE_SYMBOLS,
) -> tuple[int, int]:
    """[start, stop) of a frame's payload in its image, from its header fields.

    Raises FrameError unless the fields describe a usable frame: a known rate, a
    positive shape, an image within ``max_image_symbols``, an index below the count
    and at least one symbol in the frame.
    """
    try:
        get_model_spec(rate_code)
    except DiffJSCCError as exc:
        raise FrameError(str(exc)) from exc
    h, w = image_shape
    if h < 1 or w < 1:
        raise FrameError(f"image shape {image_shape} is not positive")
    if not 0 <= frame_index < frame_count:
        raise FrameError(f"frame index {frame_index} not below frame count {frame_count}")
    total = image_symbol_count(rate_code, image_shape)
    if total > max_image_symbols:
        raise FrameError(f"image of {total} symbols exceeds the limit {max_image_symbols}")
    start, stop = frame_slice(total, frame_count, frame_index)
    if stop <= start:
        raise FrameError(f"frame {frame_index} of {frame_count} carries no symbols of {total}")
    return start, stop
