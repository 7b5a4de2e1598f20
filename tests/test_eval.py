"""engine.eval: word-error scoring and pooling several seeds into one result."""

from __future__ import annotations

import re

import numpy as np
import pytest


def test_wer_scoring_normalises_like_our_text():
    from engine.eval.judge import edit_distance, join_compounds, words

    truth = words("The caravan leaves at twelve thirty. Guard Eastmarch for seventy-two dollars!")
    hyp = join_compounds(words("The caravan leaves at 12.30, guard East March for 72$."), truth)
    assert edit_distance(truth, hyp) == 0
    assert edit_distance(words("a b c d"), words("a x c")) == 2  # one substitution, one deletion
    assert join_compounds(["the", "east"], ["the", "east"]) == ["the", "east"]  # real words stay apart


def test_several_seeds_pool_into_one_result_that_keeps_each_seeds_figures():
    """eval --seeds N: wer over every word of every seed, means of the rest, closest references
    summed. score() is fed by a fixed judge (the pooling is under test, not whisper)."""
    from engine.eval.scoring import pool, score

    class FixedJudge:
        def __init__(self, heard):
            self.heard = heard  # what each output is heard as, in order

        def transcribe(self, audio):
            return self.heard.pop(0)

        def embed(self, audio):  # the output's first sample says which voice it sounds like
            return np.eye(2)[int(audio[0])] + 0.1

    voices = {
        "a": [{"audio": np.zeros(10)}, {"text": "hold the gate", "audio": np.zeros(10)}],
        "b": [{"audio": np.ones(10)}, {"text": "run", "audio": np.ones(10)}],
    }
    first = {
        **score(voices, {"a": [np.zeros(20)], "b": [np.ones(10)]}, FixedJudge(["hold the gate", "run"])),
        "rtf": 0.1,
    }
    second = {**score(voices, {"a": [np.ones(10)], "b": [np.ones(10)]}, FixedJudge(["hold a gate", "fun"])), "rtf": 0.3}
    assert (first["wer"], first["id_accuracy"]) == (0.0, 1.0)
    assert (second["wer"], second["id_accuracy"]) == (0.5, 0.5)
    both = pool([first, second], [4, 5])
    assert both["wer"] == 2 / 8 and both["id_accuracy"] == 0.75 and both["rtf"] == pytest.approx(0.2)
    assert both["utterances"] == 4 and [x["seed"] for x in both["lines"]] == [4, 4, 5, 5]
    assert both["per_voice"]["a"]["closest_reference"] == {"a": 1, "b": 1}
    assert both["per_voice"]["a"]["wer"] == round(1 / 6, 4) and both["per_voice"]["b"]["wer"] == 0.5
    assert both["duration_ratio"] == pytest.approx((1.5 + 1.0) / 2)
    assert [(x["seed"], x["wer"]) for x in both["per_seed"]] == [(4, 0.0), (5, 0.5)]


def test_broad_suite_has_what_it_promises_and_splits_cleanly():
    """At least 200 natural lines (30+ per category) and 50 barks of 1-4 words, every one in
    exactly one split, each split holding every category, and no text twice."""
    from engine.eval import broad

    dev, test = broad.lines("dev"), broad.lines("test")
    every = dev + test
    assert sum(x.category != "bark" for x in every) >= 200
    barks = [x for x in every if x.category == "bark"]
    assert len(barks) >= 50 and all(1 <= len(x.text.split()) <= 4 for x in barks)
    for category in broad.CATEGORIES:
        assert sum(x.category == category for x in every) >= 30, category
        assert any(x.category == category for x in dev) and any(x.category == category for x in test), category
    key = lambda text: " ".join(words_of(text))
    seen = [key(x.text) for x in every] + [key(t) for t in broad.reference_sentences()]
    assert len(set(seen)) == len(seen)
    with pytest.raises(ValueError, match="split"):
        broad.lines("train")


def words_of(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


def test_no_broad_line_comes_from_a_corpus_template():
    """The training corpus's barks and the fixed words of its templates (any four in a row)
    appear in no line of the broad suite: what it scores was not in the training text."""
    from engine.eval import broad
    from engine.train import corpus

    texts = [x.text for split in broad.SPLITS for x in broad.lines(split)] + broad.reference_sentences()
    mine = {" ".join(words_of(t)) for t in texts}
    assert not mine & {" ".join(words_of(b)) for b in corpus.BARKS}
    grams = lambda ws: {tuple(ws[i : i + 4]) for i in range(len(ws) - 3)}
    template_grams = set()
    for template in corpus.TEMPLATES:
        for literal in re.split(r"\{\w+\}", template):
            template_grams |= grams(words_of(literal))
    shared = {t: grams(words_of(t)) & template_grams for t in texts}
    assert {t: g for t, g in shared.items() if g} == {}


def test_each_line_goes_to_one_voice_per_seed_and_to_every_voice_over_seeds():
    from engine.eval import broad

    items = broad.lines("dev")[:10]
    names = ["a", "b", "c"]
    heard_in = {x: set() for x in items}
    for seed in range(3):
        assigned = broad.assign(items, names, seed)
        flat = [x for mine in assigned.values() for x in mine]
        assert sorted(flat, key=items.index) == items
        assert max(map(len, assigned.values())) - min(map(len, assigned.values())) <= 1
        for name, mine in assigned.items():
            for x in mine:
                heard_in[x].add(name)
    assert all(v == set(names) for v in heard_in.values())


def test_breakdown_splits_wer_by_category_and_voices_by_kind():
    from engine.eval import broad

    row = lambda voice, category, errors, words: {
        "voice": voice,
        "category": category,
        "errors": errors,
        "words": words,
    }
    result = {
        "lines": [row("espeak", "bark", 1, 1), row("human", "question", 2, 10), row("espeak", "question", 0, 10)],
        "per_voice": {
            "espeak": {"similarity": 0.8, "closest_reference": {"espeak": 1, "human": 1}},
            "human": {"similarity": 0.6, "closest_reference": {"espeak": 1}},
        },
    }
    out = broad.breakdown(result, {"human"})
    assert out["barks"] == 1.0 and out["natural_lines"] == 0.1 and out["by_category"]["question"] == 0.1
    assert "lines" not in out  # a scored result's "lines" are its rows: the breakdown must not replace them
    assert out["by_category"]["names"] is None
    assert out["under_8_words"] == 1.0 and out["8_words_or_more"] == 0.1
    assert out["human"] == {"voices": ["human"], "wer": 0.2, "similarity": 0.6, "id_accuracy": 0.0}
    assert out["synthetic"]["id_accuracy"] == 0.5 and out["synthetic"]["wer"] == round(1 / 11, 4)
