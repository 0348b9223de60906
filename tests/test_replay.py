"""``diffjscc replay``: the shipped recordings decode; bad recordings are one line and status 2."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from diffjscc import cli
from diffjscc.radio import BurstReceiver, FrameConfig, build_bursts
from diffjscc.radio.recording import SigMFRecorder, open_recording
from diffjscc.radio.sim import add_noise
from diffjscc.symbols import EncodedImage

pytest.importorskip("sigmf")

ROOT = Path(__file__).resolve().parents[1]
RECORDINGS = ROOT / "examples" / "recordings"
SHIPPED = sorted(RECORDINGS.glob("*.sigmf-meta"))


def _replay(capsys, *args):
    """(exit status, JSON lines printed, stderr) of ``diffjscc replay ARGS``."""
    status = cli.main(["replay", *map(str, args)])
    out, err = capsys.readouterr()
    return status, [json.loads(line) for line in out.splitlines() if line.strip()], err


def _samples(cfg, rng, image_id=2, h=64, w=128, snr_db=12.0):
    n = 2 * (h // 16) * (w // 16)
    sym = ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) / np.sqrt(2)).astype(np.complex64)
    enc = EncodedImage(sym, (h, w), (2, h // 16, w // 16), "jscc-awgn-cbr1_384", 7.0)
    gap = np.zeros(600, np.complex64)
    bursts = build_bursts(enc, image_id=image_id, cfg=cfg)
    x = np.concatenate([gap] + [np.concatenate([b, gap]) for b in bursts] + [np.zeros(20000)])
    return add_noise(x.astype(np.complex64), snr_db, cfg, rng)


def _record(path, samples, cfg, sample_rate=1e6, annotate=True):
    rx = BurstReceiver(cfg)
    frames = rx.feed(samples) + rx.flush()
    with SigMFRecorder(path, sample_rate, cfg=cfg) as rec:
        rec.write(samples)
        for frame in frames if annotate else []:
            rec.annotate_frame(frame.meta())
    return len(frames)


@pytest.fixture
def recording(tmp_path, rng):
    """A small valid recording (random symbols: it decodes to noise) with 2 annotated frames."""
    cfg = FrameConfig(max_payload_symbols=40)
    assert _record(tmp_path / "rec", _samples(cfg, rng), cfg) == 2
    return tmp_path / "rec"


def _edit_meta(base: Path, edit) -> None:
    path = base.with_name(base.name + ".sigmf-meta")
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


# -- the shipped recordings -----------------------------------------------------------------


def test_shipped_recordings_are_small_and_name_their_originals():
    assert len(SHIPPED) >= 2
    total = 0
    for meta in SHIPPED:
        rec = open_recording(meta)  # valid SigMF, whole data file, hash matches
        total += rec.data_path.stat().st_size + meta.stat().st_size
        assert rec.data_path.stat().st_size < 1 << 20
        assert rec.annotations and rec.sps is not None
        ids = {a.image_id for a in rec.annotations}
        assert {o["image_id"] for o in rec.originals} == ids
        assert all(rec.original_path(i) is not None for i in ids)
    total += sum(p.stat().st_size for p in (RECORDINGS / "originals").rglob("*.png"))
    assert total < 3 << 20


@pytest.mark.parametrize("meta", SHIPPED, ids=lambda p: p.name.removesuffix(".sigmf-meta"))
def test_shipped_recording_decodes_every_frame_and_image(capsys, tmp_path, meta):
    from diffjscc.image import load_image
    from diffjscc.metrics import psnr

    rec = open_recording(meta)
    status, lines, err = _replay(capsys, meta, "--out", tmp_path / "out")
    assert status == 0, err
    *images, summary = lines
    assert summary["kind"] == "summary"
    assert summary["annotations_matched"] == summary["annotations"] == len(rec.annotations)
    assert summary["frames_found"] == len(rec.annotations)
    assert summary["images"] == summary["images_complete"] == len(rec.originals)
    assert summary["decode_errors"] == 0
    for line in images:
        assert line["decoded"] and not line["partial"]
        assert line["frames_received"] == line["frame_count"]
        # The receiver's estimate now is what it was when the recording was made.
        assert line["snr_db"] == pytest.approx(line["recorded_snr_db"], abs=0.05)
        assert abs(line["snr_db"] - line["design_snr_db"]) < 1.5
        # Far better than no image at all: a mid-grey guess of the same original.
        original = load_image(rec.original_path(line["image_id"]))
        grey = psnr(original, np.full_like(original, 128))
        assert line["psnr"] > grey + 3.0, (line, grey)
        assert Path(line["path"]).is_file()
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(written) == len(images) + 1 and "summary.json" in written  # no temporary files
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary


def test_realtime_replay_paces_and_reports_latency(capsys, recording):
    status, lines, err = _replay(capsys, recording, "--realtime", "--speed", "10", "--no-decode")
    assert status == 0, err
    summary = lines[-1]
    # 0.035 s of samples at 10x real time; paced, never faster than that.
    assert summary["wall_s"] >= summary["duration_s"] / 10
    assert summary["realtime"] and summary["latency_p95_s"] is not None
    assert lines[0]["kind"] == "image" and "latency_s" in lines[0]


def test_each_copy_of_a_repeated_image_is_its_own(capsys, tmp_path, rng):
    """A repeating source sends the same image id again: each copy is an image with the
    SNR the recording's receiver estimated for that copy."""
    cfg = FrameConfig(max_payload_symbols=40)
    first, second = (_samples(cfg, np.random.default_rng(7), snr_db=s) for s in (16.0, 6.0))
    assert _record(tmp_path / "rep", np.concatenate([first, second]), cfg) == 4
    status, lines, err = _replay(capsys, tmp_path / "rep", "--no-decode")
    assert status == 0, err
    *images, summary = lines
    assert summary["annotations_matched"] == 4 and summary["images_complete"] == 2
    assert [line["image_id"] for line in images] == [2, 2]
    assert images[0]["stream_time_s"] < images[1]["stream_time_s"]
    assert images[0]["snr_db"] > images[1]["snr_db"] + 6
    for line in images:
        assert line["recorded_snr_db"] == pytest.approx(line["snr_db"], abs=0.01)


def test_replay_decodes_at_a_worker(capsys, tmp_path):
    from diffjscc.worker.local import LocalWorker

    with LocalWorker(["--engine", "synthetic"], name="t-replay") as worker:
        status, lines, err = _replay(capsys, RECORDINGS / "awgn_7db", "--worker", worker.address)
    assert status == 0, err
    *images, summary = lines
    assert summary["images"] == 3 and summary["decode_errors"] == 0
    assert all(line["decoded"] and line["served_by"] == "t-replay" for line in images)


def test_replay_refuses_a_worker_that_does_not_answer(capsys, tmp_path, recording):
    from diffjscc.worker.local import free_tcp_address

    status, lines, err = _replay(
        capsys, recording, "--worker", free_tcp_address(), "--worker-timeout", "0.5"
    )
    assert (status, lines) == (2, []) and "no answer within" in err


def test_ofdm_recording_replays_with_its_waveform(capsys, tmp_path, rng):
    from diffjscc.radio.waveform import get_waveform

    wave = get_waveform("ofdm", max_payload_symbols=40)
    n = 2 * 4 * 8
    sym = ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) / np.sqrt(2)).astype(np.complex64)
    bursts = wave.build_bursts(
        EncodedImage(sym, (64, 128), (2, 4, 8), "jscc-awgn-cbr1_384", 7.0), image_id=3
    )
    gap = np.zeros(800, np.complex64)
    x = np.concatenate([gap] + [np.concatenate([b, gap]) for b in bursts] + [np.zeros(30000)])
    x = (x + 0.05 * (rng.standard_normal(x.size) + 1j * rng.standard_normal(x.size))).astype(
        np.complex64
    )
    rx = wave.make_receiver()
    frames = rx.feed(x) + rx.flush()
    assert len(frames) == len(bursts) == 2
    with SigMFRecorder(tmp_path / "ofdm", 5e6, waveform=wave) as rec:
        rec.write(x)
        for frame in frames:
            rec.annotate_frame(frame.meta())
    recording = open_recording(tmp_path / "ofdm")
    assert recording.waveform_name == "ofdm" and recording.sps is None
    assert [a.sample_count for a in recording.annotations] == [b.size for b in bursts]
    status, lines, err = _replay(capsys, tmp_path / "ofdm", "--no-decode")
    assert status == 0, err
    summary = lines[-1]
    assert summary["waveform"] == "ofdm" and summary["annotations_matched"] == 2
    assert summary["images_complete"] == 1
    status, _, err = _replay(capsys, tmp_path / "ofdm", "--waveform", "sc", "--no-decode")
    assert status == 2 and "recorded with the ofdm waveform" in err


# -- bad input: one line, status 2, nothing written -----------------------------------------


def _refused(capsys, tmp_path, *args, match):
    out = tmp_path / "out"
    status, lines, err = _replay(capsys, *args, "--out", out, "--no-decode")
    assert status == 2
    assert lines == []
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("diffjscc replay: error: ")
    assert match in err, err
    assert not out.exists() or not any(out.iterdir())
    return err


def test_missing_meta(capsys, tmp_path, recording):
    recording.with_name("rec.sigmf-meta").unlink()
    _refused(capsys, tmp_path, recording, match="rec.sigmf-meta: no such file")
    _refused(capsys, tmp_path, tmp_path / "nothing", match="no such file")


def test_missing_data(capsys, tmp_path, recording):
    recording.with_name("rec.sigmf-data").unlink()
    _refused(capsys, tmp_path, recording, match="rec.sigmf-data: no such file")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not JSON"),
        ('["a list"]', "no 'global'"),
        (
            '{"global": {"core:datatype": "cf32_le", "core:sample_rate": "fast", '
            '"core:version": "1.0.0"}, "captures": [], "annotations": []}',
            "not valid SigMF",
        ),
        (
            '{"global": {"core:datatype": "rf32_le", "core:sample_rate": 1e6, '
            '"core:version": "1.0.0"}, "captures": [], "annotations": []}',
            "are not read",
        ),
        (
            '{"global": {"core:datatype": "cf32_le", "core:sample_rate": -5, '
            '"core:version": "1.0.0"}, "captures": [], "annotations": []}',
            "core:sample_rate: -5 is less than",
        ),
        (
            '{"global": {"core:datatype": "cf32_le", "core:version": "1.0.0"}, '
            '"captures": [], "annotations": []}',
            "core:sample_rate must be a positive number, got None",
        ),
    ],
)
def test_malformed_meta(capsys, tmp_path, recording, text, match):
    recording.with_name("rec.sigmf-meta").write_text(text)
    _refused(capsys, tmp_path, recording, match=match)


def test_meta_of_another_recording(capsys, tmp_path, recording, rng):
    cfg = FrameConfig()
    _record(tmp_path / "other", _samples(cfg, rng, image_id=9), cfg)
    (tmp_path / "other.sigmf-meta").replace(tmp_path / "rec.sigmf-meta")
    _refused(capsys, tmp_path, recording, match="does not match the core:sha512")


def test_data_not_a_whole_number_of_samples(capsys, tmp_path, recording):
    data = recording.with_name("rec.sigmf-data")
    data.write_bytes(data.read_bytes()[:-3])
    _refused(capsys, tmp_path, recording, match="truncated: ")


def test_data_ending_before_an_annotation(capsys, tmp_path, recording):
    data = recording.with_name("rec.sigmf-data")
    last = open_recording(recording).annotations[-1]
    data.write_bytes(data.read_bytes()[: 8 * (last.sample_start + 10)])
    _refused(capsys, tmp_path, recording, match="an annotation ends at sample")
    _edit_meta(recording, lambda m: m["annotations"].clear())
    _refused(capsys, tmp_path, recording, match="does not match the core:sha512")


def test_sample_rate_other_than_the_receiver_is_set_for(capsys, tmp_path, recording):
    _refused(capsys, tmp_path, recording, "--sample-rate", "2e6", match="recorded at 1e+06")
    _refused(capsys, tmp_path, recording, "--sps", "4", match="2 samples per symbol")


def test_samples_of_another_rate_than_the_meta_says(capsys, tmp_path, rng):
    """Samples made at twice the rate (4 samples per symbol), described as 2 per symbol at the
    rate of the symbols: the receiver finds none of the frames the annotations mark."""
    fast = FrameConfig(sps=4)
    _record(tmp_path / "rec", _samples(fast, rng), fast, sample_rate=2e6)

    def claim_half_rate(meta):
        meta["global"]["core:sample_rate"] = 1e6
        meta["global"]["diffjscc:sps"] = 2
        meta["global"]["diffjscc:waveform_settings"]["sps"] = 2

    _edit_meta(tmp_path / "rec", claim_half_rate)
    _refused(capsys, tmp_path, tmp_path / "rec", match="none of the 1 frames")


def test_meta_that_contradicts_itself(capsys, tmp_path, recording):
    _edit_meta(recording, lambda m: m["global"].update({"diffjscc:sps": 3}))
    _refused(capsys, tmp_path, recording, match="diffjscc:sps (3) contradicts")


def test_recording_without_frames(capsys, tmp_path, rng):
    with SigMFRecorder(tmp_path / "noise", 1e6) as rec:
        rec.write((rng.standard_normal(30000) + 1j * rng.standard_normal(30000)) * 0.1)
    _refused(capsys, tmp_path, tmp_path / "noise", match="no JSCC frame found in 30000 samples")


def test_bad_options(capsys, tmp_path, recording):
    _refused(capsys, tmp_path, recording, "--speed", "0", match="--speed")
    (tmp_path / "file").write_text("")
    status, _, err = _replay(capsys, recording, "--out", tmp_path / "file", "--no-decode")
    assert status == 2 and "not a folder" in err


# -- the flowgraph --------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("grcc") is None, reason="grcc not installed")
def test_replay_flowgraph_decodes_a_recording_with_the_meta_settings(tmp_path):
    """grc/replay_no_gui.grc takes the rate and samples per symbol (here 4) from the meta."""
    gnuradio = pytest.importorskip("gnuradio")
    source = str(ROOT / "gr-diffjscc" / "python")
    if source not in gnuradio.__path__:
        gnuradio.__path__.insert(0, source)
    env = dict(os.environ, GRC_BLOCKS_PATH=str(ROOT / "gr-diffjscc" / "grc"))
    subprocess.run(
        ["grcc", "-o", str(tmp_path), str(ROOT / "grc" / "replay_no_gui.grc")],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    spec = importlib.util.spec_from_file_location("replay", tmp_path / "replay_no_gui.py")
    generated = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generated)
    meta = RECORDINGS / "cbr96_sps4_10db.sigmf-meta"
    rec = open_recording(meta)
    tb = generated.replay_no_gui(recording=str(meta), speed=0, output_dir=str(tmp_path / "out"))
    assert (tb.sps, tb.samp_rate) == (rec.sps, rec.sample_rate) == (4, 2e6)
    tb.start()
    done = threading.Event()
    threading.Thread(target=lambda: (tb.wait(), done.set()), daemon=True).start()
    if not done.wait(120):
        tb.stop()
        pytest.fail("replay flowgraph did not finish")
    assert tb.diffjscc_jscc_receiver_0.stats()["frames_ok"] == len(rec.annotations)
    (result,) = tb.diffjscc_image_sink_0.results()
    assert not result["partial"] and Path(result["path"]).is_file()
    assert result["snr_db"] == pytest.approx(rec.annotations[0].snr_db, abs=0.05)


def test_replay_takes_out_a_dc_offset_as_the_receiver_block_does(capsys, tmp_path, rng):
    """A recording with a front end's DC offset 3 dB below the signal: replay subtracts the
    stream's running mean first (as jscc_receiver's dc_removal), so the frames keep their SNR;
    ``--no-dc-removal`` shows the offset as lost SNR."""
    cfg = FrameConfig(max_payload_symbols=40)
    x = _samples(cfg, rng, snr_db=15.0)
    lead = np.zeros(70000, np.complex64)  # the running mean settles on the offset first
    x = np.concatenate([lead, x]) + np.complex64(0.3 + 0.3j)
    _record(tmp_path / "dc", x.astype(np.complex64), cfg, annotate=False)
    status, lines, _ = _replay(capsys, tmp_path / "dc", "--no-decode")
    assert status == 0
    images = [line for line in lines if "image_id" in line]
    assert len(images) == 1 and not images[0]["partial"]
    assert images[0]["snr_db"] > 12.0
    status, lines, _ = _replay(capsys, tmp_path / "dc", "--no-decode", "--no-dc-removal")
    worse = [line for line in lines if "image_id" in line]
    assert not worse or worse[0]["snr_db"] < images[0]["snr_db"] - 3.0
