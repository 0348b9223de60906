"""The headless loopback: the no_gui flowgraph as grcc compiles it, and examples/loopback.py.

No weights are needed: the ONNX encoder and the decoder are replaced by the
QA tests' stand-in codec (16x16 block means, exactly invertible), so what is
tested is the radio chain, the blocks and the plumbing, with real impairments.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest

gnuradio = pytest.importorskip("gnuradio")
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODULE_SOURCE = ROOT / "gr-diffjscc" / "python"
if str(MODULE_SOURCE) not in gnuradio.__path__:
    gnuradio.__path__.insert(0, str(MODULE_SOURCE))

from gnuradio.diffjscc._fakes import BlockMeanCodec  # noqa: E402


def _psnr(a, b):
    err = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return 10 * np.log10(255**2 / err)


def _wait(tb, timeout):
    done = threading.Event()
    threading.Thread(target=lambda: (tb.wait(), done.set()), daemon=True).start()
    if not done.wait(timeout):
        tb.stop()
        pytest.fail(f"flowgraph did not finish within {timeout} s")


@pytest.mark.skipif(shutil.which("grcc") is None, reason="grcc not installed")
@pytest.mark.parametrize("waveform", ["sc", "ofdm"])
def test_no_gui_flowgraph_runs_a_bounded_loopback(tmp_path, image_path, monkeypatch, waveform):
    env = dict(os.environ, GRC_BLOCKS_PATH=str(ROOT / "gr-diffjscc" / "grc"))
    subprocess.run(
        ["grcc", "-o", str(tmp_path), str(ROOT / "grc" / "loopback_sim_no_gui.grc")],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    codec = BlockMeanCodec()
    import diffjscc.worker.client

    # The flowgraph makes its encoder and decoder by name: hand it the stand-in codec.
    onnx_codec = types.ModuleType("diffjscc.onnx_codec")
    onnx_codec.OnnxJSCCEncoder = types.SimpleNamespace(from_pretrained=lambda *a, **k: codec)
    monkeypatch.setitem(sys.modules, "diffjscc.onnx_codec", onnx_codec)
    monkeypatch.setattr(diffjscc.worker.client, "LocalDecoder", lambda *a, **k: codec)
    spec = importlib.util.spec_from_file_location(
        "loopback_sim_no_gui", tmp_path / "loopback_sim_no_gui.py"
    )
    generated = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generated)
    out = tmp_path / "received"
    tb = generated.loopback_sim_no_gui(
        image=str(image_path),
        output_dir=str(out),
        snr_db=12.0,
        cfo=0.005,
        delay=37,
        waveform=waveform,
    )
    assert tb.diffjscc_jscc_receiver_0.waveform.name == waveform
    assert tb.diffjscc_image_source_0.waveform.name == waveform
    tb.start()
    _wait(tb, 60)  # the source sends one image and ends the run
    sink = tb.diffjscc_image_sink_0
    (result,) = sink.results()
    assert not result["partial"]
    assert result.get("psnr") is None  # no tx_info in a finite run: see image_sink
    # The channel's noise follows the waveform's SNR convention (band_ratio in the flowgraph).
    assert abs(result["snr_db"] - 12.0) < 1.5
    assert (
        tb.diffjscc_jscc_receiver_0.stats()["frames_ok"]
        == tb.diffjscc_image_source_0.stats()["bursts_sent"]
    )
    assert Path(result["path"]).parent == out


def _args(loopback, tmp_path, image_path, *extra):
    return loopback.setup_args().parse_args(
        [
            "--image",
            str(image_path),
            "--output",
            str(tmp_path / "out"),
            "--quiet",
            "--seed",
            "3",
            *extra,
        ]
    )


def test_example_with_impairments_writes_outputs_and_summary(loopback, tmp_path, image_path):
    codec = BlockMeanCodec()
    args = _args(loopback, tmp_path, image_path, "--snr", "5", "--cfo", "0.01", "--fading")
    summary = loopback.run(args, encoder=codec, decoder=codec)
    assert summary["frames_sent"] >= 1
    assert summary["frames_decoded"] == summary["frames_sent"]
    assert summary["images_decoded"] == 1
    # Block fading: the estimate is the SNR received, |h|^2 included.
    h2 = summary["h"][0] ** 2 + summary["h"][1] ** 2
    assert abs(summary["snr_est_db"] - (5 + 10 * np.log10(h2))) < 1.5
    # The estimated gain is the channel's (training convention: |h| = 1 for no fading).
    assert np.hypot(*summary["h_est"]) == pytest.approx(np.sqrt(h2), rel=0.1)
    out = tmp_path / "out"
    for name in ("original.png", "received.png", "comparison.png"):
        assert (out / name).is_file(), name
    original = np.asarray(Image.open(out / "original.png"))
    received = np.asarray(Image.open(out / "received.png"))
    assert received.shape == original.shape
    assert abs(summary["psnr"] - _psnr(original, received)) < 1e-6
    assert set(summary["timing"]) >= {"startup_s", "encode_s", "radio_s", "decode_s"}
    json.dumps(loopback._jsonable(summary), allow_nan=False)  # one line of valid JSON


@pytest.mark.parametrize("normalise", ["band", "none"])
def test_example_multipath_preset_at_the_same_received_snr(
    loopback, tmp_path, image_path, normalise
):
    """--channel epa: by default the draw is scaled to unit gain over the waveform's band,
    so --snr is the SNR received in band, as on the flat channel; --normalise none keeps
    the raw draw, whose gain the summary reports."""
    from diffjscc.radio.channel_presets import band_gain, signal_spectrum
    from diffjscc.radio.waveform import get_waveform

    codec = BlockMeanCodec()
    extra = ["--waveform", "ofdm", "--channel", "epa", "--snr", "12", "--normalise", normalise]
    summary = loopback.run(
        _args(loopback, tmp_path, image_path, *extra), encoder=codec, decoder=codec
    )
    assert summary["frames_decoded"] == summary["frames_sent"] >= 1
    assert summary["normalise"] == normalise
    taps = np.array([complex(t) for t in summary["taps"]])
    gain_db = 10 * np.log10(band_gain(taps, signal_spectrum(get_waveform("ofdm"))))
    assert summary["band_gain_db"] == pytest.approx(gain_db, abs=1e-3)
    if normalise == "band":
        assert abs(gain_db) < 1e-6
    else:  # the raw draw's power follows the preset's mean powers, not 1
        assert abs(gain_db) > 0.1


def test_example_through_a_worker_process(loopback, tmp_path, image_path):
    """The sink's WorkerClient path, against a real worker process (synthetic engine)."""
    from diffjscc.worker.local import LocalWorker

    worker = LocalWorker(
        ["--engine", "synthetic"], name="loopback-test", log_path=tmp_path / "w.log"
    )
    with worker:
        args = _args(loopback, tmp_path, image_path, "--worker", worker.address, "--timeout", "30")
        summary = loopback.run(args, encoder=BlockMeanCodec())
    assert summary["images_decoded"] == 1
    assert summary["served_by"] == "loopback-test"  # answered by the worker, not locally


def test_example_reports_bad_input_clearly(loopback, tmp_path, capsys):
    missing = tmp_path / "missing.png"
    assert loopback.main(["--image", str(missing), "--output", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "missing.png" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "extra, said",
    [
        (["--epsilon", "0"], "--epsilon"),
        (["--timeout", "-1"], "--timeout"),
        (["--timing-offset", "-2"], "--timing-offset"),
        (["--tx-opt-steps", "-1"], "--tx-opt-steps"),
        (["--output", "{file}/out"], "output folder"),
        (["--iq-imbalance", "1"], "--iq-imbalance"),
        (["--dc-offset", "a,b"], "--dc-offset"),
        (["--phase-noise", "50"], "--phase-noise"),
    ],
)
def test_example_refuses_bad_settings_before_starting(
    loopback, tmp_path, image_path, capsys, extra, said
):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    argv = ["--image", str(image_path), "--output", str(tmp_path / "o"), "--quiet", "--no-worker"]
    argv += [arg.format(file=a_file) for arg in extra]
    assert loopback.main(argv) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err


def test_example_front_end_impairments_and_dc_removal(loopback, tmp_path, image_path):
    """--dc-offset/--iq-imbalance/--phase-noise go through channels.impairments after the
    channel; the receiver's DC removal keeps the SNR estimate, without it the offset shows."""
    codec = BlockMeanCodec()
    extra = ["--snr", "12", "--dc-offset", "0.3,0.2", "--iq-imbalance", "0.5,3"]
    extra += ["--phase-noise", "-6"]
    summary = loopback.run(_args(loopback, tmp_path, image_path, *extra), encoder=codec)
    assert summary["impairments"] == {
        "phase_noise_mag": -6.0,
        "magbal": 0.5,
        "phasebal": 3.0,
        "i_ofs": 0.3,
        "q_ofs": 0.2,
    }
    assert summary["dc_removal"] is True
    assert summary["frames_decoded"] == summary["frames_sent"] >= 1
    assert abs(summary["snr_est_db"] - 12.0) < 1.5
    args = _args(loopback, tmp_path, image_path, *extra, "--no-dc-removal", "--no-worker")
    without = loopback.run(args, encoder=codec, decoder=codec)
    assert without["dc_removal"] is False
    assert without["snr_est_db"] < summary["snr_est_db"] - 2.0


def test_example_without_a_frame_says_why(loopback, tmp_path, image_path):
    codec = BlockMeanCodec()
    args = _args(loopback, tmp_path, image_path, "--snr", "-15")
    summary = loopback.run(args, encoder=codec, decoder=codec, log=lambda msg: None)
    assert summary["frames_decoded"] == 0 and summary["images_decoded"] == 0
    assert summary["error"] and summary["psnr"] is None
    assert (tmp_path / "out" / "original.png").is_file()
    assert not (tmp_path / "out" / "received.png").exists()  # no false image


WEIGHTS = ROOT / "python" / "diffjscc" / "weights"


@pytest.mark.skipif(shutil.which("grcc") is None, reason="grcc not installed")
@pytest.mark.skipif(
    not (WEIGHTS / "jscc_awgn_cbr1_384.safetensors").exists()
    or importlib.util.find_spec("torch") is None,
    reason="needs torch and the default CBR 1/384 weights",
)
def test_sigterm_ends_a_streaming_no_gui_flowgraph_with_status_0(tmp_path):
    """Issue 9: SIGTERM while the CPU decoder is busy; the process once aborted (exit 134)."""
    import signal
    import time

    env = dict(os.environ, GRC_BLOCKS_PATH=str(ROOT / "gr-diffjscc" / "grc"))
    subprocess.run(
        ["grcc", "-o", str(tmp_path), str(ROOT / "grc" / "loopback_sim_no_gui.grc")],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    yy, xx = np.mgrid[0:512, 0:768]  # a decode of this size keeps the CPU decoder busy
    image = np.stack([xx / 3, yy / 2, 255 - xx / 3], axis=2).clip(0, 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "big.png")
    out = tmp_path / "received"
    run_as_script = (
        "import sys, runpy, gnuradio; gnuradio.__path__.insert(0, sys.argv.pop(1)); "
        "sys.argv.pop(0); runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    cmd = [sys.executable, "-c", run_as_script, str(MODULE_SOURCE)]
    cmd += [str(tmp_path / "loopback_sim_no_gui.py"), "--image", str(tmp_path / "big.png")]
    cmd += ["--output-dir", str(out), "--passes", "0", "--interval-s", "0.3"]
    cmd += ["--policy", "latest", "--snr-db", "10"]
    log = open(tmp_path / "log.txt", "w+")  # noqa: SIM115  (closed below)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.is_dir() and len(list(out.glob("*.png"))) >= 2:
                break  # torch loaded, images streaming, the next decode under way
            time.sleep(0.1)
        assert proc.poll() is None, "the flowgraph ended by itself"
        assert len(list(out.glob("*.png"))) >= 2, "no image decoded within 120 s"
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log.seek(0)
    output = log.read()
    log.close()
    assert status == 0, output[-3000:]
    assert "terminate called" not in output and "Traceback" not in output, output[-3000:]
    assert not list(out.glob("*.tmp*")), "a half-written file was left"
