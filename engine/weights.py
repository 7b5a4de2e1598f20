"""Weight files: safetensors, optionally with int8 matrices to keep shipped models small.

A shipped model lives in git, where every version stays in history, so its
large matrices are stored as int8 with one float scale per output row
(symmetric, absmax): half the size of fp16. Each value lands within half a
quantisation step of the float one (tests/test_weights.py also checks that an
int8 LM's predictions agree with the float LM's). Loading dequantises back to
float32: inference itself runs in the engine's dtype.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

SCALE_SUFFIX = ".int8_scale"
# Smaller tensors (norms, biases, small convs) stay float: they are a tiny share of
# the bytes and the most sensitive to rounding.
MIN_QUANT_NUMEL = 65536


def quantize_int8(w: torch.Tensor, scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """w [out, ...] -> (int8 codes of the same shape, float32 scale [out]).
    `scale`: per-row steps to use instead of absmax / 127 (none may be smaller)."""
    rows = w.detach().float().reshape(w.shape[0], -1)
    if scale is None:
        scale = rows.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    q = torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.reshape(w.shape), scale


def save_weights(path: str | Path, state: dict[str, torch.Tensor], int8: bool = False) -> None:
    from safetensors.torch import save_file

    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        t = t.detach().contiguous().cpu()
        if int8 and t.is_floating_point() and t.dim() >= 2 and t.numel() >= MIN_QUANT_NUMEL:
            out[name], out[name + SCALE_SUFFIX] = quantize_int8(t)
        else:
            out[name] = t
    save_file(out, str(path))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Float tensors by name; int8 matrices come back dequantised to float32."""
    from safetensors.torch import load_file

    raw = load_file(str(path))
    state = {}
    for name, t in raw.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        scale = raw.get(name + SCALE_SUFFIX)
        if scale is not None:
            t = (t.float().reshape(t.shape[0], -1) * scale[:, None].float()).reshape(t.shape)
        state[name] = t
    return state


def tensor_digest(state: dict[str, torch.Tensor], prefix: str = "") -> str:
    """Short hash of the tensors whose names start with `prefix` (order-independent of dict order)."""
    h = hashlib.sha256()
    for name in sorted(k for k in state if k.startswith(prefix)):
        h.update(name.encode())
        h.update(state[name].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
