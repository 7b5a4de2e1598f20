"""Text front ends: text -> channel-0 token ids.

`chars` is the placeholder used by the random-weight test model: one id per
printable ASCII character. The trained model (issue 4) brings a phoneme front end.
"""
from __future__ import annotations

from typing import Protocol

FIRST_TEXT_ID = 8  # ids below are control tokens (see ModelConfig)


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...


class CharTokenizer:
    def __init__(self, vocab: int):
        self.vocab = vocab
        self.unknown = self._id("?")

    def _id(self, ch: str) -> int:
        return FIRST_TEXT_ID + (ord(ch) - 32) % (self.vocab - FIRST_TEXT_ID)

    def encode(self, text: str) -> list[int]:
        text = " ".join(text.split())
        return [self._id(c) if 32 <= ord(c) < 127 else self.unknown for c in text]


def make_tokenizer(name: str, vocab: int) -> Tokenizer:
    if name == "chars":
        return CharTokenizer(vocab)
    raise ValueError(f"unknown tokenizer {name!r}")
