"""The SNR-adaptive deep JSCC codec (CNN), layer-compatible with the official DiffJSCC one.

::

    image [N,3,H,W] in [0,1]
      -> stem 7x7 conv (reflect pad), norm, ReLU                      width w
      -> num_downsampling x (3x3 stride-2 conv, norm, ReLU)           width min(w*2^i, max)
      -> encoder_blocks x (residual block -> SNR gate(CSI))           at H/16 x W/16
      -> 3x3 projection to C real channels                            latent [N,C,H/16,W/16]
    channel: first C/2 maps real, last C/2 imaginary; unit energy per image; y = h x + n; y / h
    latent_hat -> 3x3 conv -> decoder_blocks x (residual -> SNR gate) -> num_downsampling x
      (3x3 stride-2 transposed conv, norm, ReLU) -> 5x5 conv (reflect) -> sigmoid -> image

The CSI is [SNR dB] (AWGN models) or [SNR dB, Re h, Im h] (Rayleigh models). A Rayleigh
model with ``csi_features="zf_snr"`` turns it into [SNR_inst dB, SNR dB, |h|^2] inside the
encoder and decoder before the gates see it (``layers.ZeroForcingSNRFeatures``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from diffjscc import channels as ch
from diffjscc.errors import ConfigError, WeightsNotFoundError
from diffjscc.io import atomic_path
from diffjscc.jscc.delta import DELTA_BASE_KEY, apply_delta, quantise_delta
from diffjscc.jscc.layers import ConvNormAct, GatedResidualBlock, ZeroForcingSNRFeatures


@dataclass
class JSCCConfig:
    latent_channels: int = 4  # C real channels: C/2 complex symbols per latent position
    base_width: int = 64
    max_width_encoder: int = 384
    max_width_decoder: int = 384
    num_downsampling: int = 4
    encoder_blocks: int = 4
    decoder_blocks: int = 4
    norm: str = "batch"
    channel_type: str = (
        "awgn"  # what the CSI holds: "awgn" -> [snr], "rayleigh" -> [snr, Re h, Im h]
    )
    in_channels: int = 3
    out_channels: int = 3
    # What the SNR gates see of the CSI: "raw" the CSI itself; "zf_snr" (Rayleigh only)
    # [SNR dB + 20 log10 |h|, SNR dB, |h|^2], the zero-forced frame's SNR first.
    csi_features: str = "raw"

    def __post_init__(self):
        if self.latent_channels < 2 or self.latent_channels % 2:
            raise ConfigError(f"latent_channels must be even and >= 2, got {self.latent_channels}")
        if self.channel_type not in ("awgn", "rayleigh"):
            raise ConfigError(
                f"channel_type must be 'awgn' or 'rayleigh', got {self.channel_type!r}"
            )
        if self.csi_features not in ("raw", "zf_snr"):
            raise ConfigError(f"csi_features must be 'raw' or 'zf_snr', got {self.csi_features!r}")
        if self.csi_features == "zf_snr" and self.channel_type != "rayleigh":
            raise ConfigError("csi_features 'zf_snr' needs channel_type 'rayleigh' (h in the CSI)")

    @property
    def csi_dim(self) -> int:
        return 1 if self.channel_type == "awgn" else 3

    @property
    def downsampling_factor(self) -> int:
        return 2**self.num_downsampling

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> JSCCConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown JSCC config keys: {sorted(unknown)}")
        return cls(**data)


def csi_features(cfg: JSCCConfig) -> nn.Module:
    """What turns the CSI into the gates' input: no module (and no weights) for "raw"."""
    return ZeroForcingSNRFeatures() if cfg.csi_features == "zf_snr" else nn.Identity()


class JSCCEncoder(nn.Module):
    def __init__(self, cfg: JSCCConfig):
        super().__init__()
        w, top = cfg.base_width, cfg.max_width_encoder
        self.stem = ConvNormAct(cfg.in_channels, w, 7, padding_mode="reflect", norm=cfg.norm)
        self.downs = nn.ModuleList(
            ConvNormAct(min(w * 2**i, top), min(w * 2 ** (i + 1), top), 3, stride=2, norm=cfg.norm)
            for i in range(cfg.num_downsampling)
        )
        width = min(w * 2**cfg.num_downsampling, top)
        self.blocks = nn.ModuleList(
            GatedResidualBlock(width, cfg.csi_dim, padding_mode="zeros", norm=cfg.norm)
            for _ in range(cfg.encoder_blocks)
        )
        self.project = nn.Conv2d(width, cfg.latent_channels, 3, padding=1)
        self.csi_features = csi_features(cfg)

    def forward(self, image: torch.Tensor, csi: torch.Tensor) -> torch.Tensor:
        csi = self.csi_features(csi)
        x = self.stem(image)
        for down in self.downs:
            x = down(x)
        for block in self.blocks:
            x = block(x, csi)
        return self.project(x)


class JSCCDecoder(nn.Module):
    def __init__(self, cfg: JSCCConfig):
        super().__init__()
        w, top, n = cfg.base_width, cfg.max_width_decoder, cfg.num_downsampling
        width = min(w * 2**n, top)
        bias = cfg.norm == "instance"
        self.expand = nn.Conv2d(cfg.latent_channels, width, 3, padding=1, bias=bias)
        self.blocks = nn.ModuleList(
            GatedResidualBlock(width, cfg.csi_dim, padding_mode="reflect", norm=cfg.norm)
            for _ in range(cfg.decoder_blocks)
        )
        self.ups = nn.ModuleList(
            ConvNormAct(
                min(w * 2 ** (n - i), top),
                min(w * 2 ** (n - i) // 2, top),
                3,
                stride=2,
                norm=cfg.norm,
                transpose=True,
            )
            for i in range(n)
        )
        self.head = nn.Conv2d(w, cfg.out_channels, 5, padding=2, padding_mode="reflect")
        self.csi_features = csi_features(cfg)

    def forward(self, latent: torch.Tensor, csi: torch.Tensor) -> torch.Tensor:
        csi = self.csi_features(csi)
        x = self.expand(latent)
        for block in self.blocks:
            x = block(x, csi)
        for up in self.ups:
            x = up(x)
        return torch.sigmoid(self.head(x))


def latent_to_complex(latent: torch.Tensor) -> torch.Tensor:
    half = latent.shape[1] // 2
    return torch.complex(latent[:, :half].float(), latent[:, half:].float())


def complex_to_latent(z: torch.Tensor) -> torch.Tensor:
    return torch.cat([z.real, z.imag], dim=1)


class DeepJSCC(nn.Module):
    """Encoder + channel + decoder. ``forward`` returns a dict with fixed keys."""

    def __init__(self, config: JSCCConfig | None = None, **kwargs):
        super().__init__()
        self.config = config if config is not None else JSCCConfig(**kwargs)
        self.encoder = JSCCEncoder(self.config)
        self.decoder = JSCCDecoder(self.config)

    # -- the three stages, usable on their own ---------------------------------------------
    def csi(self, snr_db: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        return ch.csi_vector(snr_db, h, self.config.channel_type)

    def encode(
        self, image: torch.Tensor, snr_db: torch.Tensor, h: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Image [N,3,H,W] -> unit-energy complex symbols [N, C/2, H/16, W/16]."""
        latent = self.encoder(image, self.csi(snr_db, h))
        return ch.normalise_power(latent_to_complex(latent))

    def decode(
        self, symbols: torch.Tensor, snr_db: torch.Tensor, h: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Equalised complex symbols [N, C/2, h, w] -> image [N,3,16h,16w] in [0,1]."""
        latent = complex_to_latent(symbols).to(self.decoder.expand.weight.dtype)
        return self.decoder(latent, self.csi(snr_db, h))

    def forward(
        self, image: torch.Tensor, snr_db: torch.Tensor, channel: str | None = None
    ) -> dict:
        """Simulate a transmission: ``channel`` defaults to the model's ``channel_type``."""
        channel = channel or self.config.channel_type
        # Drawn before encoding: a Rayleigh model's encoder takes h as CSI.
        h = ch.rayleigh_gain_torch(image.shape[0], image.device) if channel == "rayleigh" else None
        symbols = self.encode(image, snr_db, h)
        if channel == "awgn":
            received = ch.awgn(symbols, snr_db)
        elif channel == "rayleigh":
            received, h = ch.rayleigh_block_fading(symbols, snr_db, h=h)
            received = ch.zf_equalise(received, h)
        elif channel == "none":
            received = symbols
        else:
            raise ConfigError(f"channel must be 'awgn', 'rayleigh' or 'none', not {channel!r}")
        return {
            "x_hat": self.decode(received, snr_db, h),
            "symbols": symbols,
            "snr_db": snr_db,
            "h": h,
        }

    # -- weights + config in one file --------------------------------------------------------
    def save_pretrained(
        self,
        path: str | os.PathLike,
        extra_metadata: dict | None = None,
        dtype: torch.dtype = torch.float32,
        delta_base: str | os.PathLike | None = None,
    ) -> Path:
        """Write ``path`` (.safetensors) holding the weights and, in its metadata, the config.

        ``dtype=torch.float16`` halves the file; floating tensors are cast, counters are kept.
        ``delta_base`` (a weights file in the same folder) stores the weights as their
        4-bit difference from that file's instead (``diffjscc.jscc.delta``).
        """
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_suffix(".safetensors")
        state = {}
        for key, value in self.state_dict().items():
            value = value.detach().cpu()
            if value.is_floating_point():
                value = value.to(dtype)
            state[key] = value.contiguous()
        metadata = {"format": "pt", "diffjscc_config": json.dumps(self.config.to_dict())}
        if delta_base is not None:
            base = Path(delta_base)
            if base.resolve().parent != path.resolve().parent:
                raise ConfigError(f"the delta base {base} must be in the folder of {path}")
            base_state = type(self).from_pretrained(base).state_dict()
            state = quantise_delta(self.state_dict(), base_state)
            metadata[DELTA_BASE_KEY] = base.name
        metadata.update({k: str(v) for k, v in (extra_metadata or {}).items()})
        with atomic_path(path) as tmp:
            save_file(state, str(tmp), metadata=metadata)
        return path

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, map_location: str | torch.device = "cpu"
    ) -> DeepJSCC:
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise WeightsNotFoundError(f"JSCC weights not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
            state = load_file(str(path), device=str(map_location))
        except Exception as exc:  # safetensors raises several types for corrupt files
            raise WeightsNotFoundError(f"cannot read JSCC weights {path}: {exc}") from exc
        if "diffjscc_config" not in metadata:
            raise ConfigError(
                f"{path} has no diffjscc_config metadata; not a gr-diffjscc JSCC file"
            )
        model = cls(JSCCConfig.from_dict(json.loads(metadata["diffjscc_config"])))
        base_name = metadata.get(DELTA_BASE_KEY)
        if base_name is not None:
            base = cls.from_pretrained(path.parent / Path(base_name).name, map_location)
            try:
                state = apply_delta(state, base.state_dict())
            except (KeyError, ValueError, RuntimeError) as exc:
                raise WeightsNotFoundError(
                    f"{path} does not fit its base weights {base_name}: {exc}"
                ) from exc
        model.load_state_dict({k: v.float() for k, v in state.items()})
        return model.eval()
