"""Guarded imports of the heavy optional libraries the refiner is built on.

``import diffjscc`` must not pull in diffusers or transformers; the refiner
modules call these helpers where the libraries are first needed, so a missing
one gives a message that says what to install instead of a bare ImportError.
"""

from __future__ import annotations

import importlib

from diffjscc.errors import DiffJSCCError


class MissingDependencyError(DiffJSCCError, ImportError):
    """An optional library the refiner needs is not installed."""


_INSTALL_HINT = {
    "diffusers": "pip install 'diffjscc[refiner]'  (diffusers>=0.30)",
    "transformers": "pip install 'diffjscc[refiner]'  (transformers>=4.40)",
    "yaml": "pip install pyyaml",
    "lpips": "pip install lpips",
    "torchmetrics": "pip install 'torchmetrics[image]'",
}


def require(module: str):
    """Import ``module`` or raise MissingDependencyError naming the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = _INSTALL_HINT.get(module.split(".")[0], f"pip install {module.split('.')[0]}")
        raise MissingDependencyError(
            f"the diffusion refiner needs the Python package {module.split('.')[0]!r}, "
            f"which is not importable ({exc}); install it with: {hint}"
        ) from exc
