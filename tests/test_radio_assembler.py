"""Image assembly: missing frames, timeouts, bogus and inconsistent frames."""

import numpy as np
import pytest
from diffjscc.radio import ImageAssembler, ReceivedFrame, frame_slice, image_symbol_count

SHAPE = (512, 768)
TOTAL = image_symbol_count(1, SHAPE)  # 3072


def _frame(index, count=3, image_id=1, shape=SHAPE, rate_code=1, snr_db=5.0, n=None, value=None):
    if n is None:
        start, stop = frame_slice(image_symbol_count(rate_code, shape), count, index)
        n = stop - start
    fill = index + 1 if value is None else value
    return ReceivedFrame(
        image_id=image_id,
        frame_index=index,
        frame_count=count,
        rate_code=rate_code,
        image_shape=shape,
        design_snr_db=1.0,
        symbols=np.full(n, fill, dtype=np.complex64),
        snr_db=snr_db,
        h=2.0 + 0j,
        cfo=0.0,
        timing=0.0,
    )


def test_complete_image_in_any_order():
    asm = ImageAssembler(timeout_s=1.0)
    assert asm.add(_frame(2), now=0.0) == []
    assert asm.add(_frame(0), now=0.1) == []
    (img,) = asm.add(_frame(1, snr_db=8.0), now=0.2)
    assert not img.partial and img.frames_received == 3 and img.received_mask.all()
    assert img.model == "jscc-awgn-cbr1_384" and img.image_shape == SHAPE
    assert img.symbols.size == TOTAL
    assert np.all(img.symbols[:1024] == 1) and np.all(img.symbols[2048:] == 3)
    expected = 10 * np.log10((2 * 10**0.5 + 10**0.8) / 3)
    assert abs(img.snr_db - expected) < 1e-6
    assert asm.stats["images_complete"] == 1 and asm.pending_ids == []


def test_missing_frame_gives_partial_image_after_timeout():
    asm = ImageAssembler(timeout_s=2.0)
    asm.add(_frame(0), now=10.0)
    asm.add(_frame(2), now=10.5)
    assert asm.poll(now=12.4) == []
    (img,) = asm.poll(now=12.6)
    assert img.partial and img.missing_frames == (1,)
    assert img.received_mask.sum() == TOTAL - 1024
    assert np.all(img.symbols[1024:2048] == 0) and not img.received_mask[1500]
    assert asm.stats["images_partial"] == 1
    assert asm.poll(now=100.0) == []


def test_bogus_and_inconsistent_frames_are_counted_and_dropped():
    asm = ImageAssembler(timeout_s=5.0)
    asm.add(_frame(0), now=0.0)
    assert asm.add(_frame(1, n=10), now=0.1) == []  # wrong length
    assert asm.add(_frame(1, rate_code=9, n=1024), now=0.1) == []  # unknown rate code
    assert asm.add(_frame(5, count=3, n=1024), now=0.1) == []  # index beyond count
    assert asm.add(_frame(1, shape=(0, 10), n=1024), now=0.1) == []
    assert asm.add(_frame(1, shape=(60000, 60000)), now=0.1) == []  # absurdly large image
    nan_frame = _frame(1)
    nan_frame.symbols[3] = np.nan
    assert asm.add(nan_frame, now=0.1) == []
    assert asm.stats["bad_frame"] == 6
    assert asm.add(_frame(1, count=4), now=0.2) == []  # same id, other frame count
    assert asm.add(_frame(1, shape=(256, 768), count=3), now=0.2) == []
    assert asm.stats["inconsistent_header"] == 2
    asm.add(_frame(1), now=0.3)
    (img,) = asm.add(_frame(2), now=0.4)
    assert not img.partial


def test_duplicate_frame_closes_the_old_image():
    asm = ImageAssembler(timeout_s=5.0)
    asm.add(_frame(0, value=7), now=0.0)
    (old,) = asm.add(_frame(0, value=9), now=1.0)  # the transmitter started the image again
    assert old.partial and old.frames_received == 1 and old.symbols[0] == 7
    assert asm.stats["duplicate_frame"] == 1 and asm.pending_ids == [1]


def test_pending_images_are_bounded():
    asm = ImageAssembler(timeout_s=100.0, max_pending=2)
    asm.add(_frame(0, image_id=1), now=0.0)
    asm.add(_frame(0, image_id=2), now=1.0)
    (evicted,) = asm.add(_frame(0, image_id=3), now=2.0)
    assert evicted.image_id == 1 and evicted.partial
    assert sorted(asm.pending_ids) == [2, 3] and asm.stats["images_evicted"] == 1


def test_frames_through_pdu_metadata():
    asm = ImageAssembler(timeout_s=5.0)
    frames = [_frame(i) for i in range(3)]
    done = []
    for f in frames:
        done += asm.add_meta(f.meta(), f.symbols, now=0.0)
    assert len(done) == 1 and not done[0].partial
    assert asm.add_meta({"image_id": 1}, np.zeros(3), now=0.0) == []
    assert asm.add_meta(frames[0].meta(), np.zeros(5), now=0.0) == []  # wrong length
    assert asm.stats["bad_frame"] == 2
    rebuilt = ReceivedFrame.from_meta(frames[1].meta(), frames[1].symbols)
    assert rebuilt.meta() == frames[1].meta()


def test_flush_closes_everything():
    asm = ImageAssembler()
    asm.add(_frame(0, image_id=4), now=0.0)
    (img,) = asm.flush()
    assert img.image_id == 4 and img.partial


def test_image_gain_is_the_rms_of_the_frames_with_their_mean_phase():
    asm = ImageAssembler(timeout_s=1.0)
    gains = [0.5 * np.exp(0.6j), 0.7 * np.exp(0.6j), 0.6 * np.exp(0.6j)]
    for index, gain in enumerate(gains):
        frame = _frame(index)
        frame.h = complex(gain)
        done = asm.add(frame, now=0.0)
    (img,) = done
    assert abs(img.h) == pytest.approx(np.sqrt(np.mean(np.abs(gains) ** 2)))
    assert np.angle(img.h) == pytest.approx(0.6)
    # One frame: its own gain, phase included.
    single = _frame(0, count=1, image_id=2)
    single.h = 0.3 - 0.4j
    (img,) = asm.add(single, now=0.0)
    assert img.h == pytest.approx(0.3 - 0.4j)


def test_partial_frame_fills_only_its_received_symbols():
    # A frame cut short: its unreceived symbols must reach the decoder as erasures
    # (zeros, unmasked), not as whatever the receiver had there.
    mask = np.zeros(1024, dtype=bool)
    mask[:300] = True
    cut = _frame(1, value=9.0)
    cut.received_mask = mask
    asm = ImageAssembler(timeout_s=1.0)
    asm.add(_frame(0), now=0.0)
    asm.add(cut, now=0.1)
    (img,) = asm.add(_frame(2), now=0.2)
    assert img.partial and img.missing_frames == () and img.incomplete_frames == (1,)
    assert img.received_mask.sum() == TOTAL - 724
    assert np.all(img.symbols[1024:1324] == 9) and np.all(img.symbols[1324:2048] == 0)
    assert not img.received_mask[1324:2048].any()
    assert asm.stats["frames_partial"] == 1


def test_received_ranges_and_noise_travel_through_meta():
    frame = _frame(0)
    frame.received_mask = np.zeros(1024, dtype=bool)
    frame.received_mask[10:20] = True
    frame.received_mask[500:] = True
    frame.symbol_noise_var = np.linspace(0.1, 1.0, 1024).astype(np.float32)
    meta = frame.meta()
    assert meta["received_ranges"] == [[10, 20], [500, 1024]] and meta["complete"] is False
    back = ReceivedFrame.from_meta(meta, frame.symbols)
    assert np.array_equal(back.received_mask, frame.received_mask)
    assert np.allclose(back.symbol_noise_var, frame.symbol_noise_var)
    asm = ImageAssembler(timeout_s=1.0)
    (img,) = asm.add(back, now=0.0) + asm.poll(now=5.0)
    assert np.isinf(img.symbol_noise_var[:10]).all() and img.symbol_noise_var[15] > 0
    # Complete frames say so, with one range over all symbols.
    assert _frame(0).meta()["received_ranges"] == [[0, 1024]]


@pytest.mark.parametrize("ranges", [[[0, 2000]], [[-1, 3]], [[5, 5]], [[0, 1]] * 5000, [["a", 3]]])
def test_bad_received_ranges_are_counted(ranges):
    meta = _frame(0).meta()
    meta["received_ranges"] = ranges
    asm = ImageAssembler(timeout_s=1.0)
    assert asm.add_meta(meta, np.ones(1024, np.complex64), now=0.0) == []
    assert asm.stats["bad_frame"] == 1


def test_huge_claimed_snr_does_not_overflow():
    asm = ImageAssembler(timeout_s=1.0)
    asm.add(_frame(0, snr_db=5000.0), now=0.0)
    (img,) = asm.poll(now=5.0)
    assert np.isfinite(img.snr_db) and img.partial
