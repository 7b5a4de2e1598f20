"""A small model with fixed random weights, written as a real checkpoint.

It exercises every engine path (paged attention, prefix cache, batching,
streaming) but it was never trained: its "speech" is random codec frames, which the
parametric codec renders as a buzzy, wordless voice.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from engine.config import CACHE_ROOT
from engine.models.speech_lm.config import GenerationConfig, ModelConfig
from engine.models.speech_lm.model import SpeechLM, save_model
from engine.models.speech_lm.speaker import WEIGHTS_FILE as SPEAKER_WEIGHTS
from engine.models.speech_lm.speaker import SpeakerEncoder
from engine.weights import save_weights

# Length limits of about 1.5-3 frames per character keep utterances near the
# length real speech would have (~15 characters/s is 1.7 frames per character at
# 25 frames/s), so load tests see realistic audio durations.
TOY_CONFIG = ModelConfig(
    description="random weights, seed-fixed; for tests and benchmarks only, it does not speak",
    generation=GenerationConfig(min_frames_per_text_token=1.5, max_frames_per_text_token=3.0),
)


def make_toy_model(model_dir: str | Path, seed: int = 0, **overrides) -> Path:
    """Write config.json + model.safetensors with seeded random weights; returns the directory."""
    cfg = TOY_CONFIG.updated(**overrides)
    torch.manual_seed(seed)
    model = SpeechLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                # The speaker projection as strong as an embedding: a voice's vector steers the draws.
                big = "embeds" in name or "speaker_proj" in name
                p.normal_(0.0, 0.02 if p.ndim == 2 and not big else 0.5)
    save_model(model, model_dir)
    if cfg.speaker_dim:  # a speaker encoder with torch's own random initialisation
        save_weights(Path(model_dir) / SPEAKER_WEIGHTS, SpeakerEncoder().state_dict())
    return Path(model_dir)


def toy_model_dir() -> Path:
    """The toy model in the user's cache, written on first use."""
    path = CACHE_ROOT / "toy-model-v2"  # v2: speech-like length limits
    if not (path / "model.safetensors").exists():
        make_toy_model(path, seed=0)
    return path


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model_dir")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(make_toy_model(args.model_dir, args.seed))
