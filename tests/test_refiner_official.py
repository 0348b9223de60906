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


# ---------------------------------------------------------------------------- official folder


def _jscc_params(jscc) -> dict:
    """``preprocess_config.params`` in the official file's field names, for the test JSCC."""
    return {
        "input_nc": 3,
        "ngf": jscc.E.net[1].out_channels,
        "max_ngf_E": jscc.E.projection.in_channels,
        "max_ngf_D": jscc.G.mask_conv.out_channels,
        "n_downsample": 4,
        "norm": "batch",
        "init_type": "normal",
        "init_gain": 0.02,
        "C_channel": jscc.E.projection.out_channels,
        "output_nc": 3,
        "n_blocks_E": len(jscc.E.res_list) // 2,
        "n_blocks_D": len(jscc.G.res_list) // 2,
        "SNR_low": 0,
        "SNR_high": 14,
        "loss_type": "MSE",
        "channel": "AWGN",
    }


def _full_official_config(ref, jscc) -> dict:
    """The released config.yaml's layout: every top-level field, the JSCC's preprocess_config."""
    config = _official_config(ref)
    params = config["params"]
    params.update(
        {
            "num_timesteps_cond": 1,
            "log_every_t": 200,
            "first_stage_key": "jpg",
            "cond_stage_key": "txt",
            "control_key": "jpg",
            "image_size": 64,
            "channels": 4,
            "cond_stage_trainable": False,
            "conditioning_key": "crossattn",
            "monitor": "val/loss_simple_ema",
            "use_ema": False,
            "use_lang": True,
            "sd_locked": True,
            "only_mid_control": False,
            "learning_rate": 1e-4,
            "preprocess_config": {
                "target": "model.deepjscc_cnn.DeepJSCC",
                "params": _jscc_params(jscc),
            },
        }
    )
    for part in ("control_stage_config", "unet_config"):
        params[part]["params"].update({"use_checkpoint": True, "image_size": 32})
    vae = params["first_stage_config"]["params"]
    vae["monitor"] = "val/rec_loss"
    vae["ddconfig"]["dropout"] = 0.0
    vae["lossconfig"] = {"target": "torch.nn.Identity"}
    return config


@pytest.fixture(scope="module")
def official_folder(source, tmp_path_factory):
    """An official checkpoint folder: ControlLDM + JSCC keys, Lightning pickle, config.yaml."""
    from test_codec_convert import OfficialLayoutJSCC, _randomise
    from test_refiner_checkpoints import save_lightning_checkpoint

    ref, _, state = source
    jscc = OfficialLayoutJSCC().eval()
    _randomise(jscc)
    root = tmp_path_factory.mktemp("official")
    folder = root / "diffjscc_openimages_c4"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(_full_official_config(ref, jscc)))
    full = {**state, **{official.JSCC_PREFIX + k: v for k, v in jscc.state_dict().items()}}
    save_lightning_checkpoint(full, folder / "model.ckpt")
    ref.tokenizer.save_pretrained(root / "sd21" / "tokenizer")
    return root, folder, jscc


def test_official_folder_converts_with_its_jscc_and_refines_through_the_worker(
    source, official_folder
):
    from diffjscc.cli import main as diffjscc
    from diffjscc.jscc.codec import JSCCCodec
    from diffjscc.jscc.model import DeepJSCC
    from diffjscc.worker.broker import Broker
    from diffjscc.worker.client import WorkerClient
    from diffjscc.worker.engine import CodecEngine
    from diffjscc.worker.protocol import DecodeRequest
    from diffjscc.worker.server import WorkerServer

    ref, _, _ = source
    root, folder, official_jscc = official_folder
    out = root / "refiner"
    argv = [str(folder), str(out), "--sd", str(root / "sd21"), "--text-heads", str(TEXT_HEADS)]
    assert diffjscc(["convert-official-refiner", *argv]) == 0
    refiner = DiffJSCCRefiner.from_pretrained(out)
    jscc = DeepJSCC.from_pretrained(out / official.JSCC_FILE)  # diffjscc_config metadata present
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    csi = torch.tensor([[4.0]])
    with torch.no_grad():
        torch.testing.assert_close(jscc.encoder(x, csi), official_jscc.E(x, csi), atol=1e-5, rtol=0)
        z = torch.randn(1, 4, 2, 3, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(jscc.decoder(z, csi), official_jscc.G(z, csi), atol=1e-5, rtol=0)

    # the converted refiner and codec serve as a worker: decode, then refine
    model = "jscc-awgn-cbr1_384"
    codec = JSCCCodec(jscc, model)
    image = (np.random.default_rng(2).random((32, 48, 3)) * 255).astype(np.uint8)
    encoded = codec.encode(image, snr_db=5.0)
    engine = CodecEngine(device="cpu", codec_loader=lambda name: codec, refiner=refiner)
    broker = Broker("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", heartbeat_s=0.2).start()
    server = WorkerServer(engine, broker.backend_address, heartbeat_s=0.2, max_wait_s=0.005)
    server.start()
    try:
        with WorkerClient(broker.frontend_address, timeout_s=60) as client:
            reply = client.decode(
                DecodeRequest(
                    request_id=1, image_id=1, model=model, image_shape=(32, 48), snr_db=5.0,
                    symbols=encoded.symbols, refine=True, steps=2, seed=5,
                )
            )  # fmt: skip
    finally:
        server.stop()
        broker.stop()
    assert reply.ok, reply.error
    expected = ref.refine(reply.image, 5.0, steps=2, seed=5).image  # the source model itself
    np.testing.assert_array_equal(reply.refined, expected)

    # `diffjscc worker --refiner OUT` loads the folder as it is
    from diffjscc.worker.server import build_engine, build_parser

    args = build_parser().parse_args(["--refiner", str(out), "--device", "cpu"])
    served = build_engine(args).refiner
    again = served.refine(reply.image, 5.0, steps=2, seed=5).image
    np.testing.assert_array_equal(again, expected)


def test_refine_reproduces_official_preprocessing_on_a_converted_folder(source, official_folder):
    """--simulate --preprocess official: upsized to 512, zero-padded to 64, back to the input size."""
    from diffjscc.cli import main as diffjscc
    from PIL import Image

    root, folder, _ = official_folder
    out = root / "refiner_b"
    argv = [str(folder), str(out), "--sd", str(root / "sd21"), "--text-heads", str(TEXT_HEADS)]
    assert diffjscc(["convert-official-refiner", *argv]) == 0
    original = (np.random.default_rng(3).random((24, 40, 3)) * 255).astype(np.uint8)
    Image.fromarray(original).save(root / "small.png")
    argv = [
        str(root / "small.png"), "--refiner", str(out), "--out", str(root / "r.png"), "--snr", "3",
        "--steps", "1", "--seed", "0", "--simulate", "--preprocess", "official",
        "--guidance", "paper", "--guidance-target", "mode", "--device", "cpu",
        "--json", str(root / "r.json"),
    ]  # fmt: skip
    assert diffjscc(["refine", *argv]) == 0
    assert np.asarray(Image.open(root / "r.png")).shape == original.shape
    assert np.asarray(Image.open(root / "r_jscc.png")).shape == original.shape
    import json

    summary = json.loads((root / "r.json").read_text())
    assert summary["preprocess"] == "official" and summary["guidance"]["scale"] == 100.0


def test_jscc_weights_that_contradict_preprocess_config_stop_the_conversion(
    official_folder, tmp_path
):
    import shutil

    root, folder, _ = official_folder
    bad = tmp_path / "official"
    shutil.copytree(folder, bad)
    config = yaml.safe_load((bad / "config.yaml").read_text())
    config["params"]["preprocess_config"]["params"]["n_blocks_D"] = 4
    (bad / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="n_blocks_D=4 but the weights give 3"):
        official.convert_official(
            bad, tmp_path / "out", tokenizer_source=str(root / "sd21"), text_heads=TEXT_HEADS
        )
    assert not (tmp_path / "out").exists()


def test_converter_refuses_code_in_the_pickle_and_says_so(official_folder, tmp_path, capsys):
    import os
    import shutil

    from diffjscc.cli import main as diffjscc

    class Exploit:
        def __reduce__(self):
            return (os.system, ("true",))

    root, folder, _ = official_folder
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(folder / "config.yaml", bad / "config.yaml")
    torch.save(
        {"state_dict": {"betas": torch.zeros(2)}, "callbacks": Exploit()}, bad / "model.ckpt"
    )
    code = diffjscc(
        ["convert-official-refiner", str(bad), str(tmp_path / "o"), "--sd", str(root / "sd21")]
    )
    assert code == 2 and "system" in capsys.readouterr().err
    assert diffjscc(["convert-official", str(bad), "--out", str(tmp_path / "j.safetensors")]) == 2
    assert not (tmp_path / "o").exists()


def test_eval_reproduce_official_refines_as_official_inference(tmp_path, monkeypatch):
    """eval --reproduce-official: x_hat upsized to 512 and zero-padded, scored at the image size."""
    from diffjscc.eval.command import main as eval_main
    from diffjscc.refiner.tiny import tiny_refiner
    from PIL import Image

    tiny_refiner(steps=1).save_pretrained(tmp_path / "refiner")
    (tmp_path / "data").mkdir()
    image = (np.random.default_rng(0).random((32, 48, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "data" / "a.png")
    seen = []
    original = DiffJSCCRefiner.refine

    def spy(self, x_hat, *args, **kwargs):
        seen.append((x_hat.shape, kwargs["padding"], kwargs["quantize"]))
        return original(self, x_hat, *args, **kwargs)

    monkeypatch.setattr(DiffJSCCRefiner, "refine", spy)
    out = tmp_path / "eval.json"
    argv = ["--data", str(tmp_path / "data"), "--cbr", "1/384", "--snr", "4", "--methods", "jscc"]
    argv += ["--noise-draws", "1", "--refiner", str(tmp_path / "refiner"), "--refine-steps", "1"]
    argv += ["--reproduce-official", "--device", "cpu", "--no-progress", "--json", str(out)]
    assert eval_main(argv) == 0
    assert seen == [((512, 768, 3), "zero", "truncate")]
    import json

    result = json.loads(out.read_text())
    assert result["settings"]["refine_preprocess"] == "official"
