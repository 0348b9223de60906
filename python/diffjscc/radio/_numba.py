"""The one loader of the radio's compiled kernels (numba), shared by the
single-carrier (``radio._fast``) and OFDM (``radio._fast_ofdm``) kernel modules.

Each module keeps its kernels' plain Python and numpy twins, a table of them and
a warm-up, and hands these to a ``KernelLoader``. ``load()`` then, once per
process: honours ``DIFFJSCC_NUMBA=0``, imports numba (only here: importing the
receiver modules, the transmitter or a GNU Radio block never does), compiles the
table in order into the module's store (a kernel that calls another finds the
compiled one, as numba resolves globals when it compiles), and runs the warm-up
with the argument types the receiver gives, so nothing compiles mid-stream. The
module's ``AVAILABLE`` and ``REASON`` say the outcome; a missing or broken numba
is logged once and leaves the numpy twins in use.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

# Products of float32 parts may be reassociated (vectorised sums) and fused; no
# assumption about NaN or infinity (the receivers zero those before the kernels).
FASTMATH = frozenset({"reassoc", "contract"})


@dataclass(frozen=True)
class Kernel:
    """One kernel: the key it is stored under, its Python source function,
    whether it may be compiled with ``FASTMATH`` (not where exact IEEE order
    matters), and numba's ``error_model``: "python" raises ZeroDivisionError,
    testing every divisor, which keeps a loop with a division from vectorising;
    "numpy" (inf or NaN instead) where every divisor is known to be nonzero."""

    name: str
    python: Callable
    fastmath: bool = True
    error_model: str = "python"


class KernelLoader:
    """Compiles a module's kernels once, into ``store`` (the module's globals or a dict)."""

    def __init__(
        self,
        module: str,
        what: str,
        kernels: tuple[Kernel, ...],
        warm_up: Callable[[], None],
        store: MutableMapping,
    ):
        self.module = module  # whose AVAILABLE and REASON this loader sets
        self.what = what  # for the log line: "single-carrier receiver kernels"
        self.kernels = kernels
        self.warm_up = warm_up
        self.store = store
        self._lock = threading.Lock()
        self._tried = False
        self._available = False

    def _set(self, available: bool, reason: str) -> bool:
        target = sys.modules[self.module]
        target.AVAILABLE = available
        target.REASON = reason
        self._available = available
        return available

    def load(self) -> bool:
        """Compile (or load from numba's disk cache) every kernel, once; True when in use."""
        with self._lock:
            if self._tried:
                return self._available
            self._tried = True
            if os.environ.get("DIFFJSCC_NUMBA", "1") == "0":
                return self._set(False, "DIFFJSCC_NUMBA=0")
            try:
                import numba

                for kernel in self.kernels:
                    flags = set(FASTMATH) if kernel.fastmath else False
                    jit = numba.njit(
                        cache=True, nogil=True, fastmath=flags, error_model=kernel.error_model
                    )
                    self.store[kernel.name] = jit(kernel.python)
                self.warm_up()
            except Exception as exc:  # ImportError, or a numba that cannot compile here
                reason = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "diffjscc.radio: compiled %s unavailable (%s); numpy", self.what, reason
                )
                return self._set(False, reason)
            return self._set(True, "")
