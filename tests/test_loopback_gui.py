"""The Qt GUI loopback flowgraph runs and shows a received image (Qt's offscreen platform)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

gnuradio = pytest.importorskip("gnuradio")
pytest.importorskip("PyQt5")
pytest.importorskip("gnuradio.qtgui")
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODULE_SOURCE = ROOT / "gr-diffjscc" / "python"


# Run in a child process: Qt and GNU Radio's Qt sinks tear down at interpreter exit in an
# order that can crash, and that must not take the test session with it.
SCRIPT = r"""
import importlib.util, json, sys, time, types
from pathlib import Path
import gnuradio
gnuradio.__path__.insert(0, sys.argv[1])
from gnuradio.diffjscc._fakes import BlockMeanCodec
import diffjscc.worker.client

codec = BlockMeanCodec()
onnx_codec = types.ModuleType("diffjscc.onnx_codec")
onnx_codec.OnnxJSCCEncoder = types.SimpleNamespace(from_pretrained=lambda *a, **k: codec)
sys.modules["diffjscc.onnx_codec"] = onnx_codec
diffjscc.worker.client.LocalDecoder = lambda *a, **k: codec

from PyQt5 import Qt
app = Qt.QApplication([])
spec = importlib.util.spec_from_file_location("loopback_sim", sys.argv[2])
generated = importlib.util.module_from_spec(spec)
spec.loader.exec_module(generated)
tb = generated.loopback_sim(image=sys.argv[3], output_dir=sys.argv[4])
tb.start()
tb.show()
widget = tb.diffjscc_image_display_0.qwidget()
deadline = time.monotonic() + 30
while "estimated SNR" not in widget.status.text() and time.monotonic() < deadline:
    app.processEvents()
    time.sleep(0.02)
tb.stop()
tb.wait()
print(json.dumps({"status": widget.status.text(),
                  "pixmap": not widget.panels["path"].pixmap().isNull()}))
sys.stdout.flush()
"""


@pytest.mark.skipif(shutil.which("grcc") is None, reason="grcc not installed")
def test_gui_loopback_shows_the_received_image(tmp_path):
    env = dict(os.environ, GRC_BLOCKS_PATH=str(ROOT / "gr-diffjscc" / "grc"))
    subprocess.run(
        ["grcc", "-o", str(tmp_path), str(ROOT / "grc" / "loopback_sim.grc")],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    yy, xx = np.mgrid[0:64, 0:96]
    image = tmp_path / "test.png"
    Image.fromarray(np.stack([xx * 2, yy * 3, 255 - xx], axis=2).astype(np.uint8)).save(image)
    env["QT_QPA_PLATFORM"] = "offscreen"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            str(MODULE_SOURCE),
            str(tmp_path / "loopback_sim.py"),
            str(image),
            str(tmp_path / "received"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result (exit {proc.returncode}): {proc.stderr[-2000:]}"
    shown = json.loads(lines[-1])
    assert "estimated SNR" in shown["status"]
    assert "PSNR" in shown["status"]  # tx_info reaches the sink in this repeating flowgraph
    assert shown["pixmap"]
