"""The main job with the project's own weights: examples/loopback.py as a user runs it.

Uses the default weights committed under diffjscc/weights/ (skipped if absent) and
decodes in process (the worker path is covered with a stand-in engine in
test_loopback_headless.py and timed by benchmarks/loopback_e2e.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gnuradio")
pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "python" / "diffjscc" / "weights"


needs_weights = pytest.mark.skipif(
    not (WEIGHTS / "jscc_awgn_cbr1_384.onnx").exists()
    or not (WEIGHTS / "jscc_awgn_cbr1_384.safetensors").exists(),
    reason="default CBR 1/384 weights not present",
)


def _loopback(tmp_path, *extra):
    from skimage import data

    # A 192x256 crop of the astronaut: small enough to stay quick on a CPU.
    tmp_path.mkdir(parents=True, exist_ok=True)
    image = tmp_path / "crop.png"
    Image.fromarray(data.astronaut()[64:256, 128:384]).save(image)
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "loopback.py"),
            "--image",
            str(image),
            "--snr",
            "10",
            "--cfo",
            "0.005",
            "--no-worker",
            "--output",
            str(out),
            "--seed",
            "2",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, "one line of JSON on stdout, nothing else"
    return json.loads(lines[0]), out


@needs_weights
def test_loopback_with_the_default_weights(tmp_path):
    summary, out = _loopback(tmp_path)
    assert summary["frames_sent"] == summary["frames_decoded"] >= 1
    assert abs(summary["snr_est_db"] - 10.0) < 1.5
    assert summary["psnr"] > 18.0  # a noise image would be far below
    assert 0.5 < summary["ms_ssim"] <= 1.0
    received = np.asarray(Image.open(out / "received.png"))
    assert received.shape == (192, 256, 3)
    assert (out / "comparison.png").is_file()
    assert summary["served_by"] == "local"
    assert summary["tx_opt_steps"] == 0


@needs_weights
def test_symbols_optimised_at_the_transmitter_arrive_better(tmp_path):
    # Same seed: same delay, offset and noise; only the transmitted symbols differ.
    plain, _ = _loopback(tmp_path / "plain")
    optimised, _ = _loopback(tmp_path / "opt", "--tx-opt-steps", "30")
    assert optimised["tx_opt_steps"] == 30
    assert optimised["frames_sent"] == optimised["frames_decoded"] == plain["frames_sent"]
    assert optimised["psnr"] > plain["psnr"] + 0.15  # +0.35 dB measured
