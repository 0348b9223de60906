"""Channels to test against: named multipath presets, in numpy and as GNU Radio blocks.

Each preset is a power delay profile with the sample rate it is meant for
(delays in ns become taps at that rate) and whether its taps fade:

- ``awgn``: a unit channel.
- ``rayleigh``: flat Rayleigh fading (one complex Gaussian tap of unit mean power).
- ``indoor``: an exponential profile of 50 ns rms delay spread at 20 MS/s (one
  sample rms), a typical office (tens of ns).
- ``epa``, ``eva``: the Extended Pedestrian A and Extended Vehicular A profiles
  of 3GPP TS 36.104 (E-UTRA base station radio transmission and reception),
  Annex B.2, Tables B.2-2 and B.2-3: published excess tap delays and relative
  powers, used here as given. Assumed sample rate 7.68 MS/s (the LTE 5 MHz
  channel's rate): EPA spans 3.1 samples, EVA 19.3, both within the OFDM
  waveform's cyclic prefix of 32.

``exponential_taps(rms)`` gives the exponential profile of any rms delay
spread in samples (the benchmarks' sweep). ``draw_taps`` draws one static
realisation at the sample rate; ``gnuradio_channel`` builds the GNU Radio
blocks for a preset: ``channels.channel_model`` with static taps, or
``channels.selective_fading_model`` (Rayleigh or Rician taps with Doppler,
normalised fD*Ts) followed by ``channel_model`` for noise, frequency and clock
offset; optionally ``channels.impairments`` (phase noise, IQ imbalance, DC).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from diffjscc.errors import ConfigError

_FADING_LEAD = 4  # taps before the first path in selective_fading_model's filter


@dataclass(frozen=True)
class ChannelPreset:
    name: str
    delays_ns: tuple[float, ...]
    powers_db: tuple[float, ...]
    sample_rate: float  # Hz: the rate the delays are meant for
    fading: bool  # Rayleigh taps (True) or fixed ones
    description: str = ""

    def tap_powers(self, sample_rate: float | None = None) -> np.ndarray:
        """Mean tap powers at the sample rate (delays rounded to the nearest sample,
        powers of taps that fall together added), summing to 1."""
        rate = self.sample_rate if sample_rate is None else float(sample_rate)
        if not rate > 0:
            raise ConfigError(f"sample rate must be positive, got {sample_rate}")
        idx = np.rint(np.asarray(self.delays_ns) * 1e-9 * rate).astype(int)
        if idx.max() > 4096:
            raise ConfigError(f"preset {self.name} spans {idx.max()} samples at {rate:g} S/s")
        out = np.zeros(idx.max() + 1)
        np.add.at(out, idx, 10.0 ** (np.asarray(self.powers_db) / 10.0))
        return out / out.sum()

    def delays_samples(self, sample_rate: float | None = None) -> np.ndarray:
        rate = self.sample_rate if sample_rate is None else float(sample_rate)
        return np.asarray(self.delays_ns) * 1e-9 * rate

    def rms_delay_ns(self) -> float:
        p = 10.0 ** (np.asarray(self.powers_db) / 10.0)
        p = p / p.sum()
        d = np.asarray(self.delays_ns)
        mean = float(np.sum(p * d))
        return math.sqrt(float(np.sum(p * (d - mean) ** 2)))


def _exponential_ns(rms_ns: float, rate: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    step = 1e9 / rate
    n = int(math.ceil(10 * rms_ns / step)) + 1
    delays = tuple(float(k * step) for k in range(n))
    powers = tuple(float(-10.0 * math.log10(math.e) * k * step / rms_ns) for k in range(n))
    return delays, powers


_INDOOR = _exponential_ns(50.0, 20e6)

PRESETS: dict[str, ChannelPreset] = {
    "awgn": ChannelPreset("awgn", (0.0,), (0.0,), 20e6, False, "unit channel"),
    "rayleigh": ChannelPreset("rayleigh", (0.0,), (0.0,), 20e6, True, "flat Rayleigh fading"),
    "indoor": ChannelPreset(
        "indoor", _INDOOR[0], _INDOOR[1], 20e6, True, "exponential, 50 ns rms, at 20 MS/s"
    ),
    # 3GPP TS 36.104 Annex B.2, Table B.2-2 (Extended Pedestrian A).
    "epa": ChannelPreset(
        "epa",
        (0.0, 30.0, 70.0, 90.0, 110.0, 190.0, 410.0),
        (0.0, -1.0, -2.0, -3.0, -8.0, -17.2, -20.8),
        7.68e6,
        True,
        "3GPP EPA (TS 36.104 Table B.2-2), at 7.68 MS/s",
    ),
    # 3GPP TS 36.104 Annex B.2, Table B.2-3 (Extended Vehicular A).
    "eva": ChannelPreset(
        "eva",
        (0.0, 30.0, 150.0, 310.0, 370.0, 710.0, 1090.0, 1730.0, 2510.0),
        (0.0, -1.5, -1.4, -3.6, -0.6, -9.1, -7.0, -12.0, -16.9),
        7.68e6,
        True,
        "3GPP EVA (TS 36.104 Table B.2-3), at 7.68 MS/s",
    ),
}


def get_preset(name: str) -> ChannelPreset:
    preset = PRESETS.get(str(name).lower())
    if preset is None:
        raise ConfigError(
            f"unknown channel preset {str(name)[:40]!r} (known: {', '.join(PRESETS)})"
        )
    return preset


def exponential_taps(rms_samples: float) -> np.ndarray:
    """Mean tap powers (summing to 1) of an exponential profile, one tap per sample,
    exp(-l / rms) up to 10 rms; ``rms`` 0 is a single tap."""
    if not rms_samples >= 0:
        raise ConfigError(f"rms delay spread must be >= 0, got {rms_samples}")
    if rms_samples == 0:
        return np.ones(1)
    n = int(math.ceil(10 * rms_samples)) + 1
    p = np.exp(-np.arange(n) / rms_samples)
    return p / p.sum()


def rayleigh_taps(powers: np.ndarray, rng, normalise: bool = True) -> np.ndarray:
    """One realisation: complex Gaussian taps of the given mean powers; with
    ``normalise`` scaled to unit energy, so that the average SNR over the band is the
    nominal one (frequency selectivity without a change of mean gain)."""
    p = np.asarray(powers, dtype=np.float64)
    g = np.sqrt(p / 2.0) * (rng.standard_normal(p.size) + 1j * rng.standard_normal(p.size))
    if normalise:
        g /= max(float(np.linalg.norm(g)), 1e-12)
    return g.astype(np.complex128)


def draw_taps(
    preset: str | ChannelPreset, rng=None, sample_rate: float | None = None, normalise=None
) -> np.ndarray:
    """Static taps at the sample rate for one realisation of a preset.

    ``normalise`` (default: for frequency-selective presets, not for flat Rayleigh,
    whose point is the gain's variation) scales the realisation to unit energy."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    rng = np.random.default_rng(rng)
    powers = p.tap_powers(sample_rate)
    if not p.fading:
        return np.sqrt(powers).astype(np.complex128)
    if normalise is None:
        normalise = powers.size > 1
    return rayleigh_taps(powers, rng, normalise)


def parse_taps(text: str) -> np.ndarray:
    """``--taps`` text: comma-separated complex numbers, e.g. "1, 0.3-0.2j, 0.1j"."""
    try:
        taps = np.array([complex(t.strip().replace(" ", "")) for t in str(text).split(",")])
    except ValueError as exc:
        raise ConfigError(f"--taps: not a list of complex numbers: {str(text)[:60]!r}") from exc
    if taps.size == 0 or taps.size > 4096 or not np.all(np.isfinite(taps)) or not np.any(taps):
        raise ConfigError("--taps: give 1 to 4096 finite taps, not all zero")
    return taps


def gnuradio_channel(
    preset: str | ChannelPreset = "awgn",
    noise_voltage: float = 0.0,
    frequency_offset: float = 0.0,
    epsilon: float = 1.0,
    seed: int = 0,
    taps=None,
    doppler: float = 0.0,
    rician_k: float = 0.0,
    sample_rate: float | None = None,
    impairments: dict | None = None,
) -> list:
    """GNU Radio blocks, to connect in series, for a channel.

    ``taps`` (static complex taps at the sample rate) override the preset's
    realisation. ``doppler`` > 0 (normalised fD*Ts, per sample) makes the taps fade
    over time with ``channels.selective_fading_model`` (Rayleigh, or Rician with
    ``rician_k`` > 0). ``impairments``: keyword arguments of ``channels.impairments``
    (phase_noise_mag, magbal, phasebal, q_ofs, i_ofs, ...), applied after the channel
    model, noise included, as a receiver's front end would.
    """
    from gnuradio import channels

    p = get_preset(preset) if isinstance(preset, str) else preset
    blocks = []
    if doppler and doppler > 0:
        if taps is not None:
            raise ConfigError("give static taps or a Doppler (fading) channel, not both")
        # The model sinc-interpolates fractional delays within its filter only: the
        # profile starts a few taps in, so that the sinc's leading half is not cut off.
        delays = p.delays_samples(sample_rate) + _FADING_LEAD
        mags = np.sqrt(10.0 ** (np.asarray(p.powers_db) / 10.0))
        mags = mags / np.linalg.norm(mags)
        ntaps = int(math.ceil(delays.max())) + 2 * _FADING_LEAD
        blocks.append(
            channels.selective_fading_model(
                8,
                float(doppler),
                bool(rician_k > 0),
                float(rician_k),
                int(seed) & 0x7FFFFFFF,
                [float(d) for d in delays],
                [float(m) for m in mags],
                ntaps,
            )
        )
        static = [1.0 + 0j]
    else:
        static = draw_taps(p, seed, sample_rate) if taps is None else np.asarray(taps)
    blocks.append(
        channels.channel_model(
            noise_voltage=float(noise_voltage),
            frequency_offset=float(frequency_offset),
            epsilon=float(epsilon),
            taps=[complex(t) for t in static],
            noise_seed=int(seed) % (2**31 - 1) + 1,
            block_tags=False,
        )
    )
    if impairments:
        blocks.append(channels.impairments(**impairments))
    return blocks
