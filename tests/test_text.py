"""Text handling for LLM fragments: normalisation, utterance cutting, pronunciation overrides."""

from __future__ import annotations

import logging
import time

import pytest

from engine.text.normalize import cardinal, normalize, ordinal
from service.lexicon import Lexicon
from service.segmenter import MIN_WORDS, Segmenter


@pytest.mark.parametrize(
    "raw,spoken",
    [
        ("That'll be $5.50, traveler.", "That'll be five dollars and fifty cents, traveler."),
        ("Only $1 and 1 cent: $0.01!", "Only one dollar and one cent: zero dollars and one cent!"),
        ("I need 10k gold and 2x damage!", "I need ten thousand gold and two times damage!"),
        ("1.5k XP, 250 HP.", "one point five thousand X P, two hundred fifty H P."),
        ("Potion x3 for £2.", "Potion times three for two pounds."),
        ("Meet me at 7:05 on the 21st.", "Meet me at seven oh five on the twenty-first."),
        ("Back in 1999 we had 2000 men.", "Back in nineteen ninety-nine we had two thousand men."),
        ("Reach lvl 12 first.", "Reach level twelve first."),
        ("Dr. Vex vs the NPCs & me.", "Doctor Vex versus the N P Cs and me."),
        ("It's -5 out, 12% chance of snow.", "It's minus five out, twelve percent chance of snow."),
        ("Gate 1,204,000.", "Gate one million two hundred four thousand."),
        ("No digits here, friend.", "No digits here, friend."),
        ("Echo 4-1, dial 555-0192.", "Echo four one, dial five five five oh one nine two."),
        ("The code is 14-27-03.", "The code is fourteen twenty-seven oh three."),
        ("Batch 7B, not $2B or 3K.", "Batch seven B, not two billion dollars or three thousand."),
    ],
)
def test_normalize_spells_out_what_tts_must_say(raw, spoken):
    assert normalize(raw) == spoken


def test_number_words():
    assert cardinal(0) == "zero" and cardinal(15) == "fifteen" and cardinal(90) == "ninety"
    assert cardinal(101) == "one hundred one" and cardinal(1_000_001) == "one million one"
    assert ordinal(1) == "first" and ordinal(12) == "twelfth" and ordinal(40) == "fortieth"
    assert ordinal(23) == "twenty-third" and ordinal(1000) == "one thousandth"


def feed(seg: Segmenter, text: str, step: int = 3) -> list[str]:
    out = []
    for i in range(0, len(text), step):
        out += seg.push(text[i : i + step])
    return out


def test_sentences_are_cut_as_soon_as_they_end():
    seg = Segmenter()
    out = feed(seg, "Yes! Over here. The bridge is out")
    assert out == ["Yes!", "Over here."] and seg.buffer == "The bridge is out"
    assert seg.flush() == ["The bridge is out"] and seg.flush() == []


def test_boundary_waits_for_the_next_character():
    seg = Segmenter()
    assert seg.push("It costs 3.") == []  # might be "3.5"
    assert seg.push("5 gold. Pay") == ["It costs 3.5 gold."]
    assert seg.push("?") == [] and seg.push(" ") == ["Pay?"]


def test_titles_and_initials_do_not_end_sentences():
    seg = Segmenter()
    assert feed(seg, "Ask Dr. Vex and J. R. Smith. Then go. ") == ["Ask Dr. Vex and J. R. Smith.", "Then go."]


def test_clauses_and_long_runs_follow_the_schedule():
    seg = Segmenter(schedule=(20, 40))
    # The first cut is forced at the last space before 20 characters ("Well," is too early
    # to count as a clause); the second limit is 40, so a clause end after 20 counts, once
    # four words of the sentence have come after it.
    assert feed(seg, "Well, I suppose we could try the northern pass, then rest") == ["Well, I suppose we"]
    assert feed(seg, " by the old mill") == ["could try the northern pass,"]
    assert seg.buffer == "then rest by the old mill"
    seg = Segmenter(schedule=(10,))
    pieces = feed(seg, "abcdefghijklmnop qrstuvwxyz and more words")
    assert (
        all(len(p) <= 10 for p in pieces)
        and "".join(pieces + seg.flush()).replace(" ", "") == "abcdefghijklmnopqrstuvwxyzandmorewords"
    )


SENTENCES = [
    "I heard the fisherman found something strange near the center of the lake.",
    "Halt!",
    "Bring me ten wolf pelts, three bear claws, and the head of the beast that haunts the northern woods.",
    "Yes.",
    "The old bridge is out, so you will have to take the ford two miles downstream past the mill.",
    "Who goes there?",
    "Whatever the old books say, magic does not work here, not since the tower fell.",
]


@pytest.mark.parametrize("schedule", [(50, 120, 200, 260), (20, 40), (30,)])
@pytest.mark.parametrize("step", [1, 3, 7])
def test_a_cut_inside_a_sentence_leaves_at_least_four_words_on_each_side(schedule, step):
    """Streamed a few characters at a time, every piece is a whole sentence or holds at least
    MIN_WORDS words; no sentence ends in a short tail such as "lake."."""
    seg = Segmenter(schedule)
    text = " ".join(SENTENCES)
    pieces = feed(seg, text, step) + seg.flush()
    assert " ".join(pieces) == text
    whole = set(SENTENCES)
    for piece in pieces:
        assert piece in whole or len(piece.split()) >= MIN_WORDS, (piece, pieces)
    assert any(p not in whole for p in pieces)  # long sentences really were cut


def test_the_short_tail_of_a_sentence_waits_for_more_words():
    seg = Segmenter((50,))
    line = "I heard the fisherman found something strange in the"
    assert len(line) > 50 and line.rfind(" ", 0, 50) == line.rindex(" the")  # the cut would leave "the"
    assert feed(seg, line + " ") == []
    assert feed(seg, "lake.") == [] and seg.push(" ") == [line + " lake."]


def test_newline_is_a_boundary_and_reset_drops_text():
    seg = Segmenter()
    assert seg.push("First line\nsecond") == ["First line"]
    seg.reset()
    assert seg.buffer == "" and seg.emitted == 0 and seg.flush() == []


def test_lexicon_reloads_and_keeps_the_last_good_version(tmp_path, caplog):
    path = tmp_path / "lex.json"
    path.write_text('{"Gimli": "gim lee", "Sauron": "/ˈsaʊɹɒn/"}')
    with caplog.at_level(logging.WARNING):
        lex = Lexicon(path, phonemes_supported=False, check_every_s=0.0)
    assert "phonemes" in caplog.text  # the phoneme entry is skipped, and said so
    assert lex.apply("Gimli and GIMLI's axe; Gimlis.") == "gim lee and gim lee's axe; Gimlis."
    assert lex.apply("Sauron") == "Sauron"
    time.sleep(0.01)
    path.write_text('{"gimli": "ghim lie"}')
    assert lex.apply("Gimli!") == "ghim lie!"
    path.write_text('["not", "an", "object"]')
    assert lex.apply("Gimli!") == "ghim lie!" and "expected a JSON object" in lex.error
    assert Lexicon(path, phonemes_supported=True).entries == {}  # a bad file at start: empty, not fatal
    assert Lexicon(None).apply("Gimli") == "Gimli"


def test_lexicon_survives_entries_that_fold_case_unusually(tmp_path):
    path = tmp_path / "lex.json"
    path.write_text('{"ſam": "sahm"}')  # long s: matches "Sam" case-insensitively, lower() differs
    assert Lexicon(path).apply("Sam and ſam.") in ("Sam and sahm.", "sahm and sahm.")


def test_lexicon_keeps_phonemes_for_models_that_read_them(tmp_path):
    path = tmp_path / "lex.json"
    path.write_text('{"Sauron": "/ˈsaʊɹɒn/"}')
    assert Lexicon(path, phonemes_supported=True).apply("Sauron rises.") == "/ˈsaʊɹɒn/ rises."
