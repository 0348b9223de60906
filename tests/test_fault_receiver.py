"""Hostile streams into the receiver (issue 10, D12/D13): a damaged frame is never
delivered as complete, the usable part of it comes as a partial frame whose
reported SNR is that of its delivered symbols, and every burst is accounted for."""

import numpy as np
import pytest
from diffjscc.radio import BurstReceiver, FrameConfig, ImageAssembler
from diffjscc.radio import header as hdr
from diffjscc.radio.faults import back_to_back, delivered_snr_db, hostile_stream, score
from diffjscc.radio.frame import body_layout, frame_length
from diffjscc.radio.sequences import PREAMBLE_LENGTH

OUTCOMES = (
    "frames_ok",
    "frames_partial",
    "frames_unusable",
    "header_crc_fail",
    "header_invalid",
    "estimate_failed",
)


def _receive(stream, chunk=None):
    rx = BurstReceiver()
    x = stream.samples
    if chunk is None:
        frames = rx.feed(x)
    else:
        frames = [f for i in range(0, x.size, chunk) for f in rx.feed(x[i : i + chunk])]
    frames += rx.flush()
    # Every detected burst ends in exactly one outcome.
    assert rx.stats["bursts_detected"] == sum(rx.stats[k] for k in OUTCOMES)
    assert rx.stats["internal_errors"] == 0
    return rx, frames


def _payload_symbols_before(stream, fraction):
    """Payload symbols of image 0's burst sent before ``fraction`` of its samples."""
    cfg = FrameConfig()
    payload = stream.sent[0].size
    samples = frame_length(payload, cfg) * cfg.sps + cfg.num_taps - 1  # with the filter's ramps
    body = fraction * samples / cfg.sps - cfg.filter_span - PREAMBLE_LENGTH
    header_symbols = hdr.header_symbols(cfg.header_version)
    data = body_layout(header_symbols + payload, cfg).data_positions
    return int(np.searchsorted(data, body)) - header_symbols


def _honest(stream, frames, tol_db=1.0):
    for f in frames:
        real = delivered_snr_db(f, stream.sent[f.image_id])
        assert abs(f.snr_db - real) < tol_db, (f.image_id, f.snr_db, real)


@pytest.mark.parametrize("fraction", [0.3, 0.6])
def test_burst_cut_short_comes_as_partial_with_its_true_snr(fraction):
    # Before: delivered as frames_ok, SNR 5.3 dB reported for symbols at 0.2 dB.
    s = hostile_stream("cut", 12.0, np.random.default_rng(1), fraction=fraction)
    rx, frames = _receive(s)
    (frame,) = frames
    assert not frame.complete and rx.stats["frames_ok"] == 0
    assert rx.stats["frames_truncated"] == 1 and rx.stats["frames_partial"] == 1
    # The usable part is the start, up to (about) where the cut is.
    mask = frame.mask()
    last = int(np.flatnonzero(mask)[-1])
    assert mask[:last].all() and _payload_symbols_before(s, fraction) - 40 < last
    assert last <= _payload_symbols_before(s, fraction)
    assert np.all(frame.symbols[~mask] == 0)
    _honest(s, frames)
    assert frame.meta()["complete"] is False


def test_payload_cut_then_next_burst():
    s = hostile_stream("cut_payload", 12.0, np.random.default_rng(2), fraction=0.5)
    rx, frames = _receive(s, chunk=5000)
    assert [f.image_id for f in frames] == [0, 1]
    assert not frames[0].complete and frames[1].complete
    _honest(s, frames)


def test_two_equal_bursts_overlapping_by_half():
    # Before: the first delivered as complete at 6.9 dB for symbols at 1.2 dB, the
    # second lost without a counter.
    s = hostile_stream("overlap", 12.0, np.random.default_rng(3), fraction=0.5)
    rx, frames = _receive(s)
    assert sorted(f.image_id for f in frames) == [0, 1]
    assert not any(f.complete for f in frames)
    assert rx.stats["frames_collided"] == 2 and rx.stats["bursts_detected"] == 2
    first = next(f for f in frames if f.image_id == 0).mask()
    second = next(f for f in frames if f.image_id == 1).mask()
    # The first keeps its start, the second its end.
    assert first[0] and not first[-1] and second[-1] and not second[0]
    _honest(s, frames)


@pytest.mark.parametrize("case", [5, 10, 12, 19])
@pytest.mark.parametrize("version", [1, 2])
def test_later_of_two_overlapping_bursts_at_0_db_is_partial(case, version):
    # Before: at 0 dB the later burst came as complete (its start, preamble and
    # header, under the first one's end: 3 times the noise, not told apart). The
    # cases are version 1's streams that did; version 2's shorter header decodes
    # less often under the other burst (about -5 dB there), and is never complete.
    cfg = FrameConfig(header_version=version)
    s = hostile_stream("overlap", 0.0, np.random.default_rng([1, case, 1000, 3]), cfg=cfg)
    rx, frames = _receive(s, chunk=8192)
    later = [f for f in frames if f.image_id == 1]
    assert not any(f.complete for f in later), rx.stats
    if version == 1 or later:
        assert later and not later[0].mask()[0] and later[0].mask()[-1]


@pytest.mark.parametrize("chunk", [None, 4096, 100_000])
def test_loud_burst_does_not_hide_the_next(chunk):
    # Before: a burst 80 dB stronger hid the next one in the same processing pass.
    s = hostile_stream("strong", 10.0, np.random.default_rng(4))
    rx, frames = _receive(s, chunk)
    assert [f.image_id for f in frames] == [0, 1] and all(f.complete for f in frames)
    _honest(s, frames)


@pytest.mark.parametrize("kind, scale", [("loud", 1e18), ("quiet", 1e-20)])
def test_absurdly_scaled_streams_are_received(kind, scale):
    # Before: lost without a counter (float32 overflow, and underflow below the floor).
    s = hostile_stream(kind, 10.0, np.random.default_rng(5))
    rx, frames = _receive(s, chunk=8192)
    assert [f.image_id for f in frames] == [0, 1] and all(f.complete for f in frames)
    _honest(s, frames)
    for f in frames:  # h and noise_var in the units of the samples fed
        assert abs(f.h) == pytest.approx(scale, rel=0.1)
        assert abs(f.h) ** 2 / f.noise_var == pytest.approx(10 ** (f.snr_db / 10), rel=0.01)


@pytest.mark.parametrize("snr_db", [0.0, 25.0])
def test_clean_frames_are_not_taken_for_damaged(snr_db):
    for seed in range(3):
        s = hostile_stream("clean", snr_db, np.random.default_rng(10 + seed))
        rx, frames = _receive(s)
        assert [f.complete for f in frames] == [True, True], rx.stats
        assert rx.stats["frames_truncated"] == rx.stats["frames_collided"] == 0


# Streams (seed, SNR) in which a clean frame was flagged as truncated or collided
# before: one frame in 100 each, the live soak's rate at 7 dB (6 of 1,877 bursts).
@pytest.mark.parametrize(
    "seed, snr_db", [(3, 0.0), (6, 3.0), (7, 7.0), (8, 10.0), (2, 20.0), (0, 30.0)]
)
def test_clean_back_to_back_bursts_are_never_flagged(seed, snr_db):
    s = back_to_back(100, snr_db, np.random.default_rng([seed, int(snr_db)]))
    rx, frames = _receive(s, chunk=8192)
    assert [f.image_id for f in frames] == list(range(100))
    flagged = [f.image_id for f in frames if not f.complete]
    assert flagged == [], rx.stats
    assert rx.stats["frames_truncated"] == rx.stats["frames_collided"] == 0
    _honest(s, frames)


def test_stream_ending_inside_a_burst():
    s = hostile_stream("cut", 8.0, np.random.default_rng(6), fraction=0.7)
    x = s.samples[: int(np.flatnonzero(np.abs(s.samples) > 0.3)[-1]) + 10]  # ends at the cut
    rx = BurstReceiver()
    frames = rx.feed(x) + rx.flush()
    (frame,) = frames
    assert not frame.complete
    _honest(s, frames)


def test_partial_frame_reaches_the_decoder_as_erasures():
    s = hostile_stream("cut", 12.0, np.random.default_rng(7), fraction=0.5)
    _, frames = _receive(s)
    asm = ImageAssembler(timeout_s=1.0)
    (image,) = asm.add(frames[0], now=0.0)  # one frame per image: complete set, partial image
    assert image.partial and image.incomplete_frames == (0,)
    assert np.array_equal(image.received_mask, frames[0].mask())
    assert np.all(image.symbols[~image.received_mask] == 0)


def test_score_counts_damaged_frames_delivered_as_complete():
    s = hostile_stream("cut", 12.0, np.random.default_rng(8), fraction=0.5)
    _, frames = _receive(s)
    frames[0].received_mask = None  # what the receiver did before the fix
    assert score(s, frames)["damaged_as_complete"] == 1
