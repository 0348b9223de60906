"""The receivers' small dense solves on one BLAS thread.

An OFDM receiver solves a few eigenproblems and linear systems of 15 to 60 unknowns
whenever a link shows it a new delay prior or noise level. OpenBLAS (Debian's numpy,
and scipy's wheel) runs those on its thread pool, whose threads then spin on every
core after each call. On the 2-core development VM that cost the receiver core alone
half its speed on a new link (7.9 against 15.3 Msps per CPU second, cold caches), and
it takes the CPU a live flowgraph's other blocks need. GNU Radio sets no
``OPENBLAS_NUM_THREADS``, and the process may belong to somebody else (a GRC
flowgraph, a notebook), so the limit holds only around these solves, through
threadpoolctl (the pool control that scikit-learn and joblib use), not for the
process. Without threadpoolctl the solves run as before.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

_F = TypeVar("_F", bound=Callable)

# One limit for every thread: a second receiver's solve must not restore the pool
# size under a first one's. The solves are short (a millisecond or two), and a
# receiver meets a new prior or noise level on a few frames in a hundred.
_lock = threading.RLock()


@functools.lru_cache(maxsize=1)
def _controller():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # an optional speed-up: the solves are right without it
        return None
    return ThreadpoolController()


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with every loaded BLAS library limited to one thread."""
    controller = _controller()
    if controller is None:
        yield
        return
    with _lock, controller.limit(limits=1, user_api="blas"):
        yield


def single_threaded(func: _F) -> _F:
    """``func`` run under ``one_blas_thread``."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with one_blas_thread():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
