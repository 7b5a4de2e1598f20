"""Shared fixtures: a real checkpoint on disk (seeded random weights) and real engines."""
from __future__ import annotations

import math

import pytest
import torch

from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.engine import Engine
from engine.toy_model import make_toy_model

# A smaller toy than the benchmark's keeps the suite quick on 2 cores.
SMALL = dict(dim=128, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=256)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return make_toy_model(tmp_path_factory.mktemp("toy"), seed=0, **SMALL)


def speech_like(seconds: float, sr: int = 24000, f0: float = 140.0) -> torch.Tensor:
    """A gliding harmonic tone with a syllable-rate envelope: voiced, pitched, real audio."""
    t = torch.arange(int(seconds * sr)) / sr
    pitch = f0 * (1 + 0.15 * torch.sin(2 * math.pi * 0.7 * t))
    phase = torch.cumsum(2 * math.pi * pitch / sr, 0)
    wave = sum(torch.sin(k * phase) / k for k in range(1, 12))
    return 0.25 * wave * (0.6 + 0.4 * torch.sin(2 * math.pi * 4 * t).abs())


def make_engine(model_dir, num_blocks: int | None = 512, **sched) -> Engine:
    cfg = EngineConfig(cache=CacheConfig(block_size=16, num_blocks=num_blocks),
                       scheduler=SchedulerConfig(**sched), num_threads=2)
    return Engine(model_dir, cfg)


@pytest.fixture
def engine(model_dir):
    eng = make_engine(model_dir)
    yield eng
    eng.close()


@pytest.fixture
def voice(engine):
    return engine.make_voice(speech_like(2.0), 24000, "Well met, traveler. The road north is closed.", "guard")
