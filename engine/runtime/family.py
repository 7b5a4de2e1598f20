"""What the engine asks of a model family, and what a family answers.

The runtime (scheduler, block pool, prefix cache, batching, streaming) is the same
for every family. A family owns its model and codec and says four things: how a
prompt is laid out (`plan`), how a step's hidden states become the next frame
(`step`: codebook tokens drawn by the sampler, or a continuous latent from a flow
head), when speech stops (also `step`), and what decodes the frames (`codec`).

Every sequence position is a frame of integer ids, which the block pool hashes
and checks on a prefix-cache hit; a family whose inputs are continuous gives each
position ids that name its content (see engine.models.pocket_tts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from engine.config import SamplingParams
from engine.runtime.outputs import MarkEvent
from engine.runtime.sequence import Sequence
from engine.runtime.voice import VoicePrompt


@dataclass(frozen=True)
class KVLayout:
    """The shape of one position's keys (and values) in every layer."""

    layers: int
    kv_heads: int
    head_dim: int


@dataclass(frozen=True)
class Plan:
    """An utterance as the engine runs it."""

    prompt: torch.Tensor  # [T, channels] long: the voice prefix, then the text
    max_frames: int  # the length guard
    min_frames: int  # end of speech is refused before this many frames
    spans: list[tuple[int, int]]  # character span of each text unit (for timing marks)
    units: list[str]  # what each unit is (a phoneme, a character)
    state: object = None  # what the family keeps per utterance (Sequence.family_state)
    # With voice guidance: the same utterance with no voice prefix, run beside it (Sequence.guide).
    unvoiced: torch.Tensor | None = None


@dataclass
class Step:
    """What one decode step produced for its rows, in row order."""

    frames: torch.Tensor  # [B, channels] long: what each row reads back next
    latents: list[torch.Tensor | None]  # what the codec decodes for the row (None: the frame's codes)
    marks: list[MarkEvent | None]  # the text unit a row moved to, if any
    ended: list[bool]  # the row's speech ended (its frame is not part of the utterance)


class FamilyModel(Protocol):
    """The network the model runner drives (an nn.Module)."""

    kv_layout: KVLayout
    max_positions: int
    pad_frame: torch.Tensor  # [channels] long: fills the padded positions of a batch

    def __call__(self, frames: torch.Tensor, positions: torch.Tensor, paged: object = None) -> torch.Tensor:
        """frames [B, T, channels] long, positions [B, T] -> hidden states [B, T, dim]; with
        `paged` (engine.runtime.attention.PagedAttention) K/V go through the block pool. A
        model with a `speaker_proj` layer is also given `speaker=` [B, speaker_dim], each
        row's VoicePrompt.speaker, on every pass that runs some row's position 0."""


class ModelFamily(Protocol):
    """The engine's side of a model family; see engine.models for the families."""

    model: FamilyModel
    codec: object  # engine.codecs.base.Codec
    tokenizer: object  # encode(text) -> ids; reads_phonemes
    has_timings: bool
    guides_voice: bool  # takes SamplingParams.voice_guidance (its `plan` gives `unvoiced` prompts)
    language: str
    name: str
    max_reference_frames: int  # 0: no limit of its own
    num_params: int  # in the whole checkpoint

    def default_sampling(self) -> SamplingParams: ...

    def voice_identity(self) -> str:
        """What a voice's prompt depends on besides its recording and transcript."""

    def make_voice(self, wave: torch.Tensor, transcript: str, key: bytes) -> VoicePrompt:
        """The prompt of a reference recording (mono, at the codec's rate)."""

    def plan(self, voice: VoicePrompt, text: str, sampling: SamplingParams) -> Plan: ...

    def step(self, seqs: list[Sequence], hidden: torch.Tensor, unvoiced: torch.Tensor | None = None) -> Step:
        """The next frame of each row from its last hidden state [B, dim]; `unvoiced` [B, dim],
        when some row is guided, is each row's hidden state without its voice prefix (a copy of
        `hidden`'s row where the row is not guided). Only a family whose `plan` gives
        `unvoiced` prompts is ever passed it."""
