"""The official-checkpoint converter, on an LDM-layout state dict built here from tiny models."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
yaml = pytest.importorskip("yaml")

from diffjscc.errors import ConfigError, WeightsNotFoundError  # noqa: E402
from diffjscc.refiner import official  # noqa: E402
from diffjscc.refiner.pipeline import DiffJSCCRefiner  # noqa: E402
from diffjscc.refiner.tiny import tiny_refiner  # noqa: E402

TEXT_HEADS = 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _official_config(ref) -> dict:
    """An LDM-style config.yaml for the tiny models, in the official file's shape."""
    unet = ref.unet.config
    vae = ref.vae.config
    width = unet.block_out_channels[0]
    common = {
        "in_channels": 4,
        "model_channels": width,
        "attention_resolutions": [
            2**i for i, t in enumerate(unet.down_block_types) if "CrossAttn" in t
        ],
        "num_res_blocks": unet.layers_per_block,
        "channel_mult": [c // width for c in unet.block_out_channels],
        "num_head_channels": unet.block_out_channels[0] // unet.attention_head_dim[0],
        "use_spatial_transformer": True,
        "use_linear_in_transformer": True,
        "transformer_depth": 1,
        "context_dim": unet.cross_attention_dim,
        "legacy": False,
        "norm_num_groups": unet.norm_num_groups,  # LDM fixes 32; the tiny models use fewer
    }
    return {
        "target": "model.cldm.ControlLDM",
        "params": {
            "linear_start": 0.00085,
            "linear_end": 0.0120,
            "timesteps": 1000,
            "scale_factor": 0.18215,
            "use_replace": False,
            "control_stage_config": {
                "target": "model.cldm.ControlNet",
                "params": {
                    **common,
                    "hint_channels": 4,
                    "use_snr": True,
                    "min_snr": 0,
                    "snr_scale": 100,
                },
            },
            "unet_config": {
                "target": "model.cldm.ControlledUnetModel",
                "params": {**common, "out_channels": 4},
            },
            "first_stage_config": {
                "target": "ldm.models.autoencoder.AutoencoderKL",
                "params": {
                    "embed_dim": 4,
                    "ddconfig": {
                        "double_z": True,
                        "z_channels": 4,
                        "resolution": 64,
                        "in_channels": 3,
                        "out_ch": 3,
                        "ch": vae.block_out_channels[0],
                        "ch_mult": [c // vae.block_out_channels[0] for c in vae.block_out_channels],
                        "num_res_blocks": vae.layers_per_block,
                        "attn_resolutions": [],
                        "norm_num_groups": vae.norm_num_groups,
                    },
                },
            },
            "cond_stage_config": {
                "target": "ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder",
                "params": {"freeze": True, "layer": "penultimate"},
            },
        },
    }


def _open_clip_state(text_encoder, seed=0) -> dict:
    """The tiny CLIP text model in OpenCLIP's layout, plus the last layer SD does not read."""
    gen = torch.Generator().manual_seed(seed)
    # transformers 5 has no "text_model." level inside CLIPTextModel, 4.x has
    sd = {k.removeprefix("text_model."): v for k, v in text_encoder.state_dict().items()}
    out = {
        "token_embedding.weight": sd["embeddings.token_embedding.weight"],
        "positional_embedding": sd["embeddings.position_embedding.weight"],
        "ln_final.weight": sd["final_layer_norm.weight"],
        "ln_final.bias": sd["final_layer_norm.bias"],
        "text_projection": torch.randn(32, 32, generator=gen),
        "logit_scale": torch.tensor(4.6),
    }
    n = text_encoder.config.num_hidden_layers
    for i in range(n + 1):  # layer n is the unused last one
        src = f"encoder.layers.{min(i, n - 1)}."
        dst = f"transformer.resblocks.{i}."
        out[dst + "attn.in_proj_weight"] = torch.cat(
            [sd[src + f"self_attn.{p}_proj.weight"] for p in "qkv"]
        )
        out[dst + "attn.in_proj_bias"] = torch.cat(
            [sd[src + f"self_attn.{p}_proj.bias"] for p in "qkv"]
        )
        for ours, theirs in (
            ("self_attn.out_proj", "attn.out_proj"),
            ("layer_norm1", "ln_1"),
            ("layer_norm2", "ln_2"),
            ("mlp.fc1", "mlp.c_fc"),
            ("mlp.fc2", "mlp.c_proj"),
        ):
            for leaf in ("weight", "bias"):
                out[f"{dst}{theirs}.{leaf}"] = sd[f"{src}{ours}.{leaf}"]
    return {official.TEXT_PREFIX + k: v for k, v in out.items()}


@pytest.fixture(scope="module")
def source():
    ref = tiny_refiner(seed=3)
    gen = torch.Generator().manual_seed(9)
    with (
        torch.no_grad()
    ):  # a trained-looking control module: nothing zero, SNR embedding non-trivial
        for p in ref.control.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    state = official.to_official_state_dict(ref)
    state.update(_open_clip_state(ref.text_encoder))
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    state["betas"] = betas
    state["alphas_cumprod"] = torch.cumprod(1 - betas, 0)
    return ref, _official_config(ref), state


def test_every_key_is_mapped_and_loads_strictly(source):
    ref, config, state = source
    converted = official.convert_official_state_dict(state, config, text_heads=TEXT_HEADS)
    unet, control, vae, text = official.build_models(converted)  # strict: raises on any gap
    for ours, theirs in (
        (ref.unet, unet),
        (ref.control, control),
        (ref.vae, vae),
        (ref.text_encoder, text),
    ):
        theirs_sd = theirs.state_dict()
        for key, value in ours.state_dict().items():
            torch.testing.assert_close(theirs_sd[key], value, rtol=0, atol=0, msg=key)
    assert converted.dropped == {
        "frozen copy of the VAE encoder (checked equal)": sum(
            k.startswith(official.COND_ENCODER_PREFIX) for k in state
        ),
        "text encoder: not used by SD's text conditioning": 2,
        "text encoder: layer after the one SD reads (penultimate)": 12,  # one resblock
        "DDPM schedule buffers (recomputed from the config)": 2,
    }
    assert converted.control_config["snr_scale"] == 100.0
    assert converted.text_config["num_hidden_layers"] == ref.text_encoder.config.num_hidden_layers


def test_converted_models_predict_the_same_noise(source):
    ref, config, state = source
    unet, control, vae, text = official.build_models(
        official.convert_official_state_dict(state, config, text_heads=TEXT_HEADS)
    )
    other = DiffJSCCRefiner(unet, vae, control, text, ref.tokenizer, ref.config)
    gen = torch.Generator().manual_seed(0)
    latents, cond = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 4, 8, 8, generator=gen)
    with torch.no_grad():
        context = ref.encode_text(["a red door", ""])
        torch.testing.assert_close(other.encode_text(["a red door", ""]), context)
        a = ref.predict_noise(
            latents, torch.tensor([999, 3]), context, cond, torch.tensor([1.0, 7.0])
        )
        b = other.predict_noise(
            latents, torch.tensor([999, 3]), context, cond, torch.tensor([1.0, 7.0])
        )
    torch.testing.assert_close(a, b)


def test_agrees_with_diffusers_own_ldm_conversion(source):
    """diffusers' single-file converters are an independent reading of the LDM layout."""
    sfu = pytest.importorskip("diffusers.loaders.single_file_utils")
    ref, config, state = source
    converted = official.convert_official_state_dict(state, config, text_heads=TEXT_HEADS)
    try:
        theirs_unet = sfu.convert_ldm_unet_checkpoint(state, dict(ref.unet.config))
        theirs_vae = sfu.convert_ldm_vae_checkpoint(state, dict(ref.vae.config))
        theirs_control = sfu.convert_controlnet_checkpoint(state, dict(ref.control.config))
    except (TypeError, KeyError) as exc:  # private API: skip rather than fail if it changes
        pytest.skip(f"diffusers' converter API changed: {exc}")
    for ours, theirs in (
        (converted.unet_state, theirs_unet),
        (converted.vae_state, theirs_vae),
    ):
        assert set(ours) == set(theirs)
        for key in ours:
            torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0, msg=key)
    shared = {k: v for k, v in theirs_control.items() if v is not None}
    assert set(shared) == {k for k in converted.control_state if not k.startswith("snr_embedding.")}
    for key in shared:
        torch.testing.assert_close(
            converted.control_state[key], shared[key], rtol=0, atol=0, msg=key
        )


def test_unknown_or_inconsistent_keys_stop_the_conversion(source):
    ref, config, state = source
    with pytest.raises(ConfigError, match="no place"):
        official.convert_official_state_dict(
            {**state, "mystery.weight": torch.zeros(1)}, config, TEXT_HEADS
        )
    key = next(
        k for k in state if k.startswith(official.COND_ENCODER_PREFIX + "encoder.conv_in.weight")
    )
    with pytest.raises(ConfigError, match="differs"):
        official.convert_official_state_dict({**state, key: state[key] + 1}, config, TEXT_HEADS)
    with pytest.raises(ConfigError, match="beta schedule"):
        official.convert_official_state_dict(
            {**state, "betas": state["betas"] * 2}, config, TEXT_HEADS
        )


def test_jscc_keys_are_handed_on_with_their_prefix(source):
    ref, config, state = source
    extra = {"preprocess_model.E.net.1.weight": torch.ones(2, 3, 7, 7)}
    converted = official.convert_official_state_dict({**state, **extra}, config, TEXT_HEADS)
    assert set(converted.jscc_state) == set(extra)


def test_convert_folder_end_to_end(source, tmp_path):
    ref, config, state = source
    ckpt_dir = tmp_path / "official"
    ckpt_dir.mkdir()
    (ckpt_dir / "config.yaml").write_text(yaml.safe_dump(config))
    torch.save({"state_dict": state, "global_step": 5}, ckpt_dir / "model.ckpt")
    ref.tokenizer.save_pretrained(tmp_path / "sd" / "tokenizer")
    # text heads cannot be read from weights: the tiny tower uses 2 (64-channel rule gives 1)
    refiner, converted = official.convert_official(
        ckpt_dir, tmp_path / "out", tokenizer_source=str(tmp_path / "sd"), text_heads=TEXT_HEADS
    )
    loaded = DiffJSCCRefiner.from_pretrained(tmp_path / "out")
    image = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    a = ref.refine(image, 2.0, caption="a boat", steps=2, seed=4).image
    b = loaded.refine(image, 2.0, caption="a boat", steps=2, seed=4).image
    np.testing.assert_array_equal(a, b)
    with pytest.raises(WeightsNotFoundError):
        official.convert_official(tmp_path / "nowhere", tmp_path / "out2")


def test_convert_refuses_an_existing_output_or_a_missing_tokenizer_before_reading(tmp_path):
    ckpt_dir = tmp_path / "official"
    ckpt_dir.mkdir()
    (ckpt_dir / "config.yaml").write_text("model: {}\n")
    (ckpt_dir / "model.ckpt").write_bytes(b"not a checkpoint: reading it would fail differently")
    (tmp_path / "out").mkdir()
    with pytest.raises(ConfigError, match="exists"):
        official.convert_official(ckpt_dir, tmp_path / "out")
    with pytest.raises(WeightsNotFoundError, match="tokenizer"):
        official.convert_official(ckpt_dir, tmp_path / "new", tokenizer_source=str(tmp_path))


def test_latent_scale_buffer_wins_over_the_config(source):
    ref, config, state = source
    converted = official.convert_official_state_dict(
        {**state, "scale_factor": torch.tensor(0.2)}, config, TEXT_HEADS
    )
    assert converted.vae_config["scaling_factor"] == pytest.approx(0.2)
