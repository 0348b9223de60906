#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""QA of the link statistics block: counts from the messages, a line printed while running."""

import contextlib
import io
import time

import numpy as np
import pmt
from gnuradio import blocks, gr, gr_unittest
from gnuradio.diffjscc import link_stats
from gnuradio.diffjscc._frames import meta_to_pmt
from gnuradio.diffjscc.link_stats import LinkStats


def _pdu(meta):
    return pmt.cons(meta_to_pmt(meta), pmt.init_c32vector(2, [1 + 0j, -1 + 0j]))


class qa_link_stats(gr_unittest.TestCase):
    def test_001_counts_and_text(self):
        now = [100.0]
        core = LinkStats(clock=lambda: now[0])
        core.tx_info({"image_id": 1})
        for _ in range(4):
            core.frame({"image_id": 1, "snr_db": 6.5, "cfo": 1e-3})
        now[0] += 2.0
        core.image({"image_id": 1, "psnr": 24.5, "latency_s": 1.25, "counters": {"x_dropped": 3}})
        core.image({"image_id": 2, "partial": True})
        core.image({"image_id": 3, "error": "timeout"})
        s = core.snapshot()
        self.assertEqual(s["images_sent"], 1)
        self.assertEqual(s["frames_received"], 4)
        self.assertEqual((s["images_decoded"], s["images_partial"], s["errors"]), (2, 1, 1))
        self.assertAlmostEqual(s["frames_per_s"], 2.0)
        text = core.text()
        for part in (
            "sent 1 images",
            "frames 4",
            "SNR est 6.5 dB",
            "decoded 2 (1 partial)",
            "errors 1",
            "latency 1.25 s",
            "PSNR 24.50 dB",
            "dropped 3",
        ):
            self.assertIn(part, text)
        tx_only = LinkStats()
        tx_only.tx_info({"image_id": 0})
        self.assertNotIn("frames", tx_only.text())  # a transmitter's line
        self.assertIn("sent 1 images", tx_only.text())
        now[0] += 20.0  # frames older than 10 s no longer count for the rate
        self.assertEqual(core.snapshot()["frames_per_s"], 0.0)

    def test_002_block_counts_messages_and_prints(self):
        stats = link_stats(interval_s=0.1, label="rx")
        tb = gr.top_block()
        strobe = blocks.message_strobe(_pdu({"image_id": 5, "snr_db": 3.0}), 20)
        lines = blocks.message_debug()
        tb.msg_connect(strobe, "strobe", stats, "pdus")
        tb.msg_connect(stats, "text", lines, "store")
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            tb.start()
            time.sleep(0.5)
            tb.stop()
            t0 = time.monotonic()
            tb.wait()
        self.assertLess(time.monotonic() - t0, 2.0)
        self.assertGreater(stats.stats()["frames_received"], 3)
        self.assertIn("[rx]", err.getvalue())
        self.assertIn("SNR est 3.0 dB", err.getvalue())
        self.assertGreater(lines.num_messages(), 1)
        self.assertIn("[rx] ", pmt.symbol_to_string(lines.get_message(0)))
        stats._on_pdu(pmt.intern("junk"))
        stats._on_image(pmt.intern("junk"))
        self.assertEqual(stats.stats()["bad_messages"], 2)
        self.assertIsNone(stats._thread)

    def test_003_bad_interval(self):
        with self.assertRaises(ValueError):
            link_stats(interval_s=-1)
        np.testing.assert_equal(link_stats(interval_s=0).interval_s, 0.0)


if __name__ == "__main__":
    gr_unittest.run(qa_link_stats)
