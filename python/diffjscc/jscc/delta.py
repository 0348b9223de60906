"""Fine-tuned weights stored as a quantised difference from the weights they came from.

A model fine-tuned from shipped weights (the block-Rayleigh model from the AWGN one) differs
from them by little: its difference, quantised to 4 bits per weight with one scale per output
row, is a quarter of a float16 file, which keeps the package's weights within their size
budget. Each weight is off by at most half a step (the row's largest difference / 14); the
shipped model's figures are measured on the file as stored.

File layout (safetensors): ``NAME::q4`` (uint8, two 4-bit values a byte, offset 8) and
``NAME::scale`` (float16, one per row) for tensors of two or more dimensions; ``NAME::d16``
(float16 difference) for vectors; ``NAME::f16`` (the weights themselves) where the shape
differs from the base's (a gate that takes more CSI features); other tensors (integer counters) as they are, under their
own name. Metadata ``diffjscc_delta_base`` names the base file, looked up beside this one.
"""

from __future__ import annotations

import torch

DELTA_BASE_KEY = "diffjscc_delta_base"
_LEVELS = 7  # 4-bit values -7..7


def quantise_delta(state: dict, base: dict) -> dict:
    """The tensors of a delta file for ``state`` against ``base`` (both name -> tensor)."""
    if set(state) != set(base):
        raise ValueError("the model and its base must have the same tensors")
    out = {}
    for name, value in state.items():
        ref = base[name]
        if not value.is_floating_point():
            out[name] = value.clone()
            continue
        if value.shape != ref.shape:  # e.g. a gate that takes more CSI features
            out[f"{name}::f16"] = value.half()
            continue
        diff = value.float() - ref.float()
        if diff.dim() < 2:
            out[f"{name}::d16"] = diff.half()
            continue
        rows = diff.reshape(diff.shape[0], -1)
        scale = (rows.abs().amax(dim=1) / _LEVELS).half().float()
        scale[scale == 0] = 1.0
        q = torch.round(rows / scale[:, None]).clamp(-_LEVELS, _LEVELS).to(torch.uint8) + 8
        flat = q.flatten()
        if flat.numel() % 2:
            flat = torch.cat([flat, flat.new_full((1,), 8)])
        out[f"{name}::q4"] = (flat[0::2] | (flat[1::2] << 4)).contiguous()
        out[f"{name}::scale"] = scale.half()
    return out


def apply_delta(delta: dict, base: dict) -> dict:
    """The full state (float32) from a delta file's tensors and its base's."""
    state = {}
    for name, ref in base.items():
        if name in delta:
            state[name] = delta[name]
        elif f"{name}::f16" in delta:
            state[name] = delta[f"{name}::f16"].float()
        elif f"{name}::d16" in delta:
            state[name] = ref.float() + delta[f"{name}::d16"].float()
        elif f"{name}::q4" in delta:
            packed = delta[f"{name}::q4"]
            q = torch.stack([packed & 0x0F, packed >> 4], dim=1).flatten()[: ref.numel()]
            scale = delta[f"{name}::scale"].float()
            diff = (q.float() - 8.0).reshape(ref.shape[0], -1) * scale[:, None]
            state[name] = ref.float() + diff.reshape(ref.shape)
        else:
            raise KeyError(f"the delta file has nothing for {name}")
    extra = {k.split("::")[0] for k in delta} - set(base)
    if extra:
        raise KeyError(f"the delta file has tensors its base lacks: {sorted(extra)[:3]}")
    return state
