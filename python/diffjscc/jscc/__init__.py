"""The deep JSCC codec: model, codec, ONNX encoder, weights, conversion.

============================  ============================================================
module                        what
============================  ============================================================
``diffjscc.jscc.model``       ``DeepJSCC`` (torch): encoder, decoder, config, safetensors I/O
``diffjscc.jscc.layers``      the building blocks of the model
``diffjscc.jscc.codec``       ``JSCCCodec``: numpy images in, channel symbols out, and back
``diffjscc.jscc.symbol_opt``  gradient steps on an image's symbols at the transmitter
``diffjscc.jscc.onnx_encoder``  ``OnnxJSCCEncoder``: the torch-free transmitter
``diffjscc.jscc.onnx_export``   ``diffjscc export-onnx``
``diffjscc.jscc.weights``     where the named models' weight files are (no torch)
``diffjscc.jscc.convert``     ``diffjscc convert-official``: an official checkpoint's JSCC part
``diffjscc.jscc.roundtrip``   ``diffjscc roundtrip``: encode, simulated channel, decode
============================  ============================================================

Importing this package imports neither torch nor onnxruntime: the names below load
their module on first use, so a transmitter-only install can use the ONNX encoder.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "DeepJSCC": "diffjscc.jscc.model",
    "JSCCConfig": "diffjscc.jscc.model",
    "JSCCEncoder": "diffjscc.jscc.model",
    "JSCCDecoder": "diffjscc.jscc.model",
    "JSCCCodec": "diffjscc.jscc.codec",
    "OnnxJSCCEncoder": "diffjscc.jscc.onnx_encoder",
    "SymbolOptConfig": "diffjscc.jscc.symbol_opt",
    "weights_dir": "diffjscc.jscc.weights",
    "weights_path": "diffjscc.jscc.weights",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
