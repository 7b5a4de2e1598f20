"""Spell out what a TTS model must not read digit by digit.

English only so far. Handles cardinals (with separators, signs and decimals),
ordinals (1st, 22nd), currencies ($, £, €, ¥ with cents/pence), percentages,
clock times, game shorthands (10k gold, 2x, x3, lvl 5, HP/XP/MP...) and a few
titles. Everything else passes through untouched, punctuation included, because
the model uses it for prosody.
"""

from __future__ import annotations

import re

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = [(10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand")]
_ORDINAL_WORDS = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}


def _below_1000(n: int) -> str:
    words = []
    if n >= 100:
        words.append(f"{_ONES[n // 100]} hundred")
        n %= 100
    if n >= 20:
        words.append(_TENS[n // 10] + (f"-{_ONES[n % 10]}" if n % 10 else ""))
    elif n or not words:
        words.append(_ONES[n])
    return " ".join(words)


def cardinal(n: int) -> str:
    """42 -> 'forty-two'; -7 -> 'minus seven'."""
    if n < 0:
        return "minus " + cardinal(-n)
    if n >= 10**15:
        return " ".join(_ONES[int(d)] for d in str(n))
    words = []
    for value, name in _SCALES:
        if n >= value:
            words.append(f"{_below_1000(n // value)} {name}")
            n %= value
    if n or not words:
        words.append(_below_1000(n))
    return " ".join(words)


def ordinal(n: int) -> str:
    """21 -> 'twenty-first'."""
    words = cardinal(n)
    head, sep, last = words.rpartition("-") if "-" in words.split()[-1] else words.rpartition(" ")
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return head + sep + last


def _year_or_cardinal(n: int) -> str:
    # "1999" reads as a year; "1500 gold" as "fifteen hundred" is natural too.
    if 1100 <= n <= 1999:
        hi, lo = divmod(n, 100)
        return f"{cardinal(hi)} hundred" if lo == 0 else f"{cardinal(hi)} {'oh ' if lo < 10 else ''}{cardinal(lo)}"
    return cardinal(n)


def _number(text: str) -> str:
    """'1,234.50' -> 'one thousand two hundred thirty-four point five zero'."""
    whole, _, frac = text.replace(",", "").partition(".")
    n = int(whole) if whole else 0
    words = _year_or_cardinal(n) if len(whole) == 4 and not frac and "," not in text else cardinal(n)
    if frac:
        words += " point " + " ".join(_ONES[int(d)] for d in frac)
    return words


_CURRENCIES = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
    "¥": ("yen", "yen", "sen", "sen"),
}
_MULTIPLIERS = {"k": "thousand", "K": "thousand", "m": "million", "M": "million", "b": "billion", "B": "billion"}
# Spoken letter by letter (or as a word) wherever they stand alone.
_ABBREVIATIONS = {
    "HP": "H P",
    "XP": "X P",
    "MP": "M P",
    "SP": "S P",
    "NPC": "N P C",
    "NPCs": "N P Cs",
    "DPS": "D P S",
    "AoE": "A O E",
    "AFK": "A F K",
    "PvP": "P V P",
    "PvE": "P V E",
    "RPG": "R P G",
    "GG": "G G",
    "lvl": "level",
    "Lvl": "Level",
    "LVL": "level",
    "Lv": "level",
    "vs": "versus",
    "Dr.": "Doctor",
    "Mr.": "Mister",
    "Mrs.": "Missus",
    "Ms.": "Miz",
    "St.": "Saint",
    "Capt.": "Captain",
    "Sgt.": "Sergeant",
    "&": "and",
}

_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"
_RULES: list[tuple[re.Pattern, object]] = []


def _rule(pattern: str):
    def register(fn):
        _RULES.append((re.compile(pattern), fn))
        return fn

    return register


@_rule(r"(?<![\w.,-])\d+(?:-\d+)+(?![\w.,]?\d)")
def _digit_groups(m: re.Match) -> str:
    """Codes read group by group: a call sign "4-1", a combination "14-27-03", a phone
    number "555-0192". A group that is long or starts with 0 is read digit by digit."""

    def group(g: str) -> str:
        if len(g) > 2 or (g.startswith("0") and len(g) > 1):
            return " ".join("oh" if d == "0" else _ONES[int(d)] for d in g)
        return cardinal(int(g))

    return " ".join(group(g) for g in m[0].split("-"))


@_rule(rf"(?P<cur>[$£€¥])(?P<num>{_NUM})(?P<mult>[kKmMbB](?![a-zA-Z]))?")
def _currency(m: re.Match) -> str:
    one, many, sub_one, sub_many = _CURRENCIES[m["cur"]]
    num, mult = m["num"], m["mult"]
    if mult:
        return f"{_number(num)} {_MULTIPLIERS[mult]} {many}"
    whole, _, frac = num.replace(",", "").partition(".")
    units = int(whole or 0)
    words = f"{cardinal(units)} {one if units == 1 else many}"
    if frac and len(frac) == 2 and int(frac):
        cents = int(frac)
        words += f" and {cardinal(cents)} {sub_one if cents == 1 else sub_many}"
    elif frac and len(frac) != 2:
        words = f"{_number(num)} {many}"
    return words


@_rule(r"\b(?P<h>[01]?\d|2[0-3]):(?P<m>[0-5]\d)\b")
def _clock(m: re.Match) -> str:
    hours, minutes = int(m["h"]), int(m["m"])
    if minutes == 0:
        return f"{cardinal(hours)} o'clock"
    return f"{cardinal(hours)} {'oh ' if minutes < 10 else ''}{cardinal(minutes)}"


@_rule(r"\b(?P<num>\d+)(?P<suf>st|nd|rd|th)\b")
def _ordinal(m: re.Match) -> str:
    return ordinal(int(m["num"]))


@_rule(r"(?<![\w.])(?P<num>\d+)(?P<letter>[A-JLN-Z])\b")
def _numbered(m: re.Match) -> str:  # "Batch 7B", "Gate 22C": a letter, not billions ("$2B" is money)
    return f"{_number(m['num'])} {m['letter']}"


@_rule(rf"(?<![\w.])(?P<num>{_NUM})(?P<mult>[kKmMb])\b")
def _multiplied(m: re.Match) -> str:
    return f"{_number(m['num'])} {_MULTIPLIERS[m['mult']]}"


@_rule(rf"(?<![\w.])(?P<num>{_NUM})x\b")
def _times_after(m: re.Match) -> str:  # "2x damage"
    return f"{_number(m['num'])} times"


@_rule(rf"(?<![\w.])[x×](?P<num>{_NUM})\b")
def _times_before(m: re.Match) -> str:  # "potion x3"
    return f"times {_number(m['num'])}"


@_rule(rf"(?P<num>{_NUM})\s?%")
def _percent(m: re.Match) -> str:
    return f"{_number(m['num'])} percent"


@_rule(rf"(?<![\w.])-(?P<num>{_NUM})\b")
def _negative(m: re.Match) -> str:
    return f"minus {_number(m['num'])}"


@_rule(_NUM)
def _plain(m: re.Match) -> str:
    return _number(m[0])


_ABBREV_RE = re.compile(
    "|".join(
        (re.escape(k) if not k[-1].isalnum() else rf"\b{re.escape(k)}\b") + (r"(?=\s|$)" if k.endswith(".") else "")
        for k in sorted(_ABBREVIATIONS, key=len, reverse=True)
    )
)
_LEVEL_RE = re.compile(r"\b(level|lvl|Lv|LV)\.?\s*(\d+)\b", re.IGNORECASE)


def normalize(text: str) -> str:
    """Spell out numbers, currencies and game shorthands; keep everything else."""
    text = _LEVEL_RE.sub(lambda m: f"level {m[2]}", text)
    text = _ABBREV_RE.sub(lambda m: _ABBREVIATIONS[m[0]], text)
    for pattern, fn in _RULES:
        text = pattern.sub(fn, text)
    return text
