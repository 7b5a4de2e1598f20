"""Continuous batching: which sequences run in the next step.

Every running sequence has `len(seq) - num_computed` frames whose K/V are not in
the pool yet. Exactly one pending frame means it is decoding; more means it is
prefilling (its prompt, or after a preemption its prompt plus what it had
generated). Decodes run together in one batch; prefills are chunked so a long
voice prompt never stalls the streams already speaking for more than one chunk.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.config import SchedulerConfig
from engine.runtime.block_manager import BlockManager
from engine.runtime.sequence import Sequence, Status


@dataclass
class Batch:
    decode: list[Sequence] = field(default_factory=list)
    prefill: list[tuple[Sequence, int, int]] = field(default_factory=list)  # (seq, start, n)

    def __bool__(self) -> bool:
        return bool(self.decode or self.prefill)


class Scheduler:
    def __init__(self, cfg: SchedulerConfig, blocks: BlockManager):
        self.cfg = cfg
        self.blocks = blocks
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # admission order: the newest is preempted first
        self.preemptions = 0
        self.cached_frames = 0  # prompt frames the prefix cache supplied at first admission

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def remove(self, seq: Sequence) -> None:
        """Drop a finished or cancelled sequence and return its blocks at once."""
        if seq in self.running:
            self.running.remove(seq)
            self.blocks.free(seq, finished=True)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        seq.status = Status.FINISHED

    def _preempt(self, seq: Sequence) -> None:
        # Recompute, not swap: the frames are kept, the K/V is rebuilt later (and
        # much of it comes back from the prefix cache if not evicted meanwhile).
        self.running.remove(seq)
        self.blocks.free(seq)
        seq.status = Status.WAITING
        seq.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(seq)

    def schedule(self, ready: Callable[[Sequence], bool]) -> Batch:
        """`ready(seq)` is False while a sequence's reader is too far behind."""
        batch = Batch()
        for seq in list(self.running):
            if seq.status is not Status.RUNNING or len(seq) - seq.num_computed != 1 or not ready(seq):
                continue
            while self.blocks.needs_block(seq) and not self.blocks.append_block(seq):
                victim = self.running[-1]
                self._preempt(victim)
                if victim in batch.decode:
                    batch.decode.remove(victim)
                if victim is seq:
                    break
            if seq.status is Status.RUNNING:
                batch.decode.append(seq)

        budget = self.cfg.prefill_chunk_tokens
        for seq in self.running:
            pending = len(seq) - seq.num_computed
            if pending > 1 and budget > 0:
                n = min(pending, budget)
                batch.prefill.append((seq, seq.num_computed, n))
                budget -= n
        while self.waiting and budget > 0 and len(self.running) < self.cfg.max_running:
            seq = self.waiting[0]
            if not self.blocks.allocate(seq):
                break
            self.waiting.popleft()
            if not seq.admitted:
                seq.admitted, seq.cached_on_admit = True, seq.num_computed
                self.cached_frames += seq.num_computed
            seq.status = Status.RUNNING
            self.running.append(seq)
            n = min(len(seq) - seq.num_computed, budget)
            if n == 1 and ready(seq):
                batch.decode.append(seq)  # only its last frame is missing: cheaper as a decode
            elif n:
                batch.prefill.append((seq, seq.num_computed, n))
            budget -= n
        return batch
