"""The voice-first prompt layout of the speech-token LM.

A prompt is   [bos, reference transcript] [reference audio frames] [text to speak, speech_start]
              \\_________________ voice prefix ____________________/
so every utterance of a voice starts with the same frames and shares their K/V.
"""

from __future__ import annotations

import torch

from engine.models.speech_lm.config import ModelConfig
from engine.runtime.voice import VoicePrompt


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


def utterance_prompt(cfg: ModelConfig, voice: VoicePrompt, text_ids: list[int], lead: int = 0) -> torch.Tensor:
    """The voice prefix, the text, and `lead` frames of `generation.silence_frame` (the start
    of speech, prefilled rather than drawn)."""
    parts = [voice.frames, text_frames(cfg, text_ids + [cfg.speech_start])]
    if lead:
        parts.append(audio_frames(cfg, torch.tensor([cfg.generation.silence_frame] * lead, dtype=torch.long)))
    return torch.cat(parts)
