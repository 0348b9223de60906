#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""JSCC receiver: baseband samples in, one PDU per received frame out."""

from __future__ import annotations

import ctypes
import inspect
import threading
import time

import numpy as np
import pmt
from gnuradio import gr

from diffjscc.radio.frontend import DcRemover

from ._frames import frame_to_pdu

PDU_PORT = pmt.intern("pdus")

# GNU Radio 3.10's Python gateway wraps each call's input buffer in an ndarray through a
# class made anew every call (gateway.pointer_to_ndarray): about 150 us of the receiver
# thread a call inside a chain, 5 % of its time at 32768-sample chunks. The block wraps
# the buffer itself, for the gateway whose calling convention it knows (3.10: a capsule
# holding the buffer's address); any other version keeps GNU Radio's own.
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_OWN_INPUT_VIEW = gr.version().startswith("3.10.")


def _takes_dc(feed) -> bool:
    try:
        return "dc" in inspect.signature(feed).parameters
    except (TypeError, ValueError):
        return False


class _BufferView:
    """What numpy wraps a stream buffer from: its ``__array_interface__``, set per call."""

    __slots__ = ("__array_interface__",)


class jscc_receiver(gr.sync_block):
    """Finds JSCC bursts in a sample stream and delivers their equalised symbols with CSI.

    Wraps ``diffjscc.radio.BurstReceiver``: preamble detection and timing,
    frequency offset estimation and correction, header decoding (a frame
    whose header CRC fails is dropped and counted), and per-frame channel
    estimation from the pilots (least-squares gain h, phase tracking, and a
    data-aided SNR estimate). It synchronises on the signal itself, never on
    stream tags, so a channel model that drops samples (``epsilon != 1``)
    does not confuse it.

    Message output ``pdus``: one PDU per frame, ``pmt.cons(meta, c32vector)``
    with the equalised payload symbols; meta holds image_id, frame_index,
    frame_count, rate_code, image_shape, snr_db (the estimate), h (the channel
    gain in the training convention: 1 for a unit channel and a unit-power
    source, with the received phase at sample h_sample), cfo, timing and the
    other fields of ``ReceivedFrame.meta()``.

    ``waveform`` names the waveform (``diffjscc.radio.waveform.WAVEFORMS``:
    "sc" single carrier, "ofdm"); it takes the parameters it knows. The
    waveform settings (sps, rolloff, pilot spacing, payload size, ...; for OFDM
    the layout: fft_size, cp_length, used_carriers, ofdm_pilot_spacing,
    pilot_stagger, 0 = its default) must be those of the transmitter: the
    header does not carry them.

    ``dc_removal`` (default on) subtracts a running mean of the stream (65,536
    samples' time constant, ``diffjscc.radio.frontend.DcRemover``) before the
    receiver sees it: a front end's DC offset 10 dB below the signal otherwise took
    0.6 to 0.9 dB of PSNR at 10 dB SNR; the waveforms' own signals have no DC.

    ``INPUT_BUFFER`` (131072 items) is the min output buffer to give the block that
    feeds this one (GRC: its Advanced tab; ``set_min_output_buffer``): with it the
    block's thread did 18.3 Msps per CPU second inside the benchmark chain against
    14.1-14.5 with 32768 and 12 with GNU Radio's default 8192, being called, and
    switched with the blocks sharing its core, 4 times less often. It adds no latency
    while the receiver keeps up (each call takes what has arrived); a receiver that
    falls behind may queue that many samples (6.6 ms at 20 MS/s, 131 ms at 1 MS/s).

    The receiver works in batches of samples, so the last burst of a stream
    that ends completes only if silence follows it: the image source adds
    enough at the end of a run; a recording should end with a few frames'
    length of zeros.
    """

    INPUT_BUFFER = 1 << 17

    def __init__(
        self,
        sps=2,
        rolloff=0.35,
        pilot_spacing=0,
        max_payload_symbols=0,
        waveform="sc",
        fft_size=0,
        cp_length=0,
        used_carriers=0,
        ofdm_pilot_spacing=0,
        pilot_stagger=0,
        dc_removal=True,
        **settings,
    ):
        gr.sync_block.__init__(
            self, name="diffjscc_jscc_receiver", in_sig=[np.complex64], out_sig=None
        )
        from diffjscc.radio.waveform import waveform_from_block_params

        # The waveform takes the parameters it knows (``settings``: those of other
        # waveforms, e.g. OFDM's); the receiver it builds is all this block talks to.
        self.waveform = waveform_from_block_params(
            waveform,
            sps=sps,
            rolloff=rolloff,
            pilot_spacing=pilot_spacing,
            max_payload_symbols=max_payload_symbols,
            fft_size=fft_size,
            cp_length=cp_length,
            used_carriers=used_carriers,
            ofdm_pilot_spacing=ofdm_pilot_spacing,
            pilot_stagger=pilot_stagger,
            **settings,
        )
        self.cfg = getattr(self.waveform, "cfg", None)  # the FrameConfig of a single carrier
        self._rx = self.waveform.make_receiver()
        # A front end's DC offset (LO leakage) passes the single carrier's matched filter
        # and, after the frequency correction, lands inside the OFDM band: a running mean
        # of the stream, far longer than a frame, is taken out first (radio.frontend).
        self._dc = DcRemover() if dc_removal else None
        # A receiver that takes the DC remover itself writes its output straight into
        # its own buffer (one copy of each chunk fewer); the others get its output.
        self._feed_takes_dc = self._dc is not None and _takes_dc(self._rx.feed)
        self._lock = threading.Lock()  # stats() is called from other threads
        self._own_input_view = _OWN_INPUT_VIEW
        self._view = _BufferView()
        self._frames_out = 0
        self._pdu_errors = 0
        self._work_calls = 0
        self._dc_cpu_s = 0.0
        self._feed_cpu_s = 0.0
        self._pdus_cpu_s = 0.0
        self.message_port_register_out(PDU_PORT)

    def stats(self) -> dict:
        """Counters of the receiver (bursts_detected, header_crc_fail, frames_ok, ...)."""
        with self._lock:
            counters = dict(self._rx.stats)
            counters["pdus_sent"] = self._frames_out - self._pdu_errors
            counters["pdu_errors"] = self._pdu_errors
            counters["work_calls"] = self._work_calls  # samples_in / work_calls: chunk size
        return counters

    def cpu_seconds(self) -> dict:
        """CPU time of this block's own thread in ``work``: the DC removal (``dc``),
        receiving (``feed``; with the DC removal where the receiver takes it, the
        single carrier's) and making and posting the PDUs (``pdus``); what the
        block costs beside the rest of a flowgraph sharing its core."""
        with self._lock:
            return {"dc": self._dc_cpu_s, "feed": self._feed_cpu_s, "pdus": self._pdus_cpu_s}

    def handle_general_work(self, noutput_items, ninput_items, input_items, output_items):
        """The gateway's call: the input buffer as an ndarray, then ``work`` (see the module)."""
        if self._own_input_view:
            try:
                address = _capsule_pointer(input_items[0], None)
            except (TypeError, ValueError):  # not the capsule of 3.10: GNU Radio's own way
                self._own_input_view = False
            else:
                # A sync block without history: as many input items as output items asked for.
                self._view.__array_interface__ = {
                    "data": (address, False),
                    "typestr": "<c8",
                    "shape": (noutput_items,),
                    "version": 3,
                }
                consumed = self.work((np.asarray(self._view),), ())
                self.consume_items(consumed)
                return consumed
        return super().handle_general_work(noutput_items, ninput_items, input_items, output_items)

    def work(self, input_items, output_items):
        samples = input_items[0]
        started = cleaned = time.thread_time()
        with self._lock:
            self._work_calls += 1
            if self._feed_takes_dc:  # the DC removal is timed with the feed then
                frames = self._rx.feed(samples, dc=self._dc)
            else:
                if self._dc is not None:
                    samples = self._dc.process(samples)
                    cleaned = time.thread_time()
                frames = self._rx.feed(samples)
            self._frames_out += len(frames)
            received = time.thread_time()
            self._dc_cpu_s += cleaned - started
            self._feed_cpu_s += received - cleaned
        self._publish(frames)
        with self._lock:
            self._pdus_cpu_s += time.thread_time() - received
        return len(input_items[0])

    def _publish(self, frames) -> None:
        for frame in frames:
            try:
                pdu = frame_to_pdu(frame)
            except Exception as exc:  # a frame we cannot wrap is dropped, not the flowgraph
                with self._lock:
                    self._pdu_errors += 1
                self.logger.error(f"frame dropped, cannot make its PDU: {exc!r}")
                continue
            self.message_port_pub(PDU_PORT, pdu)
