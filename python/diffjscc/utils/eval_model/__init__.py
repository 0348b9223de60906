"""Moved to :mod:`diffjscc.eval`; this name stays so that existing imports keep working."""

import sys

from diffjscc import eval as _moved

sys.modules[__name__] = _moved
