"""A pocket-tts checkpoint loaded as our modules, and the whole-model weight check.

`load_model` reads `config.yaml`, builds the five parts and loads `model.safetensors` into them
under our own parameter names: every tensor of the file must land in exactly one part, with the
same shape, and every parameter must receive one (the checkpoint is loaded strictly, as a whole).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from engine.models.pocket_tts.backbone import Backbone
from engine.models.pocket_tts.config import PocketConfig, load_config
from engine.models.pocket_tts.flow_head import FlowHead
from engine.models.pocket_tts.layers import load_mapped
from engine.models.pocket_tts.mimi import MimiDecoder
from engine.models.pocket_tts.text import TextRules, Tokenizer
from engine.models.pocket_tts.voice import MimiEncoder


@dataclass
class PocketTTS:
    cfg: PocketConfig
    tokenizer: Tokenizer
    rules: TextRules
    backbone: Backbone
    head: FlowHead
    decoder: MimiDecoder
    encoder: MimiEncoder | None  # None when loaded without it (voices registered elsewhere)

    @property
    def sample_rate(self) -> int:
        return self.cfg.mimi.sample_rate

    @property
    def frame_size(self) -> int:
        return self.cfg.mimi.frame_size


def load_model(
    model_dir: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    with_encoder: bool = True,
) -> PocketTTS:
    """Build and load every part of the checkpoint in `model_dir`, in eval mode.

    `with_encoder=False` skips the Mimi encoder (9.75 M parameters in every shipped config),
    which only registering a new voice needs."""
    cfg = load_config(model_dir)
    L = cfg.latent_dim
    backbone = Backbone(cfg.flow_lm, L, cfg.mimi.voice_dim)
    head = FlowHead(cfg.flow_lm.flow, L, cfg.flow_lm.cond_dim)
    decoder = MimiDecoder(cfg.mimi)
    encoder = MimiEncoder(cfg.mimi)
    state = load_file(str(cfg.weights_path))
    used: set[str] = set()
    for part in (backbone, head, decoder, encoder):
        keys = part.checkpoint_keys()
        overlap = used & set(keys.values())
        if overlap:
            raise AssertionError(f"checkpoint keys mapped twice: {sorted(overlap)[:5]}")
        used |= load_mapped(part, state, keys)
    left = set(state) - used
    if left:
        raise ValueError(f"{cfg.weights_path}: tensors this model does not use: {sorted(left)[:8]}")
    parts = [p.to(device=device, dtype=dtype).eval() for p in (backbone, head, decoder)]
    head.prepare()  # in the target dtype and device
    enc = encoder.to(device=device, dtype=dtype).eval() if with_encoder else None
    return PocketTTS(cfg, Tokenizer(cfg.flow_lm.lookup_table), TextRules.of(cfg), *parts, enc)
