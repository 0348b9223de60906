"""The DiffJSCC control module: a trainable copy of the UNet's encoder half.

::

    noisy latent z_t (4) ─┐
                          ├─ concat (8) ─ conv_in ─ down blocks ─ mid block
    VAE latent of x_hat (4)┘                 │            │            │
                                        zero 1x1 conv  zero 1x1     zero 1x1
                                             ▼            ▼            ▼
                             residuals added to the UNet's skip connections and middle

    time t ─ sinusoid ─ MLP ─┐
    SNR (dB) ─ sinusoid ─ MLP ┼─ sum = embedding of every ResNet block
    [gain h ─ MLP, optional] ─┘

As in ControlNet the output convolutions start at zero, so a fresh module leaves
the UNet's prediction unchanged; unlike diffusers' ``ControlNetModel`` the
condition is not embedded by a separate network but concatenated with the noisy
latent before the first convolution (8 input channels), which is what the
official DiffJSCC code does. The SNR embedding (sinusoid of ``snr_db * snr_scale
- snr_min`` followed by an MLP, 320 -> 1280 -> 1280 for SD 2.1) feeds the control
module only. The channel gain h, a condition in the paper that the released
code drops, is an option (``use_channel_gain``) whose last layer starts at zero.

Key names follow diffusers' ``ControlNetModel`` (``conv_in``, ``time_embedding``,
``down_blocks``, ``mid_block``, ``controlnet_down_blocks``,
``controlnet_mid_block``) plus ``snr_embedding`` and ``gain_embedding``.
"""

from __future__ import annotations

from diffjscc.refiner._deps import require

require("diffusers")

import torch  # noqa: E402
from diffusers.configuration_utils import ConfigMixin, register_to_config  # noqa: E402
from diffusers.models.embeddings import TimestepEmbedding, Timesteps  # noqa: E402
from diffusers.models.modeling_utils import ModelMixin  # noqa: E402
from diffusers.models.unets.unet_2d_blocks import (  # noqa: E402
    UNetMidBlock2DCrossAttn,
    get_down_block,
)
from torch import nn  # noqa: E402

# UNet config entries that shape the encoder half and so must match in the control module.
_SHARED_UNET_CONFIG = (
    "in_channels",
    "down_block_types",
    "block_out_channels",
    "layers_per_block",
    "downsample_padding",
    "mid_block_scale_factor",
    "act_fn",
    "norm_num_groups",
    "norm_eps",
    "cross_attention_dim",
    "transformer_layers_per_block",
    "attention_head_dim",
    "num_attention_heads",
    "use_linear_projection",
    "upcast_attention",
    "resnet_time_scale_shift",
    "flip_sin_to_cos",
    "freq_shift",
)


def _zero_conv(channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, kernel_size=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class DiffJSCCControlModule(ModelMixin, ConfigMixin):
    """ControlNet-style control module conditioned on the JSCC image and the channel state."""

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        hint_channels: int = 4,
        down_block_types: tuple[str, ...] = (
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ),
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1.0,
        act_fn: str = "silu",
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 1024,
        transformer_layers_per_block: int | tuple[int, ...] = 1,
        attention_head_dim: int | tuple[int, ...] = (5, 10, 20, 20),
        num_attention_heads: int | tuple[int, ...] | None = None,
        use_linear_projection: bool = True,
        upcast_attention: bool = False,
        resnet_time_scale_shift: str = "default",
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        use_snr: bool = True,
        snr_scale: float = 100.0,
        snr_min: float = 0.0,
        use_channel_gain: bool = False,
    ):
        super().__init__()
        n_blocks = len(down_block_types)
        if len(block_out_channels) != n_blocks:
            raise ValueError("block_out_channels and down_block_types differ in length")
        # diffusers' historical naming: for SD the "attention_head_dim" entries are head counts.
        heads = num_attention_heads or attention_head_dim
        heads = (heads,) * n_blocks if isinstance(heads, int) else tuple(heads)
        head_dims = (
            (attention_head_dim,) * n_blocks
            if isinstance(attention_head_dim, int)
            else tuple(attention_head_dim)
        )
        depth = (
            (transformer_layers_per_block,) * n_blocks
            if isinstance(transformer_layers_per_block, int)
            else tuple(transformer_layers_per_block)
        )

        width = block_out_channels[0]
        embed_dim = width * 4
        self.conv_in = nn.Conv2d(in_channels + hint_channels, width, kernel_size=3, padding=1)
        self.time_proj = Timesteps(width, flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(width, embed_dim, act_fn=act_fn)
        self.snr_proj = Timesteps(width, flip_sin_to_cos, freq_shift) if use_snr else None
        self.snr_embedding = TimestepEmbedding(width, embed_dim, act_fn=act_fn) if use_snr else None
        if use_channel_gain:
            self.gain_embedding = nn.Sequential(
                nn.Linear(2, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim)
            )
            # A fresh gain branch must not disturb a control module trained without it.
            nn.init.zeros_(self.gain_embedding[2].weight)
            nn.init.zeros_(self.gain_embedding[2].bias)
        else:
            self.gain_embedding = None

        self.down_blocks = nn.ModuleList()
        self.controlnet_down_blocks = nn.ModuleList([_zero_conv(width)])
        out_ch = width
        for i, block_type in enumerate(down_block_types):
            in_ch, out_ch = out_ch, block_out_channels[i]
            last = i == n_blocks - 1
            self.down_blocks.append(
                get_down_block(
                    block_type,
                    num_layers=layers_per_block,
                    transformer_layers_per_block=depth[i],
                    in_channels=in_ch,
                    out_channels=out_ch,
                    temb_channels=embed_dim,
                    add_downsample=not last,
                    resnet_eps=norm_eps,
                    resnet_act_fn=act_fn,
                    resnet_groups=norm_num_groups,
                    cross_attention_dim=cross_attention_dim,
                    num_attention_heads=heads[i],
                    attention_head_dim=head_dims[i] if head_dims[i] is not None else out_ch,
                    downsample_padding=downsample_padding,
                    use_linear_projection=use_linear_projection,
                    upcast_attention=upcast_attention,
                    resnet_time_scale_shift=resnet_time_scale_shift,
                )
            )
            for _ in range(layers_per_block + (0 if last else 1)):
                self.controlnet_down_blocks.append(_zero_conv(out_ch))
        self.mid_block = UNetMidBlock2DCrossAttn(
            transformer_layers_per_block=depth[-1],
            in_channels=block_out_channels[-1],
            temb_channels=embed_dim,
            resnet_eps=norm_eps,
            resnet_act_fn=act_fn,
            output_scale_factor=mid_block_scale_factor,
            resnet_time_scale_shift=resnet_time_scale_shift,
            cross_attention_dim=cross_attention_dim,
            num_attention_heads=heads[-1],
            resnet_groups=norm_num_groups,
            use_linear_projection=use_linear_projection,
            upcast_attention=upcast_attention,
        )
        self.controlnet_mid_block = _zero_conv(block_out_channels[-1])

    @classmethod
    def from_unet(
        cls,
        unet,
        hint_channels: int = 4,
        copy_weights: bool = True,
        **options,
    ) -> DiffJSCCControlModule:
        """A control module shaped like ``unet``'s encoder, initialised from its weights.

        This is what the official ``make_stage2_init_weight`` does: every encoder
        weight is copied, the extra input channels of the first convolution get
        zero weights (so the condition starts with no effect), and the SNR
        embedding and the zero convolutions keep their fresh initialisation.
        ``options`` are the control-only settings (``use_snr``, ``snr_scale``,
        ``snr_min``, ``use_channel_gain``).
        """
        cfg = unet.config
        mid = cfg.get("mid_block_type", "UNetMidBlock2DCrossAttn")
        if mid != "UNetMidBlock2DCrossAttn":
            raise ValueError(f"unsupported UNet mid block {mid!r}")
        if cfg.get("class_embed_type") or cfg.get("addition_embed_type"):
            raise ValueError("UNets with class or addition embeddings are not supported")
        shared = {k: cfg[k] for k in _SHARED_UNET_CONFIG if k in cfg}
        module = cls(hint_channels=hint_channels, **shared, **options)
        if copy_weights:
            module.load_unet_encoder_weights(unet)
        return module

    @torch.no_grad()
    def load_unet_encoder_weights(self, unet) -> None:
        unet_state = unet.state_dict()
        own = self.state_dict()
        copied = {}
        for name, tensor in own.items():
            source = unet_state.get(name)
            if source is None:
                continue
            if name == "conv_in.weight" and source.shape[1] < tensor.shape[1]:
                extra = tensor.shape[1] - source.shape[1]
                zeros = source.new_zeros(source.shape[0], extra, *source.shape[2:])
                source = torch.cat([source, zeros], dim=1)
            if source.shape != tensor.shape:
                raise ValueError(
                    f"UNet weight {name} has shape {tuple(source.shape)}, expected {tuple(tensor.shape)}"
                )
            copied[name] = source
        self.load_state_dict(copied, strict=False)

    def embed(self, timestep, snr_db, channel_gain, batch: int, dtype, device) -> torch.Tensor:
        t = torch.as_tensor(timestep, device=device)
        t = t.expand(batch) if t.dim() == 0 else t.reshape(-1).expand(batch)
        emb = self.time_embedding(self.time_proj(t).to(dtype))
        if self.snr_embedding is not None:
            if snr_db is None:
                raise ValueError("this control module is conditioned on the SNR: pass snr_db")
            snr = (
                torch.as_tensor(snr_db, dtype=torch.float32, device=device)
                .reshape(-1)
                .expand(batch)
            )
            scaled = snr * self.config.snr_scale - self.config.snr_min
            emb = emb + self.snr_embedding(self.snr_proj(scaled).to(dtype))
        if self.gain_embedding is not None:
            if channel_gain is None:
                gain = torch.ones(batch, dtype=torch.complex64, device=device)
            else:
                gain = torch.as_tensor(channel_gain, device=device).to(torch.complex64)
                gain = gain.reshape(-1).expand(batch)
            gain_features = torch.stack([gain.real, gain.imag], dim=-1).to(dtype)
            emb = emb + self.gain_embedding(gain_features)
        return emb

    def forward(
        self,
        sample: torch.Tensor,
        timestep,
        encoder_hidden_states: torch.Tensor,
        condition_latent: torch.Tensor,
        snr_db=None,
        channel_gain=None,
        scale: float = 1.0,
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Residuals for the UNet: (one per skip connection, one for the middle block)."""
        batch = sample.shape[0]
        emb = self.embed(timestep, snr_db, channel_gain, batch, sample.dtype, sample.device)
        hidden = self.conv_in(torch.cat([sample, condition_latent.to(sample.dtype)], dim=1))
        skips: tuple[torch.Tensor, ...] = (hidden,)
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                hidden, res = block(
                    hidden_states=hidden, temb=emb, encoder_hidden_states=encoder_hidden_states
                )
            else:
                hidden, res = block(hidden_states=hidden, temb=emb)
            skips += res
        hidden = self.mid_block(hidden, emb, encoder_hidden_states=encoder_hidden_states)
        down = tuple(
            conv(h) * scale for conv, h in zip(self.controlnet_down_blocks, skips, strict=True)
        )
        return down, self.controlnet_mid_block(hidden) * scale
