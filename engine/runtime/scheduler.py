"""Continuous batching: which sequences run in the next step.

Every running sequence has `len(seq) - num_computed` frames whose K/V are not in
the pool yet. Exactly one pending frame means it is decoding; more means it is
prefilling (its prompt, or after a preemption its prompt plus what it had
generated). Decodes run together in one batch; prefills are chunked so a long
voice prompt never stalls the streams already speaking for more than one chunk.

Slots go by playback deadline. A stream is parked while its reader lags (it could not
take more audio) or, when others wait for a slot, while it is more than `max_lead_s`
ahead of real-time playback of what it has produced: parked streams keep their blocks
but neither count toward `max_running` nor decode, and a parked stream is preempted
first when memory runs short. Decodes and admissions go earliest deadline first (the
least audio in hand), and while some stream is short of audio, streams far ahead sit out
the steps (`urgent_lead_s`). So clients that stop reading, or that are far ahead, can never
keep a new conversation from starting, nor slow one that is about to run dry.
"""

from __future__ import annotations

import time
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
            self._free(seq, finished=True)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        seq.status = Status.FINISHED

    def _preempt(self, seq: Sequence) -> None:
        # Recompute, not swap: the frames are kept, the K/V is rebuilt later (and
        # much of it comes back from the prefix cache if not evicted meanwhile).
        self.running.remove(seq)
        self._free(seq)
        seq.status = Status.WAITING
        seq.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(seq)

    def _allocate(self, seq: Sequence) -> bool:
        """Blocks for a sequence's prompt and its guide's, both or neither."""
        if not self.blocks.allocate(seq):
            return False
        if seq.guide is not None and not self.blocks.allocate(seq.guide):
            self.blocks.free(seq)
            return False
        return True

    def _free(self, seq: Sequence, finished: bool = False) -> None:
        self.blocks.free(seq, finished)
        if seq.guide is not None:
            self.blocks.free(seq.guide, finished)

    def _short(self, seq: Sequence) -> Sequence | None:
        """Which of a decoding sequence and its guide needs a new block for its next frame."""
        for s in (seq, seq.guide):
            if s is not None and self.blocks.needs_block(s):
                return s
        return None

    def _victim(self, parked: set[int], lead: Callable[[Sequence], float]) -> Sequence:
        """Whom to preempt for memory: the parked stream furthest ahead, else the newest."""
        idle = [s for s in self.running if s.seq_id in parked]
        return max(idle, key=lead) if idle else self.running[-1]

    @staticmethod
    def _cutoff(candidates: list[Sequence], lead: Callable[[Sequence], float], short: float) -> float:
        """The rule of both pacing and deadline first: while one of `candidates` has under `short`
        seconds of audio ahead, streams with twice that or more sit out the step (hysteresis
        between `short` and twice it); inf while none is short, or with `short` 0 (off)."""
        return 2 * short if short > 0 and any(lead(s) < short for s in candidates) else float("inf")

    def _starting(self) -> int:
        """Running turn starts within `start_window_s` of their first frame (or still before it)."""
        if not self.cfg.max_starting:
            return 0
        since = time.monotonic() - self.cfg.start_window_s
        return sum(s.turn_start and (s.first_frame_at is None or s.first_frame_at > since) for s in self.running)

    def schedule(self, ready: Callable[[Sequence], bool], lead: Callable[[Sequence], float] = lambda s: 0.0) -> Batch:
        """`ready(seq)` is False while a sequence's reader is too far behind; `lead(seq)` is
        how many seconds of its audio are ahead of real-time playback (-inf before any)."""
        batch = Batch()
        leads = {s.seq_id: lead(s) for s in (*self.running, *self.waiting)}  # one clock for the pass
        lead = lambda s: leads[s.seq_id]  # noqa: E731
        contended = any(ready(s) for s in self.waiting)
        parked = {s.seq_id for s in self.running if not ready(s) or (contended and lead(s) > self.cfg.max_lead_s)}
        decodable = [
            s
            for s in self.running
            if s.status is Status.RUNNING and len(s) - s.num_computed == 1 and s.seq_id not in parked
        ]
        if self.cfg.pace_lead_s > 0:  # paced: no decode at all until some stream runs low
            pace = self._cutoff(decodable, lead, self.cfg.pace_lead_s)
            decodable = [s for s in decodable if lead(s) < pace] if pace < float("inf") else []
        live = [s for s in self.running if s.seq_id not in parked] + [s for s in self.waiting if ready(s)]
        cutoff = self._cutoff(live, lead, self.cfg.urgent_lead_s)
        decodable = [s for s in decodable if lead(s) < cutoff]
        for seq in sorted(decodable, key=lead)[: self.cfg.max_running]:
            if seq.status is not Status.RUNNING:  # preempted for an earlier one's block
                continue
            while (short := self._short(seq)) is not None and not self.blocks.append_block(short):
                victim = self._victim(parked, lead)
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
        active = sum(s.seq_id not in parked for s in self.running)
        starting = self._starting()
        for seq in sorted(self.waiting, key=lead):  # (stable: arrival order among equals)
            if budget <= 0 or active >= self.cfg.max_running or lead(seq) >= cutoff:
                break
            if not ready(seq):  # preempted while its reader lagged: no blocks until it reads
                continue
            turn_start = not seq.admitted and seq.max_frames > 0 and lead(seq) == float("-inf")
            if turn_start and self.cfg.max_starting and starting >= self.cfg.max_starting:
                continue  # (an utterance queued behind audio that plays may still go)
            allocated = self._allocate(seq)
            while not allocated:  # make room by preempting parked streams, furthest ahead first
                busy = {s.seq_id for s in batch.decode} | {s.seq_id for s, _, _ in batch.prefill}
                idle = [s for s in self.running if s.seq_id in parked and s.seq_id not in busy]
                if not idle:
                    break
                self._preempt(max(idle, key=lead))
                allocated = self._allocate(seq)
            if not allocated:
                break
            self.waiting.remove(seq)
            active += 1
            starting += turn_start
            if not seq.admitted:  # (turn_start can only be True here: it is judged at first admission)
                seq.admitted, seq.cached_on_admit, seq.turn_start = True, seq.num_computed, turn_start
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
