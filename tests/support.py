"""Helpers shared by the tests: the small toy model's size, engines, speech-like input,
a real gRPC server on loopback, and training data as the recipe writes it.

Fixtures live in conftest.py; everything a test imports by name lives here."""

from __future__ import annotations

import time

import numpy as np
import torch

from engine.audio import speechlike_wave
from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.runtime.engine import Engine

# The smallest toy: one layer, for tests of what the engine does around the model.
TINY = dict(dim=64, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=128)
# A smaller toy than the benchmark's keeps the suite quick on 2 cores.
# The generous length guard lets engine tests ask for long fixed-length utterances.
SMALL = dict(
    dim=128,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    ffn_dim=256,
    max_frames_per_text_token=8.0,
    min_frames_per_text_token=0.0,
)


def speech_like(seconds: float, sr: int = 24000) -> torch.Tensor:
    """A gliding harmonic tone with a syllable-rate envelope: voiced, pitched, real audio."""
    return torch.from_numpy(
        speechlike_wave(seconds, sr, f0=140.0, glide=0.15, glide_hz=0.7, syllable_hz=4.0, floor=0.6)
    )


def concurrently(fn, n: int, timeout: float = 60.0) -> list:
    """fn(0) ... fn(n - 1), each on its own thread at once, as concurrent clients would call;
    their results in order (an exception one raised stands in its place)."""
    import threading

    out: list = [None] * n

    def run(i: int) -> None:
        try:
            out[i] = fn(i)
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return out


def eventually(check, timeout: float = 5.0):
    """The value of `check()` once it is truthy; fails after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s")


def make_engine(model_dir, num_blocks: int | None = 512, prefix_cache: bool = True, **sched) -> Engine:
    cfg = EngineConfig(
        cache=CacheConfig(block_size=16, num_blocks=num_blocks, prefix_cache=prefix_cache),
        scheduler=SchedulerConfig(**sched),
        num_threads=2,
    )
    return Engine(model_dir, cfg)


def wait_idle(engine: Engine, timeout: float = 10.0):
    """Engine stats once nothing is running or waiting; fails after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = engine.stats()
        if s.running == 0 and s.waiting == 0:
            return s
        time.sleep(0.01)
    raise AssertionError(f"engine still busy: {engine.stats()}")


def paused(engine: Engine, stream, timeout: float = 30.0) -> None:
    """Wait until `stream` has run and stopped at its reader's buffer limit (nobody reads it)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        box = engine._outboxes.get(stream.seq.seq_id)
        if box is not None and box.pending_frames >= engine.config.scheduler.max_buffered_frames:
            return
        time.sleep(0.01)
    raise AssertionError(f"the stream never filled its buffer: {engine.stats()}")


class ServerThread:
    """A real gRPC server on loopback, run on its own event loop in a background thread."""

    def __init__(self, engine: Engine, voices_dir, **config):
        import asyncio
        import threading

        import grpc

        from service.config import ServiceConfig
        from service.gen import npc_voice_pb2_grpc as pb_grpc
        from service.server import start_server

        self.engine = engine
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        cfg = ServiceConfig(**{"port": 0, "voice_store": str(voices_dir), **config})
        fut = asyncio.run_coroutine_threadsafe(start_server(engine, cfg), self.loop)
        self.server, self.port, self.servicer = fut.result(60)
        self.address = f"127.0.0.1:{self.port}"
        self.channel = grpc.insecure_channel(self.address)
        self.stub = pb_grpc.NpcVoiceStub(self.channel)

    def stop(self) -> None:
        import asyncio

        self.channel.close()
        asyncio.run_coroutine_threadsafe(self.server.stop(None), self.loop).result(30)
        self.servicer.voices.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def audio_shard(path, texts):
    """An audio shard as synth_data writes it, with noise bursts standing in for speech."""
    from engine.text.tokenizer import make_tokenizer, spell
    from engine.train.synth_data import save_shard

    tok, rng = make_tokenizer("phonemes", 128), np.random.default_rng(0)
    records, audio = [], []
    for i, text in enumerate(texts):
        symbols = spell(tok, text)
        pcm = (rng.standard_normal(12000 + 4800 * i) * 3000).astype(np.int16)
        per = len(pcm) / 24000 / (len(symbols) + 2)
        records.append(
            {
                "text": text,
                "symbols": symbols,
                "voice": f"v{i % 2}",
                "speed": 1.0,
                "shift": 1.0,
                "durations": [per] * (len(symbols) + 2),
                "samples": len(pcm),
            }
        )
        audio.append(pcm)
    save_shard(path, records, audio)
    return records, audio
