"""The one table of named JSCC models and channel rates.

Training, evaluation, the worker, the ONNX transmitter and the frame header
all look models up here, so a name or a rate code means the same everywhere.
A rate code is a small integer that fits in the radio frame header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from diffjscc.errors import ConfigError

# The encoder downsamples by 2**4 in each dimension: one latent position per 16x16 pixels.
DOWNSAMPLING = 16


def padded_shape(height: int, width: int, multiple: int = DOWNSAMPLING) -> tuple[int, int]:
    """Each side rounded up to a multiple, and to at least two: the shape the encoder sees.

    The model's reflection padding needs a latent of at least 2x2, so an image with a side
    of ``multiple`` pixels or less is padded to two multiples on that side.
    """

    def side(n: int) -> int:
        return max(2, -(-int(n) // multiple)) * multiple

    return side(height), side(width)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    rate_code: int  # carried in the radio frame header
    channels: int  # real latent channels C; C/2 complex symbols per latent position
    channel_type: str  # "awgn" or "rayleigh": what the model was trained for
    weights: str  # file stem under diffjscc/weights/ (.safetensors + .json [+ .onnx])

    @property
    def cbr(self) -> Fraction:
        """Channel bandwidth ratio: complex symbols per real pixel value (H*W*3)."""
        return Fraction(self.channels // 2, DOWNSAMPLING * DOWNSAMPLING * 3)

    @property
    def cbr_str(self) -> str:
        return f"{self.cbr.numerator}/{self.cbr.denominator}"

    def check_latent_channels(self, latent_channels: int) -> None:
        """Refuse weights that would send another number of symbols than this model's."""
        if latent_channels != self.channels:
            raise ConfigError(
                f"model has {latent_channels} latent channels, {self.name} needs {self.channels}"
            )

    def num_symbols(self, height: int, width: int) -> int:
        """Complex symbols sent for an image of this size (padded first, as the codec does)."""
        ph, pw = padded_shape(height, width)
        return (self.channels // 2) * (ph // DOWNSAMPLING) * (pw // DOWNSAMPLING)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "jscc-awgn-cbr1_384",
            rate_code=1,
            channels=4,
            channel_type="awgn",
            weights="jscc_awgn_cbr1_384",
        ),
        ModelSpec(
            "jscc-awgn-cbr1_96",
            rate_code=2,
            channels=16,
            channel_type="awgn",
            weights="jscc_awgn_cbr1_96",
        ),
        # Block Rayleigh fading, zero forcing, CSI [SNR, Re h, Im h]: docs/training.md.
        ModelSpec(
            "jscc-rayleigh-cbr1_384",
            rate_code=3,
            channels=4,
            channel_type="rayleigh",
            weights="jscc_rayleigh_cbr1_384",
        ),
    )
}

DEFAULT_MODEL = "jscc-awgn-cbr1_384"


def _check_rate_codes() -> None:
    # The frame header carries the rate code in 4 bits; the codes in use start at 1.
    codes = [spec.rate_code for spec in MODELS.values()]
    if len(set(codes)) != len(codes) or not all(1 <= c <= 15 for c in codes):
        raise ConfigError(f"registry: rate codes must be distinct and in 1..15, got {codes}")


_check_rate_codes()


def get_model_spec(key: str | int | Fraction | ModelSpec) -> ModelSpec:
    """Look a model up by name, rate code, or CBR ("1/384", Fraction(1, 384))."""
    if isinstance(key, ModelSpec):
        return key
    if isinstance(key, int):
        for spec in MODELS.values():
            if spec.rate_code == key:
                return spec
        raise ConfigError(
            f"unknown rate code {key}; known: {sorted(s.rate_code for s in MODELS.values())}"
        )
    if isinstance(key, str) and key in MODELS:
        return MODELS[key]
    cbr = key if isinstance(key, Fraction) else _parse_cbr(key)
    if cbr is not None:
        for spec in MODELS.values():
            if spec.cbr == cbr:
                return spec
    known = ", ".join(f"{s.name} (CBR {s.cbr_str})" for s in MODELS.values())
    shown = repr(key) if len(repr(key)) <= 60 else repr(key)[:60] + "...[truncated]"
    raise ConfigError(f"unknown JSCC model or CBR {shown}; known: {known}")


# A CBR is "p/q" with small integers: never Fraction() on arbitrary text, whose
# exponent form ("1e10000000") costs seconds of CPU per request.
_CBR_TEXT = re.compile(r"\s*(\d{1,6})\s*/\s*(\d{1,6})\s*")


def _parse_cbr(key) -> Fraction | None:
    if not isinstance(key, str) or len(key) > 32:
        return None
    match = _CBR_TEXT.fullmatch(key)
    if match is None or int(match.group(2)) == 0:
        return None
    return Fraction(int(match.group(1)), int(match.group(2)))
