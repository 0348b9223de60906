#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""QA of the message-on-change block: one message per change, none for an unchanged value."""

import time

import pmt
from gnuradio import blocks, gr, gr_unittest
from gnuradio.diffjscc import on_change


class qa_on_change(gr_unittest.TestCase):
    def test_001_one_message_per_change(self):
        block = on_change(value=(7.0, 0.0))
        debug = blocks.message_debug()
        tb = gr.top_block()
        tb.msg_connect(block, "out", debug, "store")
        tb.start()
        block.set_value((7.0, 0.0))  # unchanged: nothing
        block.set_value((12.0, 0.0))
        block.set_value((12.0, 0.0))
        block.set_value((12.0, 0.01))
        block.set_value(object())  # not a PMT value: still announced
        deadline = time.monotonic() + 2
        while debug.num_messages() < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        tb.stop()
        tb.wait()
        self.assertEqual(block.sent, 3)
        self.assertEqual(debug.num_messages(), 3)
        first = pmt.to_python(debug.get_message(0))
        self.assertEqual(tuple(first["value"]), (12.0, 0.0))
        self.assertTrue(pmt.equal(debug.get_message(2), pmt.PMT_T))


if __name__ == "__main__":
    gr_unittest.run(qa_on_change)
