"""Convert an official DiffJSCC checkpoint (LDM / ControlLDM layout) into a refiner folder.

An official checkpoint is a folder with ``config.yaml`` (the ``model.cldm.ControlLDM``
config) and ``model.ckpt`` (a Lightning checkpoint or a bare state dict). Its keys:

==============================  ==================================  =========================
official prefix                 what it is                          becomes
==============================  ==================================  =========================
``model.diffusion_model.``      SD UNet (openaimodel layout)        ``unet/``
``control_model.``              ControlNet copy + ``snr_embed``     ``control/``
``first_stage_model.``          SD VAE                              ``vae/``
``cond_encoder.``               frozen copy of the VAE encoder      checked equal, dropped
``cond_stage_model.model.``     OpenCLIP ViT-H text tower           ``text_encoder/`` (CLIP)
``preprocess_model.``           the JSCC codec                      ``jscc.safetensors``
``betas``, ``alphas_cumprod``…  DDPM schedule buffers               checked, dropped
==============================  ==================================  =========================

Every key is either mapped or deliberately dropped for a stated reason; a key
that is neither stops the conversion with the list of such keys. The reverse
mapping (``to_official_state_dict``) writes our weights in the official layout,
so the official code can load them for equivalence checks.

The OpenCLIP text tower is kept up to the layer SD 2.1 reads (the penultimate
one, ``layer: penultimate``), as diffusers' CLIPTextModel with one layer fewer,
whose final layer norm matches OpenCLIP's ``ln_final``. The tokenizer is not in
the checkpoint: it comes from a local Stable Diffusion 2.1-base folder or cache.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from diffjscc.errors import ConfigError, WeightsNotFoundError
from diffjscc.refiner._deps import require

UNET_PREFIX = "model.diffusion_model."
CONTROL_PREFIX = "control_model."
VAE_PREFIX = "first_stage_model."
COND_ENCODER_PREFIX = "cond_encoder."
TEXT_PREFIX = "cond_stage_model.model."
JSCC_PREFIX = "preprocess_model."
JSCC_FILE = "jscc.safetensors"  # the codec inside a refiner folder (``refine --simulate`` reads it)
SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "logvar",
    "lvlb_weights",
    "cond_ids",
    "scale_factor",  # a buffer only with scale_by_std; then it is the latent scale used
)

_RESNET_LDM_TO_DIFFUSERS = (
    ("in_layers.0.", "norm1."),
    ("in_layers.2.", "conv1."),
    ("emb_layers.1.", "time_emb_proj."),
    ("out_layers.0.", "norm2."),
    ("out_layers.3.", "conv2."),
    ("skip_connection.", "conv_shortcut."),
)
_VAE_ATTN_LDM_TO_DIFFUSERS = (
    ("norm.", "group_norm."),
    ("q.", "to_q."),
    ("k.", "to_k."),
    ("v.", "to_v."),
    ("proj_out.", "to_out.0."),
)
_CLIP_LAYER_LDM_TO_DIFFUSERS = (
    ("ln_1.", "layer_norm1."),
    ("ln_2.", "layer_norm2."),
    ("attn.out_proj.", "self_attn.out_proj."),
    ("mlp.c_fc.", "mlp.fc1."),
    ("mlp.c_proj.", "mlp.fc2."),
)


def _swap_prefix(rest: str, table, reverse: bool = False) -> str | None:
    for old, new in table:
        if reverse:
            old, new = new, old
        if rest.startswith(old):
            return new + rest[len(old) :]
    return None


# ---------------------------------------------------------------------------- UNet / control
def unet_key_to_diffusers(key: str, layers_per_block: int, control: bool = False) -> str | None:
    """Map one openaimodel UNet (or ControlNet) key to diffusers; None when not recognised."""
    per_level = layers_per_block + 1
    fixed = {
        "time_embed.0.": "time_embedding.linear_1.",
        "time_embed.2.": "time_embedding.linear_2.",
        "input_blocks.0.0.": "conv_in.",
    }
    if control:
        fixed.update(
            {
                "middle_block_out.0.": "controlnet_mid_block.",
                "snr_embed.0.": "snr_embedding.linear_1.",
                "snr_embed.2.": "snr_embedding.linear_2.",
            }
        )
    else:
        fixed.update({"out.0.": "conv_norm_out.", "out.2.": "conv_out."})
    for old, new in fixed.items():
        if key.startswith(old):
            return new + key[len(old) :]
    if control and (m := re.fullmatch(r"zero_convs\.(\d+)\.0\.(weight|bias)", key)):
        return f"controlnet_down_blocks.{m[1]}.{m[2]}"
    if m := re.fullmatch(r"input_blocks\.(\d+)\.(\d+)\.(.+)", key):
        i, j, rest = int(m[1]), int(m[2]), m[3]
        if i == 0:
            return None
        level, layer = divmod(i - 1, per_level)
        if layer == layers_per_block:
            return (
                f"down_blocks.{level}.downsamplers.0.conv.{rest[3:]}"
                if j == 0 and rest.startswith("op.")
                else None
            )
        if j == 0:
            mapped = _swap_prefix(rest, _RESNET_LDM_TO_DIFFUSERS)
            return None if mapped is None else f"down_blocks.{level}.resnets.{layer}.{mapped}"
        return f"down_blocks.{level}.attentions.{layer}.{rest}" if j == 1 else None
    if m := re.fullmatch(r"middle_block\.(\d)\.(.+)", key):
        j, rest = int(m[1]), m[2]
        if j == 1:
            return f"mid_block.attentions.0.{rest}"
        mapped = _swap_prefix(rest, _RESNET_LDM_TO_DIFFUSERS)
        return None if mapped is None or j not in (0, 2) else f"mid_block.resnets.{j // 2}.{mapped}"
    if not control and (m := re.fullmatch(r"output_blocks\.(\d+)\.(\d+)\.(.+)", key)):
        i, j, rest = int(m[1]), int(m[2]), m[3]
        level, layer = divmod(i, per_level)
        if j == 0:
            mapped = _swap_prefix(rest, _RESNET_LDM_TO_DIFFUSERS)
            return None if mapped is None else f"up_blocks.{level}.resnets.{layer}.{mapped}"
        if rest.startswith("conv."):
            return f"up_blocks.{level}.upsamplers.0.{rest}"
        return f"up_blocks.{level}.attentions.{layer}.{rest}" if j == 1 else None
    return None


def unet_key_to_official(
    key: str, layers_per_block: int, up_has_attention=(), control: bool = False
) -> str:
    """Inverse of ``unet_key_to_diffusers``; ``up_has_attention[level]`` places the upsampler."""
    per_level = layers_per_block + 1
    fixed = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "conv_in.": "input_blocks.0.0.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
        "controlnet_mid_block.": "middle_block_out.0.",
        "snr_embedding.linear_1.": "snr_embed.0.",
        "snr_embedding.linear_2.": "snr_embed.2.",
    }
    for old, new in fixed.items():
        if key.startswith(old):
            return new + key[len(old) :]
    if m := re.fullmatch(r"controlnet_down_blocks\.(\d+)\.(.+)", key):
        return f"zero_convs.{m[1]}.0.{m[2]}"
    if m := re.fullmatch(
        r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.+)", key
    ):
        level, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "downsamplers":
            return f"input_blocks.{1 + level * per_level + layers_per_block}.0.op.{rest[len('conv.') :]}"
        index = 1 + level * per_level + layer
        if kind == "resnets":
            return f"input_blocks.{index}.0.{_swap_prefix(rest, _RESNET_LDM_TO_DIFFUSERS, reverse=True)}"
        return f"input_blocks.{index}.1.{rest}"
    if m := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d)\.(.+)", key):
        if m[1] == "attentions":
            return f"middle_block.1.{m[3]}"
        return f"middle_block.{2 * int(m[2])}.{_swap_prefix(m[3], _RESNET_LDM_TO_DIFFUSERS, reverse=True)}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.+)", key):
        level, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "upsamplers":
            j = 2 if up_has_attention[level] else 1
            return f"output_blocks.{level * per_level + layers_per_block}.{j}.{rest}"
        index = level * per_level + layer
        if kind == "resnets":
            return f"output_blocks.{index}.0.{_swap_prefix(rest, _RESNET_LDM_TO_DIFFUSERS, reverse=True)}"
        return f"output_blocks.{index}.1.{rest}"
    raise ConfigError(f"no official name for UNet key {key!r}")


# ---------------------------------------------------------------------------- VAE
def vae_key_to_diffusers(key: str, num_levels: int) -> str | None:
    if m := re.fullmatch(r"(encoder|decoder)\.(conv_in|conv_out)\.(weight|bias)", key):
        return key
    if m := re.fullmatch(r"(encoder|decoder)\.norm_out\.(weight|bias)", key):
        return f"{m[1]}.conv_norm_out.{m[2]}"
    if re.fullmatch(r"(post_)?quant_conv\.(weight|bias)", key):
        return key
    if m := re.fullmatch(r"encoder\.down\.(\d+)\.block\.(\d+)\.(.+)", key):
        return f"encoder.down_blocks.{m[1]}.resnets.{m[2]}.{m[3].replace('nin_shortcut.', 'conv_shortcut.')}"
    if m := re.fullmatch(r"encoder\.down\.(\d+)\.downsample\.conv\.(weight|bias)", key):
        return f"encoder.down_blocks.{m[1]}.downsamplers.0.conv.{m[2]}"
    if m := re.fullmatch(r"decoder\.up\.(\d+)\.block\.(\d+)\.(.+)", key):
        level = num_levels - 1 - int(m[1])
        return f"decoder.up_blocks.{level}.resnets.{m[2]}.{m[3].replace('nin_shortcut.', 'conv_shortcut.')}"
    if m := re.fullmatch(r"decoder\.up\.(\d+)\.upsample\.conv\.(weight|bias)", key):
        return f"decoder.up_blocks.{num_levels - 1 - int(m[1])}.upsamplers.0.conv.{m[2]}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid\.block_([12])\.(.+)", key):
        return f"{m[1]}.mid_block.resnets.{int(m[2]) - 1}.{m[3].replace('nin_shortcut.', 'conv_shortcut.')}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid\.attn_1\.(.+)", key):
        mapped = _swap_prefix(m[2], _VAE_ATTN_LDM_TO_DIFFUSERS)
        return None if mapped is None else f"{m[1]}.mid_block.attentions.0.{mapped}"
    return None


def vae_key_to_official(key: str, num_levels: int) -> str:
    if m := re.fullmatch(r"(encoder|decoder)\.conv_norm_out\.(weight|bias)", key):
        return f"{m[1]}.norm_out.{m[2]}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{m[3].replace('conv_shortcut.', 'nin_shortcut.')}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        level = num_levels - 1 - int(m[1])
        return f"decoder.up.{level}.block.{m[2]}.{m[3].replace('conv_shortcut.', 'nin_shortcut.')}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        return f"decoder.up.{num_levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.+)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut.', 'nin_shortcut.')}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
        return f"{m[1]}.mid.attn_1.{_swap_prefix(m[2], _VAE_ATTN_LDM_TO_DIFFUSERS, reverse=True)}"
    return key


# ---------------------------------------------------------------------------- OpenCLIP text tower
def text_key_to_diffusers(key: str, used_layers: int) -> tuple[str | None, str]:
    """(diffusers key or None, reason when dropped) for one OpenCLIP key (prefix removed)."""
    fixed = {
        "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "positional_embedding": "text_model.embeddings.position_embedding.weight",
        "ln_final.weight": "text_model.final_layer_norm.weight",
        "ln_final.bias": "text_model.final_layer_norm.bias",
    }
    if key in fixed:
        return fixed[key], ""
    if key in ("text_projection", "logit_scale", "attn_mask"):
        return None, "not used by SD's text conditioning"
    if m := re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)", key):
        layer, rest = int(m[1]), m[2]
        if layer >= used_layers:
            return None, "layer after the one SD reads (penultimate)"
        if rest.startswith("attn.in_proj_"):
            return (
                f"text_model.encoder.layers.{layer}.self_attn.in_proj.{rest.rsplit('_', 1)[1]}",
                "",
            )
        mapped = _swap_prefix(rest, _CLIP_LAYER_LDM_TO_DIFFUSERS)
        return (
            (None, "unknown")
            if mapped is None
            else (f"text_model.encoder.layers.{layer}.{mapped}", "")
        )
    return None, "unknown"


# ---------------------------------------------------------------------------- configs
def _params(config: dict, *path: str) -> dict:
    node = config.get("model", config)
    node = node.get("params", node)
    for name in path:
        node = node.get(name)
        if node is None:
            raise ConfigError(f"official config has no {'.'.join(path)}")
        node = node.get("params", node)
    return node


def unet_config_from_official(params: dict) -> dict:
    mult = list(params.get("channel_mult", (1, 2, 4, 4)))
    width = int(params["model_channels"])
    channels = [width * m for m in mult]
    attention_levels = [
        2**i in set(params.get("attention_resolutions", ())) for i in range(len(mult))
    ]
    head_channels = int(params.get("num_head_channels", -1))
    heads = (
        [c // head_channels for c in channels] if head_channels > 0 else int(params["num_heads"])
    )
    return {
        "sample_size": int(params.get("image_size", 64)),
        "in_channels": int(params.get("in_channels", 4)),
        "out_channels": int(params.get("out_channels", params.get("in_channels", 4))),
        "block_out_channels": channels,
        "layers_per_block": int(params.get("num_res_blocks", 2)),
        "down_block_types": [
            "CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention_levels
        ],
        "up_block_types": [
            "CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention_levels)
        ],
        "cross_attention_dim": int(params["context_dim"]),
        "attention_head_dim": heads,
        "use_linear_projection": bool(params.get("use_linear_in_transformer", False)),
        "transformer_layers_per_block": int(params.get("transformer_depth", 1)),
        "norm_num_groups": int(params.get("norm_num_groups", 32)),  # LDM's GroupNorm32
        "upcast_attention": bool(params.get("upcast_attention", False)),
    }


def control_config_from_official(params: dict) -> dict:
    unet = unet_config_from_official(params)
    for key in ("sample_size", "out_channels", "up_block_types"):
        unet.pop(key)
    return {
        **unet,
        "hint_channels": int(params.get("hint_channels", 4)),
        "use_snr": bool(params.get("use_snr", True)),
        "snr_scale": float(params.get("snr_scale", 1)),
        "snr_min": float(params.get("min_snr", 0)),
    }


def vae_config_from_official(params: dict, scaling_factor: float) -> dict:
    dd = params["ddconfig"]
    mult = list(dd.get("ch_mult", (1, 2, 4, 4)))
    if int(params.get("embed_dim", dd["z_channels"])) != int(dd["z_channels"]):
        raise ConfigError("VAE embed_dim differs from z_channels; not a Stable Diffusion VAE")
    if dd.get("attn_resolutions"):
        raise ConfigError(
            "VAE with attention at resolutions other than the middle is not supported"
        )
    return {
        "in_channels": int(dd.get("in_channels", 3)),
        "out_channels": int(dd.get("out_ch", 3)),
        "down_block_types": ["DownEncoderBlock2D"] * len(mult),
        "up_block_types": ["UpDecoderBlock2D"] * len(mult),
        "block_out_channels": [int(dd["ch"]) * m for m in mult],
        "layers_per_block": int(dd.get("num_res_blocks", 2)),
        "latent_channels": int(dd["z_channels"]),
        "norm_num_groups": int(dd.get("norm_num_groups", 32)),
        "sample_size": int(dd.get("resolution", 256)),
        "scaling_factor": float(scaling_factor),
    }


def text_config_from_state(text_state: dict, layer: str, heads: int | None = None) -> dict:
    width = int(text_state["token_embedding.weight"].shape[1])
    total = 1 + max(
        int(k.split(".")[2]) for k in text_state if k.startswith("transformer.resblocks.")
    )
    used = total - 1 if layer == "penultimate" else total
    return {
        "vocab_size": int(text_state["token_embedding.weight"].shape[0]),
        "hidden_size": width,
        "intermediate_size": int(text_state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        "num_hidden_layers": used,
        "num_attention_heads": heads or max(1, width // 64),  # OpenCLIP: 64 channels per head
        "max_position_embeddings": int(text_state["positional_embedding"].shape[0]),
        "hidden_act": "gelu",
        "projection_dim": int(text_state["text_projection"].shape[1])
        if "text_projection" in text_state
        else width,
        # OpenCLIP's tokenizer: <start_of_text> 49406, <end_of_text> 49407, zero padding
        "bos_token_id": int(text_state["token_embedding.weight"].shape[0]) - 2,
        "eos_token_id": int(text_state["token_embedding.weight"].shape[0]) - 1,
        "pad_token_id": 0,
    }


# ---------------------------------------------------------------------------- conversion
@dataclass
class ConvertedRefiner:
    unet_config: dict
    unet_state: dict
    control_config: dict
    control_state: dict
    vae_config: dict
    vae_state: dict
    text_config: dict | None
    text_state: dict | None
    jscc_state: dict  # ``preprocess_model.*`` keys, prefix kept, for convert_official_jscc
    schedule: dict
    dropped: dict = field(default_factory=dict)  # reason -> number of keys


def _split(state: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def convert_official_state_dict(
    state: dict, config: dict, text_heads: int | None = None
) -> ConvertedRefiner:
    """Map an official ControlLDM state dict onto our components; every key accounted for."""
    torch = require("torch")
    top = _params(config)
    unet_params = _params(config, "unet_config")
    control_params = _params(config, "control_stage_config")
    vae_params = _params(config, "first_stage_config")
    layers = int(unet_params.get("num_res_blocks", 2))
    control_layers = int(control_params.get("num_res_blocks", 2))
    unknown: list[str] = []
    dropped: dict[str, int] = {}

    def convert(part: dict, mapper) -> dict:
        out = {}
        for key, value in part.items():
            new = mapper(key)
            if new is None:
                unknown.append(key)
            else:
                out[new] = value
        return out

    unet_state = convert(_split(state, UNET_PREFIX), lambda k: unet_key_to_diffusers(k, layers))
    control_state = convert(
        _split(state, CONTROL_PREFIX),
        lambda k: unet_key_to_diffusers(k, control_layers, control=True),
    )
    scale = state["scale_factor"] if "scale_factor" in state else top.get("scale_factor", 0.18215)
    vae_config = vae_config_from_official(vae_params, float(scale))
    levels = len(vae_config["block_out_channels"])
    vae_state = convert(_split(state, VAE_PREFIX), lambda k: vae_key_to_diffusers(k, levels))
    for key, value in list(vae_state.items()):
        if ".mid_block.attentions.0." in key and key.endswith("weight") and value.dim() == 4:
            vae_state[key] = value[:, :, 0, 0]  # 1x1 convolutions become linear layers

    cond = _split(state, COND_ENCODER_PREFIX)
    for key, value in cond.items():
        twin = _split(state, VAE_PREFIX).get(key)
        if twin is None:
            unknown.append(COND_ENCODER_PREFIX + key)
        elif twin.shape != value.shape or not torch.equal(twin, value):
            raise ConfigError(
                f"{COND_ENCODER_PREFIX}{key} differs from the VAE's {key}: this checkpoint's condition "
                "encoder was trained, which the refiner (one shared VAE) does not support"
            )
    if cond:
        dropped["frozen copy of the VAE encoder (checked equal)"] = len(cond)

    text_raw = _split(state, TEXT_PREFIX)
    text_config = text_state = None
    if text_raw:
        layer = str(_params(config, "cond_stage_config").get("layer", "penultimate"))
        text_config = text_config_from_state(text_raw, layer, text_heads)
        text_state = {}
        for key, value in text_raw.items():
            new, reason = text_key_to_diffusers(key, text_config["num_hidden_layers"])
            if new is None and reason == "unknown":
                unknown.append(TEXT_PREFIX + key)
            elif new is None:
                dropped[f"text encoder: {reason}"] = dropped.get(f"text encoder: {reason}", 0) + 1
            elif ".self_attn.in_proj." in new:
                base, kind = new.rsplit(".in_proj.", 1)
                for name, chunk in zip(
                    ("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True
                ):
                    text_state[f"{base}.{name}.{kind}"] = chunk.clone()
            else:
                text_state[new] = value

    schedule = {
        "num_train_timesteps": int(top.get("timesteps", 1000)),
        "beta_start": float(top.get("linear_start", 0.00085)),
        "beta_end": float(top.get("linear_end", 0.012)),
        "beta_schedule": "scaled_linear",
        "prediction_type": "epsilon"
        if top.get("parameterization", "eps") == "eps"
        else "v_prediction",
    }
    if "betas" in state:
        n = schedule["num_train_timesteps"]
        expected = (
            torch.linspace(
                schedule["beta_start"] ** 0.5, schedule["beta_end"] ** 0.5, n, dtype=torch.float64
            )
            ** 2
        )
        if state["betas"].shape != expected.shape or not torch.allclose(
            state["betas"].double(), expected, atol=1e-7
        ):
            raise ConfigError("the checkpoint's beta schedule is not the one its config states")
    buffers = [k for k in SCHEDULE_BUFFERS if k in state]
    if buffers:
        dropped["DDPM schedule buffers (recomputed from the config)"] = len(buffers)
    ema = [k for k in state if k.startswith("model_ema.")]
    if ema:
        dropped["EMA copy of the UNet (the refiner uses the UNet weights)"] = len(ema)
    jscc_state = {k: v for k, v in state.items() if k.startswith(JSCC_PREFIX)}

    known = (
        UNET_PREFIX,
        CONTROL_PREFIX,
        VAE_PREFIX,
        COND_ENCODER_PREFIX,
        TEXT_PREFIX,
        JSCC_PREFIX,
        "model_ema.",
    )
    unknown += [k for k in state if not k.startswith(known) and k not in SCHEDULE_BUFFERS]
    if unknown:
        shown = ", ".join(sorted(unknown)[:12])
        raise ConfigError(f"{len(unknown)} checkpoint keys have no place in the refiner: {shown}")
    return ConvertedRefiner(
        unet_config=unet_config_from_official(unet_params),
        unet_state=unet_state,
        control_config=control_config_from_official(control_params),
        control_state=control_state,
        vae_config=vae_config,
        vae_state=vae_state,
        text_config=text_config,
        text_state=text_state,
        jscc_state=jscc_state,
        schedule=schedule,
        dropped=dropped,
    )


def build_models(converted: ConvertedRefiner):
    """(unet, control, vae, text_encoder or None), weights loaded strictly."""
    diffusers = require("diffusers")
    transformers = require("transformers")
    from diffjscc.refiner.control import DiffJSCCControlModule

    def strict(model, state, name):
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ConfigError(
                f"{name}: converted weights do not fit: missing {result.missing_keys[:8]}, "
                f"unexpected {result.unexpected_keys[:8]}"
            )
        return model.eval()

    unet = strict(
        diffusers.UNet2DConditionModel(**converted.unet_config), converted.unet_state, "UNet"
    )
    control = strict(
        DiffJSCCControlModule(**converted.control_config), converted.control_state, "control module"
    )
    vae = strict(diffusers.AutoencoderKL(**converted.vae_config), converted.vae_state, "VAE")
    text = None
    if converted.text_state is not None:
        text = transformers.CLIPTextModel(transformers.CLIPTextConfig(**converted.text_config))
        state = converted.text_state
        if not any(k.startswith("text_model.") for k in text.state_dict()):
            # transformers >= 5 dropped the ``text_model.`` level inside CLIPTextModel
            state = {k.removeprefix("text_model."): v for k, v in state.items()}
        text = strict(text, state, "text encoder")
    return unet, control, vae, text


def to_official_state_dict(refiner) -> dict:
    """Our refiner's weights under the official ControlLDM key names (text tower excluded)."""
    unet_cfg = refiner.unet.config
    up_attn = ["CrossAttn" in t for t in unet_cfg.up_block_types]
    state = {}
    for key, value in refiner.unet.state_dict().items():
        state[UNET_PREFIX + unet_key_to_official(key, unet_cfg.layers_per_block, up_attn)] = value
    for key, value in refiner.control.state_dict().items():
        if key.startswith("gain_embedding."):
            raise ConfigError("the official layout has no channel-gain embedding")
        name = unet_key_to_official(key, refiner.control.config.layers_per_block, control=True)
        state[CONTROL_PREFIX + name] = value
    levels = len(refiner.vae.config.block_out_channels)
    for key, value in refiner.vae.state_dict().items():
        name = vae_key_to_official(key, levels)
        if (
            ".mid.attn_1." in name
            and name.endswith("weight")
            and value.dim() == 2
            and "norm" not in name
        ):
            value = value[:, :, None, None]
        state[VAE_PREFIX + name] = value
        if name.startswith(("encoder.", "quant_conv.")):
            state[COND_ENCODER_PREFIX + name] = value
    return state


# ---------------------------------------------------------------------------- files and CLI
def _official_files(folder: str | Path) -> tuple[Path, Path]:
    """(model.ckpt, config.yaml) of an official checkpoint folder (or a .ckpt beside config.yaml)."""
    path = Path(folder)
    ckpt = path / "model.ckpt" if path.is_dir() else path
    config_path = (path if path.is_dir() else path.parent) / "config.yaml"
    if not ckpt.is_file() or not config_path.is_file():
        raise WeightsNotFoundError(
            f"official DiffJSCC checkpoint not found at {str(path)!r}: expected a folder with config.yaml "
            "and model.ckpt (the released ones: C=4 and C=16 on OpenImages, C=2 and C=8 on CelebA-HQ; "
            "see the public repository mingyuyng/DiffJSCC for the download links)"
        )
    return ckpt, config_path


def load_official_checkpoint(folder: str | Path, trust_pickle: bool = False) -> tuple[dict, dict]:
    """(config dict, state dict) from an official checkpoint folder (or a .ckpt beside config.yaml).

    ``model.ckpt`` is read by :func:`diffjscc.unpickle.load_checkpoint`: Lightning's
    callback and loop objects, omegaconf containers and the like become inert
    placeholders and nothing pickled runs; ``trust_pickle`` lifts that (with a warning).
    """
    yaml = require("yaml")
    from diffjscc.unpickle import load_checkpoint

    ckpt, config_path = _official_files(folder)
    try:
        config = yaml.safe_load(config_path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config_path} is not readable YAML: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{config_path} is not a model config")
    raw = load_checkpoint(ckpt, trust_pickle=trust_pickle)
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(state, dict) or not state:
        raise ConfigError(f"{ckpt} holds no state dict")
    state = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}
    return config, state


def convert_official(
    source: str | Path,
    output: str | Path,
    tokenizer_source: str = "stabilityai/stable-diffusion-2-1-base",
    trust_pickle: bool = False,
    overwrite: bool = False,
    text_heads: int | None = None,
):
    """Convert an official checkpoint folder into a refiner folder (with ``jscc.safetensors``)."""
    transformers = require("transformers")
    from diffjscc.refiner.pipeline import (
        NO_VOCABULARY,
        DiffJSCCRefiner,
        RefinerConfig,
        _missing_weights,
        has_vocabulary,
    )

    # What can fail cheaply fails before the checkpoint (several GB) is read and converted.
    _official_files(source)
    if Path(output).exists() and not overwrite:
        raise ConfigError(f"{output} exists; pass overwrite=True (--overwrite) to replace it")
    try:
        tokenizer = transformers.CLIPTokenizer.from_pretrained(
            tokenizer_source, subfolder="tokenizer", local_files_only=True
        )
    except (OSError, ValueError) as exc:
        raise _missing_weights("Stable Diffusion tokenizer", tokenizer_source, exc) from exc
    if not has_vocabulary(tokenizer):
        raise _missing_weights("Stable Diffusion tokenizer", tokenizer_source, NO_VOCABULARY)
    config, state = load_official_checkpoint(source, trust_pickle)
    converted = convert_official_state_dict(state, config, text_heads)
    unet, control, vae, text = build_models(converted)
    if text is None:
        try:
            text = transformers.CLIPTextModel.from_pretrained(
                tokenizer_source, subfolder="text_encoder", local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise _missing_weights("Stable Diffusion text encoder", tokenizer_source, exc) from exc
    top = _params(config)
    refiner_config = RefinerConfig(
        schedule=converted.schedule,
        caption_replace=bool(top.get("use_replace", False)),
        source=f"official DiffJSCC checkpoint {Path(source).resolve()}",
    )
    refiner = DiffJSCCRefiner(unet, vae, control, text, tokenizer, refiner_config)
    extra = {}
    if converted.jscc_state:
        from diffjscc.jscc.convert import official_jscc_model

        jscc = official_jscc_model(converted.jscc_state, prefix=JSCC_PREFIX)
        check_jscc_config(jscc.config, config)
        origin = {
            "source": f"official DiffJSCC checkpoint {Path(source).resolve()} ({JSCC_PREFIX}*)"
        }
        extra[JSCC_FILE] = lambda path: jscc.save_pretrained(path, origin)
    refiner.save_pretrained(output, overwrite=overwrite, extra_files=extra)
    return refiner, converted


# official ``preprocess_config.params`` -> JSCCConfig field the weights' shapes give
_JSCC_CONFIG_FIELDS = {
    "ngf": "base_width",
    "max_ngf_E": "max_width_encoder",
    "max_ngf_D": "max_width_decoder",
    "n_downsample": "num_downsampling",
    "C_channel": "latent_channels",
    "n_blocks_E": "encoder_blocks",
    "n_blocks_D": "decoder_blocks",
}


def check_jscc_config(jscc_config, config: dict) -> None:
    """The JSCC config read from the weights agrees with the checkpoint's ``preprocess_config``."""
    try:
        params = _params(config, "preprocess_config")
    except ConfigError:
        return  # a config without it: the weights alone decide
    wrong = [
        f"{name}={params[name]} but the weights give {getattr(jscc_config, field)}"
        for name, field in _JSCC_CONFIG_FIELDS.items()
        if name in params and int(params[name]) != int(getattr(jscc_config, field))
    ]
    if wrong:
        raise ConfigError(f"preprocess_config disagrees with the JSCC weights: {'; '.join(wrong)}")


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="diffjscc convert-official-refiner",
        description="Convert an official DiffJSCC checkpoint (config.yaml + model.ckpt) into a refiner folder.",
    )
    p.add_argument("checkpoint", help="official checkpoint folder (config.yaml + model.ckpt)")
    p.add_argument("output", help="refiner folder to write")
    p.add_argument(
        "--sd",
        default="stabilityai/stable-diffusion-2-1-base",
        help="local SD 2.1-base folder or cached model id, for the tokenizer (default: %(default)s)",
    )
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="last resort: unpickle model.ckpt without restrictions (it can run code)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument(
        "--text-heads",
        type=int,
        default=None,
        help="attention heads of the text tower (default: width / 64, OpenCLIP's rule; "
        "the weights do not say)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = setup_args().parse_args(argv)
    _, converted = convert_official(
        args.checkpoint, args.output, args.sd, args.trust_pickle, args.overwrite, args.text_heads
    )
    print(
        f"wrote {args.output}"
        + (f" (with its JSCC codec, {JSCC_FILE})" if converted.jscc_state else "")
    )
    for reason, count in converted.dropped.items():
        print(f"  dropped {count} keys: {reason}")
    return 0


if __name__ == "__main__":
    from diffjscc.errors import DiffJSCCError

    try:
        sys.exit(main())
    except DiffJSCCError as exc:  # as the diffjscc command line does: a message, not a traceback
        print(f"convert-official-refiner: error: {exc}", file=sys.stderr)
        sys.exit(2)
