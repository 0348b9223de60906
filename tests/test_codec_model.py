from fractions import Fraction

import pytest
import torch
from diffjscc.errors import ConfigError
from diffjscc.models.jscc import DeepJSCC, JSCCConfig
from diffjscc.registry import MODELS, get_model_spec


def test_registry_rates_match_the_paper():
    spec = get_model_spec("1/384")
    assert spec.cbr == Fraction(1, 384) and spec.channels == 4
    assert spec.num_symbols(512, 768) == 3072  # the paper's headline: 3,072 symbols per Kodak image
    # Any other size is padded up to a multiple of 16 first, as the codec pads the image.
    assert spec.num_symbols(497, 753) == 3072 and spec.num_symbols(513, 768) == 3168
    assert get_model_spec(Fraction(1, 96)).channels == 16
    assert get_model_spec(spec.rate_code) is spec
    assert len({s.rate_code for s in MODELS.values()}) == len(MODELS)
    with pytest.raises(ConfigError, match="unknown"):
        get_model_spec("1/7")


def test_forward_returns_fixed_keys_and_shapes(tiny_jscc_config):
    torch.manual_seed(0)
    model = DeepJSCC(tiny_jscc_config())
    out = model(torch.rand(2, 3, 64, 96), torch.tensor([1.0, 10.0]))
    assert set(out) == {"x_hat", "symbols", "snr_db", "h"}
    assert out["x_hat"].shape == (2, 3, 64, 96)
    assert out["symbols"].shape == (2, 2, 4, 6) and out["symbols"].is_complex()
    assert torch.allclose(out["symbols"].abs().pow(2).mean(dim=(1, 2, 3)), torch.ones(2), atol=1e-5)
    assert 0.0 <= out["x_hat"].min() and out["x_hat"].max() <= 1.0


def test_the_snr_gate_makes_the_codec_snr_adaptive(tiny_jscc_config):
    torch.manual_seed(0)
    model = DeepJSCC(tiny_jscc_config()).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        a = model.encode(x, torch.tensor([0.0]))
        b = model.encode(x, torch.tensor([14.0]))
    assert not torch.allclose(a, b)


def test_rayleigh_model_takes_h_as_csi(tiny_jscc_config):
    torch.manual_seed(0)
    model = DeepJSCC(tiny_jscc_config(latent_channels=2, channel_type="rayleigh")).eval()
    out = model(torch.rand(3, 3, 32, 32), torch.tensor([5.0, 5.0, 5.0]))
    assert out["h"].shape == (3,) and out["h"].is_complex()
    assert model.encoder.blocks[0].gate.scale[0].in_features == 16 + 3


def test_save_and_load_rebuild_the_model_from_the_file_alone(tmp_path, tiny_jscc_config):
    torch.manual_seed(0)
    model = DeepJSCC(tiny_jscc_config()).eval()
    path = model.save_pretrained(tmp_path / "m.safetensors")
    loaded = DeepJSCC.from_pretrained(path)
    assert loaded.config == model.config
    x, s = torch.rand(1, 3, 32, 32), torch.tensor([3.0])
    with torch.no_grad():
        assert torch.equal(model.encode(x, s), loaded.encode(x, s))
    half = model.save_pretrained(tmp_path / "h.safetensors", dtype=torch.float16)
    assert half.stat().st_size < path.stat().st_size * 0.6
    assert not list(tmp_path.glob("*.tmp"))


def test_bad_configs_and_files_give_clear_errors(tmp_path):
    with pytest.raises(ConfigError):
        JSCCConfig(latent_channels=3)
    with pytest.raises(ConfigError):
        JSCCConfig.from_dict({"latent_channels": 4, "depth": 9})
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(Exception, match="cannot read"):
        DeepJSCC.from_pretrained(bad)
