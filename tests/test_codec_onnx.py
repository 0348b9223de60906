import subprocess
import sys

import numpy as np
import pytest
import torch
from diffjscc.models.jscc import DeepJSCC
from diffjscc.onnx_codec import OnnxJSCCEncoder
from diffjscc.onnx_export import export_encoder
from diffjscc.zoo import load_codec


def test_shipped_onnx_encoders_match_torch(natural_image):
    img = natural_image[:200, :300]  # not a multiple of 16: padding is part of the parity
    for model in ("1/384", "1/96"):
        ref = load_codec(model).encode(img, 3.0)
        got = OnnxJSCCEncoder.from_pretrained(model).encode(img, 3.0)
        assert got.latent_shape == ref.latent_shape and got.image_shape == ref.image_shape
        assert np.max(np.abs(got.symbols - ref.symbols)) < 1e-4


def test_exported_rayleigh_model_matches_torch(tmp_path, natural_image, tiny_jscc_config):
    torch.manual_seed(0)
    model = DeepJSCC(tiny_jscc_config(latent_channels=2, channel_type="rayleigh")).eval()
    path = export_encoder(model, tmp_path / "enc.onnx")
    onnx_enc = OnnxJSCCEncoder(path)
    from diffjscc.codec import JSCCCodec

    ref = JSCCCodec(model).encode(natural_image[:64, :80], 5.0, h=0.3 - 0.8j)
    got = onnx_enc.encode(natural_image[:64, :80], 5.0, h=0.3 - 0.8j)
    assert np.max(np.abs(got.symbols - ref.symbols)) < 1e-4


def test_an_encoder_given_another_models_name_is_refused():
    from diffjscc.errors import ConfigError
    from diffjscc.zoo import weights_path

    with pytest.raises(ConfigError, match="latent channels"):
        OnnxJSCCEncoder(weights_path("1/96", ".onnx"), "1/384")


def test_transmitter_side_never_imports_torch():
    code = (
        "import sys; from diffjscc.onnx_codec import OnnxJSCCEncoder; import diffjscc.channels, "
        "diffjscc.symbols, diffjscc.image, diffjscc.registry, diffjscc.zoo; "
        "OnnxJSCCEncoder.from_pretrained('1/384'); assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
