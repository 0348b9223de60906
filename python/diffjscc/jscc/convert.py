"""``diffjscc convert-official``: load the JSCC part of an official DiffJSCC checkpoint.

The official ``model.ckpt`` (PyTorch Lightning, ControlLDM) keeps its deep JSCC under
``preprocess_model.``: an encoder ``E`` (``net`` = reflect-padded 7x7 conv + norm + ReLU
followed by stride-2 conv/norm/ReLU triples; ``res_list`` alternating residual blocks and
``modulation`` gates; ``projection``) and a decoder ``G`` (``mask_conv``; ``res_list``;
``model`` = transposed conv/norm/ReLU triples, reflect pad, 5x5 conv, sigmoid). This
module renames those tensors to :class:`diffjscc.jscc.model.DeepJSCC` and infers the
config (widths, depths, latent channels, AWGN or Rayleigh CSI) from their shapes.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from diffjscc.errors import ConfigError, WeightsNotFoundError
from diffjscc.jscc.model import DeepJSCC, JSCCConfig

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# Residual block conv_block indices: encoder blocks use zero padding (no pad modules),
# decoder blocks reflect padding (a pad module before each conv shifts the indices).
_ENC_RES = {"0": "conv1", "1": "norm1", "3": "conv2", "4": "norm2"}
_DEC_RES = {"1": "conv1", "2": "norm1", "5": "conv2", "6": "norm2"}
_GATE = {"model_multi": "scale", "model_add": "shift"}


def _count(keys, pattern: str) -> int:
    found = {m.group(1) for k in keys if (m := re.fullmatch(pattern, k))}
    return len(found)


def infer_config(sd: dict[str, torch.Tensor]) -> JSCCConfig:
    """The JSCCConfig of an official JSCC state dict (keys ``E.*`` and ``G.*``)."""
    try:
        # Every 4-D weight in E.net is a convolution: the stem, then one per downsampling.
        n_down = (
            sum(
                1 for k, v in sd.items() if re.fullmatch(r"E\.net\.\d+\.weight", k) and v.dim() == 4
            )
            - 1
        )
        enc_blocks = _count(sd, r"E\.res_list\.(\d+)\.conv_block\.0\.weight")
        dec_blocks = _count(sd, r"G\.res_list\.(\d+)\.conv_block\.1\.weight")
        base = sd["E.net.1.weight"].shape[0]
        enc_top = sd["E.projection.weight"].shape[1]
        dec_top = sd["G.mask_conv.weight"].shape[0]
        latent = sd["E.projection.weight"].shape[0]
        gate_in = sd["E.res_list.1.model_multi.0.weight"].shape[1]
    except KeyError as exc:
        raise ConfigError(f"not an official DiffJSCC JSCC state dict: missing {exc}") from exc
    csi_dim = gate_in - enc_top
    if csi_dim not in (1, 3):
        raise ConfigError(f"unexpected CSI size {csi_dim} in the modulation layers")
    norm = (
        "batch"
        if "E.net.2.running_mean" in sd
        else ("instance" if "E.net.1.bias" in sd else "none")
    )
    return JSCCConfig(
        latent_channels=latent,
        base_width=base,
        max_width_encoder=enc_top,
        max_width_decoder=dec_top,
        num_downsampling=n_down,
        encoder_blocks=enc_blocks,
        decoder_blocks=dec_blocks,
        norm=norm,
        channel_type="awgn" if csi_dim == 1 else "rayleigh",
    )


def _rename(key: str, cfg: JSCCConfig) -> str | None:
    parts = key.split(".")
    net, rest = parts[0], parts[1:]
    if net == "E":
        if rest[0] == "net":
            i, leaf = int(rest[1]), rest[2:]
            if i in (1, 2):
                return ".".join(["encoder.stem", "conv" if i == 1 else "norm", *leaf])
            j, r = divmod(i - 4, 3)
            if 0 <= j < cfg.num_downsampling and r in (0, 1):
                return ".".join([f"encoder.downs.{j}", "conv" if r == 0 else "norm", *leaf])
            return None
        if rest[0] == "projection":
            return ".".join(["encoder.project", *rest[1:]])
        if rest[0] == "res_list":
            return _rename_block("encoder", rest, _ENC_RES)
        return None
    if net == "G":
        if rest[0] == "mask_conv":
            return ".".join(["decoder.expand", *rest[1:]])
        if rest[0] == "res_list":
            return _rename_block("decoder", rest, _DEC_RES)
        if rest[0] == "model":
            i, leaf = int(rest[1]), rest[2:]
            j, r = divmod(i, 3)
            if j < cfg.num_downsampling and r in (0, 1):
                return ".".join([f"decoder.ups.{j}", "conv" if r == 0 else "norm", *leaf])
            if i == 3 * cfg.num_downsampling + 1:
                return ".".join(["decoder.head", *leaf])
        return None
    return None


def _rename_block(side: str, rest: list[str], res_map: dict[str, str]) -> str | None:
    i = int(rest[1])
    block, is_gate = divmod(i, 2)
    if is_gate:
        if rest[2] in _GATE:
            return ".".join([f"{side}.blocks.{block}.gate", _GATE[rest[2]], *rest[3:]])
        return None
    if rest[2] == "conv_block" and rest[3] in res_map:
        return ".".join([f"{side}.blocks.{block}.res", res_map[rest[3]], *rest[4:]])
    return None


def convert_official_jscc(
    state_dict: dict[str, torch.Tensor], prefix: str = "preprocess_model."
) -> tuple[dict[str, torch.Tensor], JSCCConfig]:
    """Official JSCC tensors (under ``prefix``) -> (DeepJSCC state dict, JSCCConfig).

    Raises ConfigError when a tensor has no counterpart, so nothing is silently dropped.
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    sd = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not sd:
        raise ConfigError(f"no tensor under {prefix!r}: not an official DiffJSCC checkpoint")
    cfg = infer_config(sd)
    out: dict[str, torch.Tensor] = {}
    unmapped = []
    for key, value in sd.items():
        new = _rename(key, cfg)
        if new is None:
            unmapped.append(key)
        else:
            out[new] = value
    if unmapped:
        raise ConfigError(f"official JSCC tensors with no counterpart: {unmapped[:8]}")
    return out, cfg


def official_jscc_model(
    state_dict: dict[str, torch.Tensor], prefix: str = "preprocess_model."
) -> DeepJSCC:
    """A DeepJSCC holding the official JSCC tensors (under ``prefix``), loaded strictly."""
    sd, cfg = convert_official_jscc(state_dict, prefix)
    model = DeepJSCC(cfg)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"conversion mismatch: missing {missing[:8]}, unexpected {unexpected[:8]}"
        )
    return model.eval()


def load_official_jscc(
    path: str | Path, prefix: str = "preprocess_model.", trust_pickle: bool = False
) -> DeepJSCC:
    """A DeepJSCC with the JSCC weights of an official checkpoint (file, or folder with model.ckpt).

    The file is read with :func:`diffjscc.unpickle.load_checkpoint`: Lightning's
    callback classes and other framework objects become inert placeholders, nothing
    pickled is run; ``trust_pickle`` lifts the restriction (with a warning).
    """
    from diffjscc.unpickle import load_checkpoint

    path = Path(path)
    if path.is_dir():
        path = path / "model.ckpt"
    if not path.is_file():
        raise WeightsNotFoundError(
            f"{path} not found: download an official DiffJSCC checkpoint (folder with config.yaml "
            "and model.ckpt, see https://github.com/mingyuyng/DiffJSCC) and give its path"
        )
    ckpt = load_checkpoint(path, trust_pickle=trust_pickle)
    if not isinstance(ckpt, dict):
        raise ConfigError(f"{path} holds no state dict")
    return official_jscc_model(ckpt, prefix)


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="diffjscc convert-official", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("checkpoint", help="official model.ckpt, or the folder holding it")
    p.add_argument("--out", required=True, help="output .safetensors (weights + config)")
    p.add_argument("--prefix", default="preprocess_model.", help="key prefix of the JSCC tensors")
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="last resort: unpickle model.ckpt without restrictions (it can run code)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = setup_args().parse_args(argv)
    model = load_official_jscc(args.checkpoint, args.prefix, args.trust_pickle)
    out = model.save_pretrained(args.out, {"source": str(args.checkpoint)})
    print(f"wrote {out}: {model.config}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
