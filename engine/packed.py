"""CPU inference kernels: linear and convolution layers with weights pre-packed for
oneDNN (float32 or bfloat16 weights), and int8 linears.

Why: PyTorch's default float32 linear on CPU goes through MKL, which repacks the
weight on every call and (on the AMD EPYC this project is measured on) does not
use AVX-512. oneDNN with the weight packed once at load time measured about 2x
faster at batch 1 and at batch 16, for decode and prefill alike (docs/architecture.md,
"CPU kernels"). It also gives each row the same bits whatever else
is in the batch, which MKL does not (it picks other kernels for one row than for
sixteen): a seed then draws the same frames alone or batched.

The codec's short convolutions get the same treatment. On a chunk of a few
frames PyTorch runs them through its slow reference kernels (im2col loops, and
slow_conv_dilated2d for the dilated ones: ~1.7 ms for a 20-frame 256x256 conv);
as one packed matmul over the stacked taps they take a few tens of microseconds.

Where the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), the packed
weights can be bfloat16 while activations stay float32 around each layer: at
batch 1 the matmuls read their weights from memory once per frame, so half the
bytes took about a fifth off one stream's time (docs/architecture.md,
"CPU kernels"). The LM was trained under bfloat16 autocast, which rounds the same
operands the same way.

A decode step multiplies one frame per row, and that product reads every weight
to use it once: one stream's speed is set by bytes read and by fixed costs per
call. `Int8Linear` reads int8 weights (one scale per output row, as the model
ships) through PyTorch's weight-only int8 kernel on bfloat16 activations: a
quarter of float32's bytes and none of oneDNN's ~30 us fixed cost per call,
which for these small matrices is most of the time. On this project's 2-core
Xeon with AMX one 384 -> 2048 multiply of one row took 81 us, against 167 us on
oneDNN in bfloat16 and 209 us on MKL in float32, weights out of cache as they
are in the model. That kernel computes each row on its own (the same bits alone
or batched), but its time grows with the rows (at 16 rows ~3x oneDNN's), so
prefill and large batches are slower with it; the engine uses it for all of the
LM's linears or none, because a row's bits must not depend on the path its
frame took (docs/architecture.md).

Training and the reference paths keep plain modules; only the engine packs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.weights import quantize_int8


def can_pack(device: torch.device, dtype: torch.dtype) -> bool:
    return (
        device.type == "cpu"
        and dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def native_bf16() -> bool:
    """True where oneDNN multiplies bfloat16 in hardware (not by emulation, which is slower than float32)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def server_packed_dtype() -> str:
    """EngineConfig.packed_dtype for a server running many streams per step: bfloat16 where the
    CPU multiplies it natively (the engine's own default, int8 there, is faster for a few
    streams and slower from about 12), else int8. Without native bfloat16 a server's float32
    decode steps wait on memory: the LM's float32 matrices (38 MB) outgrow the cache that the
    codec process shares, and in a loaded server on an AVX2-only EPYC the int8 ones made steps
    25-50% shorter at every batch size, 1 to 16 (docs/benchmarks.md). The engine's own default
    stays float32 there, which the evaluation figures on such CPUs were measured with."""
    return "bfloat16" if native_bf16() else "int8"


# Rows per oneDNN call. On an AVX2-only EPYC, float32 products of more than 80 rows with a
# long inner dimension (768, 1024) took another kernel whose row sums round differently,
# so a codec window or a prompt changed bits with its batch; calls of at most 64 rows gave
# every row the bits it has alone, at any batch, on every layer shape measured.
ROW_BLOCK = 64


class PackedLinear(nn.Module):
    """Inference-only stand-in for an `nn.Linear` with `weight` [out, in] and optional `bias`
    (the weight is frozen in oneDNN's layout)."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        batch_hint: int = 16,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.dtype = dtype  # of the weights and the multiply; inputs and outputs keep theirs
        # The hint only steers oneDNN's choice of layout; any batch size runs.
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(dtype), batch_hint)
        self.bias = None if bias is None else bias.detach().to(dtype).clone()

    def forward(self, x: torch.Tensor, with_bias: bool = True) -> torch.Tensor:
        """`with_bias=False`: the product alone (a caller adding each row's own bias)."""
        bias = self.bias if with_bias else None
        rows = x.reshape(-1, self.in_features)
        if len(rows) <= ROW_BLOCK:
            y = torch.ops.mkldnn._linear_pointwise(rows.to(self.dtype), self.packed, bias, "none", [], "")
        else:
            blocks = rows.to(self.dtype).split(ROW_BLOCK)
            y = torch.cat([torch.ops.mkldnn._linear_pointwise(b, self.packed, bias, "none", [], "") for b in blocks])
        return y.to(x.dtype).view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """weight [out, in] -> (int8 [out, in], bfloat16 scale [out]) for the weight-only int8 kernel.

    Symmetric absmax per row, as engine.weights ships them, except that the kernel
    takes bfloat16 scales: each scale is rounded up to one, so that every weight
    still lands within half a step of its float value (the scale itself rounded
    after quantising would shift a whole row by up to 0.4%)."""
    peak = weight.detach().float().abs().amax(1).clamp_min(1e-12)
    scale = (peak / 127).to(torch.bfloat16)
    scale = torch.where(scale.float() * 127 < peak, (scale.view(torch.int16) + 1).view(torch.bfloat16), scale)
    return quantize_int8(weight, scale.float())[0].contiguous(), scale


class Int8Linear(nn.Module):
    """Inference-only stand-in for an `nn.Linear`: int8 weights with one scale per output
    row, multiplied by PyTorch's weight-only int8 kernel on bfloat16 activations
    (float32 in and out)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.q8, self.scale = int8_rows(weight)
        self.bias = None if bias is None else bias.detach().float().clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, self.in_features).to(torch.bfloat16), self.q8, self.scale)
        y = y.to(x.dtype).view(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class PackedConv1d(nn.Module):
    """Inference-only stand-in for a stride-1, ungrouped, zero-padded `nn.Conv1d`:
    the k taps are stacked into one [T, in*k] matrix and multiplied by the packed weight."""

    def __init__(self, conv: nn.Conv1d, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.kernel, self.dilation, self.padding = conv.kernel_size[0], conv.dilation[0], conv.padding[0]
        # [out, in, k] -> [out, in*k]: in-channel major, tap minor, as forward() stacks the taps.
        self.linear = PackedLinear(conv.weight.flatten(1), conv.bias, dtype=dtype)

    @staticmethod
    def supports(conv: nn.Conv1d) -> bool:
        return (
            conv.stride == (1,)
            and conv.groups == 1
            and conv.padding_mode == "zeros"
            and isinstance(conv.padding, tuple)
        )

    def forward(self, x: torch.Tensor, with_bias: bool = True) -> torch.Tensor:
        """x [B, in, T] -> [B, out, T'] exactly as the convolution shapes it (`with_bias`: as PackedLinear)."""
        if self.kernel == 1:
            return self.linear(x.transpose(1, 2), with_bias).transpose(1, 2)
        xp = F.pad(x, (self.padding, self.padding))
        span = xp.shape[-1] - self.dilation * (self.kernel - 1)
        taps = torch.stack([xp[..., j * self.dilation : j * self.dilation + span] for j in range(self.kernel)], -1)
        return self.linear(taps.transpose(1, 2).flatten(2), with_bias).transpose(1, 2)


def pack_for_cpu(model: nn.Module, dtype: torch.dtype = torch.float32, int8_linears: bool = False) -> int:
    """Swap every `nn.Linear`, and every `nn.Conv1d` that `PackedConv1d` supports,
    inside `model` for its packed twin with `dtype` weights; returns how many.
    `int8_linears`: the linears become `Int8Linear`s instead."""
    swaps = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.Linear) or (isinstance(child, nn.Conv1d) and PackedConv1d.supports(child))
    ]
    for parent, name, child in swaps:
        if isinstance(child, nn.Linear):
            setattr(
                parent,
                name,
                Int8Linear(child.weight, child.bias)
                if int8_linears
                else PackedLinear(child.weight, child.bias, dtype=dtype),
            )
        else:
            setattr(parent, name, PackedConv1d(child, dtype))
    return len(swaps)
