"""Per-row sampling of a frame from per-channel logits.

Each row is filtered (repetition penalty, temperature, top-k, top-p) and drawn
with that request's own generator, which is what makes a seed give the same
frames alone or in a batch of 16.
"""
from __future__ import annotations

import torch

from engine.config import SamplingParams


def apply_repetition_penalty(logits: torch.Tensor, history: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL-style penalty on ids seen in `history` [W, C]; logits [C, V]."""
    if penalty == 1.0 or history.numel() == 0:
        return logits
    seen = torch.zeros_like(logits, dtype=torch.bool)
    seen.scatter_(1, history.t().clamp(max=logits.shape[1] - 1), True)
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask everything outside top-k, then outside the top-p nucleus. logits [C, V]."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the mass before it already reaches top_p; the first always stays.
        drop = (probs.cumsum(-1) - probs) >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def sample_frame(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator,
    history: torch.Tensor,
    audio_channels: slice,
) -> torch.Tensor:
    """Draw one frame. logits [C, V] float32 -> ids [C]."""
    logits = logits.clone()
    if params.repetition_penalty != 1.0:
        window = history[-params.repetition_window :, audio_channels]
        logits[audio_channels] = apply_repetition_penalty(logits[audio_channels], window, params.repetition_penalty)
    if params.temperature == 0:
        return logits.argmax(-1)
    logits = filter_logits(logits / params.temperature, params.top_k, params.top_p)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
