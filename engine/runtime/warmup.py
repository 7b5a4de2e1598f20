"""A warm-up burst: run the engine at the shapes it will meet before anyone listens.

A fresh engine pays on first use for every batch size and prompt length it meets (oneDNN
builds a kernel primitive per new shape, ~2-3 ms per step over the packed linears), for
the codec's first calls at each window size, and for memory the allocator has not yet
touched. A server that takes players the moment it is up pays all of that during its
first crowd: on the 2-core reference machine, 16 users on a fresh server ran listeners dry
0.3-0.6 s into each of three runs, while only a few had started; with this warm-up (and the
frozen heap, engine/runtime/heap.py), in none of three (docs/benchmarks.md).

The burst below starts `streams` utterances a little apart, so the batch grows through
every size up to `streams` and shrinks back, with prompts of several lengths, each read to
its end as a listener's stream would be.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from engine.runtime.engine import Engine
from engine.runtime.outputs import AudioChunk, Finished
from engine.runtime.voice import VoicePrompt

# Lines of several lengths (prefill lengths and utterance lengths both vary).
LINES = (
    "Halt!",
    "Who goes there?",
    "The road north is closed until the snow melts.",
    "Bring me three wolf pelts and I will make it worth your while, traveller.",
    "Welcome back. The forge is hot, the ale is cold, and the mayor still owes me money.",
)


@dataclass(frozen=True)
class WarmupReport:
    streams: int
    seconds: float  # wall time of the whole burst
    audio_seconds: float  # audio generated, over all streams
    failed: int  # streams that ended with an error (the burst goes on without them)
    finished_at: float  # time.monotonic() when the last stream ended


def warm_up(
    engine: Engine,
    voice: VoicePrompt,
    streams: int,
    sample_rate: int | None = None,
    chunk_frames: int | None = None,
    gap_s: float = 0.05,
) -> WarmupReport:
    """Speak `streams` utterances in `voice`, started `gap_s` apart, each read to its end on its
    own thread in chunks of `chunk_frames` at `sample_rate`: what clients will ask for, so the
    codec's window sizes and the resampler warm too."""
    audio = [0.0] * streams
    failed = [False] * streams

    def speak(i: int) -> None:
        try:
            for item in engine.submit(voice, LINES[i % len(LINES)], sample_rate=sample_rate, chunk_frames=chunk_frames):
                if isinstance(item, AudioChunk):
                    audio[i] += len(item.samples) / item.sample_rate
                elif isinstance(item, Finished) and item.error:
                    failed[i] = True
        except Exception:  # a warm-up must not stop a server from starting
            failed[i] = True

    start = time.monotonic()
    threads = []
    for i in range(streams):
        t = threading.Thread(target=speak, args=(i,), name=f"warm-up {i}", daemon=True)
        t.start()
        threads.append(t)
        time.sleep(gap_s)
    for t in threads:
        t.join()
    end = time.monotonic()
    return WarmupReport(streams, end - start, sum(audio), sum(failed), end)
