import os

import numpy as np
import pytest

# Tests must not depend on the number of cores of the machine they run on.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def natural_image():
    """A 512x512 photograph that ships with scikit-image (no data folder needed)."""
    from skimage import data

    return data.astronaut()
