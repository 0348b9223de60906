"""Moved to :mod:`diffjscc.jscc.onnx_export`; this name stays so that existing imports keep working."""

import sys

from diffjscc.jscc import onnx_export as _moved

sys.modules[__name__] = _moved
