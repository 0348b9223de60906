"""Transmitter-side symbol optimisation: gradient steps on the channel symbols of one image.

The encoder's single pass is an amortised guess, trained to be good on average over many
images. The transmitter holds the image, the decoder's weights and the design SNR, so it can
do better for this one image: starting from the encoder's symbols, it lowers the expected
distortion E_n ||D(s + n) - x||^2 by gradient steps on s itself, over fresh noise draws, under
the same unit average power. The receiver does not change: same decoder, same number of
symbols, same power. The price is time at the transmitter: each step is one decoder forward
and backward pass (benchmarks/symbol_opt.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from diffjscc import channels as ch
from diffjscc.errors import ConfigError


@dataclass(frozen=True)
class SymbolOptConfig:
    """How hard the transmitter works on one image's symbols.

    ``steps``: Adam steps (0: the encoder's symbols as they are); ``lr``: the first step size
    on unit-power symbols, decayed to zero on a cosine; ``noise_draws``: channel draws per step;
    ``seed``: of those draws, so that a run can be repeated.
    """

    steps: int = 30
    lr: float = 0.03
    noise_draws: int = 1
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ConfigError(
                f"symbol optimisation steps must be an integer >= 0, not {self.steps}"
            )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"symbol optimisation lr must be a positive number, not {self.lr}")
        if not isinstance(self.noise_draws, int) or self.noise_draws < 1:
            raise ConfigError(f"noise_draws must be an integer >= 1, not {self.noise_draws}")


def _received(model, symbols: torch.Tensor, snr: torch.Tensor, h, generator) -> torch.Tensor:
    """What the decoder sees: AWGN, or block fading with the known h, zero-forced."""
    if model.config.channel_type == "rayleigh":
        received, _ = ch.rayleigh_block_fading(symbols, snr, h=h, generator=generator)
        return ch.zf_equalise(received, h)
    return ch.awgn(symbols, snr, generator=generator)


def optimise_symbols(
    model,
    image: torch.Tensor,
    symbols: torch.Tensor,
    snr_db: torch.Tensor,
    h: torch.Tensor | None = None,
    config: SymbolOptConfig | None = None,
    valid_shape: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Better symbols for ``image`` [1,3,H,W] in [0,1], from the encoder's ``symbols``.

    ``snr_db`` [1] and ``h`` [1] (Rayleigh models) are the CSI the encoder was given;
    ``valid_shape`` the image's own size inside its padding (only those pixels count).
    Returns unit-power complex symbols of the same shape; the model is left unchanged.
    """
    config = config or SymbolOptConfig()
    if config.steps == 0:
        return symbols
    if image.dim() != 4 or image.shape[0] != 1 or symbols.shape[0] != 1:
        raise ConfigError("optimise_symbols works on one image: shapes [1,3,H,W] and [1,...]")
    if model.config.channel_type == "rayleigh" and h is None:
        raise ConfigError("a Rayleigh model's symbols are optimised for a known gain h")
    vh, vw = valid_shape or image.shape[-2:]
    target = image[..., :vh, :vw].float()
    k = config.noise_draws
    snr_k = snr_db.reshape(1).expand(k)
    h_k = None if h is None else h.reshape(1).expand(k)
    generator = torch.Generator(device=symbols.device).manual_seed(config.seed)
    was_training = model.training
    model.eval()
    param = torch.view_as_real(symbols.detach().clone()).requires_grad_(True)
    opt = torch.optim.Adam([param], lr=config.lr)
    try:
        with torch.enable_grad():
            for step in range(config.steps):
                for group in opt.param_groups:
                    group["lr"] = config.lr * 0.5 * (1 + math.cos(math.pi * step / config.steps))
                sent = ch.normalise_power(torch.view_as_complex(param))
                received = _received(model, sent.expand(k, *sent.shape[1:]), snr_k, h_k, generator)
                decoded = model.decode(received, snr_k, h_k)[..., :vh, :vw]
                loss = F.mse_loss(decoded.float(), target.expand(k, -1, -1, -1))
                # autograd.grad, not backward: the model's own .grad stays untouched.
                (grad,) = torch.autograd.grad(loss, [param])
                param.grad = grad
                opt.step()
    finally:
        model.train(was_training)
    with torch.no_grad():
        return ch.normalise_power(torch.view_as_complex(param.detach()))
