"""Pretrained models by name: the default JSCC weights shipped in ``diffjscc/weights``.

Weights are looked up through the one table in :mod:`diffjscc.registry`;
``DIFFJSCC_WEIGHTS`` points at another folder holding files of the same names, and so
does the ``folder`` argument of each function (``diffjscc eval --weights``).
"""

from __future__ import annotations

import os
from pathlib import Path

from diffjscc.errors import ConfigError, WeightsNotFoundError
from diffjscc.registry import ModelSpec, get_model_spec

PACKAGE_WEIGHTS = Path(__file__).resolve().parent / "weights"


def weights_dir() -> Path:
    return Path(os.environ.get("DIFFJSCC_WEIGHTS", PACKAGE_WEIGHTS))


def weights_path(
    model: str | int | ModelSpec,
    suffix: str = ".safetensors",
    folder: str | os.PathLike | None = None,
) -> Path:
    spec = get_model_spec(model)
    path = Path(folder or weights_dir()) / f"{spec.weights}{suffix}"
    if not path.is_file():
        hint = (
            "export it with `diffjscc export-onnx --model {name}`"
            if suffix == ".onnx"
            else "train it with `diffjscc train-jscc --model {name} --out RUN` and copy RUN/best.safetensors"
        ).format(name=spec.name)
        raise WeightsNotFoundError(f"weights of {spec.name} not found at {path}; {hint}")
    return path


def load_jscc(
    model: str | int | ModelSpec = "1/384",
    device: str = "cpu",
    folder: str | os.PathLike | None = None,
):
    """The torch DeepJSCC model with its default weights, in eval mode."""
    from diffjscc.models.jscc import DeepJSCC

    net = DeepJSCC.from_pretrained(weights_path(model, folder=folder))
    return net.to(device).eval()


def load_codec(
    model: str | int | ModelSpec = "1/384",
    device: str = "cpu",
    folder: str | os.PathLike | None = None,
):
    """A :class:`diffjscc.codec.JSCCCodec` (numpy images in and out) with default weights."""
    from diffjscc.codec import JSCCCodec

    spec = get_model_spec(model)
    return JSCCCodec(load_jscc(spec, device, folder), spec)


def load_transmitter(model: str | int | ModelSpec = "1/384", tx_opt_steps: int = 0):
    """The transmitter's encoder: the ONNX one (numpy + onnxruntime, no torch), or, when its
    symbols are to be optimised (``tx_opt_steps`` > 0, diffjscc.symbol_opt), the torch codec,
    which can differentiate through the decoder."""
    if not tx_opt_steps:
        from diffjscc.onnx_codec import OnnxJSCCEncoder

        return OnnxJSCCEncoder.from_pretrained(model)
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "transmitter-side symbol optimisation (tx_opt_steps > 0) needs torch at the "
            "transmitter: pip install 'diffjscc[torch]' (or -e '.[torch]' from a checkout), "
            "or set tx_opt_steps to 0 to use the ONNX encoder"
        ) from exc
    return load_codec(model)
