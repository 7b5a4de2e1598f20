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


def test_short_lines_are_short_distinct_stable_and_never_an_evaluation_line():
    from engine.eval import broad
    from engine.train.short_lines import short_lines

    many = short_lines(3000)  # shards 520-639 read the first 1,200
    assert len(many) == 3000 and short_lines(600) == many[:600]  # grows at its end: shards keep their text
    assert short_lines(300, seed=1) != many[:300]
    words = lambda t: " ".join(re.sub(r"[^a-z' ]", " ", t.lower()).split())
    keys = [words(raw) for raw, _ in many]
    assert len(set(keys)) == len(keys)
    assert all(1 <= len(k.split()) <= 4 for k in keys)
    assert {len(k.split()) for k in keys} == {1, 2, 3, 4}
    assert not any(is_heldout(raw) for raw, _ in many)  # the template suite's held-out lines stay unseen
    scored = [x.text for split in broad.SPLITS for x in broad.lines(split)] + broad.reference_sentences()
    assert not set(keys) & {words(t) for t in scored}
    assert any(norm != raw for raw, norm in many) and not any(re.search(r"\d", norm) for _, norm in many)


def test_text_plan_gives_new_kinds_of_line_only_to_shards_from_their_start():
    from engine.train.synth_data import TextPlan

    game = [f"g{i}" for i in range(40)]
    plan = TextPlan(game, per_shard=4, n_broad=1, broad_from=2, n_short=2, short_from=5)
    plan.broad, plan.short = [f"b{i}" for i in range(10)], [f"s{i}" for i in range(10)]
    assert plan.shard(1) == ["g4", "g5", "g6", "g7"]
    assert plan.shard(2) == ["g8", "g9", "g10", "b0"]
    assert plan.shard(4) == ["g16", "g17", "g18", "b2"]
    assert plan.shard(5) == ["g20", "s0", "s1", "b3"]
    assert plan.shard(6) == ["g24", "s2", "s3", "b4"]
    assert TextPlan(game, per_shard=4).shard(9) == ["g36", "g37", "g38", "g39"]
