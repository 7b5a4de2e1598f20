"""What a load-test conversation says and how its playback is judged, shared by the Locust
users (loadtest/locustfile.py) and the lean asyncio driver (loadtest/driver.py), so both
drivers measure the same thing."""

from __future__ import annotations

import os
import random

import grpc

from service.fragments import llm_tokens

# The voices conversations pick from: the demo voices, or a list the scale-out sweep
# registered (more voices than replicas, so affinity can spread them).
DEMO_VOICES = os.environ.get("NPC_LOADTEST_VOICES", "guard,merchant,sprite").split(",")
RATE = 48000  # what Unity and Unreal mix at
TOKEN_GAP_S = (0.02, 0.05)  # an LLM writing the line: one token every 20-50 ms
THINK_S = (1.0, 3.0)  # between turns and between conversations, once the player has heard the line
THINK_FAST_S = (0.2, 0.5)  # NPC_LOADTEST_FAST (tests)

# Short first sentences, so the first utterance starts early (and its cut point is known).
OPENERS = [
    "Well met, traveler!",
    "Listen closely, friend.",
    "Hold on a moment.",
    "Look over there!",
    "Quiet now, they hear us.",
    "Ah, you are back.",
]
SENTENCES = [
    "The bridge to the north washed out in last night's storm.",
    "If you need a blade, the smith by the well owes me a favor.",
    "Bandits took the mill road, and nobody has come back since.",
    "I can sell you three potions for 40 gold, no questions asked.",
    "Do you really think the king will listen to the likes of us?",
    "Stay close to the torches once the sun goes down.",
    "My brother went into the mines two days ago and has not returned.",
    "Bring me ten wolf pelts and the reward is yours.",
]


def turn_text() -> tuple[str, int]:
    """A multi-sentence reply whose first sentence is short; returns it and the index of the
    token after that sentence (sending it lets the server cut the first utterance)."""
    opener = random.choice(OPENERS)
    text = " ".join([opener] + random.sample(SENTENCES, random.randint(2, 3)))
    return text, len(llm_tokens(opener))


class Playback:
    """Real-time playback of one turn, to count underruns."""

    def __init__(self):
        self.end: float | None = None  # when the audio delivered so far finishes playing

    def push(self, now: float, seconds: float) -> float:
        """Add a chunk arriving at `now`; returns the gap in ms if playback ran dry, else 0."""
        gap = 0.0
        if self.end is None:
            self.end = now
        elif now > self.end:
            gap = (now - self.end) * 1000
            self.end = now
        self.end += seconds
        return gap

    def remaining(self, now: float) -> float:
        """Seconds of delivered audio still to play at `now`: a player answers (and the think
        time starts) once the line has been heard, not when its last byte arrived."""
        return 0.0 if self.end is None else max(0.0, self.end - now)


def refusal_wait(exc) -> float | None:
    """How long a call the server turned away at admission (RESOURCE_EXHAUSTED) is asked to wait
    before it tries again, from its `retry-after-ms` trailer (1 s without one); None when the call
    failed otherwise. Sync or asyncio calls alike."""
    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    for key, value in exc.trailing_metadata() or ():
        if key == "retry-after-ms":
            return int(value) / 1000
    return 1.0
