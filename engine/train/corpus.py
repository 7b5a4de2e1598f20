"""Text to train and evaluate on: game dialogue from templates, and broad English.

Deterministic for a seed. Game lines cover what NPCs say: barks, greetings,
questions, quests, trade with prices, combat calls, and longer lore lines;
numbers, names and game shorthand go through the same normaliser the service
uses. A line's split (train or held-out eval) depends only on its text, so it is
stable across runs. Broad lines (`BroadText`) are for training only: some thirty
templates repeat the same few hundred words, and an LLM writing an NPC's lines
will not keep to them.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import itertools
import json
import random
import re
from collections.abc import Callable

from engine.text.normalize import normalize

BARKS = [
    "Yes!",
    "No!",
    "Over here!",
    "Behind you!",
    "Run!",
    "Halt!",
    "For the king!",
    "Watch out!",
    "Incoming!",
    "Help!",
    "I need healing!",
    "Follow me!",
    "Fall back!",
    "Charge!",
    "Hurry!",
    "Quiet!",
    "Got it.",
    "Not now.",
    "Hmm?",
    "What was that?",
    "Stay close.",
    "Hold the line!",
    "They're coming!",
    "Take cover!",
    "Nice shot!",
    "I'm out of arrows!",
    "On my way.",
    "Thank you!",
    "Farewell.",
    "Get back here!",
    "Stop, thief!",
    "Who goes there?",
    "Leave me alone.",
    "Ha! Too slow!",
    "Is anyone there?",
]
TITLES = ["traveler", "friend", "stranger", "my lord", "my lady", "adventurer", "hero", "young one", "captain"]
PLACES = [
    "Riverwood",
    "the northern pass",
    "Ironforge",
    "the old mill",
    "Stormhold",
    "the capital",
    "the harbor",
    "Blackwater Keep",
    "the Whispering Woods",
    "the mines",
    "Eastmarch",
    "the temple",
    "Frostvale",
    "the crossroads",
    "Duskhollow",
    "the city gates",
    "the lighthouse",
    "Greywatch",
]
MONSTERS = ["wolf", "bandit", "goblin", "troll", "skeleton", "spider", "dragon", "wraith", "orc", "bear", "kobold"]
ITEMS = [
    "wolf pelt",
    "healing potion",
    "iron ingot",
    "arrow",
    "torch",
    "sword",
    "bottle of wine",
    "loaf of bread",
    "silver ring",
    "spell scroll",
    "shield",
    "lockpick",
    "mushroom",
    "crystal shard",
]
RELATIVES = ["brother", "sister", "son", "daughter", "husband", "wife", "father", "mother", "apprentice", "dog"]
# Held-out lines name people with common names: the ASR that scores them cannot know
# invented ones, which would measure whisper's spelling rather than our speech.
REAL_NAMES = ["Marcus", "Elena", "Thomas", "Greta", "Oliver", "Hilda", "Victor", "Rosa", "Martin", "Agnes"]
SYLLABLES = [
    "al",
    "bar",
    "cor",
    "dra",
    "el",
    "fen",
    "gar",
    "hal",
    "is",
    "jor",
    "kel",
    "lor",
    "mar",
    "nor",
    "or",
    "pel",
    "quin",
    "ros",
    "sil",
    "tor",
    "ul",
    "var",
    "wyn",
    "xan",
    "yor",
    "zel",
    "thra",
    "gwen",
    "bryn",
]

TEMPLATES = [
    "Well met, {title}.",
    "Welcome to {place}, {title}!",
    "Greetings, {name}. What brings you to {place}?",
    "Have you seen my {relative}? {pron} went to {place} {n} days ago.",
    "Do you know the way to {place}?",
    "Is it true that a {monster} was seen near {place}?",
    "Bring me {n} {items}, and I'll pay you {gold} gold.",
    "That'll be {gold} gold, {title}.",
    "I can sell you {n} {items} for ${price}.",
    "You want {n} {items}? That costs {gold} gold, no haggling.",
    "{Monsters} at the gate! Grab your weapons!",
    "The {monster} is wounded. Finish it!",
    "Careful, there are at least {n} {monsters} in those caves.",
    "You reached level {level}! Well done.",
    "Meet me at {hour}:{minute:02d} by the well in {place}.",
    "The caravan leaves at {hour}:{minute:02d}, don't be late.",
    "My name is {name}, and I have guarded {place} for {years} years.",
    "{name} told me the bridge to {place} collapsed last night.",
    "This potion restores {hp} HP, and that one gives you {xp} XP.",
    "Your sword does 2x damage against {monsters}.",
    "Only {pct}% of the recruits survive their first winter in {place}.",
    "I lost {gold} gold at the tables last night. Don't tell my {relative}.",
    "The {ordinal} bell means the gates are closing. Hurry, {title}!",
    "Why would anyone travel to {place} in this weather?",
    "Can you help me carry these {items} to {place}?",
    "What do you mean, the {monster} is gone? I saw it this morning!",
    "If you clear the {monsters} out of {place}, the council will reward you with 10k gold.",
    "Long ago, before the kingdom fell, {place} was the brightest city in the realm, and its towers could be "
    "seen from {place2}.",
    "They say {name} the Bold crossed the mountains alone, fought {n} {monsters}, and never once looked back.",
    "Listen closely, {title}. The road to {place} is long, the nights are cold, and the {monsters} are hungry.",
    "I don't trust {name}. Every time that one shows up, something goes missing from my shop.",
    "Sorry, I'm closed for the night. Come back tomorrow, and bring more than {gold} gold.",
]


def fantasy_name(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def plural(word: str) -> str:
    if word.endswith("f"):
        return word[:-1] + "ves"
    if " of " in word:
        head, _, tail = word.partition(" of ")
        return plural(head) + " of " + tail
    return word + ("es" if word.endswith(("s", "sh", "ch")) else "s")


def make_line(rng: random.Random, real_names: bool = False) -> str:
    if rng.random() < 0.15:
        return rng.choice(BARKS)
    monster, item = rng.choice(MONSTERS), rng.choice(ITEMS)
    places = rng.sample(PLACES, 2)
    fields = dict(
        title=rng.choice(TITLES),
        place=places[0],
        place2=places[1],
        name=rng.choice(REAL_NAMES) if real_names else fantasy_name(rng),
        relative=rng.choice(RELATIVES),
        pron=rng.choice(["He", "She"]),
        n=rng.randint(2, 12),
        items=plural(item),
        monster=monster,
        monsters=plural(monster),
        Monsters=plural(monster).capitalize(),
        gold=rng.choice([5, 12, 20, 35, 50, 75, 100, 150, 250, 1200]),
        price=f"{rng.randint(1, 99)}.{rng.choice([0, 25, 50, 99]):02d}",
        level=rng.randint(2, 60),
        hour=rng.randint(1, 12),
        minute=rng.choice([0, 5, 15, 30, 45]),
        years=rng.randint(3, 40),
        hp=rng.choice([25, 50, 100, 250]),
        xp=rng.choice([10, 100, 500, 1500]),
        pct=rng.choice([10, 25, 40, 60]),
        ordinal=rng.choice(["1st", "2nd", "3rd", "4th", "5th"]),
    )
    return rng.choice(TEMPLATES).format(**fields)


def is_heldout(text: str, share: float = 0.05) -> bool:
    """Held-out lines are fixed by their text alone."""
    digest = hashlib.blake2b(text.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") / 2**32 < share


def distinct(
    draw: Callable[[], str | None],
    count: int,
    tries: int,
    keep: Callable[[str], bool],
    key: Callable[[str], str] = lambda raw: raw,
) -> list[tuple[str, str]]:
    """Up to `count` (raw, normalised) lines from at most `tries` calls of `draw` (None: draw
    again), kept when `keep` allows and no line kept before had the same `key`. The same
    draws give the same list, and a larger `count` only extends it at its end, so the
    shards made from it keep their text."""
    out, seen = [], set()
    for _ in range(tries):
        raw = draw()
        if raw is None or key(raw) in seen or not keep(raw):
            continue
        seen.add(key(raw))
        out.append((raw, normalize(raw)))
        if len(out) == count:
            break
    return out


def lines(count: int, seed: int = 0, heldout: bool = False) -> list[tuple[str, str]]:
    """`count` distinct (raw, normalised) lines of one split."""
    rng = random.Random(seed)
    return distinct(lambda: make_line(rng, real_names=heldout), count, count * 200, lambda r: is_heldout(r) == heldout)


# A sentence we keep: plain words and numbers, commas inside, one full stop or
# question or exclamation mark at the end (no abbreviations, brackets or symbols).
_WORD = r"(?:[A-Za-z]+(?:'[a-z]+)?|\d+)"
_SENTENCE = re.compile(rf"[A-Z][a-z]*(?:'[a-z]+)? (?:{_WORD},? )*{_WORD}[a-z][.?!]")


class BroadText:
    """Sentences of general English with a wide vocabulary, for phonetic coverage.

    A seeded walk over the word-trigram table that the essential-generators package
    (MIT) ships, built from encyclopedia text; the output reads like a plausible
    fragment of an article, which is all a teacher voice needs to say it naturally.
    Loading the table takes ~10 s and ~1 GB."""

    def __init__(self):
        table = importlib.resources.files("essential_generators") / "markov_textgen.json"
        chain = json.loads(table.read_text(encoding="utf-8"))
        self.next = {
            k: (v["transitions"], list(itertools.accumulate(v["weights"])))
            for k, v in chain.items()
            if v.get("transitions")
        }
        self.starts = sorted(k for k in self.next if re.fullmatch(r"[A-Z][a-z]+ [a-z]+", k))

    def sentence(self, rng: random.Random, min_words: int = 4, max_words: int = 20) -> str | None:
        """One sentence, or None when this walk gave nothing we keep (draw again)."""
        words = rng.choice(self.starts).split()
        while len(words) < max_words and words[-1][-1] not in ".?!":
            step = self.next.get(f"{words[-2]} {words[-1]}")
            if step is None:
                return None
            options, cumulative = step
            words.append(rng.choices(options, cum_weights=cumulative)[0])
        text = " ".join(words)
        return text if len(words) >= min_words and _SENTENCE.fullmatch(text) else None

    def lines(self, count: int, seed: int = 0) -> list[tuple[str, str]]:
        """`count` distinct (raw, normalised) sentences, none of them a held-out line."""
        rng = random.Random(seed)
        return distinct(lambda: self.sentence(rng), count, count * 500, lambda raw: not is_heldout(raw))
