#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""QA of the SigMF recorder block: samples and the receiver's frames become a valid recording."""

import tempfile
from pathlib import Path

import numpy as np
import pmt
from gnuradio import blocks, gr, gr_unittest
from gnuradio.diffjscc import jscc_receiver, sigmf_recorder
from gnuradio.diffjscc._fakes import noise

from diffjscc.radio import FrameConfig, build_bursts
from diffjscc.radio.recording import open_recording
from diffjscc.symbols import EncodedImage


def _samples(rng, image_id=4, h=64, w=128, max_payload_symbols=40):
    n = 2 * (h // 16) * (w // 16)
    sym = ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) / np.sqrt(2)).astype(np.complex64)
    enc = EncodedImage(sym, (h, w), (2, h // 16, w // 16), "jscc-awgn-cbr1_384", 7.0)
    cfg = FrameConfig(max_payload_symbols=max_payload_symbols)
    bursts = build_bursts(enc, image_id=image_id, cfg=cfg)
    gap = np.zeros(700, np.complex64)
    # Silence at the end: the receiver works in batches and completes the last burst on it.
    x = np.concatenate(
        [gap] + [np.concatenate([b, gap]) for b in bursts] + [np.zeros(20000, np.complex64)]
    )
    starts = [700 + k * (bursts[0].size + 700) for k in range(len(bursts))]
    return x + noise(x.size, 12.0, rng), starts, [b.size for b in bursts]


class qa_sigmf_recorder(gr_unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.tmp = Path(self._tmp.name)

    def tearDown(self):
        self._tmp.cleanup()

    def _record(self, samples, **kwargs):
        tb = gr.top_block()
        src = blocks.vector_source_c(samples.tolist())
        rx = jscc_receiver(sps=2)
        rec = sigmf_recorder(
            str(self.tmp / "rx"), sample_rate=2e6, center_freq=915e6, hw="qa", **kwargs
        )
        tb.connect(src, rx)
        tb.connect(src, rec)
        tb.msg_connect(rx, "pdus", rec, "frames")
        tb.run()
        return rec, rx

    def test_001_samples_and_frames_become_a_recording(self):
        rng = np.random.default_rng(3)
        x, starts, sizes = _samples(rng)
        rec, rx = self._record(x)
        self.assertEqual(rx.stats()["frames_ok"], len(starts))
        r = open_recording(self.tmp / "rx")  # validates schema, sizes and hash
        self.assertEqual(r.num_samples, x.size)
        self.assertEqual((r.sample_rate, r.center_freq, r.hw, r.sps), (2e6, 915e6, "qa", 2))
        got = np.concatenate(list(r.iter_samples(5000)))
        np.testing.assert_array_equal(got, x.astype(np.complex64))
        self.assertEqual([a.frame_index for a in r.annotations], list(range(len(starts))))
        for a, start, size in zip(r.annotations, starts, sizes, strict=True):
            self.assertEqual(a.image_id, 4)
            self.assertLessEqual(abs(a.sample_start - start), 1)
            self.assertEqual(a.sample_count, size)
            self.assertGreater(a.snr_db, 8.0)
        self.assertFalse((self.tmp / "rx.sigmf-data.part").exists())
        self.assertEqual(rec.stats()["annotations"], len(starts))

    def test_002_bounded_size_drops_and_counts(self):
        rng = np.random.default_rng(4)
        x, starts, sizes = _samples(rng)
        limit = starts[1] + 10  # the second burst does not fit
        rec, _ = self._record(x, max_megabytes=limit * 8 / (1 << 20))
        stats = rec.stats()
        self.assertEqual(stats["samples_written"], limit)
        self.assertEqual(stats["samples_dropped"], x.size - limit)
        r = open_recording(self.tmp / "rx")
        self.assertEqual(r.num_samples, limit)
        self.assertEqual(len(r.annotations), 1)  # the frames beyond the samples kept are dropped
        self.assertEqual(r.global_info["diffjscc:samples_dropped"], x.size - limit)
        self.assertEqual(r.global_info["diffjscc:annotations_dropped"], len(starts) - 1)

    def test_003_bad_messages_are_counted_not_fatal(self):
        rec = sigmf_recorder(str(self.tmp / "bad"), sample_rate=1e6)
        rec._on_frame(pmt.intern("junk"))
        rec._on_frame(pmt.cons(pmt.make_dict(), pmt.init_c32vector(1, [0j])))  # no fields
        rec._on_tx_info(pmt.from_long(3))
        stats = rec.stats()
        self.assertEqual(stats["bad_messages"] + stats["annotations_bad"], 3)
        self.assertEqual(stats["annotations"], 0)

    def test_004_empty_path_records_nothing(self):
        tb = gr.top_block()
        src = blocks.vector_source_c([1j] * 5000)
        rec = sigmf_recorder("", sample_rate=1e6)
        tb.connect(src, rec)
        tb.run()
        self.assertEqual(rec.stats()["samples_dropped"], 5000)
        self.assertIsNone(rec.meta_path)
        self.assertEqual(list(self.tmp.iterdir()), [])


if __name__ == "__main__":
    gr_unittest.run(qa_sigmf_recorder)
