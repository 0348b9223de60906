"""Regression tests for issue 10's D8-D10: tiny images, 16-bit grayscale, bad --out paths."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")

from diffjscc.cli import main as cli_main  # noqa: E402
from diffjscc.errors import OutputError  # noqa: E402
from diffjscc.image import load_image  # noqa: E402
from diffjscc.io import atomic_write_bytes, check_output_path  # noqa: E402
from diffjscc.registry import get_model_spec, padded_shape  # noqa: E402
from diffjscc.zoo import load_codec, load_transmitter  # noqa: E402


@pytest.fixture(scope="module")
def codec():
    return load_codec("1/384")


@pytest.mark.parametrize("shape", [(1, 1), (16, 16), (16, 64), (8, 200), (17, 17), (3, 40)])
def test_tiny_images_round_trip_through_both_encoders(codec, shape):
    image = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    onnx = load_transmitter("1/384")
    for encoder in (codec, onnx):
        sent = encoder.encode(image, snr_db=10.0)
        assert sent.num_symbols == get_model_spec("1/384").num_symbols(*shape)
        out = codec.decode(sent.symbols, image_shape=shape, snr_db=10.0)
        assert out.shape == (*shape, 3) and out.dtype == np.uint8


def test_padding_keeps_at_least_two_latent_positions_per_side():
    assert padded_shape(1, 1) == (32, 32)
    assert padded_shape(16, 64) == (32, 64)
    assert padded_shape(17, 33) == (32, 48)
    assert padded_shape(512, 768) == (512, 768)  # Kodak: 3,072 symbols as in the paper
    assert get_model_spec("1/384").num_symbols(512, 768) == 3072


def test_roundtrip_command_on_a_1x1_image(tmp_path, capsys):
    path = tmp_path / "dot.png"
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(path)
    assert cli_main(["roundtrip", str(path), "--snr", "10"]) == 0
    assert json.loads(capsys.readouterr().out)["image_shape"] == [1, 1]


def test_16_bit_grayscale_is_scaled_not_saturated(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I;16")
    image = load_image(path)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    expected = np.round(ramp / 257.0).astype(np.uint8)
    assert np.abs(image[:, :, 0].astype(int) - expected).max() <= 1
    assert (image == 255).mean() < 0.01  # was 99.6 % before the fix
    assert (image[:, :, 0] == image[:, :, 2]).all()


def test_32_bit_float_grayscale_tiff(tmp_path):
    values = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    path = tmp_path / "gray.tif"
    Image.fromarray(values, mode="F").save(path)
    image = load_image(path)
    assert image[0, 0, 0] == 0 and image[-1, -1, 0] == 255


def _bad_outputs(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    folder = tmp_path / "folder"
    folder.mkdir()
    return {
        "parent is a file": (a_file / "out.png", "is a file"),
        "output is a folder": (folder, "is a folder"),
        "name too long": (tmp_path / ("x" * 300 + ".png"), "longer than"),
        "read-only file system": ("/proc/diffjscc-out.png", "cannot write|not writable"),
    }


@pytest.mark.parametrize(
    "case", ["parent is a file", "output is a folder", "name too long", "read-only file system"]
)
def test_roundtrip_out_errors_are_one_line_and_exit_2(tmp_path, capsys, case):
    out, message = _bad_outputs(tmp_path)[case]
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(image)
    assert cli_main(["roundtrip", str(image), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert pytest.importorskip("re").search(message, err), err


def test_atomic_write_refuses_clearly_and_leaves_nothing(tmp_path):
    out, _ = _bad_outputs(tmp_path)["output is a folder"]
    with pytest.raises(OutputError, match="is a folder"):
        atomic_write_bytes(out, b"data")
    assert list(out.iterdir()) == []
    with pytest.raises(OutputError, match="is a file"):
        check_output_path(tmp_path / "file.txt" / "deeper" / "x.png")
