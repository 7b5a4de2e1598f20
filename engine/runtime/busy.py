"""How busy a worker is: the fraction of wall time it spends working, smoothed.

The engine thread (LM steps) and the audio worker (codec calls, on a thread or in the audio
process, which reports its busy time per call) are the two serial stages every stream goes
through. Their busy fractions are exported as metrics. They do not decide admission: streams
run ahead of real time whenever they can, so the engine thread reads busy at any load from a
dozen streams on (service/admission.py measures headroom by how early audio arrives instead).
"""

from __future__ import annotations

import math
import time


class BusyMeter:
    """Exponentially weighted busy fraction with time constant `tau_s`. One thread records;
    any thread reads (a float read is atomic in CPython)."""

    def __init__(self, tau_s: float = 5.0):
        self.tau_s = tau_s
        self._value = 0.0
        self._last = time.monotonic()

    def record(self, busy_s: float) -> None:
        """The thread worked `busy_s` seconds since its previous record (the rest was waiting)."""
        now = time.monotonic()
        dt = now - self._last
        if dt <= 0:
            return
        self._last = now
        weight = 1 - math.exp(-dt / self.tau_s)
        self._value += weight * (min(busy_s / dt, 1.0) - self._value)

    def read(self) -> float:
        """The fraction now: time since the last record counts as idle (a waiting thread
        records nothing)."""
        return self._value * math.exp(-max(0.0, time.monotonic() - self._last) / self.tau_s)
