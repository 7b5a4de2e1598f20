"""Mimi's convolutional stacks (SEANet): causal convolutions that can stream.

A streaming convolution keeps what the next call needs in a state dict under its `slot` name:
    CausalConv1d            the last (k - 1) * dilation + 1 - stride inputs (zeros at the start)
    CausalConvTranspose1d   the last k - stride outputs, still missing later inputs' overlap
Every state tensor is [B, channels, n], so states of several streams stack on dim 0.
With `state=None` a convolution runs stateless over a whole sequence from a zero (or replicated
first-sample) left pad: how the encoder runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.pocket_tts.config import SeanetConfig

State = dict[str, torch.Tensor]


class CausalConv1d(nn.Module):
    """A causal conv. Its `nn.Conv1d` runs unpadded on [tail | input], so the engine's CPU packing
    (engine.packed.pack_for_cpu) can swap it for a packed kernel."""

    def __init__(
        self, cin: int, cout: int, k: int, stride: int = 1, dilation: int = 1, bias: bool = True, replicate=False
    ):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, k, stride, dilation=dilation, bias=bias)
        self.cin, self.replicate = cin, replicate
        self.keep = (k - 1) * dilation + 1 - stride
        self.slot = ""  # the key of its tail in a streaming state; set by the owner

    def state_shape(self) -> tuple[int, ...]:
        return (self.cin, self.keep)

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        """x [B, cin, T] with T a multiple of the stride -> [B, cout, T / stride]."""
        if self.keep:
            if state is not None:
                prev = state[self.slot]
            elif self.replicate:
                prev = x[..., :1].expand(-1, -1, self.keep)
            else:
                prev = x.new_zeros(x.shape[0], x.shape[1], self.keep)
            x = torch.cat([prev, x], dim=-1)
            if state is not None:
                state[self.slot] = x[..., -self.keep :].contiguous()
        return self.conv(x)


class CausalConvTranspose1d(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, groups: int = 1, bias: bool = True):
        super().__init__()
        self.convtr = nn.ConvTranspose1d(cin, cout, k, stride, groups=groups, bias=bias)
        self.cout, self.stride, self.groups = cout, stride, groups
        self.overlap = k - stride
        self.slot = ""

    def state_shape(self) -> tuple[int, ...]:
        return (self.cout, self.overlap)

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        """x [B, cin, T] -> [B, cout, T * stride]: the outputs complete once T inputs are in.

        The last k - stride outputs also get contributions from the next inputs: they are kept
        (without bias) and added to the next call's first outputs."""
        w, b = self.convtr.weight, self.convtr.bias
        y = F.conv_transpose1d(x, w, None, stride=self.stride, groups=self.groups)
        if self.overlap:
            if state is not None:
                y[..., : self.overlap] += state[self.slot]
                state[self.slot] = y[..., -self.overlap :].clone()
            y = y[..., : -self.overlap]
        return y if b is None else y + b[:, None]


class ResBlock(nn.Module):
    """x + conv(k=1)(ELU(conv(k, dilation)(ELU(x)))), the hidden width dim // compress."""

    def __init__(self, dim: int, hidden: int, k: int, dilation: int):
        super().__init__()
        self.conv1 = CausalConv1d(dim, hidden, k, dilation=dilation)
        self.conv2 = CausalConv1d(hidden, dim, 1)

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        return x + self.conv2(F.elu(self.conv1(F.elu(x), state)), state)


def _res_blocks(cfg: SeanetConfig, dim: int) -> nn.ModuleList:
    k, hidden = cfg.residual_kernel_size, dim // cfg.compress
    return nn.ModuleList(ResBlock(dim, hidden, k, cfg.dilation_base**j) for j in range(cfg.n_residual_layers))


def _conv_keys(ours: str, theirs: str) -> dict[str, str]:
    """A conv with bias; `ours`/`theirs` name the torch conv module on each side."""
    return {f"{ours}.{w}": f"{theirs}.{w}" for w in ("weight", "bias")}


def _res_keys(ours: str, theirs: str) -> dict[str, str]:
    # In the checkpoint a residual block is a list [ELU, conv, ELU, conv]: the convs sit at 1 and 3.
    return _conv_keys(f"{ours}.conv1.conv", f"{theirs}.block.1.conv") | _conv_keys(
        f"{ours}.conv2.conv", f"{theirs}.block.3.conv"
    )


class SeanetDecoder(nn.Module):
    """[B, dimension, T] -> [B, channels, T * hop]: a conv, then per ratio an ELU, a transposed
    conv upsampling by the ratio and halving the width, and residual blocks; then ELU and a conv."""

    def __init__(self, cfg: SeanetConfig):
        super().__init__()
        self.cfg = cfg
        width = cfg.n_filters * 2 ** len(cfg.ratios)
        self.conv_in = CausalConv1d(cfg.dimension, width, cfg.kernel_size)
        self.ups, self.res = nn.ModuleList(), nn.ModuleList()
        for r in cfg.ratios:
            self.ups.append(CausalConvTranspose1d(width, width // 2, 2 * r, r))
            width //= 2
            self.res.append(_res_blocks(cfg, width))
        self.conv_out = CausalConv1d(width, cfg.channels, cfg.last_kernel_size)

    def forward(self, x: torch.Tensor, state: State | None = None) -> torch.Tensor:
        x = self.conv_in(x, state)
        for up, blocks in zip(self.ups, self.res):
            x = up(F.elu(x), state)
            for block in blocks:
                x = block(x, state)
        return self.conv_out(F.elu(x), state)

    def checkpoint_keys(self, theirs: str) -> dict[str, str]:
        # The checkpoint numbers a flat layer list: conv, then per stage [ELU, convtr, res...], ELU, conv.
        keys, i, R = _conv_keys("conv_in.conv", f"{theirs}.model.0.conv"), 1, self.cfg.n_residual_layers
        for s in range(len(self.ups)):
            keys |= _conv_keys(f"ups.{s}.convtr", f"{theirs}.model.{i + 1}.convtr")
            for j in range(R):
                keys |= _res_keys(f"res.{s}.{j}", f"{theirs}.model.{i + 2 + j}")
            i += 2 + R
        return keys | _conv_keys("conv_out.conv", f"{theirs}.model.{i + 1}.conv")


class SeanetEncoder(nn.Module):
    """[B, channels, T] -> [B, dimension, T / hop], the decoder's mirror (ratios in reverse):
    a conv, then per ratio residual blocks, an ELU and a strided conv doubling the width."""

    def __init__(self, cfg: SeanetConfig):
        super().__init__()
        self.cfg = cfg
        width = cfg.n_filters
        self.conv_in = CausalConv1d(cfg.channels, width, cfg.kernel_size)
        self.res, self.downs = nn.ModuleList(), nn.ModuleList()
        for r in reversed(cfg.ratios):
            self.res.append(_res_blocks(cfg, width))
            self.downs.append(CausalConv1d(width, 2 * width, 2 * r, stride=r))
            width *= 2
        self.conv_out = CausalConv1d(width, cfg.dimension, cfg.last_kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for blocks, down in zip(self.res, self.downs):
            for block in blocks:
                x = block(x)
            x = down(F.elu(x))
        return self.conv_out(F.elu(x))

    def checkpoint_keys(self, theirs: str) -> dict[str, str]:
        # Flat list: conv, then per stage [res..., ELU, strided conv], ELU, conv.
        keys, i, R = _conv_keys("conv_in.conv", f"{theirs}.model.0.conv"), 1, self.cfg.n_residual_layers
        for s in range(len(self.downs)):
            for j in range(R):
                keys |= _res_keys(f"res.{s}.{j}", f"{theirs}.model.{i + j}")
            keys |= _conv_keys(f"downs.{s}.conv", f"{theirs}.model.{i + R + 1}.conv")
            i += 2 + R
        return keys | _conv_keys("conv_out.conv", f"{theirs}.model.{i + 1}.conv")
