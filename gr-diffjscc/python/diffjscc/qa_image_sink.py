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
from gnuradio.diffjscc._fakes import BlockMeanCodec, SyncDecoder, noise
from gnuradio.diffjscc._frames import frame_to_pdu, meta_to_pmt
from PIL import Image

from diffjscc.radio import BurstReceiver, FrameConfig, build_bursts
from diffjscc.worker.protocol import DecodeReply

CFG = FrameConfig(max_payload_symbols=40)


def _received_frames(codec, image, image_id, snr_db=10.0, seed=0):
    """Frames of ``image`` as the receiver delivers them after an AWGN channel."""
    rng = np.random.default_rng(seed)
    bursts = build_bursts(codec.encode(image, snr_db), image_id=image_id, cfg=CFG)
    gap = np.zeros(800, np.complex64)
    x = np.concatenate([gap] + [np.concatenate([b, gap]) for b in bursts])
    rx = BurstReceiver(CFG)
    frames = rx.feed(x + noise(x.size, snr_db, rng)) + rx.flush()
    assert len(frames) == len(bursts), (len(frames), len(bursts))
    return frames


class _FailingDecoder(SyncDecoder):
    def __init__(self, codec):
        self.codec = codec
        self.calls = 0

    def decode(self, request):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("model exploded")
        return self.codec.decode(request)


class _GateDecoder:
    """The decoder interface with decodes that stay in flight until ``release`` is set."""

    budget_s = 60.0

    def __init__(self, codec):
        self.codec = codec
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.most_running = 0
        self.submitted = []  # image ids, in order
        self.cancelled = 0
        self.closed = False

    def submit(self, request):
        future = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.submitted.append(request.image_id)

        def work():
            self.release.wait(60)
            with self.lock:
                self.running -= 1
            try:
                future.set_result(self.codec.decode(request))
            except concurrent.futures.InvalidStateError:
                pass  # cancelled meanwhile

        threading.Thread(target=work, daemon=True).start()
        return future

    def cancel(self, future):
        try:
            future.set_result(DecodeReply.failure(None, "cancelled by the sender", "cancelled"))
        except concurrent.futures.InvalidStateError:
            return False
        self.cancelled += 1
        return True

    def close(self, timeout_s=2.0):
        self.closed = True


class _Feeder(gr.sync_block):
    """Posts its messages, then ends: the end of a finite stream for the sink downstream."""

    def __init__(self, messages):
        gr.sync_block.__init__(self, name="feeder", in_sig=None, out_sig=[np.uint8])
        self.messages = list(messages)
        self.message_port_register_out(pmt.intern("out"))

    def work(self, input_items, output_items):
        for msg in self.messages:
            self.message_port_pub(pmt.intern("out"), msg)
        self.messages = []
        return -1


def _until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


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
        kwargs.setdefault("print_stats", False)
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
                    sink.stats()["messages_in"] >= posted and sink.stats()["frames_queued"] == 0
                ):
                    time.sleep(0.01)
        if settle is not None:
            deadline = time.monotonic() + 10
            while not settle(sink) and time.monotonic() < deadline:
                time.sleep(0.02)
        # The images port is served beside the sink's thread: let what it sent arrive.
        deadline = time.monotonic() + 10
        while dbg.num_messages() < len(sink.results()) and time.monotonic() < deadline:
            time.sleep(0.01)
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

    def test_003_at_the_end_of_a_stream_the_pending_image_is_decoded(self):
        frames = _received_frames(self.codec, self.image, image_id=5)
        tb = gr.top_block()
        feeder = _Feeder([frame_to_pdu(frames[0])])
        sink = image_sink(
            output_dir=str(self.dir / "out"),
            decoder=self.codec,
            assembly_timeout_s=60.0,
            print_stats=False,
        )
        tb.connect(feeder, blocks.null_sink(gr.sizeof_char))
        tb.msg_connect(feeder, "out", sink, "pdus")
        tb.run()  # ends by itself: the feeder ends, then the sink drains
        (result,) = sink.results()
        self.assertTrue(result["partial"])
        self.assertTrue(Path(result["path"]).exists())

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
        sink, sent = self._run(
            msgs, decoder=decoder, policy="all", settle=lambda s: len(s.results()) >= 2
        )
        first, second = sink.results()
        self.assertIn("model exploded", first["error"])
        self.assertIsNone(first["path"])
        self.assertIsNone(second["error"])
        self.assertEqual(sink.stats()["decode_errors"], 1)
        self.assertEqual(len(sent), 2)

    def test_006_asynchronous_decoder_and_refined_output(self):
        frames = _received_frames(self.codec, self.image, image_id=9)
        decoder = _GateDecoder(self.codec)
        decoder.release.set()
        sink, _ = self._run(
            [("pdus", frame_to_pdu(f)) for f in frames],
            decoder=decoder,
            refine=True,
            settle=lambda s: s.results(),
        )
        (result,) = sink.results()
        self.assertTrue(result["refined_path"].endswith("_refined.png"))
        self.assertTrue(Path(result["refined_path"]).exists())
        self.assertFalse(decoder.closed)  # a decoder handed in belongs to the caller

    def _post_images(self, sink, image_ids):
        for image_id in image_ids:
            for f in _received_frames(self.codec, self.image, image_id):
                sink.to_basic_block()._post(pmt.intern("pdus"), frame_to_pdu(f))

    def _started(self, decoder, **kwargs):
        tb = gr.top_block()
        kwargs.setdefault("print_stats", False)
        sink = image_sink(output_dir=str(self.dir / "out"), decoder=decoder, **kwargs)
        tb.msg_connect(sink, "images", blocks.message_debug(), "store")
        tb.start()
        return tb, sink

    def test_007_latest_policy_decodes_the_newest_and_counts_the_stale(self):
        decoder = _GateDecoder(self.codec)
        tb, sink = self._started(decoder)  # policy "latest" is the default
        try:
            self._post_images(sink, [20])
            self.assertTrue(_until(lambda: decoder.submitted == [20]))
            # While 20 is being decoded, 21, 22 and 23 arrive: only 23 is worth showing.
            self._post_images(sink, [21, 22, 23])
            self.assertTrue(_until(lambda: sink.stats()["images_complete"] == 4))
            self.assertEqual(sink.stats()["images_dropped_stale"], 2)
            self.assertEqual(sink.stats()["waiting"], 1)
            decoder.release.set()
            self.assertTrue(_until(lambda: len(sink.results()) == 2))
        finally:
            decoder.release.set()
            tb.stop()
            tb.wait()
        self.assertEqual([r["image_id"] for r in sink.results()], [20, 23])
        self.assertEqual(decoder.submitted, [20, 23])
        self.assertEqual(decoder.most_running, 1)  # max_in_flight defaults to 1

    def test_008_all_policy_queues_within_its_bound_and_counts_the_rest(self):
        decoder = _GateDecoder(self.codec)
        tb, sink = self._started(decoder, policy="all", queue_size=2)
        try:
            self._post_images(sink, [30])
            self.assertTrue(_until(lambda: decoder.submitted == [30]))
            self._post_images(sink, [31, 32, 33])
            self.assertTrue(_until(lambda: sink.stats()["images_complete"] == 4))
            self.assertEqual(sink.stats()["images_dropped_queue_full"], 1)
            decoder.release.set()
            self.assertTrue(_until(lambda: len(sink.results()) == 3))
        finally:
            decoder.release.set()
            tb.stop()
            tb.wait()
        self.assertEqual([r["image_id"] for r in sink.results()], [30, 31, 32])
        self.assertEqual(sink.stats()["images_dropped_stale"], 0)

    def test_009_at_most_max_in_flight_decodes(self):
        decoder = _GateDecoder(self.codec)
        tb, sink = self._started(decoder, policy="all", max_in_flight=2)
        try:
            self._post_images(sink, [40, 41, 42])
            self.assertTrue(_until(lambda: sink.stats()["images_complete"] == 3))
            self.assertTrue(_until(lambda: sink.stats()["in_flight"] == 2))
            self.assertEqual(len(decoder.submitted), 2)
            self.assertEqual(sink.stats()["waiting"], 1)
            decoder.release.set()
            self.assertTrue(_until(lambda: len(sink.results()) == 3))
        finally:
            decoder.release.set()
            tb.stop()
            tb.wait()
        self.assertEqual(decoder.most_running, 2)

    def test_010_stop_cancels_what_is_queued_and_in_flight(self):
        decoder = _GateDecoder(self.codec)  # never released: decodes that would hang a stop
        tb, sink = self._started(decoder, policy="all", queue_size=8, max_in_flight=2)
        self._post_images(sink, [50, 51, 52, 53])
        self.assertTrue(_until(lambda: sink.stats()["images_complete"] == 4))
        t0 = time.monotonic()
        tb.stop()
        tb.wait()
        # Not a speed test: the bound only tells "returned" from "waited for the decodes".
        self.assertLess(time.monotonic() - t0, 10.0)
        stats = sink.stats()
        self.assertEqual(stats["images_cancelled"], 4)
        self.assertEqual(decoder.cancelled, 2)  # the two in flight, abandoned at the decoder
        self.assertFalse(stats["serving"])
        self.assertEqual(sink.results(), [])
        decoder.release.set()

    def test_010b_stop_abandons_a_request_at_a_silent_worker(self):
        """The sink's own WorkerClient: a request the worker never answers is abandoned."""
        import zmq

        context = zmq.Context()
        silent = context.socket(zmq.ROUTER)  # takes requests, never replies
        port = silent.bind_to_random_port("tcp://127.0.0.1")
        try:
            tb, sink = self._started(None, worker_address=f"tcp://127.0.0.1:{port}")
            self._post_images(sink, [55])
            self.assertTrue(_until(lambda: sink.stats()["in_flight"] == 1))
            t0 = time.monotonic()
            tb.stop()
            tb.wait()
            self.assertLess(time.monotonic() - t0, 10.0)  # not the 60 s the request may take
            self.assertEqual(sink.stats()["images_cancelled"], 1)
            self.assertFalse(sink.stats()["serving"])
        finally:
            silent.close(linger=0)
            context.term()

    def test_011_d7_an_absurd_snr_costs_one_frame_not_the_sink(self):
        """Issue 10 D7: snr_db 5000 on frame 0 of 2 killed the thread at the assembly timeout."""
        frames = _received_frames(self.codec, self.image, image_id=60)
        meta = pmt.car(frame_to_pdu(frames[0]))
        hostile = pmt.cons(
            pmt.dict_add(meta, pmt.intern("snr_db"), pmt.from_double(5000.0)),
            pmt.cdr(frame_to_pdu(frames[0])),
        )
        msgs = [("pdus", hostile)]
        for image_id in (61, 62, 63):
            msgs += [
                ("pdus", frame_to_pdu(f))
                for f in _received_frames(self.codec, self.image, image_id)
            ]
        sink, _ = self._run(
            msgs,
            assembly_timeout_s=0.05,
            policy="all",
            settle=lambda s: len(s.results()) >= 3,
        )
        self.assertEqual([r["image_id"] for r in sink.results()], [61, 62, 63])
        self.assertEqual(sink.stats()["frames_malformed"], 1)
        self.assertEqual(sink.stats()["internal_errors"], 0)

    def test_012_hostile_pdus_are_dropped_and_counted_and_the_sink_serves_on(self):
        """Fault test: PDUs a receiver never sends, then a good image."""
        frames = _received_frames(self.codec, self.image, image_id=70)
        good = frame_to_pdu(frames[0])
        meta, vector = pmt.car(good), pmt.cdr(good)

        def with_field(key, value):
            return pmt.cons(pmt.dict_add(meta, pmt.intern(key), value), vector)

        deep = pmt.PMT_NIL
        for _ in range(3000):
            deep = pmt.cons(deep, pmt.PMT_NIL)
        wide = pmt.make_dict()
        for i in range(200):
            wide = pmt.dict_add(wide, pmt.intern(f"k{i}"), pmt.from_long(i))
        hostile = [
            pmt.PMT_NIL,
            pmt.PMT_T,
            pmt.from_double(1.0),
            pmt.cons(pmt.PMT_NIL, pmt.PMT_NIL),
            pmt.cons(meta, pmt.init_c32vector(70000, [0j] * 70000)),  # larger than any frame
            pmt.cons(wide, vector),
            pmt.cons(pmt.dict_add(meta, pmt.intern("x"), deep), vector),
            pmt.cons(meta, pmt.init_f32vector(4, [1.0] * 4)),
            pmt.cons(meta, pmt.init_c32vector(0, [])),
        ]
        for value in (
            pmt.from_double(float("nan")),
            pmt.from_double(float("inf")),
            pmt.from_double(-float("inf")),
            pmt.from_double(1e308),
            pmt.from_double(-5000.0),
            pmt.intern("1e10000000"),
            pmt.PMT_T,
            pmt.PMT_NIL,
            pmt.init_u8vector(3, [1, 2, 3]),
        ):
            hostile.append(with_field("snr_db", value))
        for key, value in (
            ("h", pmt.from_complex(complex(float("inf"), 0.0))),
            ("h", pmt.from_complex(1e300 + 0j)),
            ("h", pmt.intern("nan")),
            ("image_id", pmt.from_double(1.5)),
            ("image_id", pmt.intern("3")),
            ("frame_count", pmt.from_long(-1)),
            ("frame_count", pmt.from_long(2**62)),
            ("frame_index", pmt.from_long(99)),
            ("rate_code", pmt.from_long(200)),
            ("image_shape", pmt.to_pmt([2**31, 2**31])),
            ("image_shape", pmt.to_pmt([-4, 8])),
            ("image_shape", pmt.intern("big")),
            ("received_ranges", pmt.to_pmt([[0, 10**12]])),
            ("received_ranges", pmt.intern("all")),
            ("symbol_noise_var", pmt.intern("x")),
            ("design_snr_db", pmt.from_double(float("inf"))),
        ):
            hostile.append(with_field(key, value))
        msgs = [("pdus", m) for m in hostile]
        msgs += [
            ("tx_info", pmt.PMT_NIL),
            ("tx_info", wide),
            ("tx_info", meta_to_pmt({"image_id": "x", "path": 3})),
        ]
        msgs += [("pdus", frame_to_pdu(f)) for f in frames]
        sink, sent = self._run(msgs, policy="all", settle=lambda s: s.results())
        stats = sink.stats()
        self.assertEqual(stats["frames_in"], len(hostile) + len(frames))
        dropped = stats["frames_malformed"] + stats["assembler_bad_frame"]
        self.assertEqual(dropped, len(hostile))
        self.assertEqual(stats["internal_errors"], 0)
        (result,) = sink.results()
        self.assertEqual(result["image_id"], 70)
        self.assertFalse(result["partial"])

    def test_013_latency_and_file_names(self):
        frames = _received_frames(self.codec, self.image, image_id=80)
        msgs = [("pdus", frame_to_pdu(f)) for f in frames]
        sink, sent = self._run(msgs, name_template="{kind}.png", settle=lambda s: s.results())
        (result,) = sink.results()
        self.assertEqual(Path(result["path"]), self.dir / "out" / "received.png")
        self.assertGreaterEqual(result["latency_s"], result["decode_s"])
        self.assertEqual(sent[0]["latency_s"], result["latency_s"])
        stats = sink.stats()
        self.assertEqual(stats["latency_p50_s"], result["latency_s"])
        self.assertIn("1 images decoded", sink.stats_line())

    def test_014_statistics_line_on_stdout(self):
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            sink, _ = self._run(
                [],
                print_stats=True,
                stats_interval_s=0.05,
                settle=lambda s: False if time.sleep(0.2) else True,
            )
        self.assertIn("images decoded", out.getvalue())
        self.assertIn("latency", out.getvalue())

    def test_015_bad_settings_are_refused_at_construction(self):
        from diffjscc.errors import ConfigError

        for kwargs in (
            {"assembly_timeout_s": 0},
            {"decode_timeout_s": -1},
            {"drain_timeout_s": float("nan")},
            {"policy": "newest"},
            {"max_in_flight": 0},
            {"queue_size": 0},
            {"name_template": "../{seq}.png"},
            {"name_template": "{seq}.png"},  # received and refined would collide
            {"name_template": "{nonsense}{kind}.png"},
        ):
            with self.assertRaises(ConfigError):
                image_sink(output_dir=str(self.dir / "out"), decoder=self.codec, **kwargs)


if __name__ == "__main__":
    gr_unittest.run(qa_image_sink)
