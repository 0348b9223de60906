"""Where the weights of the named models are: ``diffjscc/weights`` or ``$DIFFJSCC_WEIGHTS``.

File names come from the one table in :mod:`diffjscc.registry` (``ModelSpec.weights``).
This module imports neither torch nor onnxruntime, so both the torch codec
(:mod:`diffjscc.zoo`) and the ONNX transmitter (:mod:`diffjscc.jscc.onnx_encoder`)
look files up here without importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path

from diffjscc.errors import WeightsNotFoundError
from diffjscc.registry import ModelSpec, get_model_spec

PACKAGE_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


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
