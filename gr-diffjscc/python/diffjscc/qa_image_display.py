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


class qa_image_display(gr_unittest.TestCase):
    def test_001_caption(self):
        text = caption(
            {
                "image_id": 3,
                "snr_db": 6.94,
                "frames_received": 1,
                "frame_count": 2,
                "psnr": 27.123,
                "partial": True,
            }
        )
        self.assertIn("estimated SNR 6.9 dB", text)
        self.assertIn("frames 1/2", text)
        self.assertIn("PSNR 27.12 dB", text)
        self.assertIn("PARTIAL", text)
        self.assertIn("image ?", caption({}))  # incomplete messages still make a caption

    @unittest.skipUnless(HAVE_QT, "PyQt5 is not installed")
    def test_002_shows_jscc_and_refined_images(self):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        from gnuradio.diffjscc import image_display
        from PyQt5 import QtWidgets

        app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "img.png"
            Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(path)
            display = image_display(title="test", max_side=32)
            tb = gr.top_block()
            strobe = blocks.message_strobe(
                meta_to_pmt(
                    {"image_id": 1, "path": str(path), "refined_path": None, "snr_db": 5.0}
                ),
                50,
            )
            tb.msg_connect(strobe, "strobe", display, "images")
            tb.start()
            deadline = time.monotonic() + 5
            widget = display.qwidget()
            while (
                "estimated SNR 5.0 dB" not in widget.status.text() and time.monotonic() < deadline
            ):
                app.processEvents()
                time.sleep(0.01)
            tb.stop()
            tb.wait()
            self.assertIn("estimated SNR 5.0 dB", widget.status.text())
            jscc = widget.panels["path"].pixmap()
            self.assertFalse(jscc is None or jscc.isNull())
            self.assertLessEqual(max(jscc.width(), jscc.height()), 32)  # scaled to max_side
            self.assertEqual(widget.panels["refined_path"].text(), "(none)")
            display._on_image(pmt.intern("not a dict"))  # ignored, no exception


if __name__ == "__main__":
    gr_unittest.run(qa_image_display)
