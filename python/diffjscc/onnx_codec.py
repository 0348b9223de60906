"""Moved to :mod:`diffjscc.jscc.onnx_encoder`; this name stays so that existing imports keep working."""

import sys

from diffjscc.jscc import onnx_encoder as _moved

sys.modules[__name__] = _moved
