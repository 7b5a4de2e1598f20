"""Cut a stream of LLM text fragments into utterances.

An utterance starts as soon as the buffered text ends a sentence, or ends a
clause once the buffer is half the schedule's length, or reaches the schedule's
length (then it is cut at the last space). The schedule grows along the turn:
the first utterance is short so that first audio comes quickly; later ones are
longer because the LLM writes far faster than speech plays, and longer
utterances sound more natural.

A boundary only counts once the character after it has arrived: a fragment
ending in "3." may continue as "3.5", and "Dr." is not the end of a sentence.

A cut inside a sentence (at a clause or at the length limit) leaves at least
MIN_WORDS words on each side: it waits until that many words of the sentence have
arrived after the cut. A short piece of a sentence ("lake.") gives the model too
little to speak and the listener a broken phrase; first audio comes quickly from a
short first sentence or clause instead. A whole sentence may be short ("Halt!").
"""

from __future__ import annotations

import re

DEFAULT_SCHEDULE = (50, 120, 200, 260)
MIN_WORDS = 4  # on each side of a cut inside a sentence
_WORD = re.compile(r"\S+\s")  # a word counts once the character after it has arrived
_SENTENCE_END = re.compile(r"[.!?…]+[\"')\]]*(?=\s)|\n")
_CLAUSE_END = re.compile(r"[,;:—–]+(?=\s)|\s-\s")
# Words before a period that do not end a sentence (title, initials, "e.g.").
_NOT_AN_END = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Dr|St|Sgt|Capt|Lt|Col|Gen|Prof|vs|etc|e\.g|i\.e|approx)|\b[A-Z])\.$")


class Segmenter:
    def __init__(self, schedule: tuple[int, ...] | list[int] = DEFAULT_SCHEDULE):
        if not schedule or any(n < 1 for n in schedule):
            raise ValueError("chunk_length_schedule entries must be >= 1")
        self.schedule = tuple(schedule)
        self.buffer = ""
        self.emitted = 0  # utterances cut so far in this turn

    @property
    def limit(self) -> int:
        return self.schedule[min(self.emitted, len(self.schedule) - 1)]

    def push(self, fragment: str) -> list[str]:
        """Add text; return the utterances it completes (possibly none)."""
        self.buffer += fragment
        out = []
        while (cut := self._cut()) is not None:
            piece, self.buffer = self.buffer[:cut].strip(), self.buffer[cut:].lstrip()
            if piece:
                out.append(piece)
                self.emitted += 1
        return out

    def flush(self) -> list[str]:
        """Everything buffered, as one utterance (or none if only whitespace)."""
        piece, self.buffer = self.buffer.strip(), ""
        if piece:
            self.emitted += 1
            return [piece]
        return []

    def reset(self) -> None:
        """Drop buffered text and start a new turn's schedule."""
        self.buffer, self.emitted = "", 0

    def _cut(self) -> int | None:
        text = self.buffer
        for m in _SENTENCE_END.finditer(text):
            if not _NOT_AN_END.search(text[: m.end()]) and text[: m.end()].strip():
                return m.end()
        # Inside the sentence: a clause end past half the limit, else the last space
        # before the limit (or the limit itself in a run without spaces).
        if len(text) >= self.limit // 2:
            ends = [m.end() for m in _CLAUSE_END.finditer(text) if m.end() >= self.limit // 2]
            if ends and self._splits_well(ends[0]):
                return ends[0]
        if len(text) >= self.limit:
            space = text.rfind(" ", 0, self.limit)
            if space <= 0:
                return self.limit
            # The latest space that leaves enough words before it; then wait for enough after it.
            while space > 0 and len(text[:space].split()) < MIN_WORDS:
                space = text.find(" ", space + 1)
            if space > 0 and self._splits_well(space):
                return space
        return None

    def _splits_well(self, cut: int) -> bool:
        """Whether cutting the buffer at `cut` leaves MIN_WORDS words on each side."""
        text = self.buffer
        return len(text[:cut].split()) >= MIN_WORDS and len(_WORD.findall(text[cut:].lstrip())) >= MIN_WORDS
