"""Speech-token LM inference engine: paged KV, per-voice prefix cache, continuous batching.

The public API is `Engine` (submit, warm_voice, unpin_voice, is_cached, stats) and
the `UtteranceStream` that `submit` returns (iterate it; cancel it).
"""
from engine.config import CacheConfig, EngineConfig, SamplingParams, SchedulerConfig, StreamConfig
from engine.engine import Engine
from engine.outputs import (AudioChunk, EngineOverloaded, EngineStats, Finished, NothingToSay, TimingMark,
                            UtteranceStream)
from engine.voice import VoicePrompt

__all__ = [
    "AudioChunk", "CacheConfig", "Engine", "EngineConfig", "EngineOverloaded", "EngineStats", "Finished",
    "NothingToSay", "SamplingParams", "SchedulerConfig", "StreamConfig", "TimingMark", "UtteranceStream", "VoicePrompt",
]
