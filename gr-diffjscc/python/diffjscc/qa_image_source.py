#!/usr/bin/env python3
#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""QA of the image source: bursts, their tags, folders, bad files, the end of a run."""

import tempfile
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


if __name__ == "__main__":
    gr_unittest.run(qa_image_source)
