"""``diffjscc roundtrip``: one JSON line, and symbol optimisation on request."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from diffjscc.tools.roundtrip import main  # noqa: E402


@pytest.fixture
def image_file(tmp_path):
    y, x = np.mgrid[0:64, 0:80]
    img = np.stack([x * 3, y * 4, np.full_like(x, 120)], -1).astype(np.uint8)
    path = tmp_path / "img.png"
    Image.fromarray(img).save(path)
    return path


def _run(capsys, *argv):
    assert main([*map(str, argv)]) == 0
    return json.loads(capsys.readouterr().out)


def test_onnx_by_default_torch_with_symbol_optimisation(image_file, tmp_path, capsys):
    plain = _run(capsys, image_file, "--snr", "10")
    assert plain["encoder"] == "onnx" and plain["tx_opt_steps"] == 0
    assert plain["symbols"] == 2 * 4 * 5  # 64x80 -> 4x5 latent positions, C/2 = 2
    out = tmp_path / "rx.png"
    opt = _run(capsys, image_file, "--snr", "10", "--tx-opt-steps", "3", "--out", out)
    assert opt["encoder"] == "torch" and opt["tx_opt_steps"] == 3
    assert opt["symbols"] == plain["symbols"] and np.isfinite(opt["psnr"])
    assert Image.open(out).size == (80, 64)


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--tx-opt-steps", "-2"], "0 or positive"),
        (["--tx-opt-steps", "2", "--encoder", "onnx"], "torch"),
    ],
)
def test_bad_symbol_optimisation_settings(image_file, capsys, argv, match):
    with pytest.raises(SystemExit) as exc:
        main([str(image_file), *argv])
    assert exc.value.code == 2 and match in capsys.readouterr().err
