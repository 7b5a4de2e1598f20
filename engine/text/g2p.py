"""English grapheme-to-phoneme conversion for the speech LM's front end.

Pronunciations come from the US English lexicons that ship in the `misaki`
package (Apache-2.0; about 180k entries in the IPA-like set Kokoro was trained
on, so teacher audio and our model share one phoneme set). Only its data is
used: the lookup rules, function-word reductions, suffix handling, compound
splitting and the letter-to-sound fallback for unknown names are written here,
and the same code runs in training and at serving time.

Output: a list of `Word`s, each with its character span in the input and its
phonemes, so timing marks can be traced back to the words of the text.
Text is expected to be normalised already (numbers spelled out, see
engine/normalize.py); stray digits are read one by one.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from dataclasses import dataclass
from functools import lru_cache

# The phoneme symbols the lexicons use (US): one character each. A, I, O, W, Y are
# the diphthongs eɪ, aɪ, oʊ, aʊ, ɔɪ; ᵊ and ᵻ are reduced vowels; ˈ ˌ mark stress.
PHONEMES = "AIOWYbdfhijklmnpstuvwzæðŋɑɔəɛɜɡɪɹɾʃʊʌʒʤʧθᵊᵻʔ"
STRESS = "ˈˌ"
PUNCTUATION = '.,!?;:—…"()'
_VOWELS = set("AIOWYiuæɑɔəɛɜɪʊʌᵊᵻ")

_TOKEN = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)*|\d|[.,!?;:—…\"()]|-")
_DIGITS = "zero one two three four five six seven eight nine".split()


@dataclass(frozen=True)
class Word:
    text: str
    start: int  # character span in the input
    end: int
    phonemes: str  # "" for punctuation, which is its own symbol


@lru_cache(maxsize=1)
def _lexicon() -> dict[str, str]:
    """Gold entries override silver ones; entries by part of speech keep their default."""
    data = importlib.resources.files("misaki") / "data"
    merged: dict[str, str] = {}
    for name in ("us_silver.json", "us_gold.json"):
        for word, entry in json.loads((data / name).read_text(encoding="utf-8")).items():
            if isinstance(entry, dict):
                entry = entry.get("DEFAULT") or next((v for v in entry.values() if v), None)
            if entry:
                merged[word] = entry
    return merged


# Unstressed forms of function words, as they are said in running speech.
_REDUCED = {
    "a": "ə",
    "an": "ən",
    "the": "ðə",
    "to": "tə",
    "of": "əv",
    "and": "ænd",
    "for": "fɔɹ",
    "or": "ɔɹ",
    "at": "æt",
    "as": "æz",
    "was": "wʌz",
    "from": "fɹʌm",
}
_BEFORE_VOWEL = {"the": "ði", "to": "tʊ"}

# Letter-to-sound fallback, longest spelling first. Crude by design: it only has to
# give unknown names (Zorblax, Eldwyn) a plausible, pronounceable reading.
_SPELLING = sorted(
    {
        "tch": "ʧ",
        "sch": "sk",
        "igh": "I",
        "th": "θ",
        "sh": "ʃ",
        "ch": "ʧ",
        "ph": "f",
        "ng": "ŋ",
        "ck": "k",
        "qu": "kw",
        "wh": "w",
        "ee": "i",
        "ea": "i",
        "oo": "u",
        "ou": "W",
        "ow": "O",
        "ai": "A",
        "ay": "A",
        "oi": "Y",
        "oy": "Y",
        "au": "ɔ",
        "aw": "ɔ",
        "ie": "i",
        "ei": "A",
        "er": "əɹ",
        "ar": "ɑɹ",
        "or": "ɔɹ",
        "ir": "ɜɹ",
        "ur": "ɜɹ",
        "x": "ks",
        "a": "æ",
        "e": "ɛ",
        "i": "ɪ",
        "o": "ɑ",
        "u": "ʌ",
        "y": "i",
        "c": "k",
        "g": "ɡ",
        "j": "ʤ",
        "q": "k",
        "r": "ɹ",
        "b": "b",
        "d": "d",
        "f": "f",
        "h": "h",
        "k": "k",
        "l": "l",
        "m": "m",
        "n": "n",
        "p": "p",
        "s": "s",
        "t": "t",
        "v": "v",
        "w": "w",
        "z": "z",
    }.items(),
    key=lambda kv: -len(kv[0]),
)
_LONG = {"a": "A", "e": "i", "i": "I", "o": "O", "u": "u", "y": "I"}


def _stress_first_vowel(ph: str) -> str:
    for i, c in enumerate(ph):
        if c in _VOWELS:
            return ph[:i] + "ˈ" + ph[i:]
    return ph


def sound_out(word: str) -> str:
    """Letter-to-sound rules for a word no lexicon knows."""
    w = word.lower()
    magic_e = len(w) > 3 and w.endswith("e") and w[-2] not in "aeiouy" and w[-3] in "aeiouy"
    if magic_e:  # "zane" -> long a, silent e
        w = w[:-3] + "\0" + w[-2]
    out, i = [], 0
    while i < len(w):
        if w[i] == "\0":
            out.append(_LONG[word.lower()[-3]])
            i += 1
            continue
        if i == 0 and w[:2] in ("kn", "wr"):
            out.append("n" if w[0] == "k" else "ɹ")
            i += 2
            continue
        if w[i] == "y" and i == 0:
            out.append("j")
            i += 1
            continue
        for spelling, ph in _SPELLING:
            if w.startswith(spelling, i):
                out.append(ph)
                i += len(spelling)
                break
        else:
            i += 1  # a letter with no sound of its own
    return _stress_first_vowel("".join(out))


class G2P:
    def __init__(self, extra: dict[str, str] | None = None):
        self.lexicon = _lexicon()
        self.extra = {k.lower(): v for k, v in (extra or {}).items()}

    def __call__(self, text: str) -> list[Word]:
        tokens = [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]
        words = []
        for i, (tok, start, end) in enumerate(tokens):
            if tok in PUNCTUATION:
                words.append(Word(tok, start, end, ""))
            elif tok == "-":
                continue  # hyphens join compounds; the parts are words of their own
            else:
                nxt = next((t for t, _, _ in tokens[i + 1 :] if t not in PUNCTUATION and t != "-"), "")
                words.append(Word(tok, start, end, self.word(tok, nxt)))
        return words

    def word(self, word: str, next_word: str = "") -> str:
        """Phonemes of one word; `next_word` picks "the"/"to" before a vowel sound."""
        if word.isdigit():
            return self.word(_DIGITS[int(word)])
        word = word.replace("’", "'")
        low = word.lower()
        if low in self.extra:
            return self.extra[low]
        if low in _BEFORE_VOWEL and next_word and self._starts_with_vowel(next_word):
            return _BEFORE_VOWEL[low]
        if low in _REDUCED:
            return _REDUCED[low]
        return (
            self._lookup(word) or self._derived(word) or self._compound(low) or self._spelled(word) or sound_out(word)
        )

    def _starts_with_vowel(self, word: str) -> bool:
        ph = (self._lookup(word) or sound_out(word)).lstrip(STRESS)
        return bool(ph) and ph[0] in _VOWELS

    def _lookup(self, word: str) -> str | None:
        for form in (word, word.lower(), word.capitalize()):
            if form in self.lexicon:
                return self.lexicon[form]
        return None

    def _derived(self, word: str) -> str | None:
        """Possessives and regular -s / -ed / -ing forms of a known stem."""
        low = word.lower()
        for suffix in ("'s", "s", "es"):
            if low.endswith(suffix) and (stem := self._lookup(low[: -len(suffix)])):
                last = stem.rstrip(STRESS)[-1]
                return stem + ("ᵻz" if last in "szʃʒʧʤ" else "s" if last in "ptkfθ" else "z")
        for suffix in ("ed", "d"):
            if low.endswith(suffix) and (stem := self._lookup(low[: -len(suffix)])):
                last = stem[-1]
                return stem + ("ᵻd" if last in "td" else "t" if last in "pkfθsʃʧ" else "d")
        if low.endswith("ing"):
            for stem_text in (low[:-3], low[:-3] + "e", low[:-4]):
                if len(stem_text) > 1 and (stem := self._lookup(stem_text)):
                    return stem + "ɪŋ"
        return None

    def _compound(self, low: str) -> str | None:
        """Game names are often two known words: Riverwood, Ironforge, Stormhold."""
        for cut in range(len(low) - 3, 2, -1):
            head, tail = self._lookup(low[:cut]), self._lookup(low[cut:])
            if head and tail:
                return head + tail.replace("ˈ", "ˌ")
        return None

    def _spelled(self, word: str) -> str | None:
        """Short all-capital words nobody knows are initialisms: NPC, XP."""
        if 1 < len(word) <= 5 and word.isupper():
            letters = [self._lookup(c) for c in word]
            if all(letters):
                return "".join(letters)
        return None
