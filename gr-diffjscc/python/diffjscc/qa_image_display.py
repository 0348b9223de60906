#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""QA of the Qt image display, on Qt's offscreen platform (no display needed)."""

import importlib.util
import os
import tempfile
import time
import unittest
from pathlib import Path

import numpy as np
import pmt
from gnuradio import blocks, gr, gr_unittest
from gnuradio.diffjscc._frames import meta_to_pmt
from gnuradio.diffjscc.image_display import caption
from PIL import Image

HAVE_QT = importlib.util.find_spec("PyQt5") is not None


def _wait_for(app, condition, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)
    app.processEvents()


class qa_image_display(gr_unittest.TestCase):
    def test_001_caption(self):
        text = caption(
            {
                "image_id": 3,
                "snr_db": 6.94,
                "frames_received": 1,
                "frame_count": 2,
                "psnr": 27.123,
                "latency_s": 1.234,
                "partial": True,
                "counters": {"images_dropped_stale": 4, "frames_in": 9},
            }
        )
        self.assertIn("image 3", text)
        self.assertIn("estimated SNR 6.9 dB", text)
        self.assertIn("frames 1/2", text)
        self.assertIn("PSNR 27.12 dB", text)
        self.assertIn("latency 1.23 s", text)
        self.assertIn("dropped 4", text)
        self.assertIn("PARTIAL", text)
        self.assertIn("image ?", caption({}))  # incomplete messages still make a caption
        self.assertNotIn("latency", caption({"latency_s": None, "snr_db": float("nan")}))

    @unittest.skipUnless(HAVE_QT, "PyQt5 is not installed")
    def test_002_shows_transmitted_jscc_and_refined_images_scaled_to_the_window(self):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        from gnuradio.diffjscc import image_display
        from PyQt5 import QtWidgets

        app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
        with tempfile.TemporaryDirectory() as tmp:
            received = Path(tmp) / "img.png"
            original = Path(tmp) / "orig.png"
            Image.fromarray(np.full((400, 600, 3), 128, np.uint8)).save(received)
            Image.fromarray(np.full((400, 600, 3), 200, np.uint8)).save(original)
            display = image_display(title="test")
            # The source's tx_info names the transmitted image of id 1.
            display._on_tx_info(meta_to_pmt({"image_id": 1, "path": str(original)}))
            tb = gr.top_block()
            strobe = blocks.message_strobe(
                meta_to_pmt(
                    {"image_id": 1, "path": str(received), "refined_path": None, "snr_db": 5.0}
                ),
                50,
            )
            tb.msg_connect(strobe, "strobe", display, "images")
            widget = display.qwidget()
            widget.resize(600, 300)
            widget.show()
            tb.start()
            _wait_for(app, lambda: "estimated SNR 5.0 dB" in widget.status.text())
            tb.stop()
            tb.wait()
            self.assertIn("estimated SNR 5.0 dB", widget.status.text())
            for key in ("original_path", "path"):
                pixmap = widget.panels[key].pixmap()
                self.assertFalse(pixmap is None or pixmap.isNull(), key)
                self.assertAlmostEqual(pixmap.width() / pixmap.height(), 1.5, delta=0.05)
            self.assertEqual(widget.panels["refined_path"].text(), "(none)")
            small = widget.panels["path"].pixmap().width()
            self.assertLessEqual(small, 600 // 3)  # a third of the window, not the image's size

            widget.resize(1500, 800)
            _wait_for(app, lambda: widget.panels["path"].pixmap().width() > small, 2.0)
            large = widget.panels["path"].pixmap().width()
            self.assertGreater(large, 1.5 * small)  # the picture grows with the window
            display._on_image(pmt.intern("not a dict"))  # ignored, no exception
            display._on_tx_info(pmt.intern("not a dict"))


if __name__ == "__main__":
    gr_unittest.run(qa_image_display)
