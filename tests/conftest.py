"""Shared fixtures: a real checkpoint on disk (seeded random weights) and real engines."""
from __future__ import annotations

import pytest
import torch

from engine.config import CacheConfig, EngineConfig, SchedulerConfig
from engine.engine import Engine
from engine.toy_model import make_toy_model, reference_wave

# A smaller toy than the benchmark's keeps the suite quick on 2 cores.
SMALL = dict(dim=128, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=256)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return make_toy_model(tmp_path_factory.mktemp("toy"), seed=0, **SMALL)


def speech_like(seconds: float, sr: int = 24000) -> torch.Tensor:
    """A gliding harmonic tone with a syllable-rate envelope: voiced, pitched, real audio."""
    return torch.from_numpy(reference_wave(seconds, sr, f0=140.0, glide=0.15, glide_hz=0.7, syllable_hz=4.0, floor=0.6))


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
