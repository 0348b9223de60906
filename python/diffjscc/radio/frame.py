"""Frame layout and the transmitter: JSCC symbols -> pulse-shaped bursts.

One frame, in symbols::

    preamble (128) | body: pilot, 16 data, pilot, 16 data, ..., pilot

The body's data are the 608 BPSK header symbols followed by this frame's share
of the image's JSCC symbols. A pilot opens every run of ``pilot_spacing - 1``
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

from diffjscc.errors import ConfigError
from diffjscc.radio import header as hdr
from diffjscc.radio.config import FrameConfig
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


def header_pilot_positions(cfg: FrameConfig) -> np.ndarray:
    """Body positions of the pilots opening the runs that hold header symbols.

    They are where they are in every frame, whatever its payload; the pilot
    after the header is not, when the header's last run is shared with payload.
    """
    runs = -(-hdr.HEADER_SYMBOLS // (cfg.pilot_spacing - 1))
    return np.arange(runs) * cfg.pilot_spacing


def header_span(cfg: FrameConfig) -> int:
    """Body symbols up to and including the last header symbol."""
    return int(body_layout(hdr.HEADER_SYMBOLS, cfg).data_positions[-1]) + 1


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


def frame_length(payload_symbols: int, cfg: FrameConfig) -> int:
    """Symbols in a frame carrying ``payload_symbols`` JSCC symbols."""
    return PREAMBLE_LENGTH + body_layout(hdr.HEADER_SYMBOLS + payload_symbols, cfg).length


def build_bursts(enc, image_id: int, cfg: FrameConfig | None = None) -> list[np.ndarray]:
    """One pulse-shaped burst (complex64 samples, unit average power) per frame.

    ``enc`` is a ``diffjscc.symbols.EncodedImage``. Bursts include the filter's
    ramp-up and ramp-down, so they may be sent back to back.
    """
    cfg = FrameConfig() if cfg is None else cfg
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
    if total > cfg.max_image_symbols:
        raise ConfigError(
            f"image of {total} symbols exceeds max_image_symbols={cfg.max_image_symbols}"
        )
    frame_count = math.ceil(total / cfg.max_payload_symbols)
    bursts = []
    for index in range(frame_count):
        header = hdr.FrameHeader(
            image_id=int(image_id),
            rate_code=spec.rate_code,
            image_shape=(h, w),
            design_snr_db=design_snr,
            frame_index=index,
            frame_count=frame_count,
        )
        try:
            header.check_ranges()
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        start, stop = frame_slice(total, frame_count, index)
        bursts.append(shape(frame_symbols(header, symbols[start:stop], cfg), cfg))
    return bursts
