"""The waveform interface: the single carrier through the registry."""

import numpy as np
import pytest
from diffjscc import channels
from diffjscc.errors import ConfigError
from diffjscc.radio import (
    BurstReceiver,
    FrameConfig,
    Receiver,
    SingleCarrier,
    Waveform,
    build_bursts,
    get_waveform,
    image_symbol_count,
)
from diffjscc.radio.sim import add_noise
from diffjscc.symbols import EncodedImage


def _enc(rng, shape=(64, 96)):
    n = image_symbol_count(1, shape)
    z = channels.normalise_power(rng.standard_normal(n) + 1j * rng.standard_normal(n))
    return EncodedImage(z.astype(np.complex64), shape, (0, 0, 0), "jscc-awgn-cbr1_384", 5.0)


def test_single_carrier_through_the_registry():
    rng = np.random.default_rng(0)
    wf = get_waveform("sc", max_payload_symbols=40)
    assert isinstance(wf, Waveform) and wf.name == "sc"
    assert get_waveform("sc", **wf.settings()) == wf
    enc = _enc(rng)
    bursts = wf.build_bursts(enc, image_id=3)
    ref = build_bursts(enc, 3, FrameConfig(max_payload_symbols=40))
    assert all(np.array_equal(a, b) for a, b in zip(bursts, ref, strict=True))
    assert len(bursts) == 2  # 48 symbols in two frames of 24
    assert [b.size for b in bursts] == [wf.frame_samples(24)] * 2
    rx = wf.make_receiver()
    assert isinstance(rx, Receiver) and isinstance(rx, BurstReceiver)
    x = add_noise(np.concatenate(bursts), 15.0, wf.cfg, rng)
    frames = rx.feed(x) + rx.flush()
    assert len(frames) == len(bursts) and all(f.waveform == "sc" and f.complete for f in frames)
    assert wf.noise_voltage(10.0) == pytest.approx(10 ** (-(10 - 3.0103) / 20), rel=1e-4)


def test_unknown_waveform_and_settings_are_config_errors():
    with pytest.raises(ConfigError, match="unknown waveform"):
        get_waveform("fm")
    with pytest.raises(ConfigError):
        get_waveform("sc", fft_size=64)
    with pytest.raises(ConfigError):
        get_waveform("sc", sps=1)
    assert get_waveform(SingleCarrier()) == SingleCarrier(FrameConfig())


def test_block_parameters_reach_only_the_waveform_that_takes_them():
    from diffjscc.radio.waveform import waveform_from_block_params

    wf = waveform_from_block_params(
        "sc", sps=4, rolloff=0.25, pilot_spacing=0, max_payload_symbols=0, fft_size=64
    )
    assert wf == SingleCarrier(FrameConfig(sps=4, rolloff=0.25))  # 0: default; fft_size: not its
    with pytest.raises(ConfigError):
        waveform_from_block_params("sc", sps=1)
