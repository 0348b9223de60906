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
- **OFDM symbols**: ``used_carriers`` subcarriers around DC (DC itself unused);
  QPSK pilots (values from the m-sequence of ``sequences.pilot_symbols``) every
  ``pilot_spacing`` subcarriers, the comb shifted by ``pilot_spacing /
  pilot_stagger`` from one symbol to the next, so that two neighbouring symbols
  together sample the channel every 16 subcarriers with pilots on only 1 in 32 of
  each symbol's; the other used subcarriers carry data. The rest of the FFT is
  guard band: the receiver measures the noise there. With the defaults (1024-point
  FFT, 492 used) the signal fills 0.48 of the sample rate, about the band of the
  single carrier at sps 2, so both waveforms run at the same sample rate.
- **Data**: the BPSK symbols of the frame header (``radio.header``; version 2,
  the K=9 convolutional code, 240 symbols, by default; the receiver takes version
  1 too), spread evenly over every data subcarrier of the first OFDM symbol (the
  whole band) in the interleaver's order; then the frame's JSCC symbols, permuted
  by a fixed interleaver across the other data subcarriers of all OFDM symbols (a
  faded subcarrier becomes noise scattered over the image instead of a hole in
  it); the last symbol's unused data subcarriers carry known QPSK padding. Once
  decoded, the header and the padding are known symbols for the channel estimate.

The SNR convention (what ``noise_voltage`` gives and the receiver reports):
the payload's per-subcarrier Es/N0 for a unit flat channel, with unit average
power per sample (fft_size / used_carriers of energy per used subcarrier); for a
frequency-selective channel the receiver reports the effective SNR of its
equalised symbols (``ofdm_receiver``).
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

    fft_size: int = 1024
    cp_length: int = 32  # cyclic prefix, samples (3.1 %)
    used_carriers: int = 492  # subcarriers around DC that carry something (0.48 of the band)
    pilot_spacing: int = 32  # one pilot every this many used subcarriers in a symbol (3.1 %)
    pilot_stagger: int = 2  # comb positions the pilots step through, symbol by symbol
    max_payload_symbols: int = 4096  # JSCC symbols per frame at most (transmitter)
    clip_ratio_db: float = 0.0  # 0: no clipping
    header_version: int = hdr.VERSION_CONV  # the header code the transmitter sends

    def __post_init__(self) -> None:
        for name in (
            "fft_size",
            "cp_length",
            "used_carriers",
            "pilot_spacing",
            "pilot_stagger",
            "max_payload_symbols",
            "header_version",
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
        ps, k = self.pilot_spacing, self.pilot_stagger
        if k not in (1, 2):
            raise ConfigError(f"OFDM pilot_stagger must be 1 or 2, got {k}")
        if not 2 * k <= ps <= u // 8 or ps % (2 * k):
            raise ConfigError(
                f"OFDM pilot_spacing must be a multiple of {2 * k} (twice the stagger) and "
                f"leave at least 8 pilots of the {u} used subcarriers, got {ps}"
            )
        # The symbols' combs together sample the channel's frequency response every
        # ps / stagger subcarriers: they resolve delays up to fft_size * stagger / ps
        # samples, which must cover the prefix.
        if n * k // ps < self.cp_length:
            raise ConfigError(
                f"OFDM pilots every {ps} subcarriers (stagger {k}) resolve delays up to "
                f"{n * k // ps} samples, less than the cyclic prefix of {self.cp_length}: "
                "too few pilots"
            )
        if self.header_version not in hdr.VERSIONS:
            raise ConfigError(
                f"OFDM header_version must be one of {hdr.VERSIONS}, got {self.header_version}"
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
        return carrier_layout(
            self.fft_size, self.used_carriers, self.pilot_spacing, self.pilot_stagger
        )

    @property
    def data_per_symbol(self) -> int:
        return self.layout.data.shape[1]

    @property
    def pilots_per_symbol(self) -> int:
        return self.layout.pilots.shape[1]


@dataclass(frozen=True)
class CarrierLayout:
    """Subcarrier indices of each role. Bins are FFT bins (0..fft_size-1), freqs signed
    subcarrier numbers (-used/2..used/2, DC unused). Symbol i has the pilots and data
    of row ``i % stagger`` of ``pilots`` / ``data``; the rows' pilots together form an
    even comb (``comb_freqs``, sorted), on which the receiver interpolates."""

    used: np.ndarray  # [used] bins
    used_freqs: np.ndarray  # [used] signed, ascending
    pilots: np.ndarray  # [stagger, pilots per symbol] bins
    data: np.ndarray  # [stagger, data per symbol] bins
    pilot_freqs: np.ndarray  # [stagger, pilots per symbol]
    data_freqs: np.ndarray  # [stagger, data per symbol]
    comb_freqs: np.ndarray  # [stagger * pilots per symbol]
    pilot_in_comb: np.ndarray  # [stagger, pilots per symbol] positions in comb_freqs
    data_in_used: np.ndarray  # [stagger, data per symbol] positions in used_freqs
    noise: np.ndarray  # guard bins where the receiver measures the noise

    @property
    def stagger(self) -> int:
        return self.pilots.shape[0]

    def rows(self, count: int) -> np.ndarray:
        """The layout row of each of ``count`` OFDM symbols."""
        return np.arange(count) % self.stagger


@functools.lru_cache(maxsize=16)
def carrier_layout(fft_size: int, used: int, pilot_spacing: int, stagger: int = 1) -> CarrierLayout:
    half = used // 2
    signed = np.concatenate([np.arange(-half, 0), np.arange(1, half + 1)])
    # The comb of every symbol together: subcarriers c/2 + j c (c = spacing / stagger),
    # even across DC and symmetric about it; row r takes every stagger-th of them.
    comb = pilot_spacing // stagger
    pilot_rows, data_rows = [], []
    for r in range(stagger):
        is_pilot = (signed - comb // 2 - r * comb) % pilot_spacing == 0
        if comb == 1:
            is_pilot[:] = True
        pilot_rows.append(signed[is_pilot])
        data_rows.append(signed[~is_pilot])
    if len({p.size for p in pilot_rows}) != 1:
        raise ConfigError(
            f"OFDM pilots every {pilot_spacing} (stagger {stagger}) on {used} subcarriers give "
            "rows of different sizes"
        )
    pilot_freqs, data_freqs = np.stack(pilot_rows), np.stack(data_rows)
    comb_freqs = np.sort(pilot_freqs.reshape(-1))
    # Noise: the guard band's inner half, clear of the band edge (leakage) and of the
    # anti-alias filters that roll off towards half the sample rate on real radios.
    guard = fft_size // 2 - half
    lo, hi = half + max(4, guard // 16), half + max(5, guard // 2)
    noise_freqs = np.concatenate([np.arange(-hi, -lo), np.arange(lo, hi)])
    out = CarrierLayout(
        used=signed % fft_size,
        used_freqs=signed,
        pilots=pilot_freqs % fft_size,
        data=data_freqs % fft_size,
        pilot_freqs=pilot_freqs,
        data_freqs=data_freqs,
        comb_freqs=comb_freqs,
        pilot_in_comb=np.searchsorted(comb_freqs, pilot_freqs),
        data_in_used=np.searchsorted(signed, data_freqs),
        noise=noise_freqs % fft_size,
    )
    for a in vars(out).values():
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


def ofdm_symbol_count(payload_symbols: int, cfg: OfdmConfig, version: int | None = None) -> int:
    """OFDM symbols of a frame with ``payload_symbols`` JSCC symbols and a header of
    ``version`` (default: the one the transmitter sends)."""
    head = hdr.header_symbols(cfg.header_version if version is None else version)
    return -(-(head + int(payload_symbols)) // cfg.data_per_symbol)


def header_symbol_count(cfg: OfdmConfig, version: int | None = None) -> int:
    """OFDM symbols that hold header symbols (always the frame's first ones)."""
    head = hdr.header_symbols(cfg.header_version if version is None else version)
    return -(-head // cfg.data_per_symbol)


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
    """[symbols, pilots per symbol] known QPSK pilot values."""
    p = cfg.pilots_per_symbol
    return pilot_symbols(num_symbols * p).reshape(num_symbols, p)


def padding_values(count: int) -> np.ndarray:
    """Known QPSK on the last symbol's unused data subcarriers (the pilot table's far end)."""
    return _padding(int(count)).copy()


@functools.lru_cache(maxsize=64)
def _padding(count: int) -> np.ndarray:
    # Cached: the receiver needs them on every frame, and the table is 16383 long.
    table = pilot_symbols(16383)
    out = table[table.size - count :].copy() if count else np.zeros(0, np.complex64)
    out.flags.writeable = False
    return out


@dataclass(frozen=True)
class FrameSlots:
    """Where a frame's symbols sit in its [symbols, data subcarriers] grid (flat
    indices, row-major): header symbol j at ``header[j]``, JSCC symbol i at
    ``payload[i]``, known padding at ``padding``."""

    symbols: int  # OFDM symbols of the frame
    header: np.ndarray
    payload: np.ndarray
    padding: np.ndarray


@functools.lru_cache(maxsize=64)
def frame_slots(payload_symbols: int, data_per_symbol: int, version: int) -> FrameSlots:
    """The header's symbols spread evenly over every data subcarrier of the first OFDM
    symbols (the whole band: a fade over part of it costs the code scattered symbols,
    not a run of them, and the decoded header gives the channel estimate known symbols
    across the band), in the interleaver's order (neighbouring code bits far apart in
    frequency); the payload interleaved over the other slots; padding last."""
    n, d = int(payload_symbols), int(data_per_symbol)
    h = hdr.header_symbols(version)
    m = -(-(h + n) // d)
    span = -(-h // d) * d  # the header's symbols' slots
    spread = (np.arange(h, dtype=np.int64) * span) // h  # strictly increasing: span >= h
    free = np.ones(m * d, dtype=bool)
    free[spread] = False
    others = np.flatnonzero(free)
    out = FrameSlots(m, spread[interleaver(h)], others[interleaver(n)], others[n:])
    for a in (out.header, out.payload, out.padding):
        a.flags.writeable = False
    return out


def data_grid(header: hdr.FrameHeader, payload: np.ndarray, cfg: OfdmConfig) -> np.ndarray:
    """[symbols, data subcarriers] of a frame: header, interleaved payload, padding."""
    slots = frame_slots(int(payload.size), cfg.data_per_symbol, header.version)
    flat = np.empty(slots.symbols * cfg.data_per_symbol, dtype=np.complex64)
    flat[slots.header] = hdr.encode_symbols(header)
    flat[slots.payload] = payload
    flat[slots.padding] = padding_values(slots.padding.size)
    return flat.reshape(slots.symbols, cfg.data_per_symbol)


def modulate(data: np.ndarray, cfg: OfdmConfig) -> np.ndarray:
    """[symbols, data subcarriers] -> the burst's samples after the sync (CP included)."""
    m = data.shape[0]
    lay = cfg.layout
    n = cfg.fft_size
    grid = np.zeros((m, n), dtype=np.complex64)
    rows = lay.rows(m)
    np.put_along_axis(grid, lay.data[rows], data, axis=1)
    np.put_along_axis(grid, lay.pilots[rows], pilot_values(m, cfg), axis=1)
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
        header = frame_header(
            spec, (h, w), design_snr, image_id, index, frame_count, cfg.header_version
        )
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
        "pilot_stagger",
        "max_payload_symbols",
        "clip_ratio_db",
        "header_version",
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
            "pilot_stagger": c.pilot_stagger,
            "max_payload_symbols": c.max_payload_symbols,
            "clip_ratio_db": c.clip_ratio_db,
            "header_version": c.header_version,
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
