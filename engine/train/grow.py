"""Deepen a trained LM without changing what it computes (block expansion).

The default LM's held-out codebook loss sits at its training loss (1.77 against
~1.8 with self-feed, session 14): it underfits, and more steps on the same data
stopped paying (session 15). A deeper model started from scratch would need many
sessions here; instead new blocks are inserted between the trained ones as
copies of the block before them with their two output projections (attention
`wo`, feed-forward `w2`) zeroed. Each new block then adds exactly zero to the
residual stream, so the grown model starts with the old one's outputs and loss,
and training moves the new blocks away from identity (the LLaMA Pro recipe,
arXiv 2401.02415, there for adding knowledge; here for capacity).
"""
from __future__ import annotations

import re

import torch

LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")
ZEROED = ("attn.wo.weight", "ffn.w2.weight")  # the two writes of a block into the residual stream


def layer_count(state: dict[str, torch.Tensor]) -> int:
    return 1 + max(int(m.group(1)) for k in state if (m := LAYER.match(k)))


def grow_layers(state: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """A state dict of `layers` blocks from one with fewer: the old blocks in order, split
    into as many even groups as there are new blocks, each group followed by a new block
    copied from its last one with its output projections zeroed."""
    out: dict[str, torch.Tensor] = {}
    by_layer: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in state.items():
        if m := LAYER.match(k):
            by_layer.setdefault(int(m.group(1)), {})[m.group(2)] = v
        else:
            out[k] = v
    old = len(by_layer)
    if layers < old:
        raise ValueError(f"cannot grow {old} layers to {layers}")
    added = layers - old
    groups = max(added, 1)
    order: list[tuple[int, bool]] = []  # (source block, is new), in the grown model's order
    for g in range(groups):
        group = range(g * old // groups, (g + 1) * old // groups)
        order += [(i, False) for i in group]
        if added:
            order.append((group[-1], True))
    for new_index, (source, fresh) in enumerate(order):
        for name, v in by_layer[source].items():
            out[f"layers.{new_index}.{name}"] = torch.zeros_like(v) if fresh and name in ZEROED else v.clone()
    return out
