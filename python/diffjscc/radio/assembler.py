"""Gathers received frames into images: missing frames become zeros with a mask.

``add`` returns the images that a frame completes; ``poll`` returns, as
partial, the images that have waited ``timeout_s`` since their last frame. An
image never waits longer than that, whatever arrives or does not. A frame
received only in part (``ReceivedFrame.received_mask``) fills only its received
symbols; the rest stay zeros, unmasked, so the decoder sees erasures, and the
image is partial. Frames that
cannot belong to a usable image are counted in ``stats`` and dropped:

- ``bad_frame``: header fields that do not fit together or do not match the
  number of symbols (a wrong-length frame), an unknown rate code;
- ``inconsistent_header``: a frame whose image id is already in progress with a
  different shape, rate or frame count;
- ``duplicate_frame``: the same frame index twice with the image still in
  progress; the image in progress is closed as partial and a new one starts,
  because that is what a transmitter that repeats its images looks like.
"""

from __future__ import annotations

import cmath
import math
import time
from dataclasses import dataclass, field

import numpy as np

from diffjscc.radio.config import MAX_IMAGE_SYMBOLS
from diffjscc.radio.frame import FrameError, ReceivedFrame, frame_slice, image_symbol_count
from diffjscc.registry import get_model_spec


@dataclass
class AssembledImage:
    image_id: int
    model: str  # registry name
    image_shape: tuple[int, int]
    symbols: np.ndarray  # complex64, all symbols of the image, zeros where frames are missing
    received_mask: np.ndarray  # bool per symbol
    frames_received: int
    frame_count: int
    partial: bool
    snr_db: float  # symbol-weighted mean of the frames' estimates (linear domain)
    # Channel gain (training convention, see ReceivedFrame.h): RMS of the frames' |h|,
    # with the phase of their symbol-weighted mean (the symbols are already equalised).
    h: complex
    design_snr_db: float = float("nan")
    missing_frames: tuple[int, ...] = ()
    frame_snr_db: tuple[float, ...] = ()  # per received frame, in frame order
    # Noise variance of each equalised symbol (inf where not received), when a frame
    # gave one per symbol (``ReceivedFrame.symbol_noise_var``); None otherwise.
    symbol_noise_var: np.ndarray | None = None
    incomplete_frames: tuple[int, ...] = ()  # received, but only in part

    @property
    def rate_code(self) -> int:
        return get_model_spec(self.model).rate_code


@dataclass
class _Pending:
    first: ReceivedFrame
    total: int
    symbols: np.ndarray
    mask: np.ndarray
    frames: dict[int, ReceivedFrame] = field(default_factory=dict)
    last_arrival: float = 0.0


_SNR_LIMIT_DB = 200.0  # frame SNRs beyond +-this are taken as this

STAT_KEYS = (
    "frames_in",
    "frames_used",
    "frames_partial",
    "bad_frame",
    "inconsistent_header",
    "duplicate_frame",
    "images_complete",
    "images_partial",
    "images_evicted",
)


class ImageAssembler:
    """Frames -> images. Not thread safe: call it from one thread."""

    def __init__(
        self,
        timeout_s: float = 2.0,
        max_pending: int = 16,
        max_image_symbols: int = MAX_IMAGE_SYMBOLS,
        clock=time.monotonic,
    ):
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.timeout_s = float(timeout_s)
        self.max_pending = int(max_pending)
        self.max_image_symbols = int(max_image_symbols)
        self._clock = clock
        self._pending: dict[int, _Pending] = {}
        self.stats: dict[str, int] = dict.fromkeys(STAT_KEYS, 0)

    @property
    def pending_ids(self) -> list[int]:
        return list(self._pending)

    def add(self, frame: ReceivedFrame, now: float | None = None) -> list[AssembledImage]:
        """Add one frame; return the images it completes, and any that timed out meanwhile."""
        now = self._clock() if now is None else now
        done = self.poll(now)
        self.stats["frames_in"] += 1
        try:
            frame.validate(self.max_image_symbols)
        except FrameError:
            self.stats["bad_frame"] += 1
            return done
        pending = self._pending.get(frame.image_id)
        if pending is not None:
            f0 = pending.first
            if (f0.rate_code, f0.image_shape, f0.frame_count) != (
                frame.rate_code,
                frame.image_shape,
                frame.frame_count,
            ):
                self.stats["inconsistent_header"] += 1
                return done
            if frame.frame_index in pending.frames:
                self.stats["duplicate_frame"] += 1
                done.append(self._finish(frame.image_id))
                pending = None
        if pending is None:
            if len(self._pending) >= self.max_pending:
                oldest = min(self._pending, key=lambda k: self._pending[k].last_arrival)
                self.stats["images_evicted"] += 1
                done.append(self._finish(oldest))
            total = image_symbol_count(frame.rate_code, frame.image_shape)
            pending = _Pending(
                first=frame,
                total=total,
                symbols=np.zeros(total, dtype=np.complex64),
                mask=np.zeros(total, dtype=bool),
            )
            self._pending[frame.image_id] = pending
        start, stop = frame_slice(pending.total, frame.frame_count, frame.frame_index)
        mask = frame.mask()
        pending.symbols[start:stop] = np.where(mask, frame.symbols, 0)
        pending.mask[start:stop] = mask
        if not frame.complete:
            self.stats["frames_partial"] += 1
        pending.frames[frame.frame_index] = frame
        pending.last_arrival = now
        self.stats["frames_used"] += 1
        if len(pending.frames) == frame.frame_count:
            done.append(self._finish(frame.image_id))
        return done

    def add_meta(self, meta: dict, symbols, now: float | None = None) -> list[AssembledImage]:
        """``add`` for a frame given as PDU metadata and symbols; bad metadata is counted."""
        try:
            frame = ReceivedFrame.from_meta(meta, symbols)
        except FrameError:
            self.stats["frames_in"] += 1
            self.stats["bad_frame"] += 1
            return self.poll(now)
        return self.add(frame, now)

    def poll(self, now: float | None = None) -> list[AssembledImage]:
        """Images whose last frame is older than ``timeout_s``, closed as partial."""
        now = self._clock() if now is None else now
        expired = [k for k, p in self._pending.items() if now - p.last_arrival >= self.timeout_s]
        return [self._finish(k) for k in expired]

    def flush(self) -> list[AssembledImage]:
        """Close every image in progress (end of stream)."""
        return [self._finish(k) for k in list(self._pending)]

    def _finish(self, image_id: int) -> AssembledImage:
        p = self._pending.pop(image_id)
        frames = [p.frames[i] for i in sorted(p.frames)]
        counts = np.array([f.received_count for f in frames], dtype=np.float64)
        # Clipped: a PDU may claim any finite SNR, and 10 ** 500 overflows.
        snr_lin = 10.0 ** (
            np.clip([f.snr_db for f in frames], -_SNR_LIMIT_DB, _SNR_LIMIT_DB) / 10.0
        )
        snr_db = 10.0 * math.log10(max(float(np.sum(counts * snr_lin) / np.sum(counts)), 1e-12))
        # The RMS gain with the phase of the symbol-weighted mean gain: for one frame its
        # own h; for several, the tap's phase when there is no frequency offset (with one,
        # each frame sees another phase, and only the magnitude means something).
        h_rms = math.sqrt(float(np.mean([abs(f.h) ** 2 for f in frames])))
        h_phase = cmath.phase(complex(np.sum(counts * np.array([f.h for f in frames]))))
        partial = len(frames) < p.first.frame_count or not bool(p.mask.all())
        noise = None
        if any(f.symbol_noise_var is not None for f in frames):
            noise = np.full(p.total, np.inf, dtype=np.float32)
            for f in frames:
                start, stop = frame_slice(p.total, f.frame_count, f.frame_index)
                if f.symbol_noise_var is not None:
                    var = np.asarray(f.symbol_noise_var, dtype=np.float32)
                else:
                    var = np.full(
                        stop - start,
                        10.0 ** (-min(max(f.snr_db, -_SNR_LIMIT_DB), _SNR_LIMIT_DB) / 10.0),
                        dtype=np.float32,
                    )
                noise[start:stop] = np.where(f.mask(), var, np.inf)
        self.stats["images_partial" if partial else "images_complete"] += 1
        return AssembledImage(
            image_id=image_id,
            model=p.first.model,
            image_shape=p.first.image_shape,
            symbols=p.symbols,
            received_mask=p.mask,
            frames_received=len(frames),
            frame_count=p.first.frame_count,
            partial=partial,
            snr_db=snr_db,
            h=cmath.rect(h_rms, h_phase),
            design_snr_db=p.first.design_snr_db,
            missing_frames=tuple(i for i in range(p.first.frame_count) if i not in p.frames),
            frame_snr_db=tuple(f.snr_db for f in frames),
            symbol_noise_var=noise,
            incomplete_frames=tuple(f.frame_index for f in frames if not f.complete),
        )
