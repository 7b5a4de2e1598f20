"""A small model with fixed random weights, written as a real checkpoint.

It exercises every engine path (paged attention, prefix cache, batching,
streaming) but it was never trained: its "speech" is random codec frames. The
trained default model arrives with issue 4.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from engine.config import ModelConfig
from engine.model import SpeechLM, save_model

TOY_CONFIG = ModelConfig(description="random weights, seed-fixed; for tests and benchmarks only, it does not speak")


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


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model_dir")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(make_toy_model(args.model_dir, args.seed))
