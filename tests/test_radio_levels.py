"""Both receivers at any input level, and fed garbage: frames as at unit level, nothing
counted as an internal error."""

import numpy as np
import pytest
from diffjscc.radio.waveform import get_waveform
from diffjscc.symbols import EncodedImage


def _stream(name, rng, snr_db=10.0):
    n = 2 * 8 * 12
    sym = ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) / np.sqrt(2)).astype(np.complex64)
    enc = EncodedImage(sym, (128, 192), (2, 8, 12), "jscc-awgn-cbr1_384", snr_db)
    wf = get_waveform(name)
    burst = np.concatenate(wf.build_bursts(enc, image_id=5))
    x = np.concatenate([np.zeros(3000, np.complex64), burst, np.zeros(20000, np.complex64)])
    sigma = wf.noise_voltage(snr_db) / np.sqrt(2)
    x = x + (sigma * (rng.standard_normal(x.size) + 1j * rng.standard_normal(x.size))).astype(
        np.complex64
    )
    return wf, enc, x


def _receive(rx, x, chunk=8192):
    frames = []
    for i in range(0, x.size, chunk):
        frames += rx.feed(x[i : i + chunk])
    return frames + rx.flush()


@pytest.mark.parametrize("name", ["sc", "ofdm"])
def test_any_input_level_gives_the_unit_level_frame(name):
    rng = np.random.default_rng(4)
    wf, enc, x = _stream(name, rng)
    (ref,) = _receive(wf.make_receiver(), x)
    for exponent in (-20, -10, 10, 20):
        scale = np.float32(10.0**exponent)
        rx = wf.make_receiver()
        (frame,) = _receive(rx, (x * scale).astype(np.complex64))
        assert frame.snr_db == pytest.approx(ref.snr_db, abs=0.05)
        assert abs(frame.h) == pytest.approx(abs(ref.h) * float(scale), rel=1e-3)
        err = np.mean(np.abs(frame.symbols - ref.symbols) ** 2)
        assert err < 1e-4 * np.mean(np.abs(ref.symbols) ** 2)
        assert rx.stats["internal_errors"] == 0


@pytest.mark.parametrize("name", ["sc", "ofdm"])
def test_garbage_of_every_kind_is_counted_not_an_internal_error(name):
    rng = np.random.default_rng(7)
    wf, enc, x = _stream(name, rng)
    burst = x[3000:-20000]
    rx = wf.make_receiver()
    chunks = [
        (rng.standard_normal(5000) * 1e30).astype(np.complex64),
        np.full(3000, np.nan, np.complex64),
        np.full(3000, np.inf, np.complex64),
        burst * np.float32(1e25),
        np.concatenate([burst, burst[: burst.size // 2] * 3, burst]),
        # A pass over those bursts before the next chunk's level buries them under
        # float32's range (OFDM passes every 8192 samples; its correlation finds no
        # false bursts in the silence beside loud noise, as the FFTs' leakage did).
        np.zeros(8192, np.complex64),
        (rng.integers(-3, 3, 4000) * 1e30).astype(np.complex64),
        burst * np.float32(1e-25),
        np.exp(1j * np.cumsum(rng.uniform(-3, 3, 6000))).astype(np.complex64),
        np.zeros(30000, np.complex64),
    ]
    for _ in range(3):
        for c in chunks:
            rx.feed(c)
    rx.flush()
    assert rx.stats["internal_errors"] == 0
    assert rx.stats["bursts_detected"] > 0
