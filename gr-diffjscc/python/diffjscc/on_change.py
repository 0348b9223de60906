#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""A message whenever a value changes: lets a GUI control ask for the next image at once."""

from __future__ import annotations

import threading

import pmt
from gnuradio import gr

OUT = pmt.intern("out")


class on_change(gr.basic_block):
    """Sends ``out`` a message each time ``set_value`` gets a value unlike the last one.

    In a GRC flowgraph the value is an expression of the controls (for example
    ``(snr_db, cfo)``): GRC calls ``set_value`` from each control's setter, so moving any
    of them sends one message. Connected to the image source's ``next`` input, the
    image after a change goes out at once instead of at the next interval, and the
    display shows the new conditions one decode later. The message is a dict with the
    new value (``{"value": ...}``) where PMT can carry it, else ``#t``.
    """

    def __init__(self, value=None):
        gr.basic_block.__init__(self, name="diffjscc_on_change", in_sig=None, out_sig=None)
        self.message_port_register_out(OUT)
        self._lock = threading.Lock()
        self._value = value
        self.sent = 0

    def value(self):
        return self._value

    def set_value(self, value) -> None:
        with self._lock:
            if value == self._value:
                return
            self._value = value
            self.sent += 1
        try:
            msg = pmt.to_pmt({"value": value})
        except (TypeError, ValueError):
            msg = pmt.PMT_T
        self.message_port_pub(OUT, msg)
