import os

import numpy as np
import pytest

# Tests must not depend on the number of cores of the machine they run on.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def image_path(tmp_path):
    """A smooth 96x160 image file (6 x 10 blocks of 16): the stand-in codec keeps it
    recognisable; the loopback and layout tests send it."""
    from PIL import Image

    yy, xx = np.mgrid[0:96, 0:160]
    img = np.stack([xx * 1.5, yy * 2.5, 255 - xx], axis=2).clip(0, 255).astype(np.uint8)
    path = tmp_path / "test.png"
    Image.fromarray(img).save(path)
    return path


@pytest.fixture(scope="module")
def loopback():
    """examples/loopback.py, the main job, as a module (with the GNU Radio module of this
    checkout importable as gnuradio.diffjscc)."""
    import importlib.util
    from pathlib import Path

    import gnuradio

    root = Path(__file__).resolve().parents[1]
    source = str(root / "gr-diffjscc" / "python")
    if source not in gnuradio.__path__:
        gnuradio.__path__.insert(0, source)
    spec = importlib.util.spec_from_file_location(
        "loopback_example", root / "examples" / "loopback.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def natural_image():
    """A 512x512 photograph that ships with scikit-image (no data folder needed)."""
    from skimage import data

    return data.astronaut()


# A JSCC codec small enough to build in milliseconds, with the latent layout of the
# default CBR 1/384 model: tests of the radio, the worker and the sink use it instead
# of the shipped weights.
TINY_JSCC = dict(
    latent_channels=4,
    base_width=8,
    max_width_encoder=16,
    max_width_decoder=16,
    encoder_blocks=1,
    decoder_blocks=1,
)


@pytest.fixture(scope="module")
def tiny_codec():
    torch = pytest.importorskip("torch")
    from diffjscc.codec import JSCCCodec
    from diffjscc.models.jscc import DeepJSCC, JSCCConfig

    torch.manual_seed(0)
    return JSCCCodec(DeepJSCC(JSCCConfig(**TINY_JSCC)), "jscc-awgn-cbr1_384")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from more threads, and on a shared CPU spinning threads cost 3x."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_jscc_config():
    """A JSCCConfig of the TINY_JSCC widths; keyword arguments override (channel_type=...)."""
    pytest.importorskip("torch")
    from diffjscc.models.jscc import JSCCConfig

    def make(**overrides):
        return JSCCConfig(**{**TINY_JSCC, **overrides})

    return make
