"""Linear layers with weights pre-packed for oneDNN, for float32 inference on CPU.

Why: PyTorch's default float32 linear on CPU goes through MKL, which repacks the
weight on every call and (on the AMD EPYC this project is measured on) does not
use AVX-512. oneDNN with the weight packed once at load time measured about 2x
faster at batch 1 and at batch 16, for decode and prefill alike
(the README's benchmark section has the figures). It also gives each row the same bits
whatever else is in the batch, which MKL does not (it picks other kernels for
one row than for sixteen): a seed then draws the same frames alone or batched.

Training and the reference paths keep plain `nn.Linear`; only the engine packs.
"""
from __future__ import annotations

import torch
from torch import nn


def can_pack(device: torch.device, dtype: torch.dtype) -> bool:
    return (device.type == "cpu" and dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


class PackedLinear(nn.Module):
    """Inference-only stand-in for an `nn.Linear` (the weight is frozen in oneDNN's layout)."""

    def __init__(self, linear: nn.Linear, batch_hint: int = 16):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # The hint only steers oneDNN's choice of layout; any batch size runs.
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), batch_hint)
        self.bias = None if linear.bias is None else linear.bias.detach().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def pack_linears(model: nn.Module) -> int:
    """Swap every `nn.Linear` inside `model` for a `PackedLinear`; returns how many."""
    swaps = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if isinstance(child, nn.Linear)]
    for parent, name, child in swaps:
        setattr(parent, name, PackedLinear(child))
    return len(swaps)
