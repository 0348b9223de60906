"""Transmitter-side symbol optimisation (diffjscc.symbol_opt) and its codec entry point."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from diffjscc import channels as ch  # noqa: E402
from diffjscc.codec import JSCCCodec  # noqa: E402
from diffjscc.errors import ConfigError  # noqa: E402
from diffjscc.models.jscc import DeepJSCC  # noqa: E402
from diffjscc.symbol_opt import SymbolOptConfig, optimise_symbols  # noqa: E402


def _image(h=48, w=64):
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return torch.stack([x, y, 0.5 * (x + y)])[None]


@pytest.fixture
def model(tiny_jscc_config, one_torch_thread):
    """A tiny model trained a little, so that its decoder depends on the symbols."""
    torch.manual_seed(0)
    model = DeepJSCC(tiny_jscc_config())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = _image().repeat(4, 1, 1, 1)
    for _ in range(40):
        loss = torch.mean((model(x, torch.full((4,), 10.0))["x_hat"] - x) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


def _expected_mse(model, x, symbols, snr, draws=16, seed=7):
    """Mean decoder MSE over fixed channel draws that the optimisation never saw."""
    g = torch.Generator().manual_seed(seed)
    s = torch.tensor([snr])
    with torch.no_grad():
        rec = ch.awgn(symbols.expand(draws, *symbols.shape[1:]), s.expand(draws), generator=g)
        return torch.mean((model.decode(rec, s.expand(draws)) - x) ** 2).item()


def test_optimised_symbols_decode_better_at_the_same_power(model):
    x, snr = _image(), torch.tensor([10.0])
    with torch.no_grad():
        start = model.encode(x, snr)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    better = optimise_symbols(model, x, start, snr, config=SymbolOptConfig(steps=40, lr=0.05))
    assert better.shape == start.shape and better.dtype == start.dtype
    assert torch.mean(better.abs() ** 2).item() == pytest.approx(1.0, abs=1e-5)
    after, before = _expected_mse(model, x, better, 10.0), _expected_mse(model, x, start, 10.0)
    assert after < 0.8 * before
    # The receiver's model is untouched: same weights, no gradients left behind, still eval.
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert all(p.grad is None for p in model.parameters()) and not model.training


def test_zero_steps_is_the_encoder_pass_and_runs_repeat(model):
    x, snr = _image(), torch.tensor([4.0])
    with torch.no_grad():
        start = model.encode(x, snr)
    assert optimise_symbols(model, x, start, snr, config=SymbolOptConfig(steps=0)) is start
    config = SymbolOptConfig(steps=3, seed=5)
    a = optimise_symbols(model, x, start, snr, config=config)
    b = optimise_symbols(model, x, start, snr, config=config)
    assert torch.equal(a, b)


def test_only_the_image_inside_its_padding_counts(model):
    x, snr = _image(), torch.tensor([10.0])
    with torch.no_grad():
        start = model.encode(x, snr)
    config = SymbolOptConfig(steps=3)
    full = optimise_symbols(model, x, start, snr, config=config)
    x_other_pad = x.clone()
    x_other_pad[..., 40:, :] = 1.0  # rows a 40-row image would not have
    cropped = optimise_symbols(model, x, start, snr, config=config, valid_shape=(40, 64))
    cropped_other = optimise_symbols(
        model, x_other_pad, start, snr, config=config, valid_shape=(40, 64)
    )
    assert torch.equal(cropped, cropped_other) and not torch.equal(full, cropped)


def test_rayleigh_models_need_the_gain(tiny_jscc_config, one_torch_thread):
    torch.manual_seed(0)
    model = DeepJSCC(tiny_jscc_config(channel_type="rayleigh")).eval()
    x, snr, h = _image(), torch.tensor([10.0]), torch.tensor([0.6 - 0.3j], dtype=torch.complex64)
    with torch.no_grad():
        start = model.encode(x, snr, h)
    with pytest.raises(ConfigError, match="known gain"):
        optimise_symbols(model, x, start, snr, config=SymbolOptConfig(steps=2))
    out = optimise_symbols(model, x, start, snr, h, config=SymbolOptConfig(steps=2))
    assert out.shape == start.shape and torch.isfinite(torch.view_as_real(out)).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=-1), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(steps=True), "steps"),
        (dict(lr=0.0), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(noise_draws=0), "noise_draws"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SymbolOptConfig(**kwargs)


def test_codec_encode_optimises_on_request(tiny_codec, one_torch_thread):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)  # padded to 48x64 inside
    plain = tiny_codec.encode(image, 10.0)
    assert np.array_equal(tiny_codec.encode(image, 10.0, optimise=0).symbols, plain.symbols)
    opt = tiny_codec.encode(image, 10.0, optimise=SymbolOptConfig(steps=3))
    assert opt.symbols.shape == plain.symbols.shape and opt.image_shape == (40, 56)
    assert not np.array_equal(opt.symbols, plain.symbols)
    assert np.mean(np.abs(opt.symbols) ** 2) == pytest.approx(1.0, abs=1e-5)
    assert tiny_codec.encode(image, 10.0, optimise=3).symbols.shape == plain.symbols.shape
    with pytest.raises(ConfigError, match="optimise"):
        tiny_codec.encode(image, 10.0, optimise="lots")


def test_codec_with_a_rayleigh_model_optimises_for_its_h(tiny_jscc_config, one_torch_thread):
    torch.manual_seed(0)
    codec = JSCCCodec(DeepJSCC(tiny_jscc_config(channel_type="rayleigh")))
    image = np.full((32, 32, 3), 90, dtype=np.uint8)
    enc = codec.encode(image, 10.0, h=0.8 + 0.1j, optimise=2)
    assert enc.symbols.size == codec.num_symbols((32, 32))
