"""What a speech-token LM checkpoint says about itself: its `config.json`.

`ModelConfig` is the architecture and the meaning of the token channels; its
`generation` holds the defaults the engine generates with (sampling, length guards),
which a checkpoint may tune without changing its weights.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

CodecName = Literal["parametric", "mel"]  # engine.codecs.base.make_codec
TokenizerName = Literal["chars", "phonemes"]  # engine.text.tokenizer.make_tokenizer


@dataclass(frozen=True)
class GenerationConfig:
    """How the engine generates with a model unless a request says otherwise."""

    # Sampling for requests that choose none: what this model speaks most clearly with.
    temperature: float = 0.8
    top_k: int = 0
    # Guard against a model that never stops: frames allowed per text token, plus a floor.
    max_frames_per_text_token: float = 8.0
    min_frames_guard: int = 25
    # End of speech is not accepted before this many frames per text token: a
    # model that stops early on a short line ("Yes!") garbles it.
    min_frames_per_text_token: float = 0.0
    # A pointer that stays this many frames on one unit is moved on by the engine (or,
    # on the last unit, speech ends): a sampled frame that throws the model off can
    # otherwise hold it on a phoneme until the length guard. 0 disables.
    max_frames_per_unit: int = 0
    # Who times the speech: "sampled", the LM's own channel 0 (stay, advance, stop);
    # "durations", the checkpoint's duration model (engine.models.speech_lm.durations),
    # whose schedule moves the pointer and ends speech. The rules above then apply to
    # sampled timing only, except the length guard.
    timing: Literal["sampled", "durations"] = "sampled"
    # Timing by durations: how much slower than the duration model's neutral pace to
    # speak; 0 reads each voice's pace off its reference clip (clamped, see durations.py).
    pace: float = 0.0
    # Timing by durations: caps, in seconds at neutral pace (0: none), on how a line ends.
    # The teachers hold a line's last phoneme long and pause after its final punctuation,
    # which makes a bark mostly silence (docs/experiments.md, "Trimming the schedule").
    # The leading silence is left alone: cut, it costs the first phoneme.
    max_last_unit_s: float = 0.0
    max_final_pause_s: float = 0.0
    # Timing by durations: the codes of one frame of the training audio's silence. When set,
    # the frames of leading silence before the first unit is fed are prefilled with it
    # instead of drawn, and are not sent: the LM reads the lead it was trained on, and the
    # listener's audio starts a few frames before the first phoneme.
    silence_frame: tuple[int, ...] = ()
    # SamplingParams.voice_guidance for requests that choose none (0: off).
    voice_guidance: float = 0.0

    def __post_init__(self) -> None:
        if self.timing not in ("sampled", "durations"):
            raise ValueError(f"generation.timing must be 'sampled' or 'durations', got {self.timing!r}")
        if self.pace < 0:
            raise ValueError(f"generation.pace must be 0 (read off the reference) or positive, got {self.pace}")
        if self.max_last_unit_s < 0 or self.max_final_pause_s < 0:
            raise ValueError("generation.max_last_unit_s and max_final_pause_s must be 0 (no cap) or positive")
        if not 0 <= self.voice_guidance <= 5:
            raise ValueError(f"generation.voice_guidance must be in [0, 5] (0: off), got {self.voice_guidance}")
        object.__setattr__(self, "silence_frame", tuple(self.silence_frame))  # (a list, as JSON has it)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a speech-token LM and the meaning of its token channels.

    Every sequence position is a *frame* of `num_channels` integer tokens:
    channel 0 carries text/phoneme or control tokens, channels 1..num_codebooks carry
    audio codebook tokens. Each channel has its own embedding table; a position's
    input is the sum of its channel embeddings, and each channel has its own output
    head. A text-only prompt position puts `audio_pad` in the audio channels; a
    generated audio frame puts a control token (`text_pad`, `advance`, `eos`) in
    channel 0.
    """

    dim: int = 384
    n_layers: int = 6
    n_heads: int = 6
    n_kv_heads: int = 2
    ffn_dim: int = 1024
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    max_positions: int = 4096
    text_vocab: int = 128  # channel 0 size, including the control tokens below
    num_codebooks: int = 4
    codebook_size: int = 256  # audio channels hold codebook_size + 1 ids (the last is audio_pad)
    # Control tokens in channel 0.
    text_pad: int = 0  # "no text at this position" (an audio frame)
    bos: int = 1
    speech_start: int = 2  # separates the text to speak from the audio that follows
    eos: int = 3  # end of speech
    # "The pointer moves to the next text unit": the engine then feeds that unit's id
    # as channel 0 of the frame, and emits a timing mark. None: the model has no
    # pointer and gives no timings.
    advance: int | None = None
    mark_delay_frames: int = 0  # a unit is fed this many frames before its audio starts
    # Every frame after the first advance carries the unit last fed, as `held(unit)` ids
    # (a second table of text_vocab embeddings), not text_pad. The phoneme then sits in
    # each frame's own input instead of only on the frame where it arrived, the way a
    # duration-based TTS model sees it: a small model learns what to say from far less
    # data than when it must find the last arrival by attention.
    hold_units: bool = False
    # Longest reference clip the model was trained to clone from (0: no limit); a
    # longer one puts positions and prompt lengths outside what it has seen.
    max_reference_frames: int = 0
    # Width of a speaker-encoder vector added (projected) to the first frame of the voice
    # prefix (engine.models.speech_lm.speaker); 0: the model reads the voice from its codes alone.
    speaker_dim: int = 0
    # Audio framing, needed to turn frame indices into milliseconds.
    frame_rate: float = 25.0
    codec: CodecName = "parametric"
    tokenizer: TokenizerName = "chars"
    language: str = "en"  # what the tokenizer and the training data speak (a BCP 47 primary tag)
    description: str = ""
    generation: GenerationConfig = field(default_factory=GenerationConfig)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def num_channels(self) -> int:
        return 1 + self.num_codebooks

    @property
    def audio_pad(self) -> int:
        return self.codebook_size

    def channel_vocab(self, channel: int) -> int:
        if channel == 0:
            return self.text_vocab * (2 if self.hold_units else 1)
        return self.codebook_size + 1

    def held(self, unit: int) -> int:
        """Channel-0 id of a frame that stays on `unit` (see `hold_units`)."""
        return unit + self.text_vocab

    def __post_init__(self) -> None:
        if self.hold_units and self.advance is None:
            raise ValueError("hold_units needs a pointer model (an advance token)")
        if self.generation.timing == "durations" and self.advance is None:
            raise ValueError("timing by durations needs a pointer model (an advance token)")
        silence = self.generation.silence_frame
        if silence and (len(silence) != self.num_codebooks or not all(0 <= c < self.codebook_size for c in silence)):
            raise ValueError(f"generation.silence_frame must be {self.num_codebooks} codes below {self.codebook_size}")

    def updated(self, **changes: Any) -> ModelConfig:
        """A copy with `changes`; generation fields may be named directly (top_k=..., say)."""
        names = {f.name for f in fields(GenerationConfig)}
        gen = {k: changes.pop(k) for k in list(changes) if k in names}
        return replace(self, generation=replace(self.generation, **gen), **changes)

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        """Read `config.json`. Its generation defaults may sit under "generation" or, as
        older checkpoints have them, beside the architecture."""
        raw = json.loads(Path(path).read_text())
        generation = raw.pop("generation", {})
        known = {f.name for f in fields(cls)} | {f.name for f in fields(GenerationConfig)}
        unknown = (set(raw) - known) | (set(generation) - {f.name for f in fields(GenerationConfig)})
        if unknown:
            raise ValueError(f"{path}: unknown model config keys {sorted(unknown)}")
        return cls().updated(**raw, **generation)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")
