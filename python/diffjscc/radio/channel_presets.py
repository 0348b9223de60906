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
realisation at the sample rate, scaled in one of three ways (``NORMALISATIONS``):

- ``"band"``: the mean |H(f)|^2 over the signal's band is 1, weighted by the
  signal's power spectrum (``signal_spectrum(waveform)``; by default the middle
  half of the sample band, where both waveforms' defaults put their signal). The
  received signal power is then the transmitted one, so the nominal SNR is the
  received in-band SNR: "the same average SNR" as a flat channel, and what a
  comparison with the flat channel needs.
- ``"energy"``: unit tap energy, i.e. mean |H(f)|^2 = 1 over the whole sample
  band. A single draw's in-band gain then varies (several dB for EPA at 7.68 MS/s:
  the band is only half of it), so its effective SNR does too.
- ``"none"``: the raw draw, whose energy follows the preset's mean powers.

A flat preset (one tap: ``awgn``, ``rayleigh``) is never rescaled: a flat Rayleigh
draw's gain is the point of it. ``gnuradio_channel`` builds the GNU Radio
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
NO_PHASE_NOISE = -300.0  # dB: channels.impairments' phase noise turned down to nothing


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


NORMALISATIONS = ("band", "energy", "none")

# Bins of the frequency grid on which spectra and band gains are evaluated.
SPECTRUM_BINS = 1024


def flat_band(fraction: float = 0.5, bins: int = SPECTRUM_BINS) -> np.ndarray:
    """A flat power spectrum over ``fraction`` of the sample band, centred on 0 Hz
    (FFT bin order, summing to 1)."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"band fraction must be in (0, 1], got {fraction}")
    f = np.fft.fftfreq(int(bins))
    spectrum = (np.abs(f) <= fraction / 2 + 1e-12).astype(np.float64)
    return spectrum / spectrum.sum()


def signal_spectrum(waveform, bins: int = SPECTRUM_BINS, seed: int = 0) -> np.ndarray:
    """The power spectrum of a waveform's bursts (FFT bin order, summing to 1): Welch
    averages over the bursts of a 256x384 image of random symbols, so that the band
    is the waveform's own (its settings, pulse shape and guard band included)."""
    from diffjscc.symbols import EncodedImage

    rng = np.random.default_rng(seed)
    n = 2 * 16 * 24  # CBR 1/384 at 256x384: (C/2, H/16, W/16)
    sym = (rng.standard_normal(n) + 1j * rng.standard_normal(n)) / np.sqrt(2.0)
    enc = EncodedImage(
        sym.astype(np.complex64), (256, 384), (2, 16, 24), "jscc-awgn-cbr1_384", 10.0
    )
    x = np.concatenate(waveform.build_bursts(enc, image_id=0))
    segments = x[: x.size // bins * bins].reshape(-1, bins)
    window = np.hanning(bins)
    spectrum = np.mean(np.abs(np.fft.fft(segments * window, axis=1)) ** 2, axis=0)
    return spectrum / spectrum.sum()


def band_gain(taps, spectrum: np.ndarray | None = None) -> float:
    """Mean |H(f)|^2 of ``taps`` weighted by a power spectrum (default ``flat_band()``):
    the received over the transmitted signal power for a signal of that spectrum."""
    spectrum = flat_band() if spectrum is None else np.asarray(spectrum, dtype=np.float64)
    bins = spectrum.size
    taps = np.asarray(taps, dtype=np.complex128).reshape(-1)
    # H sampled exactly on the grid: the taps folded modulo the number of bins.
    folded = np.zeros(bins, np.complex128)
    np.add.at(folded, np.arange(taps.size) % bins, taps)
    response = np.abs(np.fft.fft(folded)) ** 2
    return float(np.sum(spectrum * response) / np.sum(spectrum))


def normalise_taps(taps, how: str = "band", spectrum: np.ndarray | None = None) -> np.ndarray:
    """``taps`` scaled as ``how`` says (``NORMALISATIONS``; module docstring)."""
    taps = np.asarray(taps, dtype=np.complex128)
    if how == "none":
        return taps
    if how == "energy":
        gain = float(np.sum(np.abs(taps) ** 2))
    elif how == "band":
        gain = band_gain(taps, spectrum)
    else:
        raise ConfigError(f"normalisation must be one of {', '.join(NORMALISATIONS)}, not {how!r}")
    return taps / np.sqrt(max(gain, 1e-24))


def draw_taps(
    preset: str | ChannelPreset,
    rng=None,
    sample_rate: float | None = None,
    normalise=None,
    spectrum: np.ndarray | None = None,
) -> np.ndarray:
    """Static taps at the sample rate for one realisation of a preset.

    ``normalise``: ``"band"`` (over ``spectrum``, default the middle half of the sample
    band), ``"energy"`` (the default, and ``True``) or ``"none"`` (``False``); applied
    to frequency-selective presets only (module docstring)."""
    p = get_preset(preset) if isinstance(preset, str) else preset
    rng = np.random.default_rng(rng)
    powers = p.tap_powers(sample_rate)
    if not p.fading:
        return np.sqrt(powers).astype(np.complex128)
    how = {None: "energy", True: "energy", False: "none"}.get(normalise, normalise)
    if how not in NORMALISATIONS:
        raise ConfigError(f"normalisation must be one of {', '.join(NORMALISATIONS)}, not {how!r}")
    taps = rayleigh_taps(powers, rng, normalise=False)
    if powers.size == 1:
        return taps
    return normalise_taps(taps, how, spectrum)


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
    normalise=None,
    spectrum: np.ndarray | None = None,
) -> list:
    """GNU Radio blocks, to connect in series, for a channel.

    ``taps`` (static complex taps at the sample rate) override the preset's
    realisation. ``doppler`` > 0 (normalised fD*Ts, per sample) makes the taps fade
    over time with ``channels.selective_fading_model`` (Rayleigh, or Rician with
    ``rician_k`` > 0). ``impairments``: keyword arguments of ``channels.impairments``
    (phase_noise_mag, magbal, phasebal, q_ofs, i_ofs, ...), applied after the channel
    model, noise included, as a receiver's front end would; without phase_noise_mag,
    no phase noise (the block's own default, 0 dB, is about 4 degrees rms). ``normalise`` and
    ``spectrum`` scale the preset's static draw as in ``draw_taps``.
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
        static = (
            draw_taps(p, seed, sample_rate, normalise, spectrum)
            if taps is None
            else np.asarray(taps)
        )
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
    return blocks + front_end(impairments)


def front_end(impairments: dict | None) -> list:
    """A receiver front end's impairments as GNU Radio blocks: ``channels.impairments``
    with the keyword arguments given (phase_noise_mag, magbal, phasebal, i_ofs, q_ofs,
    ...), or no block when there are none."""
    if not impairments:
        return []
    from gnuradio import channels

    # channels.impairments always adds phase noise: its phase_noise_mag of 0 is 0 dB
    # (about 4 degrees rms), not off. Only the impairments asked for are applied.
    return [channels.impairments(**{"phase_noise_mag": NO_PHASE_NOISE, **impairments})]
