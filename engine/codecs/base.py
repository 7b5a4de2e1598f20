"""Audio codecs: waveform <-> frames of codebook tokens.

A codec decodes a *window* of frames to samples; `engine.runtime.streaming` turns that
into a stream with crossfaded chunk borders, so a codec need not be causal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch


class Codec(Protocol):
    sample_rate: int
    frame_rate: float
    num_codebooks: int
    codebook_size: int
    # What the encoder makes of audio: voices tokenised under another identity must be made again.
    identity: str

    @property
    def samples_per_frame(self) -> int: ...

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """Mono float wave at `sample_rate` -> codes [frames, num_codebooks]."""

    def decode(self, codes: torch.Tensor, adapter: dict | None = None) -> torch.Tensor:
        """Codes [frames, num_codebooks] -> float wave [frames * samples_per_frame]."""

    def decode_batch(self, codes: torch.Tensor, adapter: dict | None = None) -> torch.Tensor:
        """Windows of equal length [B, frames, num_codebooks] -> waves [B, frames * samples_per_frame];
        row i is exactly `decode(codes[i], adapter)`. `adapter`: one voice's, or None.

        A codec with a continuous latent may also define `expected_latent(probs)`:
        per-codebook distributions [frames, num_codebooks, codebook_size] -> float
        latents [frames, dim]; then `decode` and `decode_batch` take such float
        frames in place of codes, and the engine decodes what the LM expects rather
        than what it drew (StreamConfig.expected_latents).

        A codec may also adapt to voices (engine.codecs.adapt): `adapt(wave, AdaptConfig)`
        returns a voice's adapter (a dict of tensors, or None), which `decode` and
        `decode_batch` then take, and `decoder_digest` names what adapters are tuned
        from. A codec without `adapt` only ever gets None.

        A codec whose `decode_batch` also takes a list of adapters, one per row, says so with
        `per_row_adapters = True` (the mel codec; engine.codecs.rows): the audio worker then
        batches windows of every voice together.

        A codec that decodes causally with per-stream state (the Mimi decoder of
        engine.models.pocket_tts) also defines `new_stream()` and
        `decode_streams(states, latents [B, n, dim]) -> waves`: each frame is then decoded
        once, in order, with its stream's state (engine.runtime.streaming.StatefulDecoder),
        the streams of equal window lengths in one call on the audio thread."""


def is_stateful(codec: Codec) -> bool:
    """Whether `codec` decodes causally with per-stream state (see Codec.decode_batch)."""
    return hasattr(codec, "new_stream")


def make_codec(
    name: str, frame_rate: float, model_dir: str | Path | None = None, packed: torch.dtype | None = None
) -> Codec:
    """ "parametric" is the hand-written codec of the test model; "mel" is the trained codec whose
    weights (codec.json + codec.safetensors) sit in the model directory. `packed`:
    decode on oneDNN with weights pre-packed in this dtype (CPU; see engine.packed)."""
    if name == "parametric":
        from engine.codecs.parametric import ParametricCodec

        return ParametricCodec(frame_rate=frame_rate)
    if name == "mel":
        from engine.codecs.mel import MelCodec

        if model_dir is None:
            raise ValueError("the mel codec needs the model directory that holds its weights")
        codec = MelCodec(model_dir, packed=packed)
        if codec.frame_rate != frame_rate:
            raise ValueError(f"codec runs at {codec.frame_rate} frames/s, the model at {frame_rate}")
        return codec
    raise ValueError(f"unknown codec {name!r}")
