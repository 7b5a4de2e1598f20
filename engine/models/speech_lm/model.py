"""Decoder-only speech-token transformer: RMSNorm, rotary positions, SwiGLU, GQA.

Attention reads and writes keys/values through the engine's paged cache when one is
given (engine.runtime.attention), and falls back to plain causal attention otherwise,
which the tests use as the reference the paged path must match.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.speech_lm.config import ModelConfig
from engine.runtime.attention import PagedAttention, paged_attention
from engine.runtime.family import KVLayout
from engine.weights import load_weights, save_weights

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 so bf16/fp16 runs keep the same scale. One fused op, not
        # five: a decode step runs 13 of these, and on CPU each op costs microseconds.
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).to(x.dtype)


def rope_tables(cfg: ModelConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    half = cfg.head_dim // 2
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(half, device=device).float() / half))
    angles = torch.outer(torch.arange(cfg.max_positions, device=device).float(), inv)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, T, heads, head_dim]; cos/sin: [B, T, head_dim/2] (rotate-half layout)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    c, s = cos.unsqueeze(2), sin.unsqueeze(2)
    return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv, self.hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wqkv = nn.Linear(cfg.dim, (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(self, x, cos, sin, paged: PagedAttention | None) -> torch.Tensor:
        B, T, _ = x.shape
        qkv = self.wqkv(x).view(B, T, self.n_heads + 2 * self.n_kv, self.hd)
        # Queries and keys rotate in one call (the same ops per element as two calls).
        q, k = apply_rope(qkv[:, :, : self.n_heads + self.n_kv], cos, sin).split([self.n_heads, self.n_kv], 2)
        v = qkv[:, :, self.n_heads + self.n_kv :]
        if paged is None:
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=True
            )
        else:
            out = paged_attention(q, k, v, paged, self.layer)
        return self.wo(out.transpose(1, 2).reshape(B, T, -1))


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w13 = nn.Linear(cfg.dim, 2 * cfg.ffn_dim, bias=False)
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg, layer)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn = SwiGLU(cfg)
        self.drop = nn.Dropout(0.0)  # residual dropout: a trainer sets p; identity in eval()

    def forward(self, x, cos, sin, paged):
        x = x + self.drop(self.attn(self.attn_norm(x), cos, sin, paged))
        return x + self.drop(self.ffn(self.ffn_norm(x)))


class SpeechLM(nn.Module):
    """Maps frames [B, T, C] to next-frame logits, one head per channel.

    The frame head is the extension point: a model whose frames are a continuous
    latent would swap `heads` (and the sampler) while the paged attention,
    scheduler and streaming stay as they are.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        vocabs = [cfg.channel_vocab(c) for c in range(cfg.num_channels)]
        self.embeds = nn.ModuleList(nn.Embedding(v, cfg.dim) for v in vocabs)
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.heads = nn.ModuleList(nn.Linear(cfg.dim, v, bias=False) for v in vocabs)
        # Zero at first, so a model trained without speaker vectors starts out unchanged.
        self.speaker_proj = nn.Linear(cfg.speaker_dim, cfg.dim, bias=False) if cfg.speaker_dim else None
        if self.speaker_proj is not None:
            nn.init.zeros_(self.speaker_proj.weight)
        self.max_vocab = max(vocabs)
        # Set by fuse_for_inference(): every channel's table and head as one tensor. Buffers,
        # so that .to() moves them with the model; never saved.
        self.register_buffer("frame_embed", None, persistent=False)
        self.register_buffer("embed_offsets", None, persistent=False)
        self.frame_head: nn.Linear | None = None
        cos, sin = rope_tables(cfg, torch.device("cpu"))
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        # What the engine's model runner needs (engine.runtime.family.FamilyModel).
        self.kv_layout = KVLayout(cfg.n_layers, cfg.n_kv_heads, cfg.head_dim)
        self.max_positions = cfg.max_positions
        self.pad_frame = torch.tensor([cfg.text_pad] + [cfg.audio_pad] * cfg.num_codebooks, dtype=torch.long)

    @torch.no_grad()
    def fuse_for_inference(self) -> None:
        """Stack the channels' embedding tables into one table and their heads into one
        matrix, so a step looks its frame up in one op and computes all logits in one
        multiply instead of nine of each (on CPU each op has a fixed cost of
        microseconds). A head's rows are padded to the largest vocabulary with zero
        weights and a -inf bias, which is exactly what logits() returns there. The
        per-channel tables and heads are dropped (nothing packs or keeps them twice);
        the model is for inference from here on."""
        if self.frame_head is not None:
            return
        cfg, V, ref = self.cfg, self.max_vocab, self.heads[0].weight
        vocabs = [e.num_embeddings for e in self.embeds]
        self.embed_offsets = torch.tensor([0] + vocabs[:-1], device=ref.device).cumsum(0)
        self.frame_embed = torch.cat([e.weight for e in self.embeds])
        head = nn.Linear(cfg.dim, cfg.num_channels * V, bias=True).to(ref.device, ref.dtype)
        head.weight.zero_()
        head.bias.fill_(float("-inf"))
        for c, h in enumerate(self.heads):
            head.weight[c * V : c * V + h.out_features] = h.weight
            head.bias[c * V : c * V + h.out_features] = 0.0
        self.frame_head = head
        self.embeds, self.heads = nn.ModuleList(), nn.ModuleList()

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        if self.frame_embed is not None:
            return F.embedding(frames + self.embed_offsets, self.frame_embed).sum(-2)
        x = self.embeds[0](frames[..., 0])
        for c in range(1, self.cfg.num_channels):
            x = x + self.embeds[c](frames[..., c])
        return x

    def forward(
        self,
        frames: torch.Tensor,
        positions: torch.Tensor,
        paged: PagedAttention | None = None,
        speaker: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Returns final hidden states [B, T, dim]. `speaker` [B, speaker_dim]: each row's
        voice vector, added (projected) where a row is at position 0; zeros for no voice."""
        if int(positions.max()) >= self.cfg.max_positions:
            raise ValueError(f"position {int(positions.max())} exceeds max_positions {self.cfg.max_positions}")
        x = self.embed(frames)
        if speaker is not None and self.speaker_proj is not None:
            # Only the first frame: every later one reads it through attention, as it reads
            # the reference codes, and the K/V of the prefix is all that depends on it.
            x = x + (positions == 0)[..., None] * self.speaker_proj(speaker.to(x.dtype))[:, None, :]
        # Tables stay float32 even when the weights are bf16/fp16.
        cos, sin = self.rope_cos[positions].float(), self.rope_sin[positions].float()
        for layer in self.layers:
            x = layer(x, cos, sin, paged)
        return self.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [N, dim] -> logits [N, C, max_vocab], float32, -inf past each channel's vocab."""
        if self.frame_head is not None:
            return self.frame_head(hidden).float().view(hidden.shape[0], self.cfg.num_channels, self.max_vocab)
        out = hidden.new_full(
            (hidden.shape[0], self.cfg.num_channels, self.max_vocab), float("-inf"), dtype=torch.float32
        )
        for c, head in enumerate(self.heads):
            out[:, c, : head.out_features] = head(hidden).float()
        return out


def load_model(
    model_dir: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> SpeechLM:
    """Build a SpeechLM from `config.json` + `model.safetensors` in `model_dir`."""
    model_dir = Path(model_dir)
    cfg = ModelConfig.load(model_dir / CONFIG_FILE)
    model = SpeechLM(cfg)
    state = load_weights(model_dir / WEIGHTS_FILE)
    model.load_state_dict(state, strict=True)
    return model.to(device=device, dtype=dtype).eval()


def save_model(model: SpeechLM, model_dir: str | Path, int8: bool = False) -> None:
    """Write config.json + model.safetensors (int8 matrices when shipping; see engine.weights)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    model.cfg.save(model_dir / CONFIG_FILE)
    save_weights(model_dir / WEIGHTS_FILE, model.state_dict(), int8=int8)
