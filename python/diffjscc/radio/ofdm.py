"""The OFDM waveform: settings, frame layout and the transmitter.

One burst per frame, in samples::

    sync (8 x 32) | CP + OFDM symbol | CP + OFDM symbol | ...

- **Sync**: eight repetitions of a 32-sample block whose tones sit on the used
  band (every ``fft_size / 32``-th subcarrier), each repetition signed by the
  cover code of the single carrier's preamble (successive sign products form
  Barker-7). The receiver correlates with one block and multiplies
  neighbouring block correlations, Schmidl-Cox style: a frequency offset only
  rotates the products (the angle measures it, unambiguous to +-1/64 cycle per
  sample, 3 % of the symbol rate of a single carrier at sps 2), and the Barker
  signs leave no plateau, so the peak marks the burst start.
- **OFDM symbols**: ``used_carriers`` subcarriers around DC (DC itself unused),
  a comb of QPSK pilots every ``pilot_spacing`` subcarriers (the same comb in
  every symbol, values from the m-sequence of ``sequences.pilot_symbols``), the
  other used subcarriers carry data. The rest of the FFT is guard band: the
  receiver measures the noise there. With the defaults (512-point FFT, 256
  used) the signal fills half the sample rate, the band of the single carrier
  at sps 2, so both waveforms run at the same sample rate and the same
  ``noise_voltage`` gives the same SNR.
- **Data**: the 608 BPSK symbols of the frame header (``radio.header``, the
  same RM(1,5) code and CRC as the single carrier) on the first data
  subcarriers, then the frame's JSCC symbols, permuted by a fixed interleaver
  across all data subcarriers of all OFDM symbols (a faded subcarrier becomes
  noise scattered over the image instead of a hole in it); the last symbol's
  unused data subcarriers carry known QPSK padding.

The SNR convention (what ``noise_voltage`` gives and the receiver reports):
the payload's per-subcarrier Es/N0 for a unit flat channel, with unit average
power per sample; for a frequency-selective channel the receiver reports the
effective SNR of its equalised symbols (``ofdm_receiver``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from numbers import Integral

import numpy as np

from diffjscc.errors import ConfigError
from diffjscc.radio import header as hdr
from diffjscc.radio.config import MAX_PAYLOAD_SYMBOLS
from diffjscc.radio.frame import check_encoded_image, frame_header, frame_slice
from diffjscc.radio.sequences import COVER_SIGNS, pilot_symbols
from diffjscc.radio.waveform import Waveform

SYNC_PERIOD = 32  # samples per sync block
SYNC_BLOCKS = COVER_SIGNS.size  # 8
SYNC_LENGTH = SYNC_PERIOD * SYNC_BLOCKS  # 256 samples
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class OfdmConfig:
    """The OFDM waveform: what transmitter and receiver must agree on.

    ``clip_ratio_db`` (transmitter only) clips the OFDM symbols at this many dB
    above their RMS amplitude and filters the clipping noise out of the guard
    band (clip-and-filter); 0 turns it off.
    """

    fft_size: int = 512
    cp_length: int = 32  # cyclic prefix, samples (6.25 %)
    used_carriers: int = 256  # subcarriers around DC that carry something
    pilot_spacing: int = 8  # one pilot every this many used subcarriers (12.5 %)
    max_payload_symbols: int = 4096  # JSCC symbols per frame at most (transmitter)
    clip_ratio_db: float = 0.0  # 0: no clipping

    def __post_init__(self) -> None:
        for name in (
            "fft_size",
            "cp_length",
            "used_carriers",
            "pilot_spacing",
            "max_payload_symbols",
        ):
            value = getattr(self, name)
            if isinstance(value, Integral) and not isinstance(value, bool):
                object.__setattr__(self, name, int(value))
            elif isinstance(value, float) and value.is_integer():
                object.__setattr__(self, name, int(value))
            else:
                raise ConfigError(f"OFDM {name} must be an integer, got {value!r}")
        n = self.fft_size
        if not 64 <= n <= 8192 or n & (n - 1):
            raise ConfigError(f"OFDM fft_size must be a power of two in 64..8192, got {n}")
        if not 0 <= self.cp_length < n:
            raise ConfigError(
                f"OFDM cp_length must be in 0..{n - 1} (shorter than the FFT of {n}), "
                f"got {self.cp_length}"
            )
        u = self.used_carriers
        if u % 2 or not 2 * (n // SYNC_PERIOD) * 2 <= u <= n - 32:
            raise ConfigError(
                f"OFDM used_carriers must be even, at least {4 * (n // SYNC_PERIOD)} (the sync "
                f"needs 4 tones) and leave 32 guard subcarriers of the {n}, got {u}"
            )
        ps = self.pilot_spacing
        if not 2 <= ps <= u // 4 or (u // 2) % ps:
            raise ConfigError(
                f"OFDM pilot_spacing must divide used_carriers/2 = {u // 2} and leave at least "
                f"4 pilots, got {ps}"
            )
        # The pilot comb samples the channel's frequency response every ps subcarriers:
        # it resolves delays up to fft_size / ps samples, which must cover the prefix.
        if n // ps < self.cp_length:
            raise ConfigError(
                f"OFDM pilots every {ps} subcarriers resolve delays up to {n // ps} samples, "
                f"less than the cyclic prefix of {self.cp_length}: too few pilots"
            )
        if not 1 <= self.max_payload_symbols <= MAX_PAYLOAD_SYMBOLS:
            raise ConfigError(
                f"max_payload_symbols must be in 1..{MAX_PAYLOAD_SYMBOLS}, got {self.max_payload_symbols}"
            )
        clip = float(self.clip_ratio_db)
        if not (clip == 0.0 or 0.0 < clip <= 20.0):
            raise ConfigError(f"OFDM clip_ratio_db must be 0 (off) or in (0, 20], got {clip}")
        object.__setattr__(self, "clip_ratio_db", clip)

    @property
    def symbol_length(self) -> int:
        return self.fft_size + self.cp_length

    @property
    def oversampling(self) -> float:
        """Samples per channel use: fft_size / used_carriers (the single carrier's sps)."""
        return self.fft_size / self.used_carriers

    @property
    def layout(self) -> CarrierLayout:
        return carrier_layout(self.fft_size, self.used_carriers, self.pilot_spacing)

    @property
    def data_per_symbol(self) -> int:
        return self.layout.data.size


@dataclass(frozen=True)
class CarrierLayout:
    """Subcarrier indices (FFT bins, 0..fft_size-1) of each role."""

    pilots: np.ndarray
    data: np.ndarray
    noise: np.ndarray  # guard bins where the receiver measures the noise
    pilot_freqs: np.ndarray  # signed subcarrier numbers (-used/2..used/2)
    data_freqs: np.ndarray


@functools.lru_cache(maxsize=16)
def carrier_layout(fft_size: int, used: int, pilot_spacing: int) -> CarrierLayout:
    half = used // 2
    signed = np.concatenate([np.arange(-half, 0), np.arange(1, half + 1)])
    # Pilots at +-(ps/2 + j ps): an even comb across DC, symmetric about it.
    is_pilot = (np.abs(signed) - pilot_spacing // 2) % pilot_spacing == 0
    if pilot_spacing == 1:
        is_pilot[:] = True
    pilot_freqs, data_freqs = signed[is_pilot], signed[~is_pilot]
    # Noise: the guard band's inner half, clear of the band edge (leakage) and of the
    # anti-alias filters that roll off towards half the sample rate on real radios.
    guard = fft_size // 2 - half
    lo, hi = half + max(4, guard // 16), half + max(5, guard // 2)
    noise_freqs = np.concatenate([np.arange(-hi, -lo), np.arange(lo, hi)])
    out = CarrierLayout(
        pilots=pilot_freqs % fft_size,
        data=data_freqs % fft_size,
        noise=noise_freqs % fft_size,
        pilot_freqs=pilot_freqs,
        data_freqs=data_freqs,
    )
    for a in (out.pilots, out.data, out.noise, out.pilot_freqs, out.data_freqs):
        a.flags.writeable = False
    return out


@functools.lru_cache(maxsize=16)
def sync_block(fft_size: int, used: int) -> np.ndarray:
    """One 32-sample sync block, unit power: chirp-phased tones on the used band."""
    step = fft_size // SYNC_PERIOD
    half = used // 2
    tones = np.concatenate([np.arange(-(half // step), 0), np.arange(1, half // step + 1)]) * step
    i = np.arange(tones.size)
    spectrum = np.zeros(fft_size, dtype=np.complex128)
    spectrum[tones % fft_size] = np.exp(1j * np.pi * i * i / tones.size)  # low crest factor
    block = np.fft.ifft(spectrum)[:SYNC_PERIOD]  # periodic with SYNC_PERIOD
    block /= np.sqrt(np.mean(np.abs(block) ** 2))
    block = block.astype(np.complex64)
    block.flags.writeable = False
    return block


@functools.lru_cache(maxsize=16)
def sync_preamble(fft_size: int, used: int) -> np.ndarray:
    block = sync_block(fft_size, used)
    out = (COVER_SIGNS[:, None] * block[None, :]).reshape(-1).astype(np.complex64)
    out.flags.writeable = False
    return out


def ofdm_symbol_count(payload_symbols: int, cfg: OfdmConfig) -> int:
    """OFDM symbols of a frame with ``payload_symbols`` JSCC symbols."""
    return -(-(hdr.HEADER_SYMBOLS + int(payload_symbols)) // cfg.data_per_symbol)


def header_symbol_count(cfg: OfdmConfig) -> int:
    """OFDM symbols that hold header symbols (always the frame's first ones)."""
    return -(-hdr.HEADER_SYMBOLS // cfg.data_per_symbol)


def frame_samples(payload_symbols: int, cfg: OfdmConfig) -> int:
    return SYNC_LENGTH + ofdm_symbol_count(payload_symbols, cfg) * cfg.symbol_length


def channel_uses(payload_symbols: int, cfg: OfdmConfig) -> float:
    """Channel uses of a frame (its duration times its occupied bandwidth)."""
    return frame_samples(payload_symbols, cfg) / cfg.oversampling


@functools.lru_cache(maxsize=64)
def interleaver(n: int) -> np.ndarray:
    """Payload slot of each JSCC symbol: i -> (a i) mod n, a near n times the golden
    ratio and coprime with n, so neighbours in the latent land far apart."""
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    a = max(1, int(round(n * _GOLDEN)))
    while math.gcd(a, n) != 1:
        a += 1
    perm = (a * np.arange(n, dtype=np.int64)) % n
    perm.flags.writeable = False
    return perm


def pilot_values(num_symbols: int, cfg: OfdmConfig) -> np.ndarray:
    """[symbols, pilots] known QPSK pilot values."""
    p = cfg.layout.pilots.size
    return pilot_symbols(num_symbols * p).reshape(num_symbols, p)


def padding_values(count: int) -> np.ndarray:
    """Known QPSK on the last symbol's unused data subcarriers (the pilot table's far end)."""
    table = pilot_symbols(16383)
    return table[table.size - count :] if count else np.zeros(0, np.complex64)


def data_grid(header: hdr.FrameHeader, payload: np.ndarray, cfg: OfdmConfig) -> np.ndarray:
    """[symbols, data subcarriers] of a frame: header, interleaved payload, padding."""
    n = int(payload.size)
    m = ofdm_symbol_count(n, cfg)
    d = cfg.data_per_symbol
    flat = np.empty(m * d, dtype=np.complex64)
    flat[: hdr.HEADER_SYMBOLS] = hdr.encode_symbols(header)
    slots = hdr.HEADER_SYMBOLS + interleaver(n)
    flat[slots] = payload
    pad = m * d - hdr.HEADER_SYMBOLS - n
    flat[hdr.HEADER_SYMBOLS + n :] = padding_values(pad)
    return flat.reshape(m, d)


def modulate(data: np.ndarray, cfg: OfdmConfig) -> np.ndarray:
    """[symbols, data subcarriers] -> the burst's samples after the sync (CP included)."""
    m = data.shape[0]
    lay = cfg.layout
    n = cfg.fft_size
    grid = np.zeros((m, n), dtype=np.complex64)
    grid[:, lay.data] = data
    grid[:, lay.pilots] = pilot_values(m, cfg)
    # Unit-energy subcarrier symbols on used_carriers of fft_size bins: unit power per sample.
    time = np.fft.ifft(grid, axis=1) * (n / math.sqrt(cfg.used_carriers))
    if cfg.clip_ratio_db:
        from diffjscc.radio.ofdm_papr import clip_and_filter

        time = clip_and_filter(time, cfg)
    time = time.astype(np.complex64)
    return np.concatenate([time[:, n - cfg.cp_length :], time], axis=1).reshape(-1)


def build_bursts(enc, image_id: int, cfg: OfdmConfig | None = None) -> list[np.ndarray]:
    """One OFDM burst (complex64, unit average power per sample) per frame."""
    cfg = OfdmConfig() if cfg is None else cfg
    spec, (h, w), symbols, design_snr, total = check_encoded_image(enc)
    frame_count = math.ceil(total / cfg.max_payload_symbols)
    sync = sync_preamble(cfg.fft_size, cfg.used_carriers)
    bursts = []
    for index in range(frame_count):
        header = frame_header(spec, (h, w), design_snr, image_id, index, frame_count)
        start, stop = frame_slice(total, frame_count, index)
        body = modulate(data_grid(header, symbols[start:stop].astype(np.complex64), cfg), cfg)
        bursts.append(np.concatenate([sync, body]))
    return bursts


class OfdmWaveform(Waveform):
    """OFDM bursts (this module) and ``ofdm_receiver.OfdmReceiver``."""

    name = "ofdm"
    setting_names = (
        "fft_size",
        "cp_length",
        "used_carriers",
        "ofdm_pilot_spacing",
        "max_payload_symbols",
        "clip_ratio_db",
    )

    def __init__(self, cfg: OfdmConfig | None = None, **settings):
        if cfg is not None and settings:
            raise ConfigError("give either an OfdmConfig or settings, not both")
        if cfg is None:
            # ofdm_pilot_spacing: the blocks' pilot_spacing is the single carrier's (symbols).
            if "ofdm_pilot_spacing" in settings:
                settings["pilot_spacing"] = settings.pop("ofdm_pilot_spacing")
            try:
                cfg = OfdmConfig(**settings)
            except TypeError as exc:
                raise ConfigError(f"OFDM waveform: {exc}") from None
        self.cfg = cfg

    def settings(self) -> dict:
        c = self.cfg
        return {
            "fft_size": c.fft_size,
            "cp_length": c.cp_length,
            "used_carriers": c.used_carriers,
            "ofdm_pilot_spacing": c.pilot_spacing,
            "max_payload_symbols": c.max_payload_symbols,
            "clip_ratio_db": c.clip_ratio_db,
        }

    def build_bursts(self, enc, image_id: int) -> list[np.ndarray]:
        return build_bursts(enc, image_id, self.cfg)

    def make_receiver(self, tuning=None):
        from diffjscc.radio.ofdm_receiver import OfdmReceiver

        return OfdmReceiver(self.cfg, tuning)

    def noise_voltage(self, snr_db: float, amplitude: float = 1.0) -> float:
        return noise_voltage(snr_db, self.cfg, amplitude)

    def frame_samples(self, payload_symbols: int) -> int:
        return frame_samples(payload_symbols, self.cfg)


def noise_voltage(snr_db: float, cfg: OfdmConfig, amplitude: float = 1.0) -> float:
    """Per-sample complex noise std giving a per-subcarrier SNR of ``snr_db``: a unit-power
    burst puts fft_size / used_carriers of energy on each used subcarrier."""
    return float(amplitude) * math.sqrt(cfg.oversampling * 10.0 ** (-float(snr_db) / 10.0))
