"""Pretrained models by name: the default JSCC weights shipped in ``diffjscc/weights``.

Weights are looked up through the one table in :mod:`diffjscc.registry`;
``DIFFJSCC_WEIGHTS`` points at another folder holding files of the same names, and so
does the ``folder`` argument of each function (``diffjscc eval --weights``).
"""

from __future__ import annotations

import logging
import os

from diffjscc.errors import ConfigError, WeightsNotFoundError
from diffjscc.jscc.weights import PACKAGE_WEIGHTS, weights_dir, weights_path
from diffjscc.registry import DEFAULT_MODEL, ModelSpec, get_model_spec

log = logging.getLogger(__name__)

__all__ = [
    "PACKAGE_WEIGHTS",
    "load_codec",
    "load_jscc",
    "load_transmitter",
    "weights_dir",
    "weights_path",
]


def load_jscc(
    model: str | int | ModelSpec = DEFAULT_MODEL,
    device: str = "cpu",
    folder: str | os.PathLike | None = None,
):
    """The torch DeepJSCC model with its default weights, in eval mode."""
    from diffjscc.jscc.model import DeepJSCC

    net = DeepJSCC.from_pretrained(weights_path(model, folder=folder))
    return net.to(device).eval()


def load_codec(
    model: str | int | ModelSpec = DEFAULT_MODEL,
    device: str = "cpu",
    folder: str | os.PathLike | None = None,
):
    """A :class:`diffjscc.jscc.codec.JSCCCodec` (numpy images in and out) with default weights."""
    from diffjscc.jscc.codec import JSCCCodec

    spec = get_model_spec(model)
    return JSCCCodec(load_jscc(spec, device, folder), spec)


def load_transmitter(model: str | int | ModelSpec = DEFAULT_MODEL, tx_opt_steps: int = 0):
    """The transmitter's encoder: the ONNX one (numpy + onnxruntime, no torch), or the torch
    codec when its symbols are to be optimised (``tx_opt_steps`` > 0, diffjscc.symbol_opt:
    it differentiates through the decoder) or when the model ships no ONNX encoder (the
    fading model: the weights budget; ``diffjscc export-onnx --model NAME`` makes one)."""
    if not tx_opt_steps:
        from diffjscc.jscc.onnx_encoder import OnnxJSCCEncoder

        try:
            return OnnxJSCCEncoder.from_pretrained(model)
        except WeightsNotFoundError as exc:
            try:
                import torch  # noqa: F401
            except ImportError:
                raise exc from None
            log.info("%s; encoding with the torch codec", exc)
            return load_codec(model)
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "transmitter-side symbol optimisation (tx_opt_steps > 0) needs torch at the "
            "transmitter: pip install 'diffjscc[torch]' (or -e '.[torch]' from a checkout), "
            "or set tx_opt_steps to 0 to use the ONNX encoder"
        ) from exc
    return load_codec(model)
