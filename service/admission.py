"""Admission by measured headroom: is there room for one more conversation right now?

The measure is the margin by which audio reaches listeners before they need it. A
conversation's listener (`ListenerClock`) plays each turn from its first chunk without pause,
so a later chunk is due when the audio sent before it has played. When the stream's sender
had to wait for that chunk (nothing of it was queued), the server is what kept the listener
waiting, and how early the chunk still came is its slack. A chunk that was queued already
and only waited for a slow client says nothing about the server, so a client that stops
reading cannot close admission for everyone.

A new conversation is refused while the least slack seen within the last `window_s` is under
`min_slack_s`: some listener came that close to running dry, so the machine has no room for
another prefill and first-chunk ramp. As in CoDel, the minimum over a window is what counts,
so one thin moment closes the door for a while and a burst of arrivals cannot all slip through
before the measure moves. Busy fractions (engine.runtime.busy) cannot tell this: streams race
ahead of real time, so the engine thread is busy 0.8-0.99 at any load from 16 users on.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque


class Headroom:
    """The least slack of starved chunks over a sliding window. Any thread records and reads."""

    def __init__(self, window_s: float = 2.0, min_slack_s: float = 0.0):
        self.window_s = window_s
        self.min_slack_s = min_slack_s  # 0: never refuse (measured and exported only)
        self._lows: deque[tuple[float, float]] = deque()  # (time, slack), slack increasing from the left
        self._lock = threading.Lock()

    def record(self, slack_s: float, now: float | None = None) -> None:
        """A chunk the sender waited for arrived `slack_s` seconds before it was due (< 0: late)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            # A monotone queue: an older entry with more slack can never again be the minimum.
            while self._lows and self._lows[-1][1] >= slack_s:
                self._lows.pop()
            self._lows.append((now, slack_s))
            self._expire(now)

    def least(self, now: float | None = None) -> float:
        """The least slack within the window; inf when no starved chunk was seen in it."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._expire(now)
            return self._lows[0][1] if self._lows else math.inf

    def full(self, now: float | None = None) -> bool:
        """Whether a new conversation should be refused now."""
        return self.min_slack_s > 0 and self.least(now) < self.min_slack_s

    def _expire(self, now: float) -> None:
        while self._lows and self._lows[0][0] < now - self.window_s:
            self._lows.popleft()


class ListenerClock:
    """The server's view of one conversation's listener, who plays each chunk as it comes, in
    real time and without pause: the same rule the load test's players judge underruns by."""

    def __init__(self):
        self.end = -math.inf  # when the audio sent so far has played out
        self.utterance: int | None = None

    def chunk(self, utterance_id: int, submitted_at: float, seconds: float, now: float | None = None) -> float | None:
        """A chunk of `seconds` leaves now; returns its slack, the audio the listener still had to
        play (< 0: ran dry that long before it came). None when the listener starts afresh: the
        first chunk of an utterance whose text was submitted (`submitted_at`, perf_counter) after
        the audio before it had played out, so the wait was for text, not for the server."""
        now = time.perf_counter() if now is None else now
        first = utterance_id != self.utterance
        self.utterance = utterance_id
        slack = None if first and submitted_at >= self.end else self.end - now
        self.end = max(self.end, now) + seconds
        return slack


class StartRate:
    """A token bucket over new streams: at most `burst` at once, then `per_s` a second.

    What a machine runs out of first is not conversations but their starts: a stream's first
    seconds (the text prefill, then a ramp of small chunks, each its own codec call) cost
    several times its steady state. On the 2-core reference machine 16 conversations whose
    first turns start over 3 s all keep real time, while the same 16 starting within 2 s run
    some listeners dry (docs/benchmarks.md). Spreading a burst of arrivals over the rate the
    machine has shown it can start protects the streams already running.

    A start whose token comes within `hold_s` books it now and waits for it (a queue, as in
    GCRA: the bucket goes into debt, so later starts wait behind it); one further off is
    refused and told when to retry. Holding rather than refusing lets a small burst absorb a
    crowd of NPCs that start together, at the cost of a short wait before their first turn."""

    def __init__(self, per_s: float = 0.0, burst: int = 1, hold_s: float = 0.0):
        self.per_s = per_s  # 0: off
        self.burst = max(1, burst)
        self.hold_s = max(0.0, hold_s)
        self._tokens = float(self.burst)  # below 0: starts booked ahead of their token
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def scaled(self, share: float = 1.0) -> tuple[int, float]:
        """The burst and the rate at `share` of the configured ones (at least one start at once)."""
        return max(1, round(self.burst * share)), self.per_s * share

    def take(self, now: float | None = None, share: float = 1.0) -> float:
        """The seconds until one more start's token comes (0.0: it may go now). At most `hold_s`:
        the token is booked and the start must wait that long. Beyond it: nothing is spent (the
        start is refused), and a retry after `wait - hold_s` would be booked. `share` scales the
        burst and the rate (the server passes the share of max_sessions it admits now)."""
        if self.per_s <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        burst, per_s = self.scaled(share)
        with self._lock:
            self._tokens = min(burst, self._tokens + max(0.0, now - self._at) * per_s)
            self._at = now
            wait = max(0.0, (1 - self._tokens) / per_s)
            if wait <= self.hold_s:
                self._tokens -= 1
            return wait

    def refund(self) -> None:
        """Give back a token booked by `take` for a start that never went (its client left
        during the hold): the starts after it need not wait behind a stream that is gone."""
        if self.per_s <= 0:
            return
        with self._lock:
            self._tokens = min(self.burst, self._tokens + 1)


class SessionLimit:
    """How many streams may be open at once: `ceiling` (max_sessions), lowered when the server
    keeps letting listeners run dry and raised back one at a time after quiet spells.

    The headroom gate (`Headroom`) closes the door for a window of seconds after a thin moment.
    Where conversations last a few turns, few starts fall inside that window, and a machine
    slower than the one the ceiling was measured on runs listeners dry turn after turn with
    the door open (docs/benchmarks.md, the AVX2 host). This gate remembers instead, as a
    congestion window does. Dry listeners less than `moment_s` apart are one thin moment: a
    crowd whose first turns start together makes one, and passes. A second moment within
    `raise_s` of the one before says the load itself is too much: it sets the limit to the
    streams then open minus one. Each `raise_s` with no listener run dry admits one more
    again, so a passing disturbance (another tenant, a noisy hour) costs a stream for a
    while, not for good. While more streams are open than the limit (admitted before the
    cut), the cut has not yet taken effect, and a moment then cuts nothing more. The start
    rate (`StartRate`) scales with the limit: a machine that keeps fewer streams also starts
    fewer at once."""

    def __init__(self, ceiling: int, raise_s: float = 0.0, moment_s: float = 3.0):
        self.ceiling = ceiling
        self.raise_s = raise_s  # 0: off, the limit stays at the ceiling
        self.moment_s = moment_s
        self._limit = ceiling
        self._since = -math.inf  # the last dry listener or raise: quiet time counts from here
        self._last_dry = -math.inf  # ends the thin moment it belongs to
        self.cuts = 0  # how often the limit was lowered
        self._lock = threading.Lock()

    def dry(self, open_streams: int, now: float | None = None) -> bool:
        """A listener ran dry with `open_streams` streams open; True when that lowered the limit."""
        if self.raise_s <= 0:
            return False
        now = time.monotonic() if now is None else now
        with self._lock:
            self._settle(now)
            cut = False
            if now - self._last_dry >= self.moment_s:  # a new thin moment
                recurs = now - self._last_dry <= self.raise_s
                if recurs and 1 < open_streams <= self._limit:  # (one stream alone: nothing to protect)
                    self._limit = open_streams - 1
                    self.cuts += 1
                    cut = True
            self._last_dry = self._since = now
            return cut

    def value(self, now: float | None = None) -> int:
        """The streams that may be open now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._settle(now)
            return self._limit

    def _settle(self, now: float) -> None:
        if self._limit < self.ceiling and self.raise_s > 0:
            raised = int((now - self._since) // self.raise_s)
            if raised > 0:
                self._limit = min(self.ceiling, self._limit + raised)
                self._since += raised * self.raise_s
