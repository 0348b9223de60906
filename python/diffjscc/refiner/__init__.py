"""The DiffJSCC refiner: conditional latent diffusion on Stable Diffusion.

Importing this package is cheap; the names below load torch, diffusers and
transformers on first use (``from diffjscc.refiner import DiffJSCCRefiner``).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DiffJSCCRefiner": "diffjscc.refiner.pipeline",
    "RefinerConfig": "diffjscc.refiner.pipeline",
    "RefineResult": "diffjscc.refiner.pipeline",
    "Guidance": "diffjscc.refiner.pipeline",
    "DiffJSCCControlModule": "diffjscc.refiner.control",
    "wavelet_color_fix": "diffjscc.refiner.colorfix",
    "make_captioner": "diffjscc.refiner.captioner",
    "make_scheduler": "diffjscc.refiner.schedulers",
    "make_sampler": "diffjscc.refiner.schedulers",
    "Sampler": "diffjscc.refiner.schedulers",
    "SAMPLERS": "diffjscc.refiner.schedulers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'diffjscc.refiner' has no attribute {name!r}")
