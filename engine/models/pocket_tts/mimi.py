"""The Mimi decoder, streaming: normalised LM latents (12.5 Hz) -> 24 kHz audio.

Per call, for n frames of each stream in the batch:
    latent * emb_std + emb_mean -> 1x1 conv to the decoder width -> depthwise transposed conv
    x16 (200 Hz) -> windowed causal transformer (LayerScale) -> SEANet decoder -> n * 1920 samples.
Output is causal with no lookahead: a frame's samples depend only on frames up to it, and
decoding n frames in one call equals n one-frame calls.

Each stream's state (`DecoderState`) is explicit and stacked on dim 0: conv tails, transposed-
conv overlaps, the transformer's last context - 1 keys/values per layer, and its position. A
batch may mix streams at different positions; every stream in a call decodes the same n.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.pocket_tts.config import MimiConfig, MimiTransformerConfig
from engine.models.pocket_tts.layers import TransformerLayer, layer_keys, rope_tables
from engine.models.pocket_tts.seanet import CausalConv1d, CausalConvTranspose1d, SeanetDecoder

FADE_IN_DIVISOR = 200  # each chunk's first sample_rate / 200 samples (5 ms) fade in, as the reference does


class MimiTransformer(nn.Module):
    """Causal attention over a sliding window: a query sees itself and the context - 1 positions
    before it. Stateless over a whole sequence from position 0 (the encoder), or streaming with the
    window's keys/values carried in a state dict (the decoder)."""

    def __init__(self, cfg: MimiTransformerConfig):
        super().__init__()
        self.cfg = cfg
        hd = cfg.head_dim
        self.layers = nn.ModuleList(
            TransformerLayer(i, cfg.d_model, cfg.num_heads, cfg.num_heads, hd, cfg.dim_feedforward, layer_scale=True)
            for i in range(cfg.num_layers)
        )

    @property
    def window(self) -> int:
        """Past positions a stream must keep."""
        return self.cfg.context - 1

    def init_state(self, batch: int, like: torch.Tensor) -> dict[str, torch.Tensor]:
        """An empty window (masked until filled) for `batch` streams: k{i}, v{i} [B, W, heads, hd]."""
        shape = (batch, self.window, self.cfg.num_heads, self.cfg.head_dim)
        return {f"{kv}{i}": like.new_zeros(shape) for i in range(len(self.layers)) for kv in "kv"}

    def checkpoint_keys(self, theirs: str) -> dict[str, str]:
        keys: dict[str, str] = {}
        for i in range(len(self.layers)):
            keys |= layer_keys(f"layers.{i}.", f"{theirs}.transformer.layers.{i}.", layer_scale=True)
        return keys

    def forward(self, x: torch.Tensor, pos: torch.Tensor, state: dict[str, torch.Tensor] | None) -> torch.Tensor:
        """x [B, T, C] at positions pos[b] + t -> [B, T, C]. `state` None: pos must be 0."""
        B, T, _ = x.shape
        W = 0 if state is None else self.window
        dev = x.device
        # Key j of the [past W | new T] sequence sits W - j + t positions before query t.
        delta = torch.arange(T, device=dev)[:, None] + W - torch.arange(W + T, device=dev)[None, :]
        mask = ((delta >= 0) & (delta < self.cfg.context))[None, None]
        if W:  # a stream with fewer than W positions behind it has empty (masked) slots
            filled = torch.arange(W + T, device=dev)[None, :] >= (W - pos)[:, None]
            mask = mask & filled[:, None, None, :]

        def attend(i: int, q, k, v) -> torch.Tensor:
            if state is not None:
                k = torch.cat([state[f"k{i}"], k], dim=1)
                v = torch.cat([state[f"v{i}"], v], dim=1)
                state[f"k{i}"], state[f"v{i}"] = k[:, T:].contiguous(), v[:, T:].contiguous()
            return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask)

        positions = pos[:, None] + torch.arange(T, device=dev)[None, :]
        cos, sin = rope_tables(positions, self.cfg.head_dim, self.cfg.max_period)
        for layer in self.layers:
            x = layer(x, cos, sin, attend)
        return x


@dataclass
class DecoderState:
    """Streaming state of B decoder streams; every tensor has the streams on dim 0."""

    pos: torch.Tensor  # [B] long: transformer positions (200 Hz steps) decoded so far
    tensors: dict[str, torch.Tensor]

    @property
    def batch(self) -> int:
        return self.pos.shape[0]

    def select(self, rows: list[int] | torch.Tensor) -> DecoderState:
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.pos.device)
        return DecoderState(self.pos[idx], {k: t[idx] for k, t in self.tensors.items()})

    def split(self) -> list[DecoderState]:
        return [self.select([b]) for b in range(self.batch)]

    @staticmethod
    def stack(states: list[DecoderState]) -> DecoderState:
        keys = states[0].tensors
        return DecoderState(
            torch.cat([s.pos for s in states]), {k: torch.cat([s.tensors[k] for s in states]) for k in keys}
        )

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


class MimiDecoder(nn.Module):
    def __init__(self, cfg: MimiConfig):
        super().__init__()
        self.cfg = cfg
        L, C, s = cfg.quantizer.dimension, cfg.dec_seanet.dimension, cfg.steps_per_frame
        self.frame_size = cfg.frame_size
        self.steps_per_frame = s
        self.register_buffer("latent_std", torch.ones(L))
        self.register_buffer("latent_mean", torch.zeros(L))
        self.in_proj = CausalConv1d(L, cfg.quantizer.output_dimension, 1, bias=False)
        self.upsample = CausalConvTranspose1d(cfg.quantizer.output_dimension, C, 2 * s, s, groups=C, bias=False)
        self.transformer = MimiTransformer(cfg.dec_transformer)
        self.seanet = SeanetDecoder(cfg.dec_seanet)
        self.convs = []  # the streaming convolutions, each keeping its tail under its module path
        for name, m in self.named_modules():
            if isinstance(m, (CausalConv1d, CausalConvTranspose1d)):
                m.slot = name
                self.convs.append(m)
        fade = cfg.sample_rate // FADE_IN_DIVISOR
        self.register_buffer("fade", torch.linspace(0, 1, fade), persistent=False)

    def checkpoint_keys(self) -> dict[str, str]:
        keys = {
            "latent_std": "flow_lm.emb_std",
            "latent_mean": "flow_lm.emb_mean",
            "in_proj.conv.weight": "mimi.quantizer.output_proj.weight",
            "upsample.convtr.weight": "mimi.upsample.convtr.convtr.weight",
        }
        keys |= {f"transformer.{o}": t for o, t in self.transformer.checkpoint_keys("mimi.decoder_transformer").items()}
        return keys | {f"seanet.{o}": t for o, t in self.seanet.checkpoint_keys("mimi.decoder").items()}

    def init_state(self, batch: int = 1) -> DecoderState:
        """Fresh state for `batch` streams. The reference starts every text chunk from one."""
        ref = self.latent_std
        tensors = {c.slot: ref.new_zeros(batch, *c.state_shape()) for c in self.convs if c.state_shape()[-1] > 0}
        tensors |= self.transformer.init_state(batch, ref)
        return DecoderState(torch.zeros(batch, dtype=torch.long, device=ref.device), tensors)

    def forward(self, latents: torch.Tensor, state: DecoderState, fade_in: bool = True) -> torch.Tensor:
        """latents [B, n, 32] (normalised, as the LM emits them) -> audio [B, n * frame_size].

        Updates `state` in place. With `fade_in`, a stream's first samples (where its position is 0)
        are faded in over 5 ms, as the reference does at the start of each chunk."""
        B, n, _ = latents.shape
        if state.batch != B:
            raise ValueError(f"state holds {state.batch} streams, latents {B}")
        start = state.pos
        x = (latents * self.latent_std + self.latent_mean).transpose(1, 2)
        x = self.upsample(self.in_proj(x), state.tensors)  # [B, C, n * steps_per_frame]
        x = self.transformer(x.transpose(1, 2), start, state.tensors).transpose(1, 2)
        audio = self.seanet(x, state.tensors)[:, 0]
        state.pos = start + n * self.steps_per_frame
        if fade_in and bool((start == 0).any()):
            f = self.fade.to(audio.dtype)
            head = audio[:, : f.numel()]
            audio[:, : f.numel()] = torch.where((start == 0)[:, None], head * f[: head.shape[1]], head)
        return audio
