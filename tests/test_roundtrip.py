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


@pytest.mark.parametrize("waveform", ["sc", "ofdm"])
def test_waveform_sends_the_symbols_through_the_radio(image_file, capsys, waveform):
    """Bursts, samples, receiver, assembler: every frame back, the SNR as asked (the
    waveform's noise convention) and the decoder given the receiver's estimate."""
    direct = _run(capsys, image_file, "--snr", "12")
    radio = _run(capsys, image_file, "--snr", "12", "--waveform", waveform)
    assert direct["waveform"] is None and "frames_sent" not in direct
    assert radio["waveform"] == waveform
    assert radio["frames_sent"] == radio["frames_decoded"] >= 1 and radio["partial"] is False
    assert abs(radio["snr_est_db"] - 12) < 1.5
    assert abs(radio["psnr"] - direct["psnr"]) < 1.5
    # Seed 1 draws a gain of -4 dB (seed 0 a fade too deep for the header).
    faded = _run(
        capsys, image_file, "--snr", "12", "--waveform", waveform, "--channel", "rayleigh",
        "--seed", "1",
    )  # fmt: skip
    gain_db = 10 * np.log10(np.sum(np.square(faded["channel_gain"])))
    assert abs(faded["snr_est_db"] - (12 + gain_db)) < 1.5  # the image's own SNR, |h|^2 in it


def test_waveform_when_nothing_arrives(image_file, capsys):
    assert main([str(image_file), "--snr", "-40", "--waveform", "sc"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["frames_decoded"] == 0
    assert "no frame of the image was received" in err and "Traceback" not in err


def test_unknown_waveform(image_file, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(image_file), "--waveform", "fm"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_waveform_layout_options(image_file, capsys):
    """The OFDM layout of the radio run (docs/ofdm.md's mobile layout here), in the record."""
    radio = _run(
        capsys, image_file, "--snr", "12", "--waveform", "ofdm", "--fft-size", "512",
        "--used-carriers", "256", "--pilot-spacing", "16",
    )  # fmt: skip
    assert radio["waveform_settings"]["fft_size"] == 512
    assert radio["waveform_settings"]["ofdm_pilot_spacing"] == 16
    assert radio["frames_sent"] == radio["frames_decoded"] >= 1


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--waveform", "ofdm", "--fft-size", "500"], "power of two"),
        (["--waveform", "sc", "--used-carriers", "256"], "--waveform ofdm"),
        (["--pilot-spacing", "16"], "add --waveform"),
    ],
)
def test_waveform_layout_that_does_not_fit(image_file, capsys, argv, match):
    from diffjscc import cli

    assert cli.main(["roundtrip", str(image_file), *argv]) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
