"""Moved to :mod:`diffjscc.jscc.roundtrip`; this name stays so that existing imports keep working."""

import sys

from diffjscc.jscc import roundtrip as _moved

sys.modules[__name__] = _moved
