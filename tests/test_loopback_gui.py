"""The Qt GUI loopback flowgraph as GRC generates it: shows images, follows the SNR slider, closes.

It runs in a child process on Qt's offscreen platform (no display needed), through the
generated script's own ``main()``, with the stand-in codec (no weights). The child moves
the SNR slider's counter as a user would, waits for the caption to show the new estimate,
then closes the window; the process must end by itself with status 0. How fast that all
happens is measured by ``benchmarks/live_gui.py``, not asserted here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

gnuradio = pytest.importorskip("gnuradio")
pytest.importorskip("PyQt5")
pytest.importorskip("gnuradio.qtgui")
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODULE_SOURCE = ROOT / "gr-diffjscc" / "python"
NEW_SNR_DB = 18.0

SCRIPT = r"""
import importlib.util, json, re, sys, time, types
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
spec = importlib.util.spec_from_file_location("loopback_sim", sys.argv[2])
generated = importlib.util.module_from_spec(spec)
spec.loader.exec_module(generated)
NEW_SNR = float(sys.argv[3])


def emit(**kw):
    print(json.dumps(kw), flush=True)


class Driven(generated.loopback_sim):
    # Drives the window from Qt's own event loop, as a user would.
    def __init__(self, **kw):
        super().__init__(**kw)
        self._phase = "first"
        self._t0 = time.monotonic()
        self._timer = Qt.QTimer()
        self._timer.timeout.connect(self._tick)
        self._timer.start(50)

    def _tick(self):
        caption = self.diffjscc_image_display_0.qwidget().status.text()
        found = re.search(r"estimated SNR (-?[0-9.]+) dB", caption)
        if time.monotonic() - self._t0 > 60 and self._phase != "closing":
            emit(error=f"gave up in phase {self._phase}", caption=caption)
            self._close()
        elif self._phase == "first" and found:
            pixmap = self.diffjscc_image_display_0.qwidget().panels["path"].pixmap()
            emit(first=caption, pixmap=bool(pixmap and not pixmap.isNull()))
            self._snr_db_win.d_widget.counter.setValue(NEW_SNR)  # typed into the slider's box
            self._phase = "moved"
        elif self._phase == "moved" and found and abs(float(found.group(1)) - NEW_SNR) < 2:
            emit(followed=caption, design_snr=self.design_snr, snr_db=self.snr_db)
            self._close()

    def _close(self):
        self._phase = "closing"
        self._timer.stop()
        emit(closing_at=time.time())
        self.close()  # closeEvent stops the flowgraph; the last window closed ends Qt's loop


options = generated.argument_parser().parse_args(sys.argv[4:])
generated.main(top_block_cls=Driven, options=options)
emit(main_returned_at=time.time())
"""


@pytest.mark.skipif(shutil.which("grcc") is None, reason="grcc not installed")
@pytest.mark.parametrize("waveform", ["sc", "ofdm"])
def test_gui_loopback_follows_the_snr_slider_and_closes_cleanly(tmp_path, waveform):
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
    env.pop("DISPLAY", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            str(MODULE_SOURCE),
            str(tmp_path / "loopback_sim.py"),
            str(NEW_SNR_DB),
            "--image",
            str(image),
            "--output-dir",
            str(tmp_path / "received"),
            "--seed",
            "3",
            "--waveform",
            waveform,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    exited_at = time.time()
    events = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            events.update(json.loads(line))
    assert "error" not in events, events
    assert "first" in events, f"no image shown (exit {proc.returncode}): {proc.stderr[-2000:]}"
    assert "PSNR" in events["first"]  # tx_info reaches the sink in this endless flowgraph
    assert events["pixmap"]
    # The caption followed the slider, and the encoder was told the new SNR as well.
    assert "followed" in events, events
    assert events["design_snr"] == events["snr_db"] == NEW_SNR_DB
    # Closing the window ended the process by itself, with status 0 (no abort, no hang).
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "main_returned_at" in events
    assert exited_at - events["closing_at"] < 30
