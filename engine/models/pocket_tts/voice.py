"""Registering a voice: a reference clip -> Mimi latents -> the backbone's voice prefix.

Runs once per voice over the whole clip (no streaming). The clip must already be mono 24 kHz;
resampling is the caller's job. Like the reference, the clip is first made to end on a short
pause (`trim_voice`): a prompt that stops mid-word makes the model continue that word.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.pocket_tts.backbone import Backbone
from engine.models.pocket_tts.config import MimiConfig
from engine.models.pocket_tts.mimi import MimiTransformer
from engine.models.pocket_tts.seanet import CausalConv1d, SeanetEncoder

TRIM_FLOOR_DB = 35.0  # trailing 20 ms frames this far below the loudest frame count as silence
TRIM_FRAME_S = 0.02
FADE_OUT_S = 0.02
PAUSE_S = 0.08
ENCODER_CHUNK = 500  # 200 Hz positions per transformer call when encoding (2.5 s)


class MimiEncoder(nn.Module):
    """Audio [B, samples] -> latents [B, frames, voice_dim] at 12.5 Hz: SEANet encoder (200 Hz), the
    windowed transformer, then a strided conv whose left pad repeats the first input frame."""

    def __init__(self, cfg: MimiConfig):
        super().__init__()
        self.cfg = cfg
        s = cfg.steps_per_frame
        self.seanet = SeanetEncoder(cfg.seanet)
        self.transformer = MimiTransformer(cfg.transformer)
        self.downsample = CausalConv1d(cfg.seanet.dimension, cfg.voice_dim, 2 * s, s, bias=False, replicate=True)

    def checkpoint_keys(self) -> dict[str, str]:
        keys = {f"seanet.{o}": t for o, t in self.seanet.checkpoint_keys("mimi.encoder").items()}
        keys |= {f"transformer.{o}": t for o, t in self.transformer.checkpoint_keys("mimi.encoder_transformer").items()}
        return keys | {"downsample.conv.weight": "mimi.downsample.conv.conv.weight"}

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        fs = self.cfg.frame_size
        x = F.pad(audio, (0, -audio.shape[-1] % fs))[:, None]  # zero-pad the end to whole frames
        x = self.seanet(x).transpose(1, 2)
        # The transformer streams over the clip in chunks: a query only sees the last `context`
        # positions, so attending over the whole clip at once would cost its length squared.
        tr, B = self.transformer, x.shape[0]
        state, pos = tr.init_state(B, x), torch.zeros(B, dtype=torch.long, device=x.device)
        parts = []
        for start in range(0, x.shape[1], ENCODER_CHUNK):
            parts.append(tr(x[:, start : start + ENCODER_CHUNK], pos + start, state))
        return self.downsample(torch.cat(parts, dim=1).transpose(1, 2)).transpose(1, 2)


def trim_voice(wav: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """End a clip [channels, samples] on exactly 80 ms of silence.

    Trailing 20 ms frames more than 35 dB below the loudest are cut (a last partial frame always
    goes), the last 20 ms left fade out linearly, and 80 ms of zeros follow."""
    frame = max(1, int(TRIM_FRAME_S * sample_rate))
    n = wav.shape[-1] // frame
    if n == 0:
        return wav
    power = wav[..., : n * frame].reshape(-1, n, frame).square().mean(dim=(0, 2))
    level = 20 * torch.log10(power.sqrt() + 1e-12)
    last_loud = int(torch.nonzero(level > level.max() - TRIM_FLOOR_DB).max())
    end = (last_loud + 1) * frame
    out = wav[..., :end].clone()
    fade = min(int(FADE_OUT_S * sample_rate), end)
    out[..., end - fade :] *= torch.linspace(1, 0, fade, dtype=out.dtype, device=out.device)
    return torch.cat([out, out.new_zeros(*out.shape[:-1], int(PAUSE_S * sample_rate))], dim=-1)


@torch.no_grad()
def voice_latents(encoder: MimiEncoder, wav: torch.Tensor, sample_rate: int = 24000) -> torch.Tensor:
    """A mono clip ([samples] or [1, samples]) at the model's rate -> latents [1, Tv, voice_dim]."""
    if sample_rate != encoder.cfg.sample_rate:
        raise ValueError(f"voice clip is {sample_rate} Hz; resample it to {encoder.cfg.sample_rate} Hz first")
    wav = wav.reshape(1, -1) if wav.dim() == 1 else wav
    if wav.shape[0] != 1:
        raise ValueError(f"voice clip must be mono, got {wav.shape[0]} channels")
    ref = encoder.downsample.conv.weight
    return encoder(trim_voice(wav.to(ref.device, ref.dtype), sample_rate))


@torch.no_grad()
def voice_prefix(encoder: MimiEncoder, backbone: Backbone, wav: torch.Tensor, sample_rate: int = 24000) -> torch.Tensor:
    """A clip -> the backbone's voice prefix embeddings [1, P, d], P = Tv (+1 with bos_before_voice).

    The latents go in as the encoder gives them: the LM's latent normalisation does not apply here."""
    return backbone.embed_voice(voice_latents(encoder, wav, sample_rate))
