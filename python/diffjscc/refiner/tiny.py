"""Tiny, seeded refiner components for tests and the CPU benchmark (no downloads).

Same architecture families as Stable Diffusion 2.1-base (UNet with cross
attention and linear projections, 4-level KL VAE, CLIP text encoder, CLIP BPE
tokenizer), scaled down to a few layers and small channels. The tokenizer has
a byte-level vocabulary and no merges, so any text tokenises.
"""

from __future__ import annotations

import tempfile

import torch

from diffjscc.refiner._deps import require

TINY_CONTEXT_DIM = 32
TINY_MAX_TOKENS = 16


def tiny_unet(seed: int = 0, block_out_channels=(32, 64), layers_per_block: int = 2):
    diffusers = require("diffusers")
    torch.manual_seed(seed)
    n = len(block_out_channels)
    return diffusers.UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=TINY_CONTEXT_DIM,
        attention_head_dim=tuple(max(1, c // 16) for c in block_out_channels),
        use_linear_projection=True,
        norm_num_groups=16,
    )


def tiny_vae(seed: int = 0):
    diffusers = require("diffusers")
    torch.manual_seed(seed)
    return diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
        scaling_factor=0.18215,
    )


def tiny_text_encoder(seed: int = 0, vocab_size: int = 514):
    transformers = require("transformers")
    torch.manual_seed(seed)
    config = transformers.CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TINY_CONTEXT_DIM,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=TINY_MAX_TOKENS,
        hidden_act="gelu",
        projection_dim=TINY_CONTEXT_DIM,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=0,
    )
    return transformers.CLIPTextModel(config)


def tiny_tokenizer():
    transformers = require("transformers")
    from tokenizers.pre_tokenizers import ByteLevel

    chars = sorted(ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tok = transformers.CLIPTokenizer(
        vocab=vocab, merges=[], pad_token="!", model_max_length=TINY_MAX_TOKENS
    )
    # Round-trip through files so the tokenizer behaves exactly as a loaded one.
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        return transformers.CLIPTokenizer.from_pretrained(tmp)


def tiny_refiner(seed: int = 0, steps: int = 4, **control_options):
    """A complete tiny refiner; the control module starts from the UNet as in stage-2 init."""
    from diffjscc.refiner.control import DiffJSCCControlModule
    from diffjscc.refiner.pipeline import DiffJSCCRefiner, RefinerConfig

    unet = tiny_unet(seed)
    torch.manual_seed(seed + 1)
    control = DiffJSCCControlModule.from_unet(unet, **control_options)
    return DiffJSCCRefiner(
        unet,
        tiny_vae(seed + 2),
        control,
        tiny_text_encoder(seed + 3),
        tiny_tokenizer(),
        RefinerConfig(steps=steps, source="tiny"),
    )


# Stable Diffusion 2.1-base's component configs (from its published diffusers folders), so
# benchmarks can time models of the real size with random weights and no download.
SD21_BASE_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=1024,
    attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True,
    norm_num_groups=32,
)
SD21_BASE_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)
SD21_BASE_TEXT = dict(
    vocab_size=49408,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,  # OpenCLIP ViT-H's 24 minus the last: SD 2 reads the penultimate layer
    num_attention_heads=16,
    max_position_embeddings=77,
    hidden_act="gelu",
    projection_dim=512,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=0,
)


def sd21_sized_refiner(device="cpu", dtype=None, seed: int = 0):
    """A refiner with Stable Diffusion 2.1-base-sized random components (for timing only).

    The tokenizer is the tiny byte-level one with SD's 77-token context.
    """
    diffusers = require("diffusers")
    transformers = require("transformers")
    from diffjscc.refiner.control import DiffJSCCControlModule
    from diffjscc.refiner.pipeline import DiffJSCCRefiner, RefinerConfig

    torch.manual_seed(seed)
    with torch.device(device):
        unet = diffusers.UNet2DConditionModel(**SD21_BASE_UNET)
        control = DiffJSCCControlModule.from_unet(unet, copy_weights=False)
        vae = diffusers.AutoencoderKL(**SD21_BASE_VAE)
        text = transformers.CLIPTextModel(transformers.CLIPTextConfig(**SD21_BASE_TEXT))
    tokenizer = tiny_tokenizer()
    tokenizer.model_max_length = 77
    refiner = DiffJSCCRefiner(
        unet, vae, control, text, tokenizer, RefinerConfig(source="random SD2.1-base size")
    )
    return refiner.to(device, dtype)
