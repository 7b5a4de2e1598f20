"""engine.eval: word-error scoring and pooling several seeds into one result."""

from __future__ import annotations

import numpy as np
import pytest


def test_wer_scoring_normalises_like_our_text():
    from engine.eval import edit_distance, join_compounds, words

    truth = words("The caravan leaves at twelve thirty. Guard Eastmarch for seventy-two dollars!")
    hyp = join_compounds(words("The caravan leaves at 12.30, guard East March for 72$."), truth)
    assert edit_distance(truth, hyp) == 0
    assert edit_distance(words("a b c d"), words("a x c")) == 2  # one substitution, one deletion
    assert join_compounds(["the", "east"], ["the", "east"]) == ["the", "east"]  # real words stay apart


def test_several_seeds_pool_into_one_result_that_keeps_each_seeds_figures():
    """eval --seeds N: wer over every word of every seed, means of the rest, closest references
    summed. score() is fed by a fixed judge (the pooling is under test, not whisper)."""
    from engine.eval import pool, score

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
