"""Windows of several voices in one codec call, each row through its own voice adapter.

Why: a voice adapter (engine.codecs.adapt) replaces only one-dimensional parameters (biases,
norm gains, layer scales); the large matrices are every voice's. So windows of different voices
can share each layer's matrix multiply, every row then adding its own biases and gains. When
many conversations start at once, in several voices, their first chunks have equal lengths but
went to the codec one voice at a time, each call paying the codec's fixed cost for one or two
windows: the audio stage, not the LM, ran out of time (docs/benchmarks.md).

A block of the codec runs its layers through a `Layers` object: `PLAIN` runs each layer as it
is; `RowLayers` runs the same layer without its one-dimensional parameters and applies each
row's own. Rows never mix, and on the packed kernels the engine decodes with (engine.packed) a
row's samples do not depend on what else is in the call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.packed import PackedConv1d, PackedLinear


class Layers:
    """Runs a block's layers with their own parameters."""

    def __call__(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return layer(x)

    def param(self, module: nn.Module, name: str) -> torch.Tensor:
        """A block's own one-dimensional parameter, to scale a channels-last tensor."""
        return getattr(module, name)


PLAIN = Layers()


class RowLayers(Layers):
    """Runs layers with each batch row's own one-dimensional parameters.

    `names`: each layer's name as adapters key it ("dec.3.conv1"); `rows`: each adaptable
    parameter's values by full name ("dec.3.conv1.bias"), [B, n] (or [1, n], shared)."""

    def __init__(self, names: dict[nn.Module, str], rows: dict[str, torch.Tensor]):
        self.names, self.rows = names, rows

    def _row(self, layer: nn.Module, name: str) -> torch.Tensor:
        return self.rows[f"{self.names[layer]}.{name}"]

    def param(self, module: nn.Module, name: str) -> torch.Tensor:
        return self._row(module, name)[:, None, :]

    def __call__(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if isinstance(layer, nn.Sequential):
            for child in layer:
                x = self(child, x)
            return x
        # Channels first [B, C, T] out of convolutions and group norms, last [B, T, C] out of the rest.
        # (In place where the layer's output is a fresh tensor: a decode call runs ~60 of these.)
        if isinstance(layer, PackedConv1d):
            return layer(x, with_bias=False).add_(self._row(layer, "bias")[:, :, None])
        if isinstance(layer, PackedLinear):
            return layer(x, with_bias=False).add_(self._row(layer, "bias")[:, None, :])
        if isinstance(layer, nn.Conv1d):
            y = F.conv1d(x, layer.weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)
            return y.add_(self._row(layer, "bias")[:, :, None])
        if isinstance(layer, nn.Linear):
            return F.linear(x, layer.weight).add_(self._row(layer, "bias")[:, None, :])
        if isinstance(layer, nn.GroupNorm):
            y = F.group_norm(x, layer.num_groups, eps=layer.eps)
            return torch.addcmul(self._row(layer, "bias")[:, :, None], y, self._row(layer, "weight")[:, :, None])
        if isinstance(layer, nn.LayerNorm):
            y = F.layer_norm(x, layer.normalized_shape, eps=layer.eps)
            return torch.addcmul(self._row(layer, "bias")[:, None, :], y, self._row(layer, "weight")[:, None, :])
        if isinstance(layer, nn.Upsample):
            return layer(x)  # nothing to adapt
        return layer(x, self)  # a block: it runs its own layers through this object


def row_values(base: dict[str, torch.Tensor], adapters: list[dict | None]) -> dict[str, torch.Tensor]:
    """Each adaptable parameter's values per row, [B, n]: the row's adapter's, else the codec's own
    (`base`). One adapter for every row gives [1, n] (broadcast: the same arithmetic per element)."""
    if all(a is adapters[0] for a in adapters):
        source = adapters[0] or base
        return {name: source[name][None] for name in base}
    return {name: torch.stack([(a or base)[name] for a in adapters]) for name in base}
