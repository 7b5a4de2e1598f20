"""A registered voice as the engine holds it: its prefix frames, conditioning key and codec adapter.

How the frames are laid out is the model family's (engine.models.speech_lm.prompt).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

import numpy as np
import torch

ADAPTER = "adapter:"  # prefix of the adapter's arrays in to_bytes


@dataclass(frozen=True)
class VoicePrompt:
    """A registered voice, tokenised once: its prefix frames and conditioning key, and the
    codec's adapter for it (engine.codecs.adapt) where the codec adapts to voices."""

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
        np.savez(
            buf, frames=self.frames.numpy().astype(np.int32), key=np.frombuffer(self.key, dtype=np.uint8), **adapter
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> VoicePrompt:
        with np.load(io.BytesIO(data)) as z:
            adapter = {k[len(ADAPTER) :]: torch.from_numpy(z[k]) for k in z.files if k.startswith(ADAPTER)}
            return cls(torch.from_numpy(z["frames"].astype(np.int64)), z["key"].tobytes(), adapter or None)
