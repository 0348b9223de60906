"""SigMF recordings: the bounded writer finishes whole files, the reader checks what it reads."""

from __future__ import annotations

import json

import numpy as np
import pytest
from diffjscc.radio import BurstReceiver, FrameConfig, build_bursts
from diffjscc.radio.recording import (
    RecordingError,
    SigMFRecorder,
    open_recording,
    recording_paths,
)
from diffjscc.radio.sim import add_noise
from diffjscc.symbols import EncodedImage

pytest.importorskip("sigmf")


def _bursts_and_frames(rng, cfg=None, image_id=5, h=64, w=128, snr_db=12.0):
    """Samples of one image (random symbols) with silence around, and the frames received."""
    cfg = cfg or FrameConfig(max_payload_symbols=40)
    n = 2 * (h // 16) * (w // 16)
    sym = ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) / np.sqrt(2)).astype(np.complex64)
    enc = EncodedImage(sym, (h, w), (2, h // 16, w // 16), "jscc-awgn-cbr1_384", 7.0)
    gap = np.zeros(600, np.complex64)
    bursts = build_bursts(enc, image_id=image_id, cfg=cfg)
    x = np.concatenate([gap] + [np.concatenate([b, gap]) for b in bursts] + [np.zeros(20000)])
    x = add_noise(x.astype(np.complex64), snr_db, cfg, rng)
    rx = BurstReceiver(cfg)
    frames = rx.feed(x) + rx.flush()
    assert len(frames) == len(bursts)
    return x, frames, cfg


def test_recording_round_trip_and_the_sigmf_package_agrees(tmp_path, rng):
    import sigmf

    x, frames, cfg = _bursts_and_frames(rng)
    rec = SigMFRecorder(tmp_path / "a", 1e6, center_freq=433.9e6, hw="test rig", cfg=cfg)
    with rec:
        for chunk in np.array_split(x, 7):  # the receiver's timings count from the first sample
            rec.write(chunk)
        for frame in frames:
            assert rec.annotate_frame(frame.meta())
        assert not rec.meta_path.exists()  # no meta until the data file is whole
        assert rec.part_path.exists() and not rec.data_path.exists()
    assert not rec.part_path.exists()
    r = open_recording(tmp_path / "a.sigmf-meta")
    assert (r.num_samples, r.sample_rate, r.center_freq, r.hw) == (x.size, 1e6, 433.9e6, "test rig")
    waveform = ("sps", "rolloff", "pilot_spacing", "filter_span")
    assert [getattr(r.frame_config(), k) for k in waveform] == [getattr(cfg, k) for k in waveform]
    np.testing.assert_array_equal(np.concatenate(list(r.iter_samples(1000))), x)
    assert [(a.image_id, a.frame_index) for a in r.annotations] == [(5, 0), (5, 1)]
    for a, frame in zip(r.annotations, frames, strict=True):
        assert a.sample_start == round(frame.timing)
        assert a.snr_db == pytest.approx(frame.snr_db)
    # The reference implementation reads it, hash included, without complaint.
    other = sigmf.sigmffile.fromfile(str(tmp_path / "a"))
    assert other.sample_count == x.size
    assert other.get_global_field("core:sample_rate") == 1e6
    assert other.get_annotations()[0]["core:label"] == "img5 1/2"
    assert "SNR" in other.get_annotations()[0]["core:comment"]


def test_recorder_is_bounded_and_counts_what_it_drops(tmp_path, rng):
    x, frames, cfg = _bursts_and_frames(rng)
    keep = int(round(frames[1].timing)) + 5  # the second frame's burst is cut off
    rec = SigMFRecorder(tmp_path / "b", 1e6, cfg=cfg, max_samples=keep, max_annotations=1)
    rec.open()
    assert rec.write(x) == keep
    assert rec.annotate_frame(frames[0].meta())
    assert not rec.annotate_frame(frames[1].meta())  # over max_annotations
    assert not rec.annotate_frame({"image_id": 1})  # unusable
    rec.close()
    rec.close()  # idempotent
    assert rec.write(x[:10]) == 0  # after close: dropped
    stats = rec.stats()
    assert stats["samples_written"] == keep
    assert stats["samples_dropped"] == x.size - keep + 10
    assert (stats["annotations"], stats["annotations_dropped"], stats["annotations_bad"]) == (
        1,
        1,
        1,
    )
    r = open_recording(tmp_path / "b")
    assert r.num_samples == keep and len(r.annotations) == 1
    assert r.global_info["diffjscc:samples_dropped"] == x.size - keep


def test_annotation_beyond_the_samples_kept_is_dropped(tmp_path, rng):
    x, frames, cfg = _bursts_and_frames(rng)
    rec = SigMFRecorder(tmp_path / "c", 1e6, cfg=cfg)
    rec.open()
    rec.write(x[: int(frames[1].timing) + 100])  # the stream ends inside the second burst
    for frame in frames:
        rec.annotate_frame(frame.meta())
    rec.close()
    r = open_recording(tmp_path / "c")  # valid: no annotation ends past the data
    assert [a.frame_index for a in r.annotations] == [0]


def test_a_new_recording_replaces_the_old_one_whole(tmp_path, rng):
    for n in (1000, 300):
        with SigMFRecorder(tmp_path / "d", 1e6) as rec:
            rec.write(np.ones(n, np.complex64))
    assert open_recording(tmp_path / "d").num_samples == 300
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.sigmf-data", "d.sigmf-meta"]


def test_originals_are_named_relative_with_their_hash(tmp_path, natural_image):
    from diffjscc.image import save_png

    original = save_png(tmp_path / "orig" / "a.png", natural_image[:64, :64])
    outside = save_png(tmp_path.parent / f"{tmp_path.name}_outside.png", natural_image[:32, :32])
    with SigMFRecorder(tmp_path / "e", 1e6) as rec:
        rec.write(np.zeros(10, np.complex64))
        assert rec.add_original(3, original)
        assert rec.add_original(4, outside)
        assert not rec.add_original(5, tmp_path / "missing.png")
    r = open_recording(tmp_path / "e")
    assert r.originals[0]["file"] == "orig/a.png"
    assert r.original_path(3) == tmp_path / "orig" / "a.png"
    assert r.original_path(4) == outside.resolve()
    assert r.original_path(5) is None
    save_png(original, natural_image[:64, :64] // 2)  # changed since: not the original any more
    assert r.original_path(3) is None
    outside.unlink()


def test_reader_takes_ci16_samples_of_another_recorder(tmp_path):
    iq = np.array([[16384, -16384], [0, 32767], [-32768, 0]], dtype="<i2")
    (tmp_path / "f.sigmf-data").write_bytes(iq.tobytes())
    meta = {
        "global": {"core:datatype": "ci16_le", "core:sample_rate": 250e3, "core:version": "1.0.0"},
        "captures": [{"core:sample_start": 0, "core:frequency": 1e9}],
        "annotations": [],
    }
    (tmp_path / "f.sigmf-meta").write_text(json.dumps(meta))
    r = open_recording(tmp_path / "f.sigmf-data")
    assert (r.num_samples, r.sps, r.center_freq) == (3, None, 1e9)
    got = np.concatenate(list(r.iter_samples()))
    np.testing.assert_allclose(got, [0.5 - 0.5j, 32767 / 32768 * 1j, -1.0], atol=1e-6)
    assert r.frame_config(sps=4).sps == 4


@pytest.mark.parametrize("name", ["x", "x.sigmf-meta", "x.sigmf-data"])
def test_recording_named_by_base_or_either_file(tmp_path, name):
    assert recording_paths(tmp_path / name) == (
        tmp_path / "x.sigmf-meta",
        tmp_path / "x.sigmf-data",
    )


def test_recorder_refuses_nonsense_settings(tmp_path):
    from diffjscc.errors import ConfigError

    for kwargs in ({"sample_rate": 0}, {"sample_rate": float("nan")}, {"max_samples": 0}):
        with pytest.raises(ConfigError):
            SigMFRecorder(tmp_path / "g", **{"sample_rate": 1e6, **kwargs})
    with pytest.raises(RecordingError, match="cannot write"):
        (tmp_path / "file").write_text("")
        SigMFRecorder(tmp_path / "file" / "h", 1e6).open()
