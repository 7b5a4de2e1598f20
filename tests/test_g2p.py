"""The phoneme front end: lexicon lookups, reductions, derived forms, unknown names, spans."""

from __future__ import annotations

import pytest

from engine.text.g2p import G2P, PHONEMES, PUNCTUATION, STRESS, sound_out
from engine.text.tokenizer import FIRST_TEXT_ID, make_tokenizer


@pytest.fixture(scope="module")
def g2p():
    return G2P()


def test_lexicon_words_and_reduced_function_words(g2p):
    words = g2p("The road to Riverwood is closed.")
    assert [w.text for w in words] == ["The", "road", "to", "Riverwood", "is", "closed", "."]
    assert words[0].phonemes == "ðə" and words[2].phonemes == "tə"  # unstressed, before consonants
    assert g2p("the end")[0].phonemes == "ði" and g2p("to arms")[0].phonemes == "tʊ"  # before vowels
    assert g2p.word("road") == g2p.lexicon["road"]


def test_derived_forms_of_known_stems(g2p):
    # None of these inflected forms is in the lexicon; their stems are.
    for word, stem, ending in [
        ("goblins", "goblin", "z"),
        ("dragon's", "dragon", "z"),
        ("looted", "loot", "ᵻd"),
        ("nerfed", "nerf", "t"),
        ("griefing", "grief", "ɪŋ"),
        ("kobolds", "kobold", "z"),
    ]:
        assert g2p._lookup(word) is None
        assert g2p.word(word) == g2p.word(stem) + ending, word


def test_unknown_game_names_get_plausible_readings(g2p):
    assert g2p.word("Ironforge") == g2p.word("iron") + g2p.word("forge").replace("ˈ", "ˌ")  # compound
    assert g2p.word("NPC") == g2p.word("N") + g2p.word("P") + g2p.word("C")  # initialism
    for name in ("Zorblax", "Eldwyn", "Krath", "Vexaria"):
        ph = g2p.word(name)
        assert ph and set(ph) <= set(PHONEMES + STRESS) and "ˈ" in ph, (name, ph)
    assert sound_out("knight").startswith("n") and sound_out("Zane") == "zˈAn"


def test_spans_point_at_the_words(g2p):
    text = "Halt!  Who goes   there?"
    for w in g2p(text):
        assert text[w.start : w.end] == w.text
    assert [w.text for w in g2p(text) if not w.phonemes] == ["!", "?"]


def test_phoneme_tokenizer_ids_spans_and_overrides():
    tok = make_tokenizer("phonemes", 128)
    text = "Well met, Gimli! Ask /ɡˈɪmli/."
    ids, spans = tok.encode_spans(text)
    assert len(ids) == len(spans) and all(FIRST_TEXT_ID <= i < 128 for i in ids)
    symbols = "".join(tok.symbol(i) for i in ids)
    assert symbols.startswith("wˈɛl mˈɛt, ") and symbols.endswith("ˈæsk ɡˈɪmli.")
    for i, (a, b) in zip(ids, spans):
        piece = text[a:b]
        sym = tok.symbol(i)
        assert (sym == " " and piece.isspace()) or (sym in PUNCTUATION and piece == sym) or piece.strip("/").isalpha()
    assert tok.reads_phonemes and not make_tokenizer("chars", 128).reads_phonemes
    with pytest.raises(ValueError, match="too small"):
        make_tokenizer("phonemes", 32)
