"""Building blocks of the JSCC encoder and decoder."""

from __future__ import annotations

import torch
from torch import nn


def make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'instance' or 'none', not {kind!r}")


class ConvNormAct(nn.Module):
    """Conv2d (or ConvTranspose2d) -> norm -> ReLU."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        stride: int = 1,
        padding_mode: str = "zeros",
        norm: str = "batch",
        transpose: bool = False,
    ):
        super().__init__()
        # A bias before a batch norm is cancelled by its mean; the official code keeps it
        # only for instance norm, and so do we so that its weights load unchanged.
        bias = norm == "instance"
        pad = kernel_size // 2
        if transpose:
            self.conv = nn.ConvTranspose2d(
                in_ch,
                out_ch,
                kernel_size,
                stride=stride,
                padding=pad,
                output_padding=stride - 1,
                bias=bias,
            )
        else:
            self.conv = nn.Conv2d(
                in_ch,
                out_ch,
                kernel_size,
                stride=stride,
                padding=pad,
                padding_mode=padding_mode,
                bias=bias,
            )
        self.norm = make_norm(norm, out_ch)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class ResidualBlock(nn.Module):
    """x + norm(conv(relu(norm(conv(x)))))."""

    def __init__(self, channels: int, padding_mode: str, norm: str = "batch"):
        super().__init__()
        bias = norm == "instance"
        self.conv1 = nn.Conv2d(
            channels, channels, 3, padding=1, padding_mode=padding_mode, bias=bias
        )
        self.norm1 = make_norm(norm, channels)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(
            channels, channels, 3, padding=1, padding_mode=padding_mode, bias=bias
        )
        self.norm2 = make_norm(norm, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))


class SNRGate(nn.Module):
    """Channel-wise affine modulation driven by the channel state.

    From the spatial mean of the features and the CSI, two small MLPs give a
    per-channel scale in (0, 1) and a per-channel shift: the network learns to
    spend its features differently at different SNRs (attention-based deep JSCC).
    """

    def __init__(self, channels: int, csi_dim: int):
        super().__init__()
        self.scale = nn.Sequential(
            nn.Linear(channels + csi_dim, channels),
            nn.ReLU(inplace=True),
            nn.Linear(channels, channels),
            nn.Sigmoid(),
        )
        self.shift = nn.Sequential(
            nn.Linear(channels + csi_dim, channels),
            nn.ReLU(inplace=True),
            nn.Linear(channels, channels),
        )

    def forward(self, x: torch.Tensor, csi: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        context = torch.cat([x.mean(dim=(2, 3)), csi.to(x.dtype)], dim=1)
        return x * self.scale(context).view(n, c, 1, 1) + self.shift(context).view(n, c, 1, 1)


class GatedResidualBlock(nn.Module):
    def __init__(self, channels: int, csi_dim: int, padding_mode: str, norm: str = "batch"):
        super().__init__()
        self.res = ResidualBlock(channels, padding_mode, norm)
        self.gate = SNRGate(channels, csi_dim)

    def forward(self, x: torch.Tensor, csi: torch.Tensor) -> torch.Tensor:
        return self.gate(self.res(x), csi)


class ZeroForcingSNRFeatures(nn.Module):
    """Rayleigh CSI [SNR dB, Re h, Im h] -> [SNR dB + 20 log10 |h|, SNR dB, |h|^2].

    After zero forcing, block fading with a known h is AWGN at the instantaneous SNR
    |h|^2 / sigma^2, so the first feature is what an AWGN model's gates take: a Rayleigh
    model started from AWGN weights, with the other two gate columns at zero, is that
    AWGN model fed the frame's SNR. The average SNR (what the encoder was given) and
    |h|^2 are there to learn from; h's phase, which zero forcing removes, is dropped.
    No parameters: the CSI on the wire and in the ONNX encoder's input stay as they are.
    """

    def forward(self, csi: torch.Tensor) -> torch.Tensor:
        snr_db = csi[:, :1]
        gain = (csi[:, 1:2] ** 2 + csi[:, 2:3] ** 2).clamp_min(1e-12)  # floor: |h| = 1e-6
        return torch.cat([snr_db + 10.0 * torch.log10(gain), snr_db, gain], dim=1)
