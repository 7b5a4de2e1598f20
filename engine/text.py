"""Text front ends: text -> channel-0 token ids, each with the span of text it came from.

`chars` is the placeholder used by the random-weight test model: one id per
printable ASCII character. The trained model (issue 4) brings a phoneme front end.
Spans let a caller turn the engine's timing marks (which name a token index)
back into words of the text it submitted.
"""
from __future__ import annotations

from typing import Protocol

FIRST_TEXT_ID = 8  # ids below are control tokens (see ModelConfig)


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def encode_spans(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and, for each, the [start, end) character span of `text` it encodes."""
        ...


class CharTokenizer:
    def __init__(self, vocab: int):
        self.vocab = vocab
        self.unknown = self._id("?")

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
            ids.append(self._id(c) if 32 <= ord(c) < 127 else self.unknown)
            spans.append((i, i + 1))
        return ids, spans


def make_tokenizer(name: str, vocab: int) -> Tokenizer:
    if name == "chars":
        return CharTokenizer(vocab)
    raise ValueError(f"unknown tokenizer {name!r}")
