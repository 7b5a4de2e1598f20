"""Kyutai's pocket-tts checkpoints (`pocket-tts==4.0.1` format) served by our own modules.

The pieces an engine drives, each batched with explicit per-stream state:
    text.py       tokenizer, normalisation, sentence chunks
    backbone.py   FlowLM transformer: voice prefix, text, latent frames -> condition + EOS logit;
                  attention through the engine's paged KV cache
    flow_head.py  condition + caller's noise -> next latent
    mimi.py       streaming Mimi decoder: latents -> 24 kHz audio, state stacked per stream
    voice.py      voice registration: clip -> Mimi encoder latents -> voice prefix
    model.py      loading a checkpoint folder; generate.py: the single-stream reference loop
"""

from engine.models.pocket_tts.config import detect, load_config

__all__ = ["detect", "load_config"]
