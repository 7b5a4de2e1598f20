"""Short lines for training: barks, replies and calls of one to four words.

What NPCs say most is short, and the template corpus holds almost none of it: its
35 barks are drawn often but kept once each (lines are distinct), so in 18,080
training lines about 30 are under four words. A short line is its own regime for the
LM (a prompt, a few phonemes, then the end), and the broad suite's barks score worst.

Lines are built from parts (calls, orders, counts, places, names, replies), so that
thousands differ. None falls in the template corpus's held-out split (filtered out
here), and none of the first thousands is a line of the broad evaluation suite
(tests/test_train_corpus.py). The list does not depend on the suite: training text,
once made, stays as it is, and a line added to the suite later must not be one of these.
"""

from __future__ import annotations

import random
import re

from engine.train.corpus import MONSTERS, PLACES, REAL_NAMES, TITLES, distinct, fantasy_name, is_heldout, plural

ORDERS = (  # taking no object
    "Run|Hide|Wait|Listen|Look|Move|Stop|Go|Jump|Retreat|Advance|Attack|Hurry|Rest|Kneel|Sit|Stand|"
    "Breathe|Focus|Pray|Swim|Fall back|Push on|Hold on|Get down|Keep up|Stay calm|Spread out|Move in|Pull back"
).split("|")
VERBS = (  # taking one of THINGS
    "Open|Close|Grab|Drop|Lift|Pull|Push|Climb|Search|Check|Block|Guard|Watch|Fetch|Carry|Load|Hold|"
    "Follow|Light|Ring|Raise|Lower|Bar|Cut|Burn|Mind|Find|Secure|Free|Bring"
).split("|")
THINGS = (
    "the gate|the door|the rope|the torch|the bridge|the wagon|the lever|the chest|the horses|the fire|"
    "the lantern|the boat|the ladder|the window|the map|the key|the bell|the cart|your shield|your bow|"
    "the wounded|the rear|the flank|the stairs|the walls|the tower|the prisoner|the sails|the oars|the well"
).split("|")
CALLS = "Oh|Ah|Hey|Quick|Well|Aye|Hmm|Right|Yes|No|Please|Now|Easy|Careful|Blast|Ugh|Psst|Look|Listen".split("|")
COUNTS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "a dozen")
PREPOSITIONS = ("behind", "under", "near", "past", "over", "across", "inside", "beyond", "by")
REPLIES = (
    "Very well|Of course|Right away|As you wish|Not bad|Good work|Well done|Too late|Never again|Almost there|"
    "Keep going|Stay back|Move aside|Come closer|Be quiet|I knew it|I'm hit|I'm fine|It's locked|It's empty|"
    "It's gone|It's a trap|Now what|Who's there|Are you hurt|Is it safe|Need something|Anything else|Why me|"
    "How much|Deal|No deal|Done|Agreed|Impossible|Unbelievable|Finally|Perfect|Excellent|Magnificent|"
    "Wonderful|Nonsense|Absolutely|Certainly|Indeed|Perhaps|Maybe later|Good morning|Good evening|Good night|"
    "Sleep well|Safe travels|Come again|Welcome back|Goodbye|See you soon|Thanks|Many thanks|Sorry|My mistake|"
    "Not today|Not here|Not yet|Right here|Over there|This way|That way|Up here|Down there|Stand firm|"
    "Steady now|Quiet now|Eyes open|Stay sharp|Watch it|Mind your step|Hold it|Got one|Got away|Missed|"
    "Still alive|Barely|Never mind|Forget it|Fair enough|Sounds good|I'll go|I'm coming|Wait for me|"
    "After you|Follow the road|Ask the smith|Try the tavern|Nothing here|Something's wrong|Smells like smoke"
).split("|")
QUESTIONS = ("Where's {name}", "{name}", "Seen {name}", "Is that {name}", "Who sent you")
ASKED = {
    "Now what",
    "Who's there",
    "Are you hurt",
    "Is it safe",
    "Need something",
    "Anything else",
    "Why me",
    "How much",
}


def _end(rng: random.Random) -> str:
    return "!" if rng.random() < 0.6 else "."


def _name(rng: random.Random) -> str:
    return rng.choice(REAL_NAMES) if rng.random() < 0.5 else fantasy_name(rng)


def make_short_line(rng: random.Random) -> str:
    """One short line; the kind is drawn, then its parts."""
    order, verb, thing, monster = rng.choice(ORDERS), rng.choice(VERBS), rng.choice(THINGS), rng.choice(MONSTERS)
    kind = rng.randrange(12)
    if kind == 0:
        return order + _end(rng)
    if kind == 1:
        return f"{verb} {thing}{_end(rng)}"
    if kind == 2:
        return f"{rng.choice(CALLS)}, {order.lower()}{_end(rng)}"
    if kind == 3:
        return f"{rng.choice(TITLES).capitalize()}, {order.lower()}{_end(rng)}"
    if kind == 4:
        return f"{_name(rng)}, {verb.lower()} {thing}!"
    if kind == 5:  # counts, as digits or words: the normaliser spells digits as the service would
        count = str(rng.randint(2, 12)) if rng.random() < 0.5 else rng.choice(COUNTS)
        return f"{count.capitalize()} {'more ' if rng.random() < 0.4 else ''}{plural(monster)}!"
    if kind == 6:
        place = rng.choice([p for p in PLACES if len(p.split()) <= 3])
        return f"To {place}!" if rng.random() < 0.5 else f"{rng.choice(PREPOSITIONS).capitalize()} {thing}{_end(rng)}"
    if kind == 7:
        return f"{plural(monster).capitalize()}! {order}!"
    if kind == 8:
        return rng.choice(QUESTIONS).format(name=_name(rng)) + "?"
    if kind == 9:
        article = "An" if monster[0] in "aeiou" else "A"
        return f"{rng.choice(['The', article])} {monster}{_end(rng)}"
    reply = rng.choice(REPLIES)
    if reply in ASKED:
        return reply + "?"
    if kind == 10 and len(reply.split()) <= 2:
        return f"{reply}, {rng.choice(TITLES)}."
    return reply + _end(rng)


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z' ]", " ", text.lower()).split())


def short_lines(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """`count` distinct (raw, normalised) short lines of one to four words; the same list
    grows by appending as `count` grows, so earlier shards keep their text."""
    rng = random.Random(seed)

    def keep(raw: str) -> bool:
        return not is_heldout(raw) and 1 <= len(_words(raw).split()) <= 4

    return distinct(lambda: make_short_line(rng), count, count * 200, keep, key=_words)
