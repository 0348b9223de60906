#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""QA of the JSCC receiver block: frames out as PDUs with CSI; noise gives nothing."""

import tempfile
from pathlib import Path

import numpy as np
import pmt
from gnuradio import blocks, gr, gr_unittest
from gnuradio.diffjscc import image_source, jscc_receiver
from gnuradio.diffjscc._fakes import BlockMeanCodec, noise
from PIL import Image

from diffjscc.radio import FrameConfig, build_bursts
from diffjscc.radio.frame import header_span
from diffjscc.radio.sequences import PREAMBLE_LENGTH
from diffjscc.symbols import EncodedImage

# Silence closing a test stream: two of the receiver's batches (4096 new samples).
TAIL = np.zeros(8192, np.complex64)


def _encoded(rng, h=64, w=128):
    n = 2 * (h // 16) * (w // 16)
    sym = (rng.standard_normal(n) + 1j * rng.standard_normal(n)) / np.sqrt(2)
    return EncodedImage(
        sym.astype(np.complex64), (h, w), (2, h // 16, w // 16), "jscc-awgn-cbr1_384", 7.0
    )


class qa_jscc_receiver(gr_unittest.TestCase):
    def _receive(self, samples):
        tb = gr.top_block()
        src = blocks.vector_source_c(samples.tolist())
        rx = jscc_receiver(sps=2)
        dbg = blocks.message_debug()
        tb.connect(src, rx)
        tb.msg_connect(rx, "pdus", dbg, "store")
        tb.run()
        pdus = [dbg.get_message(i) for i in range(dbg.num_messages())]
        return pdus, rx.stats()

    def test_001_frames_become_pdus_with_csi(self):
        rng = np.random.default_rng(1)
        enc = _encoded(rng)
        cfg = FrameConfig(max_payload_symbols=40)
        bursts = build_bursts(enc, image_id=9, cfg=cfg)
        self.assertEqual(len(bursts), 2)
        gap = np.zeros(700, np.complex64)
        h = 0.8 * np.exp(1j * 0.6)
        # The receiver works in batches: silence after the last burst lets it finish.
        x = np.concatenate([gap] + [np.concatenate([b, gap]) for b in bursts] + [TAIL]) * h
        x = x + noise(x.size, 9.0, rng)
        pdus, stats = self._receive(x)
        self.assertEqual(len(pdus), 2)
        got = []
        for index, pdu in enumerate(pdus):
            self.assertTrue(pmt.is_pair(pdu))
            meta = pmt.to_python(pmt.car(pdu))
            symbols = np.array(pmt.c32vector_elements(pmt.cdr(pdu)), dtype=np.complex64)
            self.assertEqual(meta["image_id"], 9)
            self.assertEqual(meta["frame_index"], index)
            self.assertEqual(meta["frame_count"], 2)
            self.assertEqual(tuple(meta["image_shape"]), (64, 128))
            # An estimate of the received SNR, |h|^2 included: 9 dB - 1.9 dB.
            self.assertAlmostEqual(meta["snr_db"], 9.0 + 20 * np.log10(0.8), delta=1.5)
            self.assertIn("h", meta)
            self.assertIn("cfo", meta)
            got.append(symbols)
        # Equalised symbols: the sent ones plus noise at about 7 dB below them.
        err = np.concatenate(got) - enc.symbols
        self.assertLess(10 * np.log10(np.mean(np.abs(err) ** 2)), -5.0)
        self.assertEqual(stats["pdus_sent"], 2)

    def test_002_noise_only_gives_no_frame(self):
        rng = np.random.default_rng(2)
        pdus, stats = self._receive(noise(60000, 0.0, rng))
        self.assertEqual(pdus, [])
        self.assertEqual(stats["frames_ok"], 0)

    def test_003_truncated_and_corrupted_bursts_are_dropped(self):
        rng = np.random.default_rng(3)
        enc = _encoded(rng)
        cfg = FrameConfig()
        (good,) = build_bursts(enc, image_id=1, cfg=cfg)
        truncated = good[: good.size // 3]
        corrupted = good.copy()
        # The header, drowned (after the filter's ramp and the preamble).
        start = (cfg.filter_span + PREAMBLE_LENGTH) * cfg.sps
        stop = start + header_span(cfg, cfg.header_version) * cfg.sps
        corrupted[start:stop] = noise(stop - start, -20.0, rng)
        gap = np.zeros(800, np.complex64)
        x = np.concatenate([gap, truncated, gap, corrupted, gap, good, gap, TAIL])
        x = x + noise(x.size, 20.0, rng)
        pdus, stats = self._receive(x)
        self.assertEqual(len(pdus), 1)  # only the intact burst
        self.assertEqual(pmt.to_python(pmt.car(pdus[0]))["image_id"], 1)
        self.assertGreaterEqual(stats["bursts_detected"], 2)

    def test_004_last_burst_of_a_run_is_delivered(self):
        """The receiver works in batches: the source's closing silence lets it finish."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "big.png"
            rng = np.random.default_rng(4)
            Image.fromarray(rng.integers(0, 256, (512, 768, 3), dtype=np.uint8)).save(path)
            tb = gr.top_block()
            src = image_source(str(path), gap_samples=100, encoder=BlockMeanCodec())
            rx = jscc_receiver(sps=2)
            dbg = blocks.message_debug()
            tb.connect(src, rx)
            tb.msg_connect(rx, "pdus", dbg, "store")
            tb.run()
        self.assertEqual(src.stats()["bursts_sent"], 1)
        self.assertEqual(dbg.num_messages(), 1)

    def test_005_h_is_the_channel_models_tap(self):
        """PDU meta h is the channel gain (|h| = 1 for a unit channel), with the tap's
        phase; with a frequency offset, the tap's phase turned by the mixer at h_sample."""
        from gnuradio import channels

        from diffjscc.radio import noise_voltage

        cfg = FrameConfig()
        tap = 0.7 * np.exp(0.6j)
        for cfo in (0.0, 0.004):
            bursts = build_bursts(_encoded(np.random.default_rng(5), 128, 256), 4, cfg)
            x = np.concatenate(
                [np.zeros(1000, np.complex64), *bursts, np.zeros(30000, np.complex64)]
            )
            tb = gr.top_block()
            src = blocks.vector_source_c(x.tolist())
            channel = channels.channel_model(
                noise_voltage=noise_voltage(15.0, cfg),
                frequency_offset=cfo,
                epsilon=1.0,
                taps=[complex(tap)],
                noise_seed=2,
            )
            rx = jscc_receiver(sps=2)
            dbg = blocks.message_debug()
            tb.connect(src, channel, rx)
            tb.msg_connect(rx, "pdus", dbg, "store")
            tb.run()
            self.assertEqual(dbg.num_messages(), len(bursts))
            for i in range(dbg.num_messages()):
                meta = pmt.to_python(pmt.car(dbg.get_message(i)))
                expected = tap * np.exp(2j * np.pi * cfo * meta["h_sample"])
                self.assertAlmostEqual(abs(meta["h"]), abs(tap), delta=0.02)
                self.assertLess(abs(np.angle(meta["h"] / expected)), 0.05)

    def test_006_pdu_conversion_matches_pmts_own(self):
        """frame_to_pdu's quick routes (metadata by exact type, symbols from PMT's wire
        format) give what pmt.to_pmt and init_c32vector give."""
        from gnuradio.diffjscc import _frames

        meta = {
            "image_id": np.int64(7),
            "snr_db": np.float32(3.5),
            "h": 0.5 - 0.25j,
            "complete": True,
            "model": "jscc-awgn-cbr1_384",
            "image_shape": [512, 768],
            "received_ranges": np.array([[0, 10], [20, 3072]]),
            "pair": (1, "x"),
            "nothing": None,
            "nested": {"a": [1.5, False]},
        }
        self.assertTrue(pmt.equal(_frames.meta_to_pmt(meta), pmt.to_pmt(_frames._plain(meta))))
        self.assertEqual(pmt.to_python(_frames.meta_to_pmt(meta))["image_id"], 7)
        rng = np.random.default_rng(6)
        symbols = (rng.standard_normal(3072) + 1j * rng.standard_normal(3072)).astype(np.complex64)
        vector = _frames.c32vector(symbols)
        self.assertTrue(pmt.equal(vector, pmt.init_c32vector(symbols.size, symbols.tolist())))
        got = np.array(pmt.c32vector_elements(vector), dtype=np.complex64)
        np.testing.assert_array_equal(got, symbols)
        symbols[0] = 99.0  # the vector holds a copy, not the receiver's array
        self.assertEqual(pmt.c32vector_ref(vector, 0), complex(got[0]))
        self.assertEqual(pmt.length(_frames.c32vector(symbols[:0])), 0)

    def test_007_pdu_from_wire_bytes_matches_the_pmt_calls(self):
        """frame_to_pdu writes the metadata in PMT's wire format and copies the vectors
        into PMT's storage (the fallback: the whole PDU as wire bytes): the same PDU as
        the pmt calls, for complete and partial frames, with and without per-symbol
        noise, and the frame read back from it is the frame."""
        from gnuradio.diffjscc import _frames

        from diffjscc.radio import ReceivedFrame
        from diffjscc.registry import get_model_spec

        self.assertIs(_frames._make_pdu, _frames._pdu_by_memory)  # the checks at import passed
        self.assertIs(_frames.c32vector, _frames._c32vector_by_memory)
        rng = np.random.default_rng(8)
        symbols = (rng.standard_normal(3072) + 1j * rng.standard_normal(3072)).astype(np.complex64)
        mask = np.ones(3072, bool)
        mask[100:300] = False
        noise = rng.uniform(0.1, 2.0, 3072).astype(np.float32)
        for received_mask, per_symbol in ((None, None), (mask, noise)):
            frame = ReceivedFrame(
                image_id=70000 % 65536,
                frame_index=0,
                frame_count=1,
                rate_code=get_model_spec("jscc-awgn-cbr1_384").rate_code,  # 3072 symbols
                image_shape=(512, 768),
                design_snr_db=7.5,
                symbols=symbols,
                snr_db=6.25,
                h=0.8 - 0.1j,
                cfo=1e-3,
                timing=123456789.25,
                noise_var=0.2,
                num_known=576,
                h_sample=1e10,
                received_mask=received_mask,
                symbol_noise_var=per_symbol,
            )
            meta = frame.meta(symbol_noise=False)
            pdu = _frames.frame_to_pdu(frame)
            by_calls = _frames._pdu_by_calls(meta, symbols, per_symbol)
            self.assertTrue(pmt.equal(pdu, by_calls))
            self.assertTrue(pmt.equal(_frames._pdu_by_bytes(meta, symbols, per_symbol), by_calls))
            meta["snr_db"] = 6.5  # pmt.equal sees a changed value
            self.assertFalse(pmt.equal(pdu, _frames._pdu_by_calls(meta, symbols, per_symbol)))
            back = _frames.pdu_to_frame(pdu)
            np.testing.assert_array_equal(back.symbols, symbols)
            np.testing.assert_array_equal(back.mask(), frame.mask())
            self.assertEqual((back.timing, back.h, back.h_sample), (frame.timing, frame.h, 1e10))
            if per_symbol is not None:
                np.testing.assert_array_equal(back.symbol_noise_var, per_symbol)

    def test_007b_metadata_template_gives_the_general_routes_pdu(self):
        """Complete frames' metadata written from a template per kind of frame: the same
        PDU as the pmt calls for every frame of a kind, numpy scalars and plain values
        alike; frames the template cannot hold (partial, an id beyond 32 bits) take
        the general route, with the same result."""
        import dataclasses

        from gnuradio.diffjscc import _frames

        from diffjscc.radio import ReceivedFrame

        rng = np.random.default_rng(10)
        symbols = (rng.standard_normal(3072) + 1j * rng.standard_normal(3072)).astype(np.complex64)
        first = ReceivedFrame(
            image_id=5,
            frame_index=0,
            frame_count=1,
            rate_code=1,
            image_shape=(512, 768),
            design_snr_db=7.5,
            symbols=symbols,
            snr_db=6.25,
            h=0.8 - 0.1j,
            cfo=1e-3,
            timing=1234.5,
            noise_var=0.2,
            num_known=576,
            h_sample=5678.0,
        )
        # meta() and the template agree on the fields (a new field disables the template).
        self.assertEqual(tuple(first.meta(symbol_noise=False)), _frames._META_KEYS)
        mask = np.ones(3072, bool)
        mask[:100] = False
        variants = [
            (first, True),
            (dataclasses.replace(first, image_id=6, snr_db=-3.0, h=-1j, timing=2e9), True),
            (
                dataclasses.replace(
                    first,
                    image_id=np.int64(7),
                    snr_db=np.float32(1.5),
                    h=np.complex64(0.5 + 0.5j),
                    timing=np.float64(9.75),
                    num_known=np.int32(500),
                ),
                True,
            ),
            (dataclasses.replace(first, timing=3), True),  # meta() makes it 3.0
            (dataclasses.replace(first, image_id=1 << 40), False),
            (dataclasses.replace(first, received_mask=mask), False),
            (
                dataclasses.replace(
                    first, waveform="ofdm", symbol_noise_var=np.ones(3072, np.float32)
                ),
                True,
            ),
        ]
        for frame, templated in variants:
            noise = frame.symbol_noise_var
            by_calls = _frames._pdu_by_calls(frame.meta(symbol_noise=False), frame.symbols, noise)
            self.assertTrue(pmt.equal(_frames.frame_to_pdu(frame), by_calls))
            self.assertEqual(_frames._complete_meta_bytes(frame) is not None, templated)
        changed = dataclasses.replace(first, snr_db=6.5)
        self.assertFalse(pmt.equal(_frames.frame_to_pdu(changed), _frames.frame_to_pdu(first)))

    def test_008_dc_offset_is_removed_before_the_receiver(self):
        """A front end's DC offset 6 dB below the signal: with the block's DC removal (the
        default) the symbols are as good as without the offset; without it they are not."""
        rng = np.random.default_rng(8)
        enc = _encoded(rng, 128, 256)
        bursts = build_bursts(enc, image_id=3)
        lead = np.zeros(70000, np.complex64)  # the running mean settles on the offset first
        x = np.concatenate([lead, *bursts, TAIL])
        x = x + noise(x.size, 12.0, rng)
        x_dc = x + np.complex64(0.25 + 0.2j)

        def error_db(samples, **kw):
            tb = gr.top_block()
            src = blocks.vector_source_c(samples.tolist())
            rx = jscc_receiver(sps=2, **kw)
            dbg = blocks.message_debug()
            tb.connect(src, rx)
            tb.msg_connect(rx, "pdus", dbg, "store")
            tb.run()
            self.assertEqual(dbg.num_messages(), 1)
            got = np.array(pmt.c32vector_elements(pmt.cdr(dbg.get_message(0))), np.complex64)
            return 10 * np.log10(np.mean(np.abs(got - enc.symbols) ** 2))

        clean = error_db(x)
        self.assertLess(abs(error_db(x_dc) - clean), 0.3)
        self.assertGreater(error_db(x_dc, dc_removal=False), clean + 2.0)

    def test_009_own_input_view_gives_what_the_gateway_gives(self):
        """The block's own wrapping of the input buffer (GNU Radio 3.10) and the gateway's
        deliver the same PDUs from the same stream, over many work calls."""
        import importlib

        module = importlib.import_module("gnuradio.diffjscc.jscc_receiver")
        rng = np.random.default_rng(9)
        bursts = build_bursts(_encoded(rng, 64, 128), image_id=4, cfg=FrameConfig())
        gap = np.zeros(900, np.complex64)
        x = np.concatenate([gap] + [np.concatenate([b, gap]) for b in bursts * 6] + [TAIL])
        x = x + noise(x.size, 10.0, rng)
        runs = []
        for own in (True, False):
            tb = gr.top_block()
            src = blocks.vector_source_c(x.tolist())
            # DC removal off: its running mean depends slightly on where GNU Radio cuts the
            # stream, which differs from run to run; this test is about the input's wrapping.
            rx = jscc_receiver(sps=2, dc_removal=False)
            rx.set_max_noutput_items(3000)  # many calls, cut anywhere in a burst
            rx._own_input_view = own and module._OWN_INPUT_VIEW
            dbg = blocks.message_debug()
            tb.connect(src, rx)
            tb.msg_connect(rx, "pdus", dbg, "store")
            tb.run()
            self.assertEqual(rx._own_input_view, own and module._OWN_INPUT_VIEW)  # no fallback
            stats = rx.stats()
            self.assertEqual(stats["samples_in"], x.size)
            self.assertGreater(stats["work_calls"], 5)
            runs.append([dbg.get_message(i) for i in range(dbg.num_messages())])
        self.assertEqual(len(runs[0]), 6)
        self.assertEqual(len(runs[0]), len(runs[1]))
        for a, b in zip(*runs, strict=True):
            self.assertTrue(pmt.equal(a, b))


if __name__ == "__main__":
    gr_unittest.run(qa_jscc_receiver)
