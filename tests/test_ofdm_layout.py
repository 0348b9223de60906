"""The OFDM layout as a setting of the blocks, GRC, the loopback and the CLI.

Both ends must use the same layout (the frame header does not carry it): the
mobile layout of docs/ofdm.md (512-point FFT, 256 used, pilots every 16) gets
through the blocks, the recorder's meta and a replay; a receiver of another layout
delivers nothing, and says so in its counters.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import yaml

gnuradio = pytest.importorskip("gnuradio")
from diffjscc.errors import ConfigError  # noqa: E402
from diffjscc.radio.layout_args import add_layout_options, layout_settings  # noqa: E402
from diffjscc.radio.ofdm import OfdmConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODULE_SOURCE = ROOT / "gr-diffjscc" / "python"
if str(MODULE_SOURCE) not in gnuradio.__path__:
    gnuradio.__path__.insert(0, str(MODULE_SOURCE))

from gnuradio import blocks, gr  # noqa: E402
from gnuradio.diffjscc import image_source, jscc_receiver, sigmf_recorder  # noqa: E402
from gnuradio.diffjscc._fakes import BlockMeanCodec  # noqa: E402

MOBILE = {"fft_size": 512, "used_carriers": 256, "ofdm_pilot_spacing": 16}
# Block parameter -> OfdmConfig field.
LAYOUT = {
    "fft_size": "fft_size",
    "cp_length": "cp_length",
    "used_carriers": "used_carriers",
    "ofdm_pilot_spacing": "pilot_spacing",
    "pilot_stagger": "pilot_stagger",
}
BLOCK_YML = {
    name: ROOT / "gr-diffjscc" / "grc" / f"diffjscc_{name}.block.yml"
    for name in ("image_source", "jscc_receiver", "sigmf_recorder")
}


@pytest.mark.parametrize("name", sorted(BLOCK_YML))
def test_block_yml_offers_the_layout_with_ofdmconfigs_defaults(name):
    """Each block that takes ``waveform`` has the layout in an OFDM tab, shown only for
    OFDM, with OfdmConfig's defaults (existing flowgraphs keep today's layout), and its
    make line passes every one of them."""
    data = yaml.safe_load(BLOCK_YML[name].read_text())
    params = {p["id"]: p for p in data["parameters"]}
    wanted = dict(LAYOUT, **({"clip_ratio_db": "clip_ratio_db"} if name == "image_source" else {}))
    defaults = OfdmConfig()
    for block_key, field in wanted.items():
        p = params[block_key]
        assert p["category"] == "OFDM", block_key
        assert float(p["default"]) == getattr(defaults, field), block_key
        hide = p["hide"].removeprefix("${").removesuffix("}")
        assert eval(hide, {"waveform": "sc"}) == "all"  # noqa: S307
        assert eval(hide, {"waveform": "ofdm"}) in ("none", "part")  # noqa: S307
        assert f"{block_key}=${{{block_key}}}" in data["templates"]["make"], block_key


def test_layout_options_map_to_the_blocks_keywords():
    parser = argparse.ArgumentParser()
    add_layout_options(parser)
    args = parser.parse_args(
        ["--fft-size", "512", "--used-carriers", "256", "--pilot-spacing", "16"]
    )
    assert layout_settings("ofdm", args) == MOBILE
    # The pilot spacing is the chosen waveform's; the others are OFDM's alone.
    assert layout_settings("sc", parser.parse_args(["--pilot-spacing", "24"])) == {
        "pilot_spacing": 24
    }
    with pytest.raises(ConfigError, match="--fft-size is an OFDM setting"):
        layout_settings("sc", args)
    for bad in (["--cp-length", "0"], ["--fft-size", "x"], ["--pilot-stagger", "3"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def _send(path, layout, receivers, recorder_path=None):
    """The image through the source with ``layout``, into one receiver per layout of
    ``receivers`` (and, with ``recorder_path``, a recorder fed the first one's frames)."""
    tb = gr.top_block()
    src = image_source(
        str(path),
        encoder=BlockMeanCodec(),
        interval_s=0,
        waveform="ofdm",
        gap_samples=500,
        **layout,
    )
    noise = blocks.add_cc()
    rng = np.random.default_rng(3)
    n = 200000
    noise_samples = 0.05 * (rng.standard_normal(n) + 1j * rng.standard_normal(n))
    tb.connect(src, (noise, 0))
    tb.connect(
        blocks.vector_source_c(noise_samples.astype(np.complex64).tolist(), True), (noise, 1)
    )
    rxs = []
    for settings in receivers:
        rx = jscc_receiver(waveform="ofdm", **settings)
        tb.connect(noise, rx)
        rxs.append(rx)
    rec = None
    if recorder_path is not None:
        rec = sigmf_recorder(str(recorder_path), sample_rate=1e6, waveform="ofdm", **receivers[0])
        tb.connect(noise, rec)
        tb.msg_connect(rxs[0], "pdus", rec, "frames")
    tb.run()  # the source ends the run after its one pass
    return src, rxs, rec


def test_both_ends_with_the_mobile_layout_and_a_receiver_of_another(image_path, tmp_path):
    """Source and receiver with the 512-point layout: every frame; a default receiver on
    the same stream: none, its detections failing their header CRCs, nothing raised.
    The recorder keeps the layout in its meta, and a replay receives with it."""
    from diffjscc.radio.recording import open_recording

    src, (same, default), rec = _send(
        image_path, MOBILE, [MOBILE, {}], recorder_path=tmp_path / "rec"
    )
    assert src.waveform.cfg.fft_size == 512 and same.waveform == src.waveform
    sent = src.stats()["bursts_sent"]
    assert sent >= 1
    assert same.stats()["frames_ok"] == same.stats()["pdus_sent"] == sent
    stats = default.stats()
    assert stats["frames_ok"] == stats["pdus_sent"] == 0
    assert stats["bursts_detected"] >= 1 and stats["header_crc_fail"] >= 1
    assert stats["internal_errors"] == 0 and stats["pdu_errors"] == 0
    recording = open_recording(tmp_path / "rec")
    assert recording.waveform() == src.waveform  # layout from diffjscc:waveform_settings
    assert len(recording.annotations) == sent
    from diffjscc import cli

    assert cli.main(["replay", str(tmp_path / "rec"), "--no-decode"]) == 0


def test_block_settings_that_do_not_fit_are_one_line_errors(image_path):
    with pytest.raises(ConfigError, match="power of two"):
        image_source(str(image_path), encoder=BlockMeanCodec(), waveform="ofdm", fft_size=500)
    with pytest.raises(ConfigError, match="too few pilots"):
        jscc_receiver(waveform="ofdm", fft_size=512, used_carriers=256, cp_length=64)
    # The single carrier ignores the OFDM layout (GRC passes every parameter).
    assert jscc_receiver(waveform="sc", fft_size=512).waveform.name == "sc"


def test_loopback_with_the_mobile_layout(loopback, image_path, tmp_path):
    common = ["--image", str(image_path), "--output", str(tmp_path / "out"), "--quiet"]
    args = loopback.setup_args().parse_args(
        [*common, "--seed", "2", "--snr", "10", "--waveform", "ofdm", "--fft-size", "512"]
        + ["--used-carriers", "256", "--pilot-spacing", "16", "--channel", "epa"]
    )
    codec = BlockMeanCodec()
    summary = loopback.run(args, encoder=codec, decoder=codec)
    assert summary["waveform_settings"]["fft_size"] == 512
    assert summary["waveform_settings"]["ofdm_pilot_spacing"] == 16
    assert summary["frames_decoded"] == summary["frames_sent"] >= 1
    assert summary["images_decoded"] == 1 and summary["psnr"] > 20


@pytest.mark.parametrize(
    "extra, said",
    [
        (["--waveform", "ofdm", "--fft-size", "500"], "power of two"),
        (["--waveform", "ofdm", "--cp-length", "600", "--fft-size", "512"], "cp_length"),
        (["--waveform", "ofdm", "--pilot-spacing", "7"], "pilot_spacing"),
        (["--fft-size", "512"], "--waveform ofdm"),
        (["--waveform", "ofdm", "--cp-length", "0"], "--cp-length"),
    ],
)
def test_loopback_refuses_a_layout_that_does_not_fit(
    loopback, tmp_path, image_path, capsys, extra, said
):
    argv = ["--image", str(image_path), "--output", str(tmp_path / "o"), "--quiet", "--no-worker"]
    try:
        status = loopback.main([*argv, *extra])
    except SystemExit as exc:  # argparse's own refusal (usage and one line)
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2
    assert said in err and "Traceback" not in err
