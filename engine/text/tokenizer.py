"""Text front ends: text -> channel-0 token ids, each with the span of text it came from.

`chars` is the placeholder used by the random-weight test model: one id per
printable ASCII character. `phonemes` is the English front end of trained models
(engine/g2p.py): one id per phoneme, stress mark, punctuation mark or word gap.
Spans let a caller turn the engine's timing marks (which name a token index)
back into words of the text it submitted.
"""

from __future__ import annotations

import re
from typing import Protocol

FIRST_TEXT_ID = 8  # ids below are control tokens (see ModelConfig)


class Tokenizer(Protocol):
    reads_phonemes: bool  # whether /.../ pronunciation overrides mean anything to it

    def encode(self, text: str) -> list[int]: ...

    def encode_spans(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and, for each, the [start, end) character span of `text` it encodes."""
        ...

    def symbol(self, token_id: int) -> str:
        """What a token stands for (a character, a phoneme), for timing marks."""
        ...


class CharTokenizer:
    reads_phonemes = False

    def __init__(self, vocab: int):
        self.vocab = vocab

    def _id(self, ch: str) -> int:
        return FIRST_TEXT_ID + (ord(ch) - 32) % (self.vocab - FIRST_TEXT_ID)

    def encode(self, text: str) -> list[int]:
        return self.encode_spans(text)[0]

    def encode_spans(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        # Runs of whitespace become one space; leading and trailing whitespace is dropped.
        ids: list[int] = []
        spans: list[tuple[int, int]] = []
        pending_space = False
        for i, c in enumerate(text):
            if c.isspace():
                pending_space = bool(ids)
                continue
            if pending_space:
                ids.append(self._id(" "))
                spans.append((i - 1, i))
                pending_space = False
            if not 32 <= ord(c) < 127:
                continue  # emoji and other symbols are not spoken
            ids.append(self._id(c))
            spans.append((i, i + 1))
        return ids, spans

    def symbol(self, token_id: int) -> str:
        return chr(32 + (token_id - FIRST_TEXT_ID))


class PhonemeTokenizer:
    """English text -> phoneme ids through engine.text.g2p; a space token separates words.

    Text between slashes is taken as phonemes as written (pronunciation overrides):
    "Ask /ɡˈɪmli/ about it"."""

    reads_phonemes = True

    def __init__(self, vocab: int):
        from engine.text.g2p import G2P, PHONEMES, PUNCTUATION, STRESS

        self.symbols = list(PHONEMES + STRESS + PUNCTUATION + " ")
        if FIRST_TEXT_ID + len(self.symbols) > vocab:
            raise ValueError(f"text_vocab {vocab} is too small for {len(self.symbols)} phoneme symbols")
        self.ids = {c: FIRST_TEXT_ID + i for i, c in enumerate(self.symbols)}
        self.g2p = G2P()

    def encode(self, text: str) -> list[int]:
        return self.encode_spans(text)[0]

    def encode_spans(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        ids: list[int] = []
        spans: list[tuple[int, int]] = []
        prev_end = None
        for start, end, phonemes in self._pieces(text):
            if not phonemes:
                continue
            if prev_end is not None and phonemes[0] not in ".,!?;:…)":
                ids.append(self.ids[" "])
                spans.append((prev_end, start))
            for c in phonemes:
                if c in self.ids:
                    ids.append(self.ids[c])
                    spans.append((start, end))
            prev_end = end
        return ids, spans

    def _pieces(self, text: str):
        """(start, end, phonemes) for each word or punctuation mark, overrides included."""
        pos = 0
        for m in re.finditer(r"/([^/\s][^/]*)/", text):
            yield from self._words(text, pos, m.start())
            yield m.start(), m.end(), m.group(1).replace(" ", "")
            pos = m.end()
        yield from self._words(text, pos, len(text))

    def _words(self, text: str, lo: int, hi: int):
        for w in self.g2p(text[lo:hi]):
            yield lo + w.start, lo + w.end, w.phonemes or w.text

    def symbol(self, token_id: int) -> str:
        return self.symbols[token_id - FIRST_TEXT_ID]


def spell(tokenizer: Tokenizer, text: str) -> str:
    """The symbols `text` becomes, as one string (the phoneme string the teachers read)."""
    return "".join(tokenizer.symbol(i) for i in tokenizer.encode(text))


def quiet_tail(tokenizer: Tokenizer, ids: list[int]) -> int:
    """How many of `ids`' last tokens are punctuation or word gaps: the units after the last
    spoken one."""
    from engine.text.g2p import PUNCTUATION

    n = 0
    while n < len(ids) and tokenizer.symbol(ids[-1 - n]) in PUNCTUATION + " ":
        n += 1
    return n


def make_tokenizer(name: str, vocab: int) -> Tokenizer:
    if name == "chars":
        return CharTokenizer(vocab)
    if name == "phonemes":
        return PhonemeTokenizer(vocab)
    raise ValueError(f"unknown tokenizer {name!r}")
