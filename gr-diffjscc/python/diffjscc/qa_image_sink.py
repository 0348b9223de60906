#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""QA of the image sink: assembly, decoding off the scheduler, PNG files, bad input."""

import concurrent.futures
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pmt
from gnuradio import blocks, gr, gr_unittest
from gnuradio.diffjscc import image_sink
from gnuradio.diffjscc._fakes import BlockMeanCodec, noise
from gnuradio.diffjscc._frames import frame_to_pdu, meta_to_pmt
from PIL import Image

from diffjscc.radio import BurstReceiver, FrameConfig, build_bursts

CFG = FrameConfig(max_payload_symbols=40)


def _received_frames(codec, image, image_id, snr_db=10.0, seed=0):
    """Frames of ``image`` as the receiver delivers them after an AWGN channel."""
    rng = np.random.default_rng(seed)
    bursts = build_bursts(codec.encode(image, snr_db), image_id=image_id, cfg=CFG)
    gap = np.zeros(800, np.complex64)
    x = np.concatenate([gap] + [np.concatenate([b, gap]) for b in bursts])
    frames = BurstReceiver(CFG).feed(x + noise(x.size, snr_db, rng))
    assert len(frames) == len(bursts), (len(frames), len(bursts))
    return frames


class _FailingDecoder:
    def __init__(self, codec):
        self.codec = codec
        self.calls = 0

    def decode(self, request):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("model exploded")
        return self.codec.decode(request)


class _AsyncDecoder:
    """A WorkerClient look-alike: submit() returns a future resolved by another thread."""

    def __init__(self, codec, delay_s=0.05):
        self.codec = codec
        self.pool = concurrent.futures.ThreadPoolExecutor(1)
        self.delay_s = delay_s

    def submit(self, request):
        def work():
            time.sleep(self.delay_s)
            return self.codec.decode(request)

        return self.pool.submit(work)


class qa_image_sink(gr_unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)
        rng = np.random.default_rng(5)
        # A smooth image, so the block-mean stand-in codec reproduces it well.
        yy, xx = np.mgrid[0:64, 0:96]
        base = np.stack([xx * 2, yy * 3, (xx + yy)], axis=2) % 256
        self.image = np.clip(base + rng.integers(0, 4, base.shape), 0, 255).astype(np.uint8)
        self.image_path = self.dir / "original.png"
        Image.fromarray(self.image).save(self.image_path)
        self.codec = BlockMeanCodec()

    def tearDown(self):
        self.tmp.cleanup()

    def _run(self, messages, decoder=None, settle=None, **kwargs):
        """Post messages to a running sink; returns (sink, messages it sent)."""
        tb = gr.top_block()
        sink = image_sink(output_dir=str(self.dir / "out"), decoder=decoder or self.codec, **kwargs)
        dbg = blocks.message_debug()
        tb.msg_connect(sink, "images", dbg, "store")
        tb.start()
        for posted, (port, msg) in enumerate(messages, start=1):
            sink.to_basic_block()._post(pmt.intern(port), msg)
            if port == "tx_info":
                # GNU Radio serves a block's message ports in no fixed order: let the sink's
                # thread take the original before the frames that refer to it arrive.
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and not (
                    sink.stats()["messages_in"] >= posted and sink._queue.empty()
                ):
                    time.sleep(0.01)
        if settle is not None:
            deadline = time.monotonic() + 10
            while not settle(sink) and time.monotonic() < deadline:
                time.sleep(0.02)
        tb.stop()
        tb.wait()
        sent = [pmt.to_python(dbg.get_message(i)) for i in range(dbg.num_messages())]
        return sink, sent

    def _tx_info(self, image_id):
        return ("tx_info", meta_to_pmt({"image_id": image_id, "path": str(self.image_path)}))

    def test_001_whole_image_decoded_written_reported(self):
        frames = _received_frames(self.codec, self.image, image_id=3)
        self.assertEqual(len(frames), 2)
        msgs = [self._tx_info(3)] + [("pdus", frame_to_pdu(f)) for f in frames]
        sink, sent = self._run(msgs, settle=lambda s: s.results())
        (result,) = sink.results()
        self.assertFalse(result["partial"])
        self.assertEqual((result["frames_received"], result["frame_count"]), (2, 2))
        self.assertAlmostEqual(result["snr_db"], 10.0, delta=1.5)
        written = np.asarray(Image.open(result["path"]))
        self.assertEqual(written.shape, self.image.shape)
        self.assertGreater(result["psnr"], 20.0)
        self.assertEqual(len(sent), 1)
        self.assertEqual(sent[0]["path"], result["path"])
        self.assertEqual(sent[0]["counters"]["images_complete"], 1)
        # Files appear whole: no temporary file is left beside the PNG.
        self.assertEqual(
            sorted(p.name for p in Path(result["path"]).parent.iterdir()),
            [Path(result["path"]).name],
        )
        # The decoder got the receiver's estimate, not a true SNR it cannot know.
        self.assertAlmostEqual(self.codec.decoded[0].snr_db, result["snr_db"])

    def test_002_missing_frame_gives_partial_image_after_timeout(self):
        frames = _received_frames(self.codec, self.image, image_id=4)
        msgs = [("pdus", frame_to_pdu(frames[1]))]
        sink, _ = self._run(msgs, settle=lambda s: s.results(), assembly_timeout_s=0.2)
        (result,) = sink.results()
        self.assertTrue(result["partial"])
        self.assertEqual((result["frames_received"], result["frame_count"]), (1, 2))
        self.assertTrue(Path(result["path"]).exists())
        self.assertEqual(sink.stats()["images_partial"], 1)

    def test_003_pending_image_is_decoded_at_stop(self):
        frames = _received_frames(self.codec, self.image, image_id=5)
        sink, _ = self._run(
            [("pdus", frame_to_pdu(frames[0]))],
            settle=lambda s: s.stats()["frames_in"] >= 1,
            assembly_timeout_s=60.0,
        )
        (result,) = sink.results()
        self.assertTrue(result["partial"])

    def test_004_bad_input_is_counted_never_fatal(self):
        frames = _received_frames(self.codec, self.image, image_id=6)
        good = frame_to_pdu(frames[0])
        meta = pmt.car(good)
        short = pmt.cons(meta, pmt.init_c32vector(3, [1j, 1, 1]))  # wrong-length frame
        unknown_rate = pmt.cons(
            pmt.dict_add(meta, pmt.intern("rate_code"), pmt.from_long(15)), pmt.cdr(good)
        )
        msgs = [
            ("pdus", pmt.intern("garbage")),
            ("pdus", pmt.cons(pmt.PMT_NIL, pmt.cdr(good))),  # metadata not a dict
            ("pdus", pmt.cons(meta, pmt.init_u8vector(2, [1, 2]))),  # payload not complex
            ("pdus", short),
            ("pdus", unknown_rate),
            ("tx_info", pmt.intern("not a dict")),
        ]
        sink, sent = self._run(msgs, settle=lambda s: s.stats()["frames_in"] >= 5)
        stats = sink.stats()
        self.assertEqual(stats["frames_malformed"], 3)
        self.assertEqual(stats["assembler_bad_frame"], 2)
        self.assertEqual(sink.results(), [])  # no false image
        self.assertEqual(sent, [])

    def test_005_decoder_failure_is_reported_and_the_next_image_decoded(self):
        decoder = _FailingDecoder(self.codec)
        msgs = []
        for image_id in (7, 8):
            msgs += [
                ("pdus", frame_to_pdu(f))
                for f in _received_frames(self.codec, self.image, image_id)
            ]
        sink, sent = self._run(msgs, decoder=decoder, settle=lambda s: len(s.results()) >= 2)
        first, second = sink.results()
        self.assertIn("model exploded", first["error"])
        self.assertIsNone(first["path"])
        self.assertIsNone(second["error"])
        self.assertEqual(sink.stats()["decode_errors"], 1)
        self.assertEqual(len(sent), 2)

    def test_006_asynchronous_decoder_and_refined_output(self):
        frames = _received_frames(self.codec, self.image, image_id=9)
        sink, _ = self._run(
            [("pdus", frame_to_pdu(f)) for f in frames],
            decoder=_AsyncDecoder(self.codec),
            refine=True,
            settle=lambda s: s.results(),
        )
        (result,) = sink.results()
        self.assertTrue(result["refined_path"].endswith("_refined.png"))
        self.assertTrue(Path(result["refined_path"]).exists())

    def test_007_message_handler_never_waits_for_decoding(self):
        release = threading.Event()

        class Slow:
            def decode(self, request):
                release.wait(10)
                return BlockMeanCodec().decode(request)

        frames = _received_frames(self.codec, self.image, image_id=10)
        tb = gr.top_block()
        sink = image_sink(output_dir=str(self.dir / "out"), decoder=Slow(), drain_timeout_s=10)
        tb.msg_connect(sink, "images", blocks.message_debug(), "store")
        tb.start()
        t0 = time.monotonic()
        for _ in range(3):
            for f in frames:
                sink.to_basic_block()._post(pmt.intern("pdus"), frame_to_pdu(f))
        deadline = time.monotonic() + 5
        while sink.stats()["messages_in"] < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        # Frames keep being taken while the first decode is stuck.
        self.assertEqual(sink.stats()["messages_in"], 6)
        self.assertLess(time.monotonic() - t0, 5)
        release.set()
        tb.stop()
        tb.wait()
        self.assertEqual(len(sink.results()), 3)

    def test_008_bad_timeouts_are_refused_at_construction(self):
        from diffjscc.errors import ConfigError

        for kwargs in (
            {"assembly_timeout_s": 0},
            {"decode_timeout_s": -1},
            {"drain_timeout_s": float("nan")},
        ):
            with self.assertRaises(ConfigError):
                image_sink(output_dir=str(self.dir / "out"), decoder=self.codec, **kwargs)


if __name__ == "__main__":
    gr_unittest.run(qa_image_sink)
