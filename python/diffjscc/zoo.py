"""Pretrained models by name: the default JSCC weights shipped in ``diffjscc/weights``.

Weights are looked up through the one table in :mod:`diffjscc.registry`;
``DIFFJSCC_WEIGHTS`` points at another folder holding files of the same names, and so
does the ``folder`` argument of each function (``diffjscc eval --weights``).
"""

from __future__ import annotations

import os
from pathlib import Path

from diffjscc.errors import WeightsNotFoundError
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
