"""engine.train.corpus: the training text is deterministic, normalised and split from the held-out lines."""

from __future__ import annotations

import re

import pytest

from engine.train.corpus import is_heldout, lines


def test_corpus_is_deterministic_normalised_and_split_by_text():
    train, again = lines(300, seed=1), lines(300, seed=1)
    heldout = lines(30, seed=1, heldout=True)
    assert train == again and len(train) == 300 and len(heldout) == 30
    assert not {raw for raw, _ in train} & {raw for raw, _ in heldout}
    assert all(is_heldout(raw) for raw, _ in heldout) and not any(is_heldout(raw) for raw, _ in train)
    assert not any(re.search(r"\d", norm) for _, norm in train)  # numbers are spelled out
    assert any(len(norm) < 15 for _, norm in train) and any(len(norm) > 100 for _, norm in train)


def test_broad_text_is_deterministic_plain_and_widens_the_vocabulary():
    pytest.importorskip("essential_generators", reason="comes with the train extra")
    from engine.text.tokenizer import make_tokenizer, spell
    from engine.train.corpus import BroadText

    broad = BroadText()
    first, again = broad.lines(200, seed=3), broad.lines(120, seed=3)
    assert len(first) == 200 and again == first[:120]  # a longer draw extends, never reshuffles
    assert not any(is_heldout(raw) for raw, _ in first)
    tok = make_tokenizer("phonemes", 128)
    for raw, norm in first:
        assert re.fullmatch(r"[A-Z][A-Za-z0-9' ,]*[a-z][.?!]", raw), raw  # no symbols, brackets or abbreviations
        assert not re.search(r"\d", norm) and len(spell(tok, norm)) > 4
    vocab = lambda pairs: {w for _, norm in pairs for w in re.findall(r"[a-z']+", norm.lower())}
    assert len(vocab(first)) > 2 * len(vocab(lines(200, seed=3)))
