"""Pieces shared by the FlowLM backbone and the Mimi transformers: rotary positions, the
pre-LayerNorm transformer layer, and loading checkpoint tensors under our own names.

Attention itself is left to the caller: a layer computes rotated queries and keys and hands
them to an `Attend` function, so the backbone can run through the engine's paged cache or a
plain cache, and Mimi through its sliding window, with the same layer code.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# (layer index, q [B, T, H, hd], k [B, T, Hkv, hd], v [B, T, Hkv, hd]) -> out [B, H, T, hd]
Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def rope_tables(positions: torch.Tensor, head_dim: int, max_period: float) -> tuple[torch.Tensor, torch.Tensor]:
    """positions [B, T] (absolute) -> cos, sin [B, T, 1, head_dim / 2], float32.

    The frequencies and angles are formed in float32 exactly as the checkpoints were trained, so
    a position gives the same rotation bits as the reference at any offset."""
    k = torch.arange(head_dim // 2, device=positions.device, dtype=torch.float32)
    freqs = torch.exp(k * (-math.log(max_period) * 2 / head_dim))
    angles = positions.to(torch.float32)[..., None] * freqs
    return angles.cos()[:, :, None], angles.sin()[:, :, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, T, heads, hd] by pairs of adjacent features (2i, 2i + 1), in float32."""
    pairs = x.float().unflatten(-1, (-1, 2))
    re, im = pairs[..., 0], pairs[..., 1]
    out = torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1)
    return out.flatten(-2).to(x.dtype)


class TransformerLayer(nn.Module):
    """Pre-LN block: x + Attn(LN(x)), then x + W2 gelu_tanh(W1 LN(x)); no biases in the
    projections; optional per-channel LayerScale on both branches (Mimi); fused QKV with
    queries first, then all key heads, then all value heads."""

    def __init__(self, index: int, dim: int, heads: int, kv_heads: int, head_dim: int, ffn_dim: int, layer_scale: bool):
        super().__init__()
        self.index, self.heads, self.kv_heads, self.head_dim = index, heads, kv_heads, head_dim
        self.attn_norm = nn.LayerNorm(dim, eps=1e-5)
        self.qkv = nn.Linear(dim, (heads + 2 * kv_heads) * head_dim, bias=False)
        self.attn_out = nn.Linear(heads * head_dim, dim, bias=False)
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-5)
        self.ffn_in = nn.Linear(dim, ffn_dim, bias=False)
        self.ffn_out = nn.Linear(ffn_dim, dim, bias=False)
        self.attn_scale = nn.Parameter(torch.ones(dim)) if layer_scale else None
        self.ffn_scale = nn.Parameter(torch.ones(dim)) if layer_scale else None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attend: Attend) -> torch.Tensor:
        B, T, _ = x.shape
        H, Hkv = self.heads, self.kv_heads
        qkv = self.qkv(self.attn_norm(x)).view(B, T, H + 2 * Hkv, self.head_dim)
        # Queries and keys rotate in one call: the same arithmetic per element as two calls.
        qk = apply_rope(qkv[:, :, : H + Hkv], cos, sin)
        q, k, v = qk[:, :, :H], qk[:, :, H:], qkv[:, :, H + Hkv :]
        a = self.attn_out(attend(self.index, q, k, v).transpose(1, 2).reshape(B, T, H * self.head_dim))
        x = x + (a if self.attn_scale is None else a * self.attn_scale)
        f = self.ffn_out(F.gelu(self.ffn_in(self.ffn_norm(x)), approximate="tanh"))
        return x + (f if self.ffn_scale is None else f * self.ffn_scale)


def layer_keys(ours: str, theirs: str, layer_scale: bool) -> dict[str, str]:
    """Our parameter names -> the checkpoint's, for one TransformerLayer."""
    names = {
        "attn_norm.weight": "norm1.weight",
        "attn_norm.bias": "norm1.bias",
        "qkv.weight": "self_attn.in_proj.weight",
        "attn_out.weight": "self_attn.out_proj.weight",
        "ffn_norm.weight": "norm2.weight",
        "ffn_norm.bias": "norm2.bias",
        "ffn_in.weight": "linear1.weight",
        "ffn_out.weight": "linear2.weight",
    }
    if layer_scale:
        names |= {"attn_scale": "layer_scale_1.scale", "ffn_scale": "layer_scale_2.scale"}
    return {f"{ours}{o}": f"{theirs}{t}" for o, t in names.items()}


def load_mapped(module: nn.Module, state: dict[str, torch.Tensor], keys: dict[str, str]) -> set[str]:
    """Load `module` strictly from checkpoint tensors named by `keys` (ours -> theirs).

    Shapes must match exactly, and every parameter of the module must be named: a mapping that
    misses or misnames one fails here. Returns the checkpoint keys used."""
    missing = [t for t in keys.values() if t not in state]
    if missing:
        raise KeyError(f"checkpoint lacks {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    module.load_state_dict({o: state[t] for o, t in keys.items()}, strict=True)
    return set(keys.values())
