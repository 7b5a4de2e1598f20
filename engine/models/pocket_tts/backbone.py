"""The FlowLM backbone: a causal transformer over [voice prefix | text | latent frames].

Inputs are embeddings built by the `embed_*` methods, so one forward can take any mix:
    position 0            bos_before_voice                 (if the checkpoint has it)
    1 .. Tv               speaker_proj(voice latents)       the shareable voice prefix
    then                  text embeddings of one chunk
    then                  input_linear(latent) per frame    a NaN latent stands for BOS
Positions are absolute and enter only through RoPE. The output is the final-normed hidden
state; `cond` (optional z_proj) turns it into what the EOS and flow heads read.

Attention has three modes, chosen per call:
- `paged`: the engine's paged KV pool (engine.runtime.attention), any rows, any positions;
- `cache`: a `DenseKV` of streams that advance in lockstep from position 0;
- neither: plain causal attention over the given sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.pocket_tts.config import FlowLMConfig
from engine.models.pocket_tts.layers import TransformerLayer, layer_keys, rope_tables
from engine.runtime.attention import PagedAttention, paged_attention


@dataclass
class DenseKV:
    """Keys (rotated) and values of B streams at the same length, per layer [B, S, Hkv, hd].

    The unpaged path, for tests and single-stream use; the engine uses its paged pool instead."""

    k: list[torch.Tensor | None] = field(default_factory=list)
    v: list[torch.Tensor | None] = field(default_factory=list)

    @property
    def length(self) -> int:
        return 0 if not self.k or self.k[0] is None else self.k[0].shape[1]

    def fork(self) -> DenseKV:
        """A copy that can grow without touching this one (a voice prefix reused per chunk)."""
        return DenseKV(list(self.k), list(self.v))  # tensors are never written in place


class Backbone(nn.Module):
    def __init__(self, cfg: FlowLMConfig, latent_dim: int, voice_dim: int):
        super().__init__()
        t, lut = cfg.transformer, cfg.lookup_table
        self.cfg = cfg
        # The paged pool's layout: per layer and position, n_kv_heads x head_dim keys and values.
        self.n_layers, self.n_heads = t.num_layers, t.num_heads
        self.n_kv_heads, self.head_dim = t.kv_heads, t.head_dim
        self.max_period = float(t.max_period)
        d = t.d_model
        # n_bins + 1 rows: the last is a padding id that no text produces.
        self.text_table = nn.Embedding(lut.n_bins + 1, lut.rank or d)
        self.text_proj = nn.Linear(lut.rank, d, bias=False) if lut.rank else None
        self.speaker_proj = nn.Linear(voice_dim, d, bias=False)
        self.voice_bos = nn.Parameter(torch.zeros(1, 1, d)) if cfg.insert_bos_before_voice else None
        self.latent_bos = nn.Parameter(torch.zeros(latent_dim))
        self.latent_in = nn.Linear(latent_dim, d, bias=False)
        self.layers = nn.ModuleList(
            TransformerLayer(i, d, t.num_heads, t.kv_heads, t.head_dim, t.ffn_dim, layer_scale=False)
            for i in range(t.num_layers)
        )
        self.out_norm = nn.LayerNorm(d, eps=1e-5)
        self.z_proj = nn.Linear(d, cfg.z_dim, bias=False) if cfg.z_dim else None
        self.eos = nn.Linear(cfg.cond_dim, 1)

    def checkpoint_keys(self) -> dict[str, str]:
        """Our parameter names -> the reference state dict's."""
        p = "flow_lm."
        keys = {
            "text_table.weight": p + "conditioner.embed.weight",
            "speaker_proj.weight": p + "speaker_proj_weight",
            "latent_bos": p + "bos_emb",
            "latent_in.weight": p + "input_linear.weight",
            "out_norm.weight": p + "out_norm.weight",
            "out_norm.bias": p + "out_norm.bias",
            "eos.weight": p + "out_eos.weight",
            "eos.bias": p + "out_eos.bias",
        }
        if self.text_proj is not None:
            keys["text_proj.weight"] = p + "conditioner.proj.weight"
        if self.voice_bos is not None:
            keys["voice_bos"] = p + "bos_before_voice"
        if self.z_proj is not None:
            keys["z_proj.weight"] = p + "z_proj.weight"
        for i in range(self.n_layers):
            keys |= layer_keys(f"layers.{i}.", f"{p}transformer.layers.{i}.", layer_scale=False)
        return keys

    # ---- inputs

    def embed_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, T] long -> [B, T, d]. No scaling and no positional term."""
        x = self.text_table(tokens)
        return x if self.text_proj is None else self.text_proj(x)

    def embed_voice(self, latents: torch.Tensor) -> torch.Tensor:
        """Mimi voice latents [B, Tv, voice_dim] (not normalised) -> the voice prefix [B, Tv (+1), d]."""
        x = self.speaker_proj(latents)
        if self.voice_bos is None:
            return x
        return torch.cat([self.voice_bos.expand(x.shape[0], 1, -1).to(x.dtype), x], dim=1)

    def embed_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, T, 32] -> [B, T, d]; NaN entries take the BOS latent's value."""
        latents = torch.where(torch.isnan(latents), self.latent_bos, latents)
        return self.latent_in(latents)

    # ---- the transformer

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        paged: PagedAttention | None = None,
        cache: DenseKV | None = None,
    ) -> torch.Tensor:
        """x [B, T, d] at absolute positions [B, T] -> out_norm(hidden) [B, T, d].

        With `cache`, positions must continue it (cache.length + arange(T) in every row)."""
        cos, sin = rope_tables(positions, self.head_dim, self.max_period)
        if paged is not None:
            attend = lambda i, q, k, v: paged_attention(q, k, v, paged, i)
        elif cache is not None:
            if not cache.k:
                cache.k, cache.v = [None] * self.n_layers, [None] * self.n_layers
            attend = lambda i, q, k, v: self._cached(i, q, k, v, cache)
        else:
            attend = lambda i, q, k, v: self._dense(q, k, v, 0)
        for layer in self.layers:
            x = layer(x, cos, sin, attend)
        return self.out_norm(x)

    def _cached(self, i: int, q, k, v, cache: DenseKV) -> torch.Tensor:
        past = 0 if cache.k[i] is None else cache.k[i].shape[1]
        if past:
            k, v = torch.cat([cache.k[i], k], dim=1), torch.cat([cache.v[i], v], dim=1)
        cache.k[i], cache.v[i] = k, v
        return self._dense(q, k, v, past)

    @staticmethod
    def _dense(q, k, v, past: int) -> torch.Tensor:
        """Causal attention of T queries at cache positions past.. over all S = past + T keys."""
        T, S = q.shape[1], k.shape[1]
        mask = None
        if T > 1 and past:
            mask = torch.arange(S, device=q.device)[None, :] <= past + torch.arange(T, device=q.device)[:, None]
        return F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=mask,
            is_causal=T > 1 and not past,
            enable_gqa=True,
        )

    # ---- outputs

    def cond(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final-normed hidden [..., d] -> the heads' input [..., z_dim or d]."""
        return hidden if self.z_proj is None else self.z_proj(hidden)

    def eos_logit(self, cond: torch.Tensor) -> torch.Tensor:
        """[..., cond_dim] -> [...]: the frame is end of speech when this exceeds the threshold."""
        return self.eos(cond)[..., 0]
