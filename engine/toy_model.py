"""A small model with fixed random weights, written as a real checkpoint.

It exercises every engine path (paged attention, prefix cache, batching,
streaming) but it was never trained: its "speech" is random codec frames. The
trained default model arrives with issue 4.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from engine.config import ModelConfig
from engine.model import SpeechLM, save_model

# Length limits of about 1.5-3 frames per character keep utterances near the
# length real speech would have (~15 characters/s is 1.7 frames per character at
# 25 frames/s), so load tests see realistic audio durations.
TOY_CONFIG = ModelConfig(description="random weights, seed-fixed; for tests and benchmarks only, it does not speak",
                         min_frames_per_text_token=1.5, max_frames_per_text_token=3.0)


def make_toy_model(model_dir: str | Path, seed: int = 0, **overrides) -> Path:
    """Write config.json + model.safetensors with seeded random weights; returns the directory."""
    cfg = replace(TOY_CONFIG, **overrides)
    torch.manual_seed(seed)
    model = SpeechLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, 0.02 if p.ndim == 2 and "embeds" not in name else 0.5)
    save_model(model, model_dir)
    return Path(model_dir)


def toy_model_dir() -> Path:
    """The toy model in the user's cache, written on first use."""
    path = Path.home() / ".cache" / "npc-voice" / "toy-model-v2"  # v2: speech-like length limits
    if not (path / "model.safetensors").exists():
        make_toy_model(path, seed=0)
    return path


def reference_wave(seconds: float, sr: int = 24000, f0: float = 130.0, glide: float = 0.2,
                   glide_hz: float = 0.4, syllable_hz: float = 3.5, floor: float = 0.5) -> np.ndarray:
    """A gliding, syllable-paced harmonic signal standing in for a reference recording."""
    t = np.arange(int(seconds * sr)) / sr
    pitch = f0 * (1 + glide * np.sin(2 * math.pi * glide_hz * t))
    phase = np.cumsum(2 * math.pi * pitch / sr)
    wave = sum(np.sin(k * phase) / k for k in range(1, 12))
    return (0.25 * wave * (floor + (1 - floor) * np.abs(np.sin(2 * math.pi * syllable_hz * t)))).astype(np.float32)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model_dir")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(make_toy_model(args.model_dir, args.seed))
