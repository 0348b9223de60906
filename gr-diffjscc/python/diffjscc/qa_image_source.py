#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""QA of the image source: bursts, their tags, folders, bad files, the end of a run."""

import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pmt
from gnuradio import blocks, gr, gr_unittest
from gnuradio.diffjscc import image_source
from gnuradio.diffjscc._fakes import BlockMeanCodec
from gnuradio.diffjscc.image_source import END_SILENCE
from PIL import Image

from diffjscc.errors import ConfigError, ImageError
from diffjscc.radio import FrameConfig, build_bursts


def _write_image(path, h, w, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


class qa_image_source(gr_unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)
        self.tb = gr.top_block()

    def tearDown(self):
        self.tb = None
        self.tmp.cleanup()

    def _run(self, src):
        snk = blocks.vector_sink_c()
        info = blocks.message_debug()
        self.tb.connect(src, snk)
        self.tb.msg_connect(src, "tx_info", info, "store")
        self.tb.run()  # ends by itself: the source has no repeat
        return np.array(snk.data(), dtype=np.complex64), snk.tags(), info

    def test_001_one_image_tagged_stream(self):
        path = _write_image(self.dir / "a.png", 64, 96)
        codec = BlockMeanCodec()
        src = image_source(str(path), gap_samples=100, encoder=codec, max_payload_symbols=24)
        data, tags, info = self._run(src)
        # The same bursts as the radio core makes, each followed by the gap.
        expected = build_bursts(
            BlockMeanCodec().encode(np.asarray(Image.open(path))),
            0,
            FrameConfig(max_payload_symbols=24),
        )
        self.assertEqual(len(expected), 2)  # 48 symbols, at most 24 a frame
        # Silence before the first burst, and after every burst.
        gap = np.zeros(100, np.complex64)
        want = np.concatenate([gap] + [np.concatenate([b, gap]) for b in expected])
        # Then silence, so that a batching receiver completes the last burst.
        tail = 2 * max(b.size for b in expected) + END_SILENCE
        self.assertEqual(data.size, want.size + tail)
        np.testing.assert_allclose(data[: want.size], want, atol=1e-6)
        self.assertTrue(np.all(data[want.size :] == 0))
        len_tags = [t for t in tags if pmt.symbol_to_string(t.key) == "packet_len"]
        first = 100 + expected[0].size + 100
        self.assertEqual([t.offset for t in len_tags], [0, first])
        self.assertEqual([pmt.to_long(t.value) for t in len_tags], [first, expected[1].size + 100])
        self.assertEqual(info.num_messages(), 1)
        meta = pmt.to_python(info.get_message(0))
        self.assertEqual((meta["height"], meta["width"], meta["frames"]), (64, 96, 2))
        self.assertEqual(src.stats()["bursts_sent"], 2)

    def test_002_sob_eob_tags(self):
        path = _write_image(self.dir / "a.png", 32, 32)
        src = image_source(
            str(path), gap_samples=50, burst_tags="sob_eob", encoder=BlockMeanCodec()
        )
        data, tags, _ = self._run(src)
        keys = [(pmt.symbol_to_string(t.key), t.offset) for t in tags]
        (burst,) = build_bursts(BlockMeanCodec().encode(np.asarray(Image.open(path))), 0)
        end = 50 + burst.size
        self.assertEqual(keys, [("tx_sob", 50), ("tx_eob", end - 1)])
        self.assertTrue(np.all(data[:50] == 0) and np.all(data[end:] == 0))
        self.assertTrue(data[50] != 0 and data[end - 1] != 0)

    def test_003_folder_skips_non_images(self):
        _write_image(self.dir / "b.png", 32, 48, seed=1)
        _write_image(self.dir / "a.png", 48, 32, seed=2)
        (self.dir / "broken.png").write_bytes(b"not a png")
        (self.dir / "notes.txt").write_text("not an image")
        codec = BlockMeanCodec()
        src = image_source(str(self.dir), gap_samples=10, interval_s=0, encoder=codec)
        _, _, info = self._run(src)
        paths = [
            Path(pmt.to_python(info.get_message(i))["path"]).name
            for i in range(info.num_messages())
        ]
        self.assertEqual(paths, ["a.png", "b.png"])  # name order; broken.png skipped
        ids = [pmt.to_python(info.get_message(i))["image_id"] for i in range(info.num_messages())]
        self.assertEqual(ids, [0, 1])
        self.assertEqual(src.stats()["images_skipped"], 1)

    def test_004_nothing_readable_ends_the_run(self):
        (self.dir / "broken.png").write_bytes(b"\x89PNG but not really")
        src = image_source(str(self.dir), repeat=True, encoder=BlockMeanCodec())
        data, _, info = self._run(src)  # repeat must not spin forever on unreadable files
        self.assertEqual(data.size, 0)
        self.assertEqual(info.num_messages(), 0)

    def test_005_repeat_reuses_the_bursts(self):
        path = _write_image(self.dir / "a.png", 32, 32)
        codec = BlockMeanCodec()
        src = image_source(str(path), repeat=0, interval_s=0, gap_samples=10, encoder=codec)
        head = blocks.head(gr.sizeof_gr_complex, 20000)
        snk = blocks.null_sink(gr.sizeof_gr_complex)
        info = blocks.message_debug()
        self.tb.connect(src, head, snk)
        self.tb.msg_connect(src, "tx_info", info, "store")
        self.tb.run()
        self.assertGreater(src.stats()["images_sent"], 2)
        self.assertEqual(codec.encoded, 1)
        ids = [pmt.to_python(info.get_message(i))["image_id"] for i in range(3)]
        self.assertEqual(ids, [0, 0, 0])  # a repeated image keeps its id

    def test_006_an_image_the_encoder_refuses_is_skipped(self):
        _write_image(self.dir / "a.png", 32, 32, seed=1)
        _write_image(self.dir / "b.png", 32, 48, seed=2)
        codec = BlockMeanCodec()

        class Picky:
            def encode(self, image, snr_db):
                if image.shape[1] == 32:
                    raise RuntimeError("onnxruntime says no")
                return codec.encode(image, snr_db)

        src = image_source(str(self.dir), gap_samples=10, interval_s=0, encoder=Picky())
        _, _, info = self._run(src)
        self.assertEqual(info.num_messages(), 1)
        self.assertEqual(Path(pmt.to_python(info.get_message(0))["path"]).name, "b.png")
        self.assertEqual(pmt.to_python(info.get_message(0))["image_id"], 0)
        self.assertEqual(src.stats()["images_skipped"], 1)

    def test_007_bad_settings_are_clear_errors(self):
        with self.assertRaises(ImageError):
            image_source(str(self.dir / "missing.png"), encoder=BlockMeanCodec())
        with self.assertRaises(ImageError):
            image_source(str(self.dir), encoder=BlockMeanCodec())  # empty folder
        path = _write_image(self.dir / "a.png", 16, 16)
        with self.assertRaises(ValueError):
            image_source(str(path), burst_tags="nonsense", encoder=BlockMeanCodec())

    def test_008_tx_opt_steps_reach_the_encoder(self):
        path = _write_image(self.dir / "a.png", 16, 16)
        codec = BlockMeanCodec()

        class Recording:
            def __init__(self):
                self.calls = []

            def encode(self, image, snr_db, **kwargs):
                self.calls.append(kwargs)
                return codec.encode(image, snr_db)

        for steps, want in ((3, {"optimise": 3}), (0, {})):
            with self.subTest(tx_opt_steps=steps):
                self.tb = gr.top_block()
                encoder = Recording()
                src = image_source(str(path), gap_samples=10, tx_opt_steps=steps, encoder=encoder)
                _, _, info = self._run(src)
                self.assertEqual(encoder.calls, [want])
                self.assertEqual(pmt.to_python(info.get_message(0))["tx_opt_steps"], steps)

    def test_009_bad_tx_opt_steps_are_refused(self):
        path = _write_image(self.dir / "a.png", 16, 16)
        for steps in (-1, 2.5, "3", True):
            with self.subTest(tx_opt_steps=steps), self.assertRaises(ConfigError):
                image_source(str(path), tx_opt_steps=steps, encoder=BlockMeanCodec())

    def _started(self, src):
        """A running flowgraph with the source; returns the tx_info store."""
        info = blocks.message_debug()
        self.tb.connect(src, blocks.null_sink(gr.sizeof_gr_complex))
        self.tb.msg_connect(src, "tx_info", info, "store")
        self.tb.start()
        return info

    def _stop(self):
        done = threading.Event()

        def stop():
            self.tb.stop()
            self.tb.wait()
            done.set()

        threading.Thread(target=stop, daemon=True).start()
        self.assertTrue(done.wait(10), "the flowgraph did not stop")

    def test_010_pacing_waits_for_the_interval_and_next_sends_at_once(self):
        _write_image(self.dir / "a.png", 32, 32, seed=1)
        _write_image(self.dir / "b.png", 32, 48, seed=2)
        _write_image(self.dir / "c.png", 48, 32, seed=3)
        src = image_source(str(self.dir), interval_s=3600, gap_samples=10, encoder=BlockMeanCodec())
        info = self._started(src)
        try:
            self.assertTrue(_until(lambda: src.stats()["samples_sent"] > 0))
            # The first image goes at once; the second is an hour away.
            self.assertTrue(_until(lambda: src.stats()["bursts_sent"] == 1))
            self.assertEqual(src.stats()["images_sent"], 1)
            # After the burst: silence so that a receiver completes it, then nothing.
            (burst,) = build_bursts(BlockMeanCodec().encode(np.zeros((32, 32, 3), np.uint8)), 0)
            silence = 2 * burst.size + END_SILENCE
            self.assertTrue(
                _until(lambda: src.stats()["samples_sent"] == 10 + burst.size + 10 + silence)
            )
            for expected in (2, 3):
                src.to_basic_block()._post(pmt.intern("next"), pmt.PMT_T)
                self.assertTrue(_until(lambda n=expected: src.stats()["images_sent"] == n))
            # tx_info goes by message passing, which runs beside the stream: wait for it.
            self.assertTrue(_until(lambda: info.num_messages() == 3))
        finally:
            self._stop()
        self.assertEqual(src.stats()["next_received"], 2)
        names = [Path(pmt.to_python(info.get_message(i))["path"]).name for i in range(3)]
        self.assertEqual(names, ["a.png", "b.png", "c.png"])

    def test_011_on_demand_sends_only_on_next(self):
        path = _write_image(self.dir / "a.png", 32, 32)
        src = image_source(
            str(path),
            repeat=0,
            interval_s=0,
            on_demand=True,
            gap_samples=10,
            encoder=BlockMeanCodec(),
        )
        self._started(src)
        try:
            time.sleep(0.2)  # not a timing test: nothing may go out, however long one waits
            self.assertEqual(src.stats()["images_sent"], 0)
            for _ in range(3):
                src.to_basic_block()._post(pmt.intern("next"), pmt.PMT_T)
            self.assertTrue(_until(lambda: src.stats()["images_sent"] == 3))
            time.sleep(0.2)
            self.assertEqual(src.stats()["images_sent"], 3)
        finally:
            self._stop()

    def test_012_repeat_count_then_the_run_ends(self):
        path = _write_image(self.dir / "a.png", 32, 32)
        codec = BlockMeanCodec()
        src = image_source(str(path), repeat=3, interval_s=0, gap_samples=10, encoder=codec)
        _, _, info = self._run(src)  # ends by itself after three passes
        self.assertEqual(src.stats()["images_sent"], 3)
        self.assertEqual(src.stats()["passes"], 3)
        self.assertEqual(codec.encoded, 1)  # the repeats reuse the encoding
        self.assertEqual(info.num_messages(), 3)

    def test_013_repeat_and_interval_values(self):
        from gnuradio.diffjscc.image_source import _repeat_count

        path = _write_image(self.dir / "a.png", 16, 16)
        self.assertEqual((_repeat_count(True), _repeat_count(False), _repeat_count(4.0)), (0, 1, 4))
        for bad in (
            {"repeat": -1},
            {"repeat": 1.5},
            {"repeat": "2"},
            {"interval_s": -1},
            {"interval_s": float("nan")},
            {"design_snr_db": float("inf")},
        ):
            with (
                self.subTest(**{k: str(v) for k, v in bad.items()}),
                self.assertRaises(ConfigError),
            ):
                image_source(str(path), encoder=BlockMeanCodec(), **bad)
        src = image_source(str(path), encoder=BlockMeanCodec())
        for setter, bad in (
            (src.set_interval_s, -2),
            (src.set_design_snr_db, 5000),
            (src.set_repeat, -3),
            (src.set_snr_db, float("nan")),
        ):
            with self.subTest(setter=setter.__name__), self.assertRaises(ConfigError):
                setter(bad)

    def test_014_setters_act_on_the_next_image_and_sample(self):
        path = _write_image(self.dir / "a.png", 32, 32)
        codec = BlockMeanCodec()
        snrs = []

        class Recording:
            def encode(self, image, snr_db):
                snrs.append(snr_db)
                return codec.encode(image, snr_db)

        src = image_source(
            str(path), repeat=0, interval_s=3600, gap_samples=10, encoder=Recording()
        )
        info = self._started(src)
        try:
            self.assertTrue(_until(lambda: src.stats()["images_sent"] == 1))
            src.set_design_snr_db(13.0)
            src.set_amplitude(0.5)
            src.set_interval_s(0.0)  # the next image is due now
            self.assertTrue(_until(lambda: src.stats()["images_sent"] >= 3))
            # tx_info goes by message passing, which runs beside the stream: wait for it.
            self.assertTrue(_until(lambda: info.num_messages() >= 2))
        finally:
            self._stop()
        # Encoded again at the new SNR (once: the repeats reuse it), and told so in tx_info.
        self.assertEqual(snrs, [7.0, 13.0])
        self.assertEqual(pmt.to_python(info.get_message(1))["design_snr_db"], 13.0)
        self.assertEqual(src.amplitude, np.float32(0.5))

    def test_015_amplitude_scales_the_samples(self):
        path = _write_image(self.dir / "a.png", 32, 32)
        whole, _, _ = self._run(image_source(str(path), gap_samples=10, encoder=BlockMeanCodec()))
        self.tb = gr.top_block()
        half, _, _ = self._run(
            image_source(str(path), gap_samples=10, amplitude=0.5, encoder=BlockMeanCodec())
        )
        np.testing.assert_allclose(half, whole * 0.5, atol=1e-6)

    def test_016_stop_while_waiting_for_the_next_image(self):
        path = _write_image(self.dir / "a.png", 32, 32)
        src = image_source(str(path), repeat=0, interval_s=3600, encoder=BlockMeanCodec())
        self._started(src)
        self.assertTrue(_until(lambda: src.stats()["images_sent"] == 1))
        self._stop()  # fails if the idle source held the flowgraph

    def test_017_header_version_chooses_the_header_code(self):
        # Version 1 (RM(1,5)) is longer but decodes about 2 dB lower: a link below 0 dB
        # needs it, so the source must send it when asked, for both waveforms, and the
        # receiver must take either.
        from diffjscc.radio import get_waveform

        path = _write_image(self.dir / "a.png", 64, 96)
        enc = BlockMeanCodec().encode(np.asarray(Image.open(path)))
        for waveform in ("sc", "ofdm"):
            with self.subTest(waveform=waveform):
                sizes = {}
                for version in (1, 2):
                    self.tb = gr.top_block()
                    src = image_source(
                        str(path),
                        gap_samples=100,
                        encoder=BlockMeanCodec(),
                        waveform=waveform,
                        header_version=version,
                    )
                    self.assertEqual(src.waveform.settings()["header_version"], version)
                    data, _, _ = self._run(src)
                    expected = get_waveform(waveform, header_version=version).build_bursts(enc, 0)
                    np.testing.assert_allclose(
                        data[100 : 100 + expected[0].size], expected[0], atol=1e-6
                    )
                    sizes[version] = expected[0].size
                    rx = src.waveform.make_receiver()
                    frames = rx.feed(data) + rx.flush()
                    self.assertEqual(len(frames), 1)
                    self.assertEqual(frames[0].image_shape, (64, 96))
                self.assertGreater(sizes[1], sizes[2])
        with self.assertRaises(ConfigError):
            image_source(str(path), encoder=BlockMeanCodec(), header_version=3)


def _until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


if __name__ == "__main__":
    gr_unittest.run(qa_image_source)
