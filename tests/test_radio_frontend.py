"""The DC remover ahead of the receivers: it takes out an offset, leaves the signal alone."""

import numpy as np
import pytest
from diffjscc.errors import ConfigError
from diffjscc.radio.frontend import DcRemover


def _noise(n, seed=0):
    rng = np.random.default_rng(seed)
    return ((rng.standard_normal(n) + 1j * rng.standard_normal(n)) / np.sqrt(2)).astype(
        np.complex64
    )


def test_offset_is_removed_and_the_estimate_does_not_depend_on_chunking():
    x = _noise(400_000) + np.complex64(0.3 - 0.2j)
    outs = []
    for chunk in (1000, 8192, 50_000):
        dc = DcRemover(time_constant=65536)
        y = np.concatenate([dc.process(x[i : i + chunk]) for i in range(0, x.size, chunk)])
        assert abs(dc.offset - (0.3 - 0.2j)) < 0.02
        outs.append(y)
        # After the start-up the output has no DC left (within the estimate's noise).
        assert abs(complex(y[100_000:].mean())) < 0.02
    assert np.max(np.abs(outs[0][200_000:] - outs[2][200_000:])) < 0.02


def test_signal_without_offset_passes_nearly_unchanged():
    x = _noise(200_000, seed=1)
    dc = DcRemover()
    y = np.concatenate([dc.process(x[i : i + 4096]) for i in range(0, x.size, 4096)])
    err = np.mean(np.abs(y[65536:] - x[65536:]) ** 2) / np.mean(np.abs(x) ** 2)
    assert 10 * np.log10(err) < -40


def test_non_finite_chunk_does_not_poison_the_estimate():
    dc = DcRemover(time_constant=1024)
    dc.process(np.full(4096, 0.5, np.complex64))
    bad = np.full(16, np.nan, np.complex64)
    dc.process(bad)
    assert abs(dc.offset - 0.5) < 1e-6
    dc.reset()
    assert dc.offset == 0
    assert dc.process(np.zeros(0, np.complex64)).size == 0


def test_compiled_removal_matches_its_numpy_twin():
    """The one-call kernel gives the twin's offsets and samples (float32 rounding),
    through the start-up, a chunk with NaN in it, a read-only chunk and an empty one."""
    from diffjscc.radio import frontend

    if not frontend.load():
        pytest.skip(f"numba unavailable: {frontend.REASON}")
    x = _noise(150_000, seed=4) + np.complex64(0.2 + 0.4j)
    x[70_000:70_010] = np.nan
    chunks = [x[i : i + 9000] for i in range(0, x.size, 9000)] + [x[:0]]
    chunks[3] = chunks[3].copy()
    chunks[3].flags.writeable = False
    states = {"kernel": (0j, 0.0), "numpy": (0j, 0.0)}
    for chunk in chunks:
        outs = {}
        for name, remove in (("kernel", frontend.remove_dc), ("numpy", frontend.remove_dc_numpy)):
            out = np.empty_like(chunk)
            if chunk.size:
                states[name] = remove(chunk, *states[name], 65536.0, out)
            outs[name] = out
        assert abs(states["kernel"][0] - states["numpy"][0]) < 1e-9
        assert states["kernel"][1] == states["numpy"][1]
        np.testing.assert_allclose(outs["kernel"], outs["numpy"], rtol=0, atol=1e-6)
    assert abs(states["kernel"][0] - (0.2 + 0.4j)) < 0.01


@pytest.mark.parametrize("tc", [0, 8, -5, "x", 2**31])
def test_bad_time_constant_is_refused(tc):
    with pytest.raises(ConfigError, match="time constant"):
        DcRemover(time_constant=tc)


def test_gnuradio_impairments_apply_only_what_is_asked():
    """channels.impairments' phase noise is on at its default (0 dB, ~4 degrees rms):
    gnuradio_channel turns it off unless asked, so a DC offset comes alone."""
    from diffjscc.radio.channel_presets import gnuradio_channel
    from gnuradio import blocks, gr

    x = _noise(20_000, seed=3)

    def through(impairments):
        tb = gr.top_block()
        src, sink = blocks.vector_source_c(x.tolist(), False), blocks.vector_sink_c()
        chain = [src, *gnuradio_channel("awgn", impairments=impairments), sink]
        for a, b in zip(chain, chain[1:], strict=False):
            tb.connect(a, b)
        tb.run()
        return np.asarray(sink.data(), np.complex64)

    clean = through(None)  # channel_model's resampler keeps back a few samples
    y = through({"i_ofs": 0.2, "q_ofs": -0.1})
    n = min(y.size, clean.size)
    assert n > 19_000
    assert np.max(np.abs(y[:n] - clean[:n] - np.complex64(0.2 - 0.1j))) < 1e-4
    noisy = through({"phase_noise_mag": 0.0})
    n = min(noisy.size, clean.size)
    phase = np.angle(noisy[:n] * np.conj(clean[:n]))
    assert 2.0 < np.degrees(np.std(phase[1000:])) < 8.0
