"""Paged block pool with a content-addressed prefix cache.

A full block is named by a hash chained from its parent block's hash, the
sequence's conditioning key and the block's own frames, so two prompts share a
block exactly when everything before it and in it is the same. Free blocks keep
their hash and can be revived until the pool needs them; then the least
recently freed cached block is evicted. Free blocks that hold nothing cached
are used before any cached block is evicted.

Voices rarely end on a block border, so the tail of a voice prefix (the frames
after its last full block) is also saved, once, into a *snapshot* block. A later
utterance of that voice copies the snapshot into a fresh block of its own
(copy-on-write) and prefills only the text it adds.

A sequence's blocks are kept consecutive in the pool where the free list
allows (a new block is the one after the sequence's last when that one is free),
because a row whose blocks are consecutive is read in place by decode attention
instead of gathered. Blocks past a finished sequence's voice prefix are forgotten
when it is freed: they hold its own text and sampled frames, which no later prompt
repeats, so caching them would only age out the voices.

This module holds no tensors: copying rows between blocks is delegated to
`copy_rows(src, dst, n)`, which the model runner implements.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from engine.runtime.sequence import Sequence


def chain_hash(parent: bytes, key: bytes, content: bytes, partial: bool = False) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(parent)
    h.update(len(key).to_bytes(4, "little"))
    h.update(key)
    h.update(b"P" if partial else b"F")
    h.update(content)
    return h.digest()


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: bytes | None = None
    content: bytes = b""  # the ids it was hashed from; checked on every hit


@dataclass
class PrefixMatch:
    blocks: list[int]  # cached full blocks, in order
    hashes: list[bytes]
    snapshot: int | None  # cached tail of the voice prefix, if usable
    cached_tokens: int
    full_blocks: int  # full blocks looked up (hits + misses)


class BlockManager:
    def __init__(
        self, num_blocks: int, block_size: int, copy_rows: Callable[[int, int, int], None], caching: bool = True
    ):
        if num_blocks < 2:
            raise ValueError("the block pool needs at least 2 blocks")
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.copy_rows = copy_rows
        self.caching = caching  # False: every prompt is computed in full (a benchmark baseline)
        self.by_hash: dict[bytes, int] = {}
        self.free_plain: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))  # oldest first
        self.free_cached: OrderedDict[int, None] = OrderedDict()  # oldest first
        self.hashes: dict[int, list[bytes]] = {}  # seq_id -> chain hashes of its full blocks
        self.hits = self.misses = self.evictions = 0

    # ---- pool primitives -------------------------------------------------
    @property
    def num_free(self) -> int:
        return len(self.free_plain) + len(self.free_cached)

    def _take(self, after: int | None = None, last: bool = False) -> int:
        """A free block: `after + 1` when that one is free and holds nothing cached (so
        a sequence's blocks stay consecutive), else the oldest plain free block (the
        newest with `last`), else the least recently freed cached block (evicted)."""
        if after is not None and after + 1 in self.free_plain:
            bid = after + 1
            del self.free_plain[bid]
        elif self.free_plain:
            bid, _ = self.free_plain.popitem(last=last)
        else:
            bid, _ = self.free_cached.popitem(last=False)
            blk = self.blocks[bid]
            del self.by_hash[blk.hash]
            blk.hash, blk.content = None, b""
            self.evictions += 1
        self.blocks[bid].ref_count = 1
        return bid

    def _ref(self, bid: int) -> None:
        blk = self.blocks[bid]
        if blk.ref_count == 0:
            del self.free_cached[bid]  # revive a freed block that still holds its hash
        blk.ref_count += 1

    def _unref(self, bid: int) -> None:
        blk = self.blocks[bid]
        blk.ref_count -= 1
        assert blk.ref_count >= 0, f"block {bid} freed twice"
        if blk.ref_count == 0:
            if blk.hash is not None:
                self.free_cached[bid] = None
            else:
                self.free_plain[bid] = None

    def _forget(self, bid: int) -> None:
        """Unpublish a block only its last holder can use (it returns as plain)."""
        blk = self.blocks[bid]
        if blk.hash is not None and blk.ref_count == 1:
            del self.by_hash[blk.hash]
            blk.hash, blk.content = None, b""

    def _lookup(self, h: bytes, content: bytes) -> int | None:
        bid = self.by_hash.get(h)
        if bid is None or self.blocks[bid].content != content:
            return None
        return bid

    # ---- prefix matching ---------------------------------------------------
    def _content(self, tokens: torch.Tensor, index: int, n: int | None = None) -> bytes:
        lo = index * self.block_size
        return tokens[lo : lo + (n or self.block_size)].numpy().tobytes()

    def match(self, tokens: torch.Tensor, prefix_len: int, key: bytes) -> PrefixMatch:
        """Longest cached run of full blocks, then the voice-prefix snapshot. Pure."""
        bs = self.block_size
        full = len(tokens) // bs
        blocks, hashes, parent = [], [], b""
        for i in range(full if self.caching else 0):
            content = self._content(tokens, i)
            h = chain_hash(parent, key, content)
            bid = self._lookup(h, content)
            if bid is None:
                break
            blocks.append(bid)
            hashes.append(h)
            parent = h
        snapshot, rem = None, prefix_len % bs
        if rem and len(blocks) == prefix_len // bs and self.caching:
            content = self._content(tokens, len(blocks), rem)
            snapshot = self._lookup(chain_hash(parent, key, content, partial=True), content)
        cached = len(blocks) * bs + (rem if snapshot is not None else 0)
        return PrefixMatch(blocks, hashes, snapshot, cached, full)

    # ---- sequence lifecycle ----------------------------------------------
    def allocate(self, seq: Sequence) -> bool:
        """Give `seq` blocks for its whole prompt, reusing cached ones. False if it does not fit."""
        assert not seq.block_table
        bs = self.block_size
        m = self.match(seq.tokens, seq.prefix_len, seq.cache_key)
        if m.cached_tokens >= len(seq):
            # Fully cached: the last frame must still run to give logits, and it may
            # not be written into a shared block, so that block is recomputed.
            if m.snapshot is not None:
                m.snapshot = None
            else:
                m.blocks.pop()
                m.hashes.pop()
            m.cached_tokens = len(m.blocks) * bs
        needed = -(-len(seq) // bs) - len(m.blocks)
        pinned_free = sum(1 for b in m.blocks if self.blocks[b].ref_count == 0)
        if m.snapshot is not None and self.blocks[m.snapshot].ref_count == 0:
            pinned_free += 1
        if self.num_free - pinned_free < needed:
            return False
        for b in m.blocks:
            self._ref(b)
        table = list(m.blocks)
        if m.snapshot is not None:
            self._ref(m.snapshot)  # keep it from being evicted by the takes below
        for _ in range(needed):
            table.append(self._take(after=table[-1] if table else None))
        if m.snapshot is not None:
            self.copy_rows(m.snapshot, table[len(m.blocks)], seq.prefix_len % bs)
            self._unref(m.snapshot)
        self.hits += len(m.blocks) + (m.snapshot is not None)
        tail_probed = seq.prefix_len % bs != 0 and len(m.blocks) == seq.prefix_len // bs
        self.misses += m.full_blocks - len(m.blocks) + (tail_probed and m.snapshot is None)
        seq.block_table = table
        self.hashes[seq.seq_id] = list(m.hashes)
        seq.num_computed = m.cached_tokens
        seq.snapshot_done = m.snapshot is not None
        return True

    def needs_block(self, seq: Sequence) -> bool:
        """Whether writing the K/V of frame len(seq)-1 needs a new block."""
        return len(seq.block_table) * self.block_size < len(seq)

    def append_block(self, seq: Sequence) -> bool:
        if not self.num_free:
            return False
        seq.block_table.append(self._take(after=seq.block_table[-1] if seq.block_table else None))
        return True

    def register(self, seq: Sequence) -> None:
        """Publish blocks that became full and computed, and the voice-prefix tail."""
        if not self.caching:
            return
        bs, hashes = self.block_size, self.hashes[seq.seq_id]
        tokens = seq.tokens
        while (len(hashes) + 1) * bs <= seq.num_computed:
            i = len(hashes)
            content = self._content(tokens, i)
            h = chain_hash(hashes[-1] if hashes else b"", seq.cache_key, content)
            blk = self.blocks[seq.block_table[i]]
            if blk.hash is None and h not in self.by_hash:
                blk.hash, blk.content = h, content
                self.by_hash[h] = blk.block_id
            hashes.append(h)
        rem = seq.prefix_len % bs
        if seq.snapshot_done or not rem or seq.num_computed < seq.prefix_len:
            return
        seq.snapshot_done = True
        i = seq.prefix_len // bs
        content = self._content(tokens, i, rem)
        h = chain_hash(hashes[i - 1] if i else b"", seq.cache_key, content, partial=True)
        if h in self.by_hash or not self.num_free:
            return  # already saved, or no room: never preempt for a snapshot
        snap = self._take(last=True)  # out of the way of the blocks the sequence grows into
        self.copy_rows(seq.block_table[i], snap, rem)
        blk = self.blocks[snap]
        blk.hash, blk.content = h, content
        self.by_hash[h] = snap
        self._unref(snap)  # cached and free: revivable, evictable

    def free(self, seq: Sequence, finished: bool = False) -> None:
        """Return a sequence's blocks. A preempted one (`finished` False) keeps its
        blocks cached to revive on readmission; a finished one keeps only its voice
        prefix's full blocks cached."""
        keep = seq.prefix_len // self.block_size if finished else len(seq.block_table)
        # Release the tail first so the head of a prompt, shared by more
        # utterances, outlives it in the LRU order.
        for i in reversed(range(len(seq.block_table))):
            bid = seq.block_table[i]
            if i >= keep:
                self._forget(bid)
            self._unref(bid)
        seq.block_table = []
        seq.num_computed = 0
        self.hashes.pop(seq.seq_id, None)

    # ---- pinning (warm voices) ---------------------------------------------
    def pin(self, tokens: torch.Tensor, key: bytes) -> list[int] | None:
        """Hold a reference on every cached block of a voice prefix. None if not all cached."""
        m = self.match(tokens, len(tokens), key)
        if m.cached_tokens != len(tokens):
            return None
        if m.snapshot is not None:
            m.blocks.append(m.snapshot)
        for b in m.blocks:
            self._ref(b)
        return m.blocks

    def unpin(self, blocks: list[int]) -> None:
        for b in reversed(blocks):
            self._unref(b)
