"""Moved to :mod:`diffjscc.jscc.symbol_opt`; this name stays so that existing imports keep working."""

import sys

from diffjscc.jscc import symbol_opt as _moved

sys.modules[__name__] = _moved
