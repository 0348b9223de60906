"""Moved to :mod:`diffjscc.jscc.codec`; this name stays so that existing imports keep working."""

import sys

from diffjscc.jscc import codec as _moved

sys.modules[__name__] = _moved
