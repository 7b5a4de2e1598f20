"""How an LLM hands a line to a client: the fragments the CLI, the load test and the tests send."""

from __future__ import annotations


def llm_tokens(text: str) -> list[str]:
    """Roughly how an LLM tokenizer splits English: words with their leading space, trailing
    punctuation as tokens of their own. Joined, the tokens give back `text`."""
    out = []
    for i, word in enumerate(text.split(" ")):
        head = word.rstrip(",.!?")
        out += [(" " if i else "") + head] + list(word[len(head) :])
    return [t for t in out if t]
