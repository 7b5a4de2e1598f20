"""One stream, start to end, without the engine: the reference's generation rules in plain form.

The engine batches these same steps; this loop is what it must agree with (tests compare it
with the reference's own loop). Per text chunk, starting from the voice prefix's keys/values:
    prefill the chunk's text; then per step k = 0, 1, ...:
    z = cond(backbone(input_linear(latent_{k-1}, or BOS at k = 0)))
    EOS if eos_logit(z) > threshold (only counted from step 6); stop, without emitting this
    step, once k = eos_step + frames_after_eos, or after `max_frames`;
    latent_k = head.sample(z, noise_k) -> emitted, fed back, and decoded by Mimi.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from engine.models.pocket_tts.backbone import DenseKV
from engine.models.pocket_tts.model import PocketTTS
from engine.models.pocket_tts.text import Chunk, chunk_text

MIN_FRAMES_BEFORE_EOS = 6  # an EOS earlier than this is ignored: some voices flag it before speaking
TOKENS_PER_SECOND = 3.0  # the length cap: text tokens / 3 + 2 seconds
CAP_PADDING_S = 2.0

Noise = Callable[[int], torch.Tensor]  # step -> [1, latent_dim], already scaled


def max_frames(n_tokens: int, frame_rate: float = 12.5) -> int:
    return math.ceil((n_tokens / TOKENS_PER_SECOND + CAP_PADDING_S) * frame_rate)


@dataclass
class StopRule:
    """Decides, step by step, when a chunk ends. Ask before emitting each step's frame."""

    frames_after_eos: int
    eos_step: int | None = None

    def ends_at(self, step: int, is_eos: bool) -> bool:
        """True: the chunk ends here and this step's frame is not emitted."""
        if is_eos and self.eos_step is None and step >= MIN_FRAMES_BEFORE_EOS:
            self.eos_step = step
        return self.eos_step is not None and step >= self.eos_step + self.frames_after_eos


def scaled_noise(generators: list[torch.Generator], temperature: float, dim: int) -> torch.Tensor:
    """One N(0, temperature) row per stream, each from that stream's own generator -> [B, dim]."""
    return torch.stack([torch.randn(dim, generator=g) for g in generators]) * math.sqrt(temperature)


@torch.no_grad()
def prefill_voice(model: PocketTTS, prefix: torch.Tensor) -> DenseKV:
    """The voice prefix [1, P, d] through the backbone from position 0 -> its keys/values."""
    kv = DenseKV()
    model.backbone(prefix, torch.arange(prefix.shape[1])[None], cache=kv)
    return kv


@dataclass
class ChunkResult:
    latents: torch.Tensor  # [frames, latent_dim], the emitted (normalised) latents
    audio: torch.Tensor  # [frames * frame_size]
    eos_logits: list[float]  # one per step run, including the final unemitted one


@torch.no_grad()
def generate_chunk(
    model: PocketTTS, voice: DenseKV, chunk: Chunk, noise: Noise, eos_threshold: float | None = None
) -> ChunkResult:
    bb = model.backbone
    threshold = model.cfg.default_eos_threshold if eos_threshold is None else eos_threshold
    kv = voice.fork()
    n = len(chunk.tokens)
    bb(bb.embed_text(torch.tensor([chunk.tokens])), kv.length + torch.arange(n)[None], cache=kv)
    rule = StopRule(chunk.frames_after_eos)
    state = model.decoder.init_state(1)
    x = torch.full((1, 1, model.cfg.latent_dim), float("nan"))
    latents, audio, logits = [], [], []
    for step in range(max_frames(n, model.cfg.mimi.frame_rate)):
        z = bb.cond(bb(bb.embed_latents(x), torch.tensor([[kv.length]]), cache=kv)[:, -1])
        logit = bb.eos_logit(z)
        logits.append(float(logit))
        if rule.ends_at(step, bool(logit > threshold)):
            break
        latent = model.head.sample(z, noise(step))
        latents.append(latent)
        audio.append(model.decoder(latent[:, None], state)[0])
        x = latent[:, None]
    empty = torch.zeros(0, model.cfg.latent_dim)
    return ChunkResult(torch.cat(latents) if latents else empty, torch.cat(audio) if audio else empty[:, 0], logits)


@torch.no_grad()
def synthesize(
    model: PocketTTS, voice: DenseKV, text: str, generator: torch.Generator, temperature: float | None = None
) -> torch.Tensor:
    """A whole request, chunk after chunk, each from the voice prefix -> audio [samples]."""
    temp = model.cfg.default_temperature if temperature is None else temperature
    noise = lambda step: scaled_noise([generator], temp, model.cfg.latent_dim)
    parts = [generate_chunk(model, voice, c, noise).audio for c in chunk_text(model.tokenizer, text, model.rules)]
    return torch.cat(parts)
