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


def test_export_rounds_the_weights_of_a_delta_file_to_float16(
    tmp_path, natural_image, tiny_jscc_config
):
    """A model stored as a 4-bit difference from its base (float32 after base + delta, but
    no more precise than float16) exports at float16 size, its symbols within 1e-3 of torch's;
    the command decides that from the weights file."""
    from collections import Counter

    import onnx
    from diffjscc.codec import JSCCCodec
    from diffjscc.jscc.onnx_export import main, stored_below_float32

    torch.manual_seed(0)
    base = DeepJSCC(tiny_jscc_config(latent_channels=2))
    base.save_pretrained(tmp_path / "base.safetensors", dtype=torch.float16)
    base = DeepJSCC.from_pretrained(tmp_path / "base.safetensors")
    tuned = DeepJSCC(tiny_jscc_config(latent_channels=2))
    with torch.no_grad():
        for p, q in zip(tuned.parameters(), base.parameters(), strict=True):
            p.copy_(q + 0.01 * torch.randn_like(q))
    tuned.save_pretrained(tmp_path / "tuned.safetensors", delta_base=tmp_path / "base.safetensors")
    tuned.save_pretrained(tmp_path / "full.safetensors")  # float32
    assert stored_below_float32(tmp_path / "tuned.safetensors")
    assert stored_below_float32(tmp_path / "base.safetensors")
    assert not stored_below_float32(tmp_path / "full.safetensors")

    weight_bytes = {}
    for name in ("tuned", "full"):
        out = tmp_path / f"{name}.onnx"
        assert main(["--weights", str(tmp_path / f"{name}.safetensors"), "--out", str(out)]) == 0
        weight_bytes[name] = Counter()  # bytes of the initializers, by element type
        for i in onnx.load(out).graph.initializer:
            weight_bytes[name][onnx.TensorProto.DataType.Name(i.data_type)] += len(i.raw_data)
    # Every float weight halved; of the float32 file's, only those that are float16 values
    # (ones and zeros of fresh layers) are.
    full, tuned = weight_bytes["full"], weight_bytes["tuned"]
    assert "FLOAT" not in tuned and full["FLOAT16"] < 0.01 * full["FLOAT"]
    assert tuned["FLOAT16"] * 2 == full["FLOAT"] + 2 * full["FLOAT16"]
    img = natural_image[:64, :80]
    ref = JSCCCodec(DeepJSCC.from_pretrained(tmp_path / "tuned.safetensors")).encode(img, 5.0)
    got = OnnxJSCCEncoder(tmp_path / "tuned.onnx").encode(img, 5.0)
    assert 0 < np.max(np.abs(got.symbols - ref.symbols)) < 1e-3
