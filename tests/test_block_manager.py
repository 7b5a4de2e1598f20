"""Prefix cache bookkeeping: chained hashes, ref counts, revival, LRU eviction, voice tails."""

from __future__ import annotations

import torch

from engine.config import SamplingParams
from engine.runtime.block_manager import BlockManager
from engine.runtime.model_runner import run_start
from engine.runtime.sequence import Sequence

BS = 4


class Pool:
    """The block manager's row-copy callback, recording what it was asked to copy."""

    def __init__(self):
        self.copies: list[tuple[int, int, int]] = []

    def __call__(self, src: int, dst: int, n: int) -> None:
        self.copies.append((src, dst, n))


def seq_of(ids: list[int], prefix_len: int = 0, key: bytes = b"voice") -> Sequence:
    frames = torch.tensor(ids)[:, None].repeat(1, 2)
    return Sequence(frames, prefix_len, key, SamplingParams(), 4, 0)


def computed(bm: BlockManager, seq: Sequence) -> Sequence:
    """Allocate, pretend the prompt ran, and publish its blocks."""
    assert bm.allocate(seq)
    seq.num_computed = len(seq)
    bm.register(seq)
    return seq


def test_second_sequence_reuses_full_blocks_and_shares_them():
    bm = BlockManager(16, BS, Pool())
    a = computed(bm, seq_of(list(range(10))))
    b = seq_of(list(range(10)) + [99])
    assert bm.allocate(b)
    assert b.num_computed == 8 and b.block_table[:2] == a.block_table[:2]
    assert [bm.blocks[i].ref_count for i in b.block_table[:2]] == [2, 2]
    assert bm.hits == 2


def test_only_full_blocks_are_published():
    bm = BlockManager(16, BS, Pool())
    a = seq_of(list(range(10)))
    computed(bm, a)
    assert len(a.block_table) == 3
    assert sum(b.hash is not None for b in bm.blocks) == 2  # only full blocks are published


def test_chain_hash_depends_on_parent_and_key():
    bm = BlockManager(32, BS, Pool())
    computed(bm, seq_of([1, 2, 3, 4, 5, 6, 7, 8, 9]))
    moved = seq_of([0, 0, 0, 0, 5, 6, 7, 8, 9])  # same second block, different parent
    other_voice = seq_of([1, 2, 3, 4, 5, 6, 7, 8, 9], key=b"another voice")
    for s in (moved, other_voice):
        assert bm.allocate(s)
        assert s.num_computed == 0


def test_freed_blocks_are_revived_until_evicted_lru_first():
    bm = BlockManager(6, BS, Pool())
    a = computed(bm, seq_of(list(range(8)) + [50]))
    bm.free(a)
    assert bm.num_free == 6 and len(bm.free_cached) == 2
    b = seq_of(list(range(8)) + [51])
    assert bm.allocate(b) and b.num_computed == 8  # revived
    bm.free(b)
    # Fill the pool with unrelated work: plain free blocks go first, then the
    # cached ones, the least recently freed (the tail of the prompt) first.
    c = seq_of(list(range(100, 116)))
    assert bm.allocate(c) and bm.evictions == 0
    d = seq_of([200, 201, 202])
    assert bm.allocate(d) and bm.evictions == 1
    e = seq_of(list(range(8)) + [52])
    assert bm.allocate(e) is False  # one cached block left, needs 3: refused untouched
    assert bm.num_free == 1 and bm.evictions == 1


def test_allocate_refuses_without_side_effects():
    bm = BlockManager(4, BS, Pool())
    big = seq_of(list(range(20)))
    free_before = bm.num_free
    assert not bm.allocate(big)
    assert bm.num_free == free_before and not big.block_table


def test_fully_cached_prompt_recomputes_its_last_block():
    bm = BlockManager(8, BS, Pool())
    a = computed(bm, seq_of(list(range(8))))
    b = seq_of(list(range(8)))
    assert bm.allocate(b)
    assert b.num_computed == 4  # the last frame must run to give logits; never into a shared block
    assert b.block_table[0] == a.block_table[0] and b.block_table[1] != a.block_table[1]


def test_voice_tail_snapshot_is_copied_on_write():
    pool = Pool()
    bm = BlockManager(16, BS, pool)
    voice = list(range(6))  # one full block plus a tail of 2
    a = computed(bm, seq_of(voice + [40, 41, 42], prefix_len=6))
    snap_copy = pool.copies[-1]
    assert snap_copy[0] == a.block_table[1] and snap_copy[2] == 2
    snapshot = snap_copy[1]
    b = seq_of(voice + [77], prefix_len=6)
    assert bm.allocate(b)
    assert b.num_computed == 6  # only the new text is prefilled
    assert pool.copies[-1] == (snapshot, b.block_table[1], 2)
    assert b.block_table[1] != snapshot and bm.blocks[snapshot].ref_count == 0
    misses = bm.misses
    c = seq_of([9, 9, 9, 9, 9, 9, 1], prefix_len=6)
    # A voice whose first block misses is not probed for its tail: one miss.
    assert bm.allocate(c) and c.num_computed == 0 and bm.misses == misses + 1


def test_pin_holds_a_voice_against_eviction():
    bm = BlockManager(6, BS, Pool())
    voice = list(range(6))
    warm = computed(bm, seq_of(voice, prefix_len=6))
    pinned = bm.pin(warm.tokens, warm.cache_key)
    bm.free(warm)
    assert pinned is not None and len(pinned) == 2  # full block + tail snapshot
    hog = seq_of(list(range(100, 116)))
    assert bm.allocate(hog)  # takes the 4 unpinned blocks
    assert bm.allocate(seq_of([300])) is False
    b = seq_of(voice + [5], prefix_len=6)
    bm.free(hog)
    assert bm.allocate(b) and b.num_computed == 6
    bm.free(b)
    bm.unpin(pinned)
    assert bm.num_free == 6


def grow(bm: BlockManager, seq: Sequence, frames: int) -> None:
    """Append frames as decoding would, taking blocks as they are needed."""
    for _ in range(frames):
        seq.append(torch.zeros(2, dtype=torch.long))
        while bm.needs_block(seq):
            assert bm.append_block(seq)
    seq.num_computed = len(seq)
    bm.register(seq)


def test_one_voice_utterances_read_their_blocks_in_place():
    """Alone on the engine, every utterance of a voice gets consecutive blocks: the cached
    prefix, the copied voice tail, then its own, so decode attention reads them in place."""
    bm = BlockManager(64, BS, Pool())
    voice = list(range(10))  # two full blocks and a tail of 2
    for n, text in enumerate([[40, 41, 42], [43], [44, 45, 46, 47, 48, 49, 50]]):
        s = seq_of(voice + text, prefix_len=10)
        assert bm.allocate(s)
        assert s.num_computed == (10 if n else 0)
        s.num_computed = len(s)
        bm.register(s)
        grow(bm, s, 23)
        assert run_start(s.block_table) is not None, s.block_table
        bm.free(s, finished=True)


def test_finished_sequence_keeps_only_its_voice_prefix_cached():
    bm = BlockManager(32, BS, Pool())
    s = computed(bm, seq_of(list(range(8)) + [60, 61, 62, 63, 64], prefix_len=8))
    grow(bm, s, 11)  # 24 frames: 6 full blocks published, 2 of them the voice
    assert len(bm.by_hash) == 6
    prefix = s.block_table[:2]
    bm.free(s, finished=True)
    assert sorted(bm.free_cached) == sorted(prefix) and len(bm.by_hash) == 2
    assert len(bm.free_plain) == 30


def test_preempted_sequence_revives_its_own_frames():
    bm = BlockManager(32, BS, Pool())
    s = computed(bm, seq_of(list(range(8)) + [60, 61], prefix_len=8))
    grow(bm, s, 10)  # 20 frames: 5 full blocks
    bm.free(s)  # preempted: everything stays cached
    assert len(bm.free_cached) == 5
    assert bm.allocate(s) and s.num_computed == 16  # the last block is recomputed for logits


def test_voice_tail_snapshot_stays_out_of_the_sequences_way():
    bm = BlockManager(16, BS, Pool())
    s = computed(bm, seq_of(list(range(6)) + [70], prefix_len=6))  # tail of 2: a snapshot
    grow(bm, s, 9)
    assert run_start(s.block_table) is not None and bm.blocks[15].hash is not None  # the snapshot
