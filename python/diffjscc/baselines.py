"""Separation baselines at channel capacity: an image codec given the bits an ideal
channel code would carry in the JSCC's channel uses.

For an image sent with ``n`` complex symbols over an AWGN channel of SNR ``s``, a
capacity-achieving channel code delivers ``n * log2(1 + s)`` bits without error; the
source codec gets the largest whole number of bytes in that budget. Each codec tries
the image at full size and downscaled by 2, 4 and 8 (Lanczos), upscaled back after
decoding, and keeps the setting with the best PSNR that fits. An image that fits in
no setting is *undelivered*.

Codecs (both through Pillow):

- JPEG 2000 (OpenJPEG): raw J2K codestream (no JP2 container), 9/7 wavelet, colour
  transform on, one quality layer; OpenJPEG's rate control aims at a byte target, which
  is tightened until the codestream fits.
- AVIF (libavif + AV1 encoder): bisection over Pillow's ``quality`` (0..100) at a fixed
  ``speed``. Counted bytes are by default the AV1 bitstream only (the ``mdat`` payload,
  sequence header included): the HEIF boxes around it (~270 bytes) depend only on the
  image size and the encoder settings, which the receiver knows as the JSCC receiver does,
  and at a few hundred bytes of budget they would decide the comparison by themselves.
  ``avif_bytes="file"`` counts the whole file instead.

Rate-distortion points are computed lazily and cached per image, so all budgets of an
image (every CBR and SNR) share the encodes and decodes.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from diffjscc.errors import ConfigError
from diffjscc.metrics import psnr
from diffjscc.registry import ModelSpec, get_model_spec

SCALES = (1, 2, 4, 8)
# A downscaled image must keep at least this many pixels a side to be tried.
MIN_SCALED_SIDE = 8
# Mid-gray: what a receiver shows for an image it never got (the zero-rate guess).
UNDELIVERED_FILL = 128
AVIF_BYTES = ("payload", "file")


# -- capacity and budgets --------------------------------------------------------------------


def capacity_bits_per_symbol(snr_db: float) -> float:
    """Shannon capacity of the complex AWGN channel, log2(1 + SNR), in bits per channel use."""
    return math.log2(1.0 + 10.0 ** (float(snr_db) / 10.0))


def jscc_num_symbols(image_shape: tuple[int, int], model: str | ModelSpec) -> int:
    """Complex symbols the JSCC model sends for an image (padded to a multiple of 16)."""
    spec = get_model_spec(model)
    return spec.num_symbols(int(image_shape[0]), int(image_shape[1]))


def bit_budget(num_symbols: int, snr_db: float) -> float:
    """Bits a capacity-achieving code carries in ``num_symbols`` channel uses."""
    return num_symbols * capacity_bits_per_symbol(snr_db)


def byte_budget(num_symbols: int, snr_db: float) -> int:
    """Whole bytes of the bit budget (rounded down: a codec file is a byte string)."""
    return int(math.floor(bit_budget(num_symbols, snr_db) / 8.0 + 1e-9))


# -- selection -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One coded version of an image: what it costs and how good it is."""

    codec: str
    scale: int
    param: float  # AVIF quality, or the JPEG 2000 byte target
    num_bytes: int  # counted bytes
    psnr: float
    image: np.ndarray | None = field(default=None, compare=False, repr=False)


def select_best(candidates: Iterable[Candidate], budget_bytes: int) -> Candidate | None:
    """The candidate with the highest PSNR among those within the budget (fewer bytes on
    a tie); None when none fits, i.e. the image is not delivered."""
    best = None
    for cand in candidates:
        if cand.num_bytes > budget_bytes:
            continue
        if best is None or (cand.psnr, -cand.num_bytes) > (best.psnr, -best.num_bytes):
            best = cand
    return best


# -- codecs ----------------------------------------------------------------------------------


def avif_payload_bytes(data: bytes) -> int:
    """Bytes of the coded AV1 bitstream in an AVIF file: the payload of its ``mdat`` boxes."""
    total, pos, found = 0, 0, False
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            if pos + 16 > len(data):
                break
            (size,) = struct.unpack(">Q", data[pos + 8 : pos + 16])
            header = 16
        elif size == 0:
            size = len(data) - pos
        if size < header:
            break
        if kind == b"mdat":
            total += size - header
            found = True
        pos += size
    if not found:
        raise ValueError("not an AVIF file: no mdat box")
    return total


class Jpeg2000:
    """JPEG 2000 through Pillow/OpenJPEG; the parameter is a byte target."""

    name = "jpeg2000"
    refine_tries = 3
    # Below this fraction of the budget the target is only headers: nothing fits.
    min_target_fraction = 0.05

    def encode(self, image: Image.Image, target_bytes: float) -> bytes:
        raw = image.width * image.height * 3
        # OpenJPEG needs every resolution level to keep at least one pixel.
        levels = max(1, min(6, int(math.log2(min(image.size))) + 1))
        buf = io.BytesIO()
        image.save(
            buf,
            format="JPEG2000",
            no_jp2=True,
            irreversible=True,
            mct=1,
            num_resolutions=levels,
            quality_mode="rates",
            quality_layers=[max(1.0, raw / max(target_bytes, 1.0))],
        )
        return buf.getvalue()

    def counted_bytes(self, data: bytes) -> int:
        return len(data)

    def search(self, encode, budget_bytes: int):
        """(byte target, counted bytes) of the fullest codestream found within the budget, or
        None. OpenJPEG's rate control lands within a few percent of its target, on either side,
        and moves in steps (a slightly lower target can give the same size): lower the target
        with a growing margin until the codestream fits, then bisect towards the budget."""
        if budget_bytes <= 0:
            return None
        target, margin = float(budget_bytes), 0.99
        fit = None  # (target, size) of the fullest fit so far
        over = None  # lowest target that overshot
        while fit is None:
            size = encode(target)
            if size <= budget_bytes:
                fit = (target, size)
                break
            over = target
            target = target * budget_bytes / size * margin
            margin *= 0.95
            if target < self.min_target_fraction * budget_bytes:
                return None  # headers alone exceed the budget
        for _ in range(self.refine_tries):
            if budget_bytes - fit[1] <= max(2, 0.01 * budget_bytes):
                break
            target = 0.5 * (fit[0] + over) if over is not None else fit[0] * budget_bytes / fit[1]
            if abs(target - fit[0]) < 0.5:
                break
            size = encode(target)
            if size <= budget_bytes:
                if size > fit[1]:
                    fit = (target, size)
                else:
                    break  # no better than the fit we have: the rate control's step
            else:
                over = target
        return fit


class Avif:
    """AVIF through Pillow/libavif; the parameter is Pillow's quality (0..100)."""

    name = "avif"

    def __init__(self, speed: int = 6, count: str = "payload", threads: int = 1):
        if count not in AVIF_BYTES:
            raise ConfigError(f"AVIF byte count must be one of {AVIF_BYTES}, not {count!r}")
        if not 0 <= int(speed) <= 10:
            raise ConfigError(f"AVIF speed must be 0..10, not {speed}")
        self.speed = int(speed)
        self.count = count
        self.threads = int(threads)

    def encode(self, image: Image.Image, quality: float) -> bytes:
        buf = io.BytesIO()
        image.save(
            buf,
            format="AVIF",
            quality=int(quality),
            speed=self.speed,
            max_threads=self.threads,
            subsampling="4:2:0",
        )
        return buf.getvalue()

    def counted_bytes(self, data: bytes) -> int:
        return avif_payload_bytes(data) if self.count == "payload" else len(data)

    def search(self, encode, budget_bytes: int):
        """(quality, counted bytes) of the highest quality that fits, or None. Bisection:
        file size grows with quality (small inversions only cost a step of quality)."""
        size0 = encode(0)
        if size0 > budget_bytes:
            return None
        size100 = encode(100)
        if size100 <= budget_bytes:
            return 100, size100
        lo, lo_size, hi = 0, size0, 100
        while hi - lo > 1:
            mid = (lo + hi) // 2
            size = encode(mid)
            if size <= budget_bytes:
                lo, lo_size = mid, size
            else:
                hi = mid
        return lo, lo_size


def make_codecs(names: Sequence[str], avif_speed: int = 6, avif_bytes: str = "payload"):
    table = {"jpeg2000": Jpeg2000, "avif": lambda: Avif(avif_speed, avif_bytes)}
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ConfigError(f"unknown codec(s) {unknown}; known: {sorted(table)}")
    return [table[n]() for n in names]


# -- one image, all budgets --------------------------------------------------------------------


class ImageRateDistortion:
    """The coded versions of one image under one codec, computed on demand and cached."""

    def __init__(self, image: np.ndarray, codec, scales: Sequence[int] = SCALES):
        self.image = np.ascontiguousarray(image)
        self.codec = codec
        h, w = self.image.shape[:2]
        self.scales = [
            s for s in scales if s == 1 or min(h, w) / s >= MIN_SCALED_SIDE
        ]  # full size always
        pil = Image.fromarray(self.image)
        self._scaled = {
            s: pil
            if s == 1
            else pil.resize((max(1, round(w / s)), max(1, round(h / s))), Image.Resampling.LANCZOS)
            for s in self.scales
        }
        self._encoded: dict[tuple[int, float], bytes] = {}
        self._candidates: dict[tuple[int, float], Candidate] = {}
        self.encodes = 0

    def _encode(self, scale: int, param: float) -> bytes:
        key = (scale, float(param))
        if key not in self._encoded:
            self._encoded[key] = self.codec.encode(self._scaled[scale], param)
            self.encodes += 1
        return self._encoded[key]

    def _candidate(self, scale: int, param: float) -> Candidate:
        key = (scale, float(param))
        if key not in self._candidates:
            data = self._encode(scale, param)
            with Image.open(io.BytesIO(data)) as im:
                decoded = im.convert("RGB")
                h, w = self.image.shape[:2]
                if decoded.size != (w, h):
                    decoded = decoded.resize((w, h), Image.Resampling.LANCZOS)
                out = np.asarray(decoded)
            self._candidates[key] = Candidate(
                codec=self.codec.name,
                scale=scale,
                param=float(param),
                num_bytes=self.codec.counted_bytes(data),
                psnr=psnr(self.image, out),
                image=out,
            )
        return self._candidates[key]

    def best_fit(self, budget_bytes: int) -> Candidate | None:
        """The best-PSNR coded version within ``budget_bytes``, or None (undelivered)."""
        found = []
        if budget_bytes <= 0:
            return None
        for scale in self.scales:
            hit = self.codec.search(
                lambda p, s=scale: self.codec.counted_bytes(self._encode(s, p)), budget_bytes
            )
            if hit is not None:
                found.append(self._candidate(scale, hit[0]))
        return select_best(found, budget_bytes)


def undelivered_image(shape: tuple[int, ...]) -> np.ndarray:
    """The reconstruction counted for an undelivered image: uniform mid-gray."""
    return np.full((int(shape[0]), int(shape[1]), 3), UNDELIVERED_FILL, dtype=np.uint8)
