"""The Rayleigh models' CSI features: what the gates see, and the start from AWGN weights."""

import math

import numpy as np
import pytest
import torch
from diffjscc.errors import ConfigError, WeightsNotFoundError
from diffjscc.jscc.layers import ZeroForcingSNRFeatures
from diffjscc.jscc.model import DeepJSCC, JSCCConfig
from diffjscc.train.jscc import SimulatedLink, load_init, train_mode, validate


def test_the_first_feature_is_the_zero_forced_frames_snr():
    h = torch.tensor([0.3 + 0.4j, -2.0 + 0.0j, 0.0j], dtype=torch.complex64)
    csi = torch.stack([torch.tensor([4.0, 10.0, 1.0]), h.real, h.imag], dim=1)
    features = ZeroForcingSNRFeatures()(csi)
    gain = h.abs() ** 2
    torch.testing.assert_close(features[:, 0], torch.tensor([4 + 20 * math.log10(0.5),
                                                             10 + 20 * math.log10(2.0), 1 - 120]))  # fmt: skip
    torch.testing.assert_close(features[:, 1], csi[:, 0])
    torch.testing.assert_close(features[:, 2], gain)
    # The phase of h, which zero forcing removes, changes nothing.
    rotated = torch.stack([csi[:, 0], (h * 1j).real, (h * 1j).imag], dim=1)
    torch.testing.assert_close(ZeroForcingSNRFeatures()(rotated), features)


def test_awgn_models_have_no_feature_weights_and_refuse_the_rayleigh_feature(tiny_jscc_config):
    awgn = DeepJSCC(tiny_jscc_config())
    assert awgn.config.csi_features == "raw"
    assert not any("csi_features" in key for key in awgn.state_dict())
    fading = DeepJSCC(tiny_jscc_config(channel_type="rayleigh", csi_features="zf_snr"))
    assert (
        fading.state_dict().keys()
        == DeepJSCC(tiny_jscc_config(channel_type="rayleigh")).state_dict().keys()
    )  # the same weights layout as raw CSI: only what the gates are fed
    with pytest.raises(ConfigError, match="rayleigh"):
        tiny_jscc_config(csi_features="zf_snr")
    with pytest.raises(ConfigError, match="csi_features"):
        tiny_jscc_config(channel_type="rayleigh", csi_features="bogus")
    # Files written before the field existed load with raw CSI.
    old = {k: v for k, v in fading.config.to_dict().items() if k != "csi_features"}
    assert JSCCConfig.from_dict(old).csi_features == "raw"


def _awgn_and_started_rayleigh(tmp_path, tiny_jscc_config):
    torch.manual_seed(0)
    awgn = DeepJSCC(tiny_jscc_config())
    # Running statistics away from their defaults, as trained weights have them.
    for module in awgn.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    with torch.no_grad():  # gates that listen to the SNR, as trained ones do
        for name, value in awgn.named_parameters():
            if name.endswith(("scale.0.weight", "shift.0.weight")):
                value[:, -1].normal_(0, 0.3)
    awgn.save_pretrained(tmp_path / "awgn.safetensors")
    fading = DeepJSCC(tiny_jscc_config(channel_type="rayleigh", csi_features="zf_snr"))
    load_init(fading, str(tmp_path / "awgn.safetensors"))
    return awgn.eval(), fading.eval()


@torch.no_grad()
def test_started_from_awgn_weights_it_is_the_awgn_model_fed_the_instantaneous_snr(
    tmp_path, tiny_jscc_config
):
    awgn, fading = _awgn_and_started_rayleigh(tmp_path, tiny_jscc_config)
    gate = "decoder.blocks.0.gate.scale.0.weight"
    assert fading.state_dict()[gate][:, -2:].abs().sum() == 0
    x = torch.rand(3, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    snr = torch.tensor([1.0, 7.0, 13.0])
    h = torch.tensor([0.1 - 0.2j, 0.8 + 0.9j, -1.5 + 0.3j], dtype=torch.complex64)
    # The transmitter does not know h: [SNR, 1, 0] is the AWGN encoder at SNR.
    symbols = fading.encode(x, snr, torch.ones(3, dtype=torch.complex64))
    torch.testing.assert_close(symbols, awgn.encode(x, snr), atol=1e-5, rtol=1e-5)
    snr_inst = snr + 20 * torch.log10(h.abs())
    expected = awgn.decode(symbols, snr_inst)
    # Both CSI forms of the sink: the link average with h, the frame's SNR with h / |h|.
    for csi_snr, csi_h in ((snr, h), (snr_inst, h / h.abs())):
        torch.testing.assert_close(
            fading.decode(symbols, csi_snr, csi_h), expected, atol=1e-5, rtol=1e-5
        )
    assert (awgn.decode(symbols, snr) - expected).abs().max() > 1e-3  # h matters


@torch.no_grad()
def test_the_trainers_link_starts_where_the_awgn_model_is_on_the_fading_channel(
    tmp_path, tiny_jscc_config
):
    awgn, fading = _awgn_and_started_rayleigh(tmp_path, tiny_jscc_config)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 32, 32, generator=g)
    snr = torch.tensor([2.0, 12.0])
    h = torch.tensor([0.4 + 0.1j, -0.9 - 0.7j], dtype=torch.complex64)
    noise = torch.complex(
        torch.randn(2, 2, 2, 2, generator=g), torch.randn(2, 2, 2, 2, generator=g)
    )
    got = SimulatedLink(fading)(x, snr, h, noise)
    # Zero forcing turns the fading link into AWGN with the noise divided by h.
    want = SimulatedLink(awgn)(
        x, snr, None, noise / h.reshape(-1, 1, 1, 1), csi_snr_db=snr + 20 * torch.log10(h.abs())
    )
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_frozen_norms_keep_their_statistics_through_training_and_validation(tiny_jscc_config, rng):
    model = DeepJSCC(tiny_jscc_config())
    train_mode(model, freeze_norm=True)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    validate(model, [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)], snrs=(5.0,))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert model.training and norms and not any(m.training for m in norms)
    x = torch.rand(2, 3, 32, 32)
    torch.nn.functional.mse_loss(model(x, torch.tensor([3.0, 9.0]))["x_hat"], x).backward()
    after = {k: v for k, v in model.state_dict().items() if "running" in k}
    assert all(torch.equal(before[k], after[k]) for k in before)
    train_mode(model)
    assert all(m.training for m in norms)


def test_an_exported_zf_snr_encoder_matches_torch(tmp_path, natural_image, tiny_jscc_config):
    from diffjscc.jscc.codec import JSCCCodec
    from diffjscc.jscc.onnx_encoder import OnnxJSCCEncoder
    from diffjscc.jscc.onnx_export import export_encoder

    _, fading = _awgn_and_started_rayleigh(tmp_path, tiny_jscc_config)
    with torch.no_grad():  # the new columns away from zero: the features are in the graph
        for name, value in fading.named_parameters():
            if name.endswith("gate.scale.0.weight"):
                value[:, -2:].normal_(0, 0.5)
    path = export_encoder(fading, tmp_path / "enc.onnx")
    image = natural_image[:64, :80]
    got = OnnxJSCCEncoder(path).encode(image, 5.0)
    ref = JSCCCodec(fading).encode(image, 5.0)
    assert np.max(np.abs(got.symbols - ref.symbols)) < 1e-4


def test_the_psnr_loss_is_the_samples_mean_psnr_not_the_batch_mse():
    from diffjscc.train.jscc import training_loss

    x = torch.zeros(2, 3, 4, 4)
    x_hat = torch.stack([torch.full((3, 4, 4), 0.01), torch.full((3, 4, 4), 0.3)])
    assert training_loss(x_hat, x, "psnr").item() == pytest.approx(
        (-40.0 + 10 * math.log10(0.09)) / 2
    )
    assert training_loss(x_hat, x).item() == pytest.approx((1e-4 + 0.09) / 2)
    # The deep-faded sample dominates the MSE's gradient, not the PSNR's.
    for kind, bad_dominates in (("mse", True), ("psnr", False)):
        guess = x_hat.clone().requires_grad_()
        training_loss(guess, x, kind).backward()
        grads = guess.grad.flatten(1).norm(dim=1)
        assert bool(grads[1] > 10 * grads[0]) == bad_dominates, kind


def test_the_shipped_rayleigh_model_is_in_the_registry_and_its_onnx_encoder_matches(
    natural_image, tmp_path
):
    from diffjscc.jscc.onnx_encoder import OnnxJSCCEncoder
    from diffjscc.jscc.onnx_export import export_encoder
    from diffjscc.registry import get_model_spec
    from diffjscc.zoo import load_codec, load_transmitter

    spec = get_model_spec("jscc-rayleigh-cbr1_384")
    assert spec.rate_code == 3 and spec.channel_type == "rayleigh" and spec.cbr_str == "1/384"
    assert get_model_spec("1/384").channel_type == "awgn"  # the CBR still names the default
    codec = load_codec(spec.name)
    assert codec.model.config.csi_features == "zf_snr"
    img = natural_image[:200, :300]
    ref = codec.encode(img, 3.0)
    # No ONNX file ships for it (the weights budget): the transmitter uses the torch codec,
    # and an exported encoder (diffjscc export-onnx) gives the same symbols.
    transmitter = load_transmitter(spec.name)
    assert np.max(np.abs(transmitter.encode(img, 3.0).symbols - ref.symbols)) < 1e-6
    path = export_encoder(codec.model, tmp_path / "rayleigh.onnx")
    got = OnnxJSCCEncoder(path, spec).encode(img, 3.0)
    assert got.latent_shape == ref.latent_shape
    assert np.max(np.abs(got.symbols - ref.symbols)) < 1e-4


@torch.no_grad()
def test_a_fine_tune_stored_as_a_4_bit_delta_from_its_base(tmp_path, tiny_jscc_config):
    import os

    awgn, fading = _awgn_and_started_rayleigh(tmp_path, tiny_jscc_config)
    for value in fading.parameters():  # a fine-tune: small changes everywhere
        value.add_(0.01 * torch.randn_like(value))
    full = fading.save_pretrained(tmp_path / "full.safetensors", dtype=torch.float16)
    delta = fading.save_pretrained(
        tmp_path / "delta.safetensors", delta_base=tmp_path / "awgn.safetensors"
    )
    assert os.path.getsize(delta) < 0.5 * os.path.getsize(full)
    back = DeepJSCC.from_pretrained(delta)
    assert back.config == fading.config
    want, got = fading.state_dict(), back.state_dict()
    for name, value in want.items():
        if not value.is_floating_point():
            assert torch.equal(got[name], value), name
            continue
        base = awgn.state_dict()[name]
        # Half a step of the row's largest change at most (4 bits: 7 levels each way).
        step = (value - base).abs().max() / 7 if value.shape == base.shape else 1e-3
        assert (got[name] - value).abs().max() <= step / 2 + 1e-3 * value.abs().max(), name
    # The base is found beside the file; without it, a clear error.
    os.remove(tmp_path / "awgn.safetensors")
    with pytest.raises(WeightsNotFoundError, match="awgn.safetensors"):
        DeepJSCC.from_pretrained(delta)
