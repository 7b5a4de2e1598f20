"""Voice prompts and the voice-first prompt layout.

A prompt is   [bos, reference transcript] [reference audio frames] [text to speak, speech_start]
              \\_________________ voice prefix ____________________/
so every utterance of a voice starts with the same frames and shares their K/V.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.config import ModelConfig

ADAPTER = "adapter:"  # prefix of the adapter's arrays in to_bytes


@dataclass(frozen=True)
class VoicePrompt:
    """A registered voice, tokenised once: its prefix frames and conditioning key, and the
    codec's adapter for it (engine.voice_adapt) where the codec adapts to voices."""

    frames: torch.Tensor  # [T, channels] long
    key: bytes  # model/codec identity and anything else that conditions the voice
    adapter: dict[str, torch.Tensor] | None = field(default=None, compare=False, hash=False)

    @property
    def voice_hash(self) -> str:
        return hashlib.blake2b(self.key + self.frames.numpy().tobytes(), digest_size=8).hexdigest()

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        adapter = {ADAPTER + k: v.float().numpy() for k, v in (self.adapter or {}).items()}
        np.savez(buf, frames=self.frames.numpy().astype(np.int32), key=np.frombuffer(self.key, dtype=np.uint8),
                 **adapter)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "VoicePrompt":
        with np.load(io.BytesIO(data)) as z:
            adapter = {k[len(ADAPTER):]: torch.from_numpy(z[k]) for k in z.files if k.startswith(ADAPTER)}
            return cls(torch.from_numpy(z["frames"].astype(np.int64)), z["key"].tobytes(), adapter or None)


def text_frames(cfg: ModelConfig, ids: list[int]) -> torch.Tensor:
    frames = torch.full((len(ids), cfg.num_channels), cfg.audio_pad, dtype=torch.long)
    frames[:, 0] = torch.tensor(ids, dtype=torch.long)
    return frames


def audio_frames(cfg: ModelConfig, codes: torch.Tensor) -> torch.Tensor:
    if codes.ndim != 2 or codes.shape[1] != cfg.num_codebooks:
        raise ValueError(f"codes must be [frames, {cfg.num_codebooks}], got {tuple(codes.shape)}")
    frames = torch.full((codes.shape[0], cfg.num_channels), cfg.text_pad, dtype=torch.long)
    frames[:, 1:] = codes
    return frames


def voice_prefix(cfg: ModelConfig, transcript_ids: list[int], codes: torch.Tensor) -> torch.Tensor:
    return torch.cat([text_frames(cfg, [cfg.bos] + transcript_ids), audio_frames(cfg, codes)])


def utterance_prompt(cfg: ModelConfig, voice: VoicePrompt, text_ids: list[int]) -> torch.Tensor:
    return torch.cat([voice.frames, text_frames(cfg, text_ids + [cfg.speech_start])])
