"""Moved to :mod:`diffjscc.jscc.convert`; this name stays so that existing imports keep working."""

import sys

from diffjscc.jscc import convert as _moved

sys.modules[__name__] = _moved
