"""``diffjscc export-onnx``: export a JSCC encoder to ONNX for the torch-free transmitter.

The graph maps image [N,3,H,W] in [0,1] (H, W multiples of 16) and CSI [N,k] to
the raw latent [N,C,H/16,W/16]; power normalisation and the symbol mapping are
done in numpy by :mod:`diffjscc.symbols`, the same code the receiver side uses.
Weights are stored as float16 (the shipped weights are float16 already) and cast
to float32 inside the graph, so the file is half the size and the numbers match
the torch model exactly.
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


def _weights_to_fp16(proto):
    """Store every float32 initializer as float16 followed by a Cast back to float32."""
    import onnx
    from onnx import helper, numpy_helper

    graph = proto.graph
    casts = []
    for init in list(graph.initializer):
        if init.data_type != onnx.TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(init)
        half = values.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), values):
            continue  # keep exact: only weights that are float16 values already are halved
        name = init.name
        init.CopyFrom(numpy_helper.from_array(half, name + "__fp16"))
        casts.append(helper.make_node("Cast", [name + "__fp16"], [name], to=onnx.TensorProto.FLOAT))
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return proto


def export_encoder(model: DeepJSCC, path: str | Path, fp16_weights: bool = True) -> Path:
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
        proto = _weights_to_fp16(proto)
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
    from diffjscc.zoo import load_jscc, weights_dir

    spec = get_model_spec(args.model)
    model = DeepJSCC.from_pretrained(args.weights) if args.weights else load_jscc(spec)
    out = Path(args.out) if args.out else weights_dir() / f"{spec.weights}.onnx"
    export_encoder(model, out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
