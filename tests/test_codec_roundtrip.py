"""The shipped default weights, end to end on whole images of any size."""

import numpy as np
import pytest
from diffjscc import channels
from diffjscc.errors import ConfigError
from diffjscc.metrics import psnr
from diffjscc.zoo import load_codec


@pytest.fixture(scope="module")
def codec():
    return load_codec("1/384")


def test_round_trip_quality_grows_with_snr(codec, natural_image):
    rng = np.random.default_rng(0)
    sent = codec.encode(natural_image, snr_db=1.0)
    assert sent.symbols.dtype == np.complex64
    assert sent.num_symbols == 2 * 32 * 32  # CBR 1/384 of a 512x512 image
    assert np.mean(np.abs(sent.symbols) ** 2) == pytest.approx(1.0, rel=1e-4)
    scores = {}
    for snr in (1.0, 13.0):
        sent = codec.encode(natural_image, snr)
        rx = channels.awgn(sent.symbols, snr, rng)
        out = codec.decode(rx, sent.image_shape, snr)
        assert out.shape == natural_image.shape and out.dtype == np.uint8
        scores[snr] = psnr(natural_image, out)
    # A blurry but faithful image even at 1 dB; better at 13 dB.
    assert scores[1.0] > 17.0
    assert scores[13.0] > scores[1.0] + 0.5


def test_any_image_size_is_padded_and_cropped_back(codec, natural_image):
    img = natural_image[:37, :53]
    sent = codec.encode(img, 10.0)
    assert sent.image_shape == (37, 53) and sent.latent_shape == (2, 3, 4)
    assert codec.decode(sent.symbols, (37, 53), 10.0).shape == (37, 53, 3)


def test_grayscale_and_rgba_inputs_are_converted(codec, natural_image):
    gray = natural_image[:64, :64, 0]
    assert codec.decode(codec.encode(gray, 5.0).symbols, (64, 64), 5.0).shape == (64, 64, 3)
    rgba = np.dstack([natural_image[:64, :64], np.full((64, 64), 255, np.uint8)])
    a = codec.encode(rgba, 5.0).symbols
    b = codec.encode(natural_image[:64, :64], 5.0).symbols
    assert np.allclose(a, b, atol=1e-6)


def test_decode_batch_matches_single_decodes(codec, natural_image):
    imgs = [natural_image[:64, :96], natural_image[100:164, :96], natural_image[:48, :48]]
    sent = [codec.encode(i, 4.0) for i in imgs]
    batch = codec.decode_batch(
        [s.symbols for s in sent], [s.image_shape for s in sent], [4.0, 7.0, 4.0]
    )
    for s, snr, out in zip(sent, [4.0, 7.0, 4.0], batch, strict=True):
        single = codec.decode(s.symbols, s.image_shape, snr)
        # Batched kernels may round differently: the same image to within one grey level.
        assert np.abs(out.astype(int) - single.astype(int)).max() <= 1


def test_decoding_bad_symbols_is_a_clear_error(codec):
    with pytest.raises(ConfigError, match="needed"):
        codec.decode(np.zeros(100, np.complex64), (64, 64), 5.0)
    bad = np.zeros(32, np.complex64)
    bad[3] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        codec.decode(bad, (64, 64), 5.0)


def test_missing_symbols_as_zeros_still_decode(codec, natural_image):
    sent = codec.encode(natural_image, 7.0)
    damaged = sent.symbols.copy()
    damaged[: damaged.size // 4] = 0  # a lost frame
    out = codec.decode(damaged, sent.image_shape, 7.0)
    assert psnr(natural_image, out) > 12.0


def test_a_non_finite_snr_is_refused(codec, natural_image):
    from diffjscc.onnx_codec import OnnxJSCCEncoder

    with pytest.raises(ConfigError, match="finite"):
        codec.encode(natural_image[:32, :32], float("nan"))
    with pytest.raises(ConfigError, match="finite"):
        OnnxJSCCEncoder.from_pretrained("1/384").encode(natural_image[:32, :32], float("inf"))
    with pytest.raises(ConfigError, match="finite"):
        codec.decode(np.zeros(8, np.complex64), (32, 32), float("nan"))
