"""Owns the model and the K/V block pool; turns scheduled work into one forward pass."""

from __future__ import annotations

import torch

from engine.config import CacheConfig
from engine.runtime.attention import PagedAttention, SharedPrefix
from engine.runtime.family import KVLayout
from engine.runtime.sequence import Sequence


def blocks_for_budget(kv: KVLayout, cache: CacheConfig, dtype: torch.dtype) -> int:
    if cache.num_blocks is not None:
        return cache.num_blocks
    per_block = 2 * kv.layers * cache.block_size * kv.kv_heads * kv.head_dim * torch.finfo(dtype).bits // 8
    return max(2, int(cache.memory_budget_mb * 2**20 // per_block))


def run_start(blocks: list[int]) -> int | None:
    """The first id if `blocks` are consecutive ids (read in place), else None."""
    return blocks[0] if blocks and blocks == list(range(blocks[0], blocks[0] + len(blocks))) else None


def padded_tables(tables: list[list[int]], width: int) -> torch.Tensor:
    """Block tables as one [B, width] tensor, zero-padded (one op, not one per row)."""
    return torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.long)


class ModelRunner:
    def __init__(self, model: torch.nn.Module, cache: CacheConfig, device: torch.device, dtype: torch.dtype):
        """`model`: a family's network (engine.runtime.family.FamilyModel)."""
        self.model = model
        self.device = device
        self.block_size = cache.block_size
        kv = model.kv_layout
        self.num_blocks = blocks_for_budget(kv, cache, dtype)
        shape = (kv.layers, self.num_blocks, cache.block_size, kv.kv_heads, kv.head_dim)
        self.k_cache = torch.zeros(shape, device=device, dtype=dtype)
        self.v_cache = torch.zeros(shape, device=device, dtype=dtype)
        self.k_buf = self.v_buf = torch.empty(0, device=device, dtype=dtype)
        self.p_buf = torch.empty((2, 0, 0), device=device, dtype=dtype)
        # Decode attention split into shared voice prefix + own blocks (model.SharedPrefix);
        # it needs the CPU flash kernel's log-sum-exp. Off: each row attends to its whole
        # context (EngineConfig.decode_attention; the tests' reference).
        self.split_decode = device.type == "cpu"
        self.pad_frame = model.pad_frame
        proj = getattr(model, "speaker_proj", None)  # a model reading a speaker vector at position 0
        self.speaker_dim = proj.in_features if proj is not None else 0

    def copy_rows(self, src: int, dst: int, n: int) -> None:
        self.k_cache[:, dst, :n] = self.k_cache[:, src, :n]
        self.v_cache[:, dst, :n] = self.v_cache[:, src, :n]

    def _shared_prefixes(self, items: list[tuple[Sequence, int, int]]) -> tuple[list[SharedPrefix], list[int]]:
        """Group decode rows by the full voice-prefix blocks they read.

        Whether a row takes this path depends on that row alone (its prefix holds
        a full block), never on the batch: a row alone is a group of one.
        Returns the groups and, per row, how many leading blocks they cover."""
        groups: dict[tuple[int, ...], list[int]] = {}
        skip = [0] * len(items)
        for b, (seq, start, _) in enumerate(items):
            n = seq.prefix_len // self.block_size
            if n and start >= n * self.block_size:
                groups.setdefault(tuple(seq.block_table[:n]), []).append(b)
                skip[b] = n
        return [SharedPrefix(torch.tensor(k), torch.tensor(v), run_start(list(k))) for k, v in groups.items()], skip

    def _prefix_buffers(self, shared: list[SharedPrefix] | None) -> torch.Tensor | None:
        if not shared:
            return None
        n = max(len(g.blocks) for g in shared)
        if self.p_buf.shape[1] < n:  # grown, never shrunk, like the main workspace
            self.p_buf = torch.empty((2, n, self.k_cache[0, 0].numel()), device=self.device, dtype=self.k_cache.dtype)
        return self.p_buf

    def _speakers(self, items: list[tuple[Sequence, int, int]]) -> torch.Tensor:
        """Each row's speaker vector [B, speaker_dim]; zeros for a row without one."""
        out = torch.zeros(len(items), self.speaker_dim)
        for b, (seq, _, _) in enumerate(items):
            if seq.speaker is not None:
                out[b] = seq.speaker
        return out

    def forward(self, items: list[tuple[Sequence, int, int]]) -> torch.Tensor:
        """Run frames [start, start + n) of each sequence; K/V for them land in the pool.

        Returns the hidden state [B, dim] at each item's last frame (on the model's device).
        """
        bs, B = self.block_size, len(items)
        T = max(n for _, _, n in items)
        nb = max(len(seq.block_table) for seq, _, _ in items)
        if T == 1:  # decode: one frame per row, gathered in one op
            frames = torch.stack([seq.tokens[start] for seq, start, _ in items])[:, None]
        else:
            frames = self.pad_frame.repeat(B, T, 1)
            for b, (seq, start, n) in enumerate(items):
                frames[b, :n] = seq.tokens[start : start + n]
        starts = torch.tensor([start for _, start, _ in items])
        lens = torch.tensor([n for _, _, n in items])
        own = [seq.block_table for seq, _, _ in items]
        tables = padded_tables(own, nb)
        steps = torch.arange(T)
        positions = starts[:, None] + steps[None, :]  # [B, T]
        valid = steps[None, :] < lens[:, None]
        rows = torch.arange(B)[:, None].expand(B, T)[valid]
        pos = positions[valid]
        slots = tables[rows, pos // bs] * bs + pos % bs
        # Decode on CPU always takes the split path, even with no prefix to share, so
        # a row's kernels never depend on what else is in the batch.
        shared, key_pos = None, positions  # key_pos: each query's position within its table
        if T == 1 and self.split_decode:
            shared, skip = self._shared_prefixes(items)
            # From here on, tables and mask cover each row's blocks after its prefix.
            own = [seq.block_table[k:] for (seq, _, _), k in zip(items, skip)]
            nb = max(len(t) for t in own)
            tables = padded_tables(own, nb)
            key_pos = positions - (torch.tensor(skip) * bs)[:, None]
        mask = torch.arange(nb * bs)[None, None, :] <= key_pos[:, :, None]  # causal over the context
        # Padded query rows attend to key 0 only, so softmax never sees an empty row.
        mask &= valid[:, :, None]
        mask[:, :, 0] |= ~valid
        dev = self.device
        # An additive mask, built once per step rather than converted in every layer.
        if self.k_buf.shape[0] < B * nb:  # grow the gather workspace, never shrink it
            row = self.k_cache[0, 0].numel()
            self.k_buf = torch.empty((B * nb, row), device=dev, dtype=self.k_cache.dtype)
            self.v_buf = torch.empty_like(self.k_buf)
        bias = torch.zeros(mask.shape, dtype=self.k_cache.dtype).masked_fill_(~mask, float("-inf"))
        paged = PagedAttention(
            k_cache=self.k_cache,
            v_cache=self.v_cache,
            k_buf=self.k_buf,
            v_buf=self.v_buf,
            rows=None if bool(valid.all()) else valid.flatten().nonzero().squeeze(1).to(dev),  # None: no padding
            slots=slots.to(dev),
            block_tables=tables.to(dev),
            mask=bias[:, None].to(dev),
            shared=shared,
            p_buf=self._prefix_buffers(shared),
            run=run_start(own[0]) if B == 1 else None,
        )
        positions = torch.where(valid, positions, 0)
        extra = {}
        if self.speaker_dim and any(start == 0 for _, start, _ in items):  # a prefill from the voice's first frame
            extra["speaker"] = self._speakers(items).to(dev)
        hidden = self.model(frames.to(dev), positions.to(dev), paged, **extra)
        return hidden[torch.arange(B, device=dev), (lens - 1).to(dev)]
