"""A registered voice as the engine holds it: its prefix frames, conditioning key, speaker
vector and codec adapter.

How the frames are laid out is the model family's (engine.models.speech_lm.prompt).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

import numpy as np
import torch

ADAPTER = "adapter:"  # prefix of the adapter's arrays in to_bytes
SPEAKER = "speaker"


@dataclass(frozen=True)
class VoicePrompt:
    """A registered voice, tokenised once: its prefix frames and conditioning key, its
    speaker-encoder vector where the model reads one (engine.models.speech_lm.speaker), and
    the codec's adapter for it (engine.codecs.adapt) where the codec adapts to voices."""

    frames: torch.Tensor  # [T, channels] long
    key: bytes  # model/codec identity and anything else that conditions the voice
    adapter: dict[str, torch.Tensor] | None = field(default=None, compare=False, hash=False)
    speaker: torch.Tensor | None = field(default=None, compare=False, hash=False)  # [dim] float

    @property
    def prefix_key(self) -> bytes:
        """What the prefix cache keys this voice's K/V by besides its frames: the key, and the
        speaker vector, which enters the first frame's K/V and is not in the frames."""
        if self.speaker is None:
            return self.key
        return self.key + b"|speaker:" + hashlib.blake2b(self.speaker.float().numpy().tobytes(), digest_size=8).digest()

    @property
    def voice_hash(self) -> str:
        return hashlib.blake2b(self.prefix_key + self.frames.numpy().tobytes(), digest_size=8).hexdigest()

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        adapter = {ADAPTER + k: v.float().numpy() for k, v in (self.adapter or {}).items()}
        if self.speaker is not None:
            adapter[SPEAKER] = self.speaker.float().numpy()
        np.savez(
            buf, frames=self.frames.numpy().astype(np.int32), key=np.frombuffer(self.key, dtype=np.uint8), **adapter
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> VoicePrompt:
        with np.load(io.BytesIO(data)) as z:
            adapter = {k[len(ADAPTER) :]: torch.from_numpy(z[k]) for k in z.files if k.startswith(ADAPTER)}
            speaker = torch.from_numpy(z[SPEAKER]) if SPEAKER in z.files else None
            return cls(torch.from_numpy(z["frames"].astype(np.int64)), z["key"].tobytes(), adapter or None, speaker)
