"""Speech-token LM inference engine: paged KV, per-voice prefix cache, continuous batching.

The public API is `Engine` (submit, warm_voice, unpin_voice, is_cached, stats) and
the `UtteranceStream` that `submit` returns (iterate it; cancel it).

Names are imported on first use, so `engine.audio` and the configs load without torch
(the CLI's client commands stay quick to start).
"""

from __future__ import annotations

import importlib

_HOME = {
    "AudioChunk": "engine.runtime.outputs",
    "EngineOverloaded": "engine.runtime.outputs",
    "EngineStats": "engine.runtime.outputs",
    "Finished": "engine.runtime.outputs",
    "NothingToSay": "engine.runtime.outputs",
    "TimingMark": "engine.runtime.outputs",
    "UtteranceStream": "engine.runtime.outputs",
    "EngineClosed": "engine.runtime.outputs",
    "EngineError": "engine.runtime.outputs",
    "FinishReason": "engine.runtime.outputs",
    "CacheConfig": "engine.config",
    "EngineConfig": "engine.config",
    "SamplingParams": "engine.config",
    "SchedulerConfig": "engine.config",
    "StreamConfig": "engine.config",
    "Engine": "engine.runtime.engine",
    "VoicePrompt": "engine.runtime.voice",
}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value
