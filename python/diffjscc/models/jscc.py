"""Moved to :mod:`diffjscc.jscc.model`; this name stays so that existing imports keep working."""

import sys

from diffjscc.jscc import model as _moved

sys.modules[__name__] = _moved
