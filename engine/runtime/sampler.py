"""Sampling of one frame per row, for a whole decode batch at once.

Every row is filtered with its own settings (repetition penalty, temperature,
top-k, top-p) and drawn by inverse CDF from uniforms made by that request's own
generator. Each row's arithmetic is the same whatever else is in the batch, so
a seed gives the same frames alone or in a batch of 16; one vectorised pass
replaces a multinomial call per stream, which at 16 streams took a sixth of the
decode step.
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


def filter_logits(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Mask everything outside each row's top-k, then outside its top-p nucleus.

    logits [B, C, V]; top_k [B] (0: off); top_p [B] (1.0: off)."""
    B, C, V = logits.shape
    k = torch.where((top_k > 0) & (top_k < V), top_k, V)
    if bool((k < V).any()):
        # The k-th largest value is exact whatever the largest k in the batch: no arithmetic.
        top = torch.topk(logits, int(k.max()), dim=-1).values
        kth = top.gather(-1, (k - 1).view(B, 1, 1).expand(B, C, 1))
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if bool((top_p < 1.0).any()):
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token when the mass before it already reaches top_p; the first always stays.
        drop = (probs.cumsum(-1) - probs) >= top_p.view(B, 1, 1)
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def sample_frames(
    logits: torch.Tensor,
    params: list[SamplingParams],
    generators: list[torch.Generator],
    histories: list[torch.Tensor],
    audio_channels: slice,
) -> torch.Tensor:
    """Draw one frame per row. logits [B, C, V] float32 -> ids [B, C]; histories[b] is [W, C]."""
    B, C, V = logits.shape
    logits = logits.clone()
    for b, p in enumerate(params):
        if p.repetition_penalty != 1.0:
            window = histories[b][-p.repetition_window :, audio_channels]
            logits[b, audio_channels] = apply_repetition_penalty(
                logits[b, audio_channels], window, p.repetition_penalty
            )
    temperature = torch.tensor([p.temperature for p in params], dtype=logits.dtype)
    greedy = temperature == 0
    scaled = logits / torch.where(greedy, 1.0, temperature).view(B, 1, 1)
    top_k = torch.tensor([p.top_k for p in params], dtype=torch.long)
    top_p = torch.tensor([p.top_p for p in params], dtype=logits.dtype)
    cdf = filter_logits(scaled, top_k, top_p).softmax(-1).cumsum(-1)
    # First index whose cumulative mass exceeds u: never a zero-probability token.
    u = torch.stack([torch.rand(C, generator=g) for g in generators]).to(cdf.dtype) * cdf[..., -1]
    drawn = torch.searchsorted(cdf, u.unsqueeze(-1), right=True).squeeze(-1).clamp_(max=V - 1)
    return torch.where(greedy.view(B, 1), logits.argmax(-1), drawn)


def codebook_probs(
    logits: torch.Tensor, frames: torch.Tensor, params: list[SamplingParams], codebook_size: int
) -> torch.Tensor:
    """Each row's audio-channel distributions at its own temperature: logits [B, C, V] -> probs
    [B, C - 1, codebook_size] (top-k, top-p and the repetition penalty are left out).

    A greedy row (temperature 0) gets one-hots at its drawn codes `frames` [B, C]: on the
    CPU kernels logits are bfloat16-rounded and tie often, and a tie is not to be blended."""
    K = codebook_size
    temps = torch.tensor([p.temperature for p in params], dtype=logits.dtype)
    probs = (logits[:, 1:, :K] / temps.clamp_min(1e-6)[:, None, None]).softmax(-1)
    greedy = temps == 0
    if bool(greedy.any()):
        probs[greedy] = torch.nn.functional.one_hot(frames[greedy, 1:].clamp(max=K - 1), K).to(probs.dtype)
    return probs
