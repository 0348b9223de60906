"""Moved to :mod:`diffjscc.jscc.layers`; this name stays so that existing imports keep working."""

import sys

from diffjscc.jscc import layers as _moved

sys.modules[__name__] = _moved
