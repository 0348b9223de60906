#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""QA of the peak meter: peaks per window, clipped samples counted and reported."""

import contextlib
import io

import numpy as np
from gnuradio import blocks, gr, gr_unittest
from gnuradio.diffjscc import peak_meter
from gnuradio.diffjscc.peak_meter import clipped_count, window_peaks


class qa_peak_meter(gr_unittest.TestCase):
    def test_001_core(self):
        x = np.zeros(10, np.complex64)
        x[2] = 0.5 + 0.5j
        x[7] = -1.2j
        np.testing.assert_allclose(window_peaks(x, 5), [np.sqrt(0.5), 1.2], rtol=1e-6)
        self.assertEqual(len(window_peaks(x, 4)), 2)  # a partial window is left for later
        self.assertEqual(clipped_count(x, 1.0), 1)
        self.assertEqual(clipped_count(x, 0.5), 2)

    def test_002_block(self):
        rng = np.random.default_rng(0)
        x = (0.1 * (rng.standard_normal(8192) + 1j * rng.standard_normal(8192))).astype(
            np.complex64
        )
        x[5000] = 1.5
        src = blocks.vector_source_c(x.tolist())
        meter = peak_meter(window=1024, clip_level=1.0, print_interval_s=0.001, label="tx")
        dst = blocks.vector_sink_f()
        tb = gr.top_block()
        tb.connect(src, meter, dst)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            tb.run()
        peaks = np.array(dst.data())
        self.assertEqual(len(peaks), 8)
        self.assertAlmostEqual(peaks[5000 // 1024], 1.5, places=5)
        self.assertLess(np.delete(peaks, 5000 // 1024).max(), 1.0)
        self.assertEqual(meter.stats()["clipped_samples"], 1)
        self.assertIn("[tx] CLIPPING", err.getvalue())

    def test_003_bad_settings(self):
        with self.assertRaises(ValueError):
            peak_meter(window=0)
        with self.assertRaises(ValueError):
            peak_meter(clip_level=0)


if __name__ == "__main__":
    gr_unittest.run(qa_peak_meter)
