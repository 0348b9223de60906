"""``diffjscc export-onnx``: export a JSCC encoder to ONNX for the torch-free transmitter.

The graph maps image [N,3,H,W] in [0,1] (H, W multiples of 16) and CSI [N,k] to
the raw latent [N,C,H/16,W/16]; power normalisation and the symbol mapping are
done in numpy by :mod:`diffjscc.symbols`, the same code the receiver side uses.
Weights are stored as float16 and cast to float32 inside the graph, so the file
is half the size. Weights that are float16 values already (the shipped float16
files) are halved exactly, so the numbers match the torch model exactly; a model
whose file holds less than float16 precision anyway (a 4-bit difference from its
base, ``diffjscc.jscc.delta``: base + delta is float32 but only as good as the
quantised delta) has its weights rounded to float16 (``stored_below_float32``):
for the shipped block-Rayleigh model that moves the unit-RMS symbols by 1.1e-4
RMS, 3.4e-4 at most, and the file is 2.3 MB instead of 4.4. Other float32 weights stay as
they are.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
import torch

from diffjscc.io import atomic_write_bytes
from diffjscc.jscc.model import DeepJSCC
from diffjscc.registry import DEFAULT_MODEL, get_model_spec

OPSET = 17


class _EncoderGraph(torch.nn.Module):
    def __init__(self, model: DeepJSCC):
        super().__init__()
        self.encoder = model.encoder

    def forward(self, image: torch.Tensor, csi: torch.Tensor) -> torch.Tensor:
        return self.encoder(image, csi)


# Relative rounding error of float16 for normal numbers (half a unit in the last place).
_FP16_EPS = 2.0**-11


def _weights_to_fp16(proto, round_weights: bool = False):
    """Store float32 initializers as float16 followed by a Cast back to float32: those that
    are float16 values already, and with ``round_weights`` every one that float16 holds to
    its own precision (none out of range or subnormal)."""
    import onnx
    from onnx import helper, numpy_helper

    graph = proto.graph
    casts = []
    for init in list(graph.initializer):
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(init)
        with np.errstate(over="ignore"):
            half = values.astype(np.float16)
        back = half.astype(np.float32)
        if not np.array_equal(back, values):
            if not round_weights:
                continue  # kept exact: only weights that are float16 values already are halved
            if not np.all(np.abs(back - values) <= _FP16_EPS * np.abs(values)):
                continue  # out of float16's range or subnormal: kept as float32
        name = init.name
        init.CopyFrom(numpy_helper.from_array(half, name + "__fp16"))
        casts.append(helper.make_node("Cast", [name + "__fp16"], [name], to=onnx.TensorProto.FLOAT))
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return proto


def stored_below_float32(path: str | Path) -> bool:
    """Whether a weights file holds no more than float16 precision: a 4-bit delta file
    (``diffjscc.jscc.delta``) or floating tensors that are all float16."""
    from safetensors import safe_open

    from diffjscc.jscc.delta import DELTA_BASE_KEY

    with safe_open(str(path), framework="pt") as f:
        if DELTA_BASE_KEY in (f.metadata() or {}):
            return True
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    floats = {d for d in dtypes if d.startswith(("F", "BF"))}
    return bool(floats) and floats <= {"F16"}


def export_encoder(
    model: DeepJSCC, path: str | Path, fp16_weights: bool = True, round_weights: bool = False
) -> Path:
    """``round_weights``: round every weight to float16 (``_weights_to_fp16``), for models
    whose stored weights are no more precise (``stored_below_float32``)."""
    import onnx

    model = model.float().eval().cpu()
    graph = _EncoderGraph(model)
    m = model.config.downsampling_factor
    image = torch.rand(1, 3, 4 * m, 6 * m)
    csi = torch.zeros(1, model.config.csi_dim)
    buffer = io.BytesIO()
    torch.onnx.export(
        graph,
        (image, csi),
        buffer,
        input_names=["image", "csi"],
        output_names=["latent"],
        dynamic_axes={
            "image": {0: "batch", 2: "height", 3: "width"},
            "csi": {0: "batch"},
            "latent": {0: "batch", 2: "h", 3: "w"},
        },
        opset_version=OPSET,
        dynamo=False,
        # Folding batch norms into the convolutions would make the weights non-float16 values.
        do_constant_folding=False,
    )
    proto = onnx.load_from_string(buffer.getvalue())
    if fp16_weights:
        proto = _weights_to_fp16(proto, round_weights)
    proto.producer_name = "gr-diffjscc"
    meta = proto.metadata_props.add()
    meta.key, meta.value = "diffjscc_config", json.dumps(model.config.to_dict())
    onnx.checker.check_model(proto)
    atomic_write_bytes(path, proto.SerializeToString())
    return Path(path)


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffjscc export-onnx", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL, help="registry name or CBR (default weights)")
    p.add_argument("--weights", help="a .safetensors file instead of the default weights")
    p.add_argument("--out", help="output .onnx (default: beside the default weights)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = setup_args().parse_args(argv)
    from diffjscc.zoo import load_jscc, weights_dir, weights_path

    spec = get_model_spec(args.model)
    source = Path(args.weights) if args.weights else weights_path(spec)
    model = DeepJSCC.from_pretrained(source) if args.weights else load_jscc(spec)
    out = Path(args.out) if args.out else weights_dir() / f"{spec.weights}.onnx"
    export_encoder(model, out, round_weights=stored_below_float32(source))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
