"""The text pointer of a model with an `advance` token: what channel 0 may say, and what it reads back.

A pointer model's channel 0 is a decision each frame: stay on the current text
unit, advance to the next one, or stop. The pointer only moves forward and never
past the last unit, and speech cannot end before every unit is reached: no word
is skipped or repeated. Both halves work on a whole decode batch at once, with
one tensor operation per rule and plain ints per row: per-row tensor work here
was over a tenth of a sixteen-stream decode step.
"""

from __future__ import annotations

import math

import torch

from engine.models.speech_lm.config import ModelConfig
from engine.models.speech_lm.durations import Schedule
from engine.runtime.outputs import MarkEvent
from engine.runtime.sequence import Sequence


class TextPointer:
    def __init__(self, cfg: ModelConfig, vocab: int, device: torch.device):
        self.cfg = cfg
        # Additive masks over channel 0, made once: before the last unit, after it.
        self.masks = None
        if cfg.advance is not None:
            self.masks = torch.full((2, vocab), float("-inf"), device=device)
            self.masks[0, [cfg.text_pad, cfg.advance]] = 0
            self.masks[1, [cfg.text_pad, cfg.eos]] = 0

    @staticmethod
    def units(seq: Sequence) -> int:
        lead = seq.family_state.lead if isinstance(seq.family_state, Schedule) else 0
        return seq.prompt_len - seq.prefix_len - 1 - lead  # the text, without speech_start or a prefilled lead

    def constrain(self, seqs: list[Sequence], logits: torch.Tensor) -> None:
        """Mask each row's channel-0 logits [B, C, V] in place to what its pointer allows now."""
        cfg = self.cfg
        units = [self.units(s) for s in seqs]
        if self.masks is not None:
            logits[:, 0] += self.masks[torch.tensor([s.marks >= u for s, u in zip(seqs, units)], dtype=torch.long)]
        no_end = [b for b, s in enumerate(seqs) if s.sampling.ignore_eos or s.num_generated < s.min_frames]
        if no_end:
            logits[no_end, 0, cfg.eos] = float("-inf")
        limit = cfg.generation.max_frames_per_unit
        for b, (s, u) in enumerate(zip(seqs, units)):
            if limit and s.num_generated - s.last_advance >= limit:  # stalled: move it on
                forced = cfg.advance if s.marks < u else cfg.eos
                if logits[b, 0, forced] > -math.inf:  # (an end that ignore_eos or min_frames forbid stays forbidden)
                    logits[b, 0] = -math.inf
                    logits[b, 0, forced] = 0.0
        scheduled = [(b, s) for b, s in enumerate(seqs) if isinstance(s.family_state, Schedule)]
        if scheduled:  # the duration model's schedule decides alone
            rows = torch.tensor([b for b, _ in scheduled])
            forced = torch.tensor([self.scheduled(s, s.family_state) for _, s in scheduled])
            logits[rows, 0] = -math.inf
            logits[rows, 0, forced] = 0.0

    def scheduled(self, seq: Sequence, plan: Schedule) -> int:
        """Channel 0 of the frame `seq` draws next, by its schedule."""
        cfg, j = self.cfg, seq.num_generated
        if j >= plan.end and not seq.sampling.ignore_eos:
            return cfg.eos
        if seq.marks < len(plan.feed) and j >= plan.feed[seq.marks]:
            return cfg.advance
        return cfg.text_pad

    def feed(self, seqs: list[Sequence], frames: torch.Tensor) -> tuple[list[int], list[MarkEvent | None]]:
        """Move the pointers past sampled frames [B, C] and rewrite channel 0 in place
        to what the model reads back. Returns channel 0 as sampled, and each row's mark."""
        cfg = self.cfg
        sampled = frames[:, 0].tolist()
        fed = list(sampled)
        marks: list[MarkEvent | None] = [None] * len(seqs)
        for b, (seq, ch0) in enumerate(zip(seqs, sampled)):
            if cfg.advance is not None and ch0 == cfg.advance:
                # The next unit's own id becomes this frame's channel-0 input: the model hears
                # the phoneme a few frames before it speaks it (mark_delay_frames later).
                seq.unit = fed[b] = int(seq.tokens[seq.prefix_len + seq.marks, 0])
                marks[b] = MarkEvent(seq.marks, seq.num_generated + cfg.mark_delay_frames)
                seq.marks += 1
                seq.last_advance = seq.num_generated
            elif cfg.hold_units and seq.marks and ch0 != cfg.eos:
                fed[b] = cfg.held(seq.unit)  # frames after an arrival carry the unit they are on
        frames[:, 0] = torch.tensor(fed)
        return sampled, marks
