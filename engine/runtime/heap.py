"""Keep Python's full garbage collections short in a long-running process.

A full (generation 2) collection walks every object the interpreter tracks, with the
interpreter lock held. A serving process holds a quarter of a million of them after start-up
(modules, the model's parameters, the voices, gRPC's and protobuf's tables), so each full
collection stopped the engine thread and the event loop for 96-148 ms on the 2-core reference
machine, and the audio process for ~70 ms: longer than the 120 ms a listener has buffered in
a turn's first chunks. Those collections come at random moments under load, so any stream
in its first chunks when one comes can run dry (docs/benchmarks.md).

None of that start-up state is garbage, so after start-up it is collected once and then
frozen (gc.freeze): later collections skip it and look only at what was made since.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect now, then exempt every object still alive from later collections. Call it once,
    when start-up is done; returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
