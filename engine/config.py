"""Configuration dataclasses, one per concern.

`ModelConfig` is read from a checkpoint's `config.json`; the others are chosen by
whoever runs the engine (the service, the benchmark, a test).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


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
    # A pointer that stays this many frames on one unit is moved on by the engine (or,
    # on the last unit, speech ends): a sampled frame that throws the model off can
    # otherwise hold it on a phoneme until the length guard. 0 disables.
    max_frames_per_unit: int = 0
    # Longest reference clip the model was trained to clone from (0: no limit); a
    # longer one puts positions and prompt lengths outside what it has seen.
    max_reference_frames: int = 0
    # Guard against a model that never stops: frames allowed per text token.
    max_frames_per_text_token: float = 8.0
    min_frames_guard: int = 25
    # End of speech is not accepted before this many frames per text token: a
    # model that stops early on a short line ("Yes!") garbles it.
    min_frames_per_text_token: float = 0.0
    # Sampling for requests that choose none: what this model speaks most clearly with.
    temperature: float = 0.8
    top_k: int = 0
    # Audio framing, needed to turn frame indices into milliseconds.
    frame_rate: float = 25.0
    codec: str = "parametric"
    tokenizer: str = "chars"
    description: str = ""

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

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        raw = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"{path}: unknown model config keys {sorted(unknown)}")
        return cls(**raw)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")


@dataclass(frozen=True)
class CacheConfig:
    """Paged KV pool. The pool is preallocated once from `memory_budget_mb`."""

    block_size: int = 16
    memory_budget_mb: float = 256.0
    num_blocks: int | None = None  # overrides the budget (tests use tiny pools)
    # Share of the pool that pinned (warmed) voices may hold; beyond it the least
    # recently warmed voice is unpinned.
    max_pinned_fraction: float = 0.5
    prefix_cache: bool = True  # False computes every prompt in full (a benchmark baseline)


@dataclass(frozen=True)
class SchedulerConfig:
    max_running: int = 32  # streams decoded together in one step
    max_waiting: int = 256  # beyond this, submit() raises EngineOverloaded
    prefill_chunk_tokens: int = 512  # prompt tokens prefilled per step (chunked prefill)
    max_buffered_frames: int = 100  # a stream whose reader lags this far is paused


@dataclass(frozen=True)
class StreamConfig:
    """How generated frames become waveform chunks."""

    first_chunk_frames: int = 3  # small, so first audio comes quickly (120 ms; see AudioStreamer)
    chunk_frames: int = 16  # 640 ms: the codec costs ~7 ms per call plus ~0.45 ms per frame (README)
    context_frames: int = 2  # earlier frames re-decoded for the crossfade
    crossfade_ms: float = 10.0
    # Windows of all streams decoded together by one audio thread (engine.audio_worker);
    # 0: each consumer decodes its own on its own thread.
    audio_batch: int = 16
    # Decode each frame from the expected latent of the LM's codebook distributions (at the
    # request's temperature) rather than from the drawn codes, where the codec can (the mel
    # codec): the LM still reads back the drawn codes. Fewer word errors (README, issue 4).
    expected_latents: bool = True


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 0  # 0 disables
    top_p: float = 1.0
    repetition_penalty: float = 1.0  # 1.0 disables; applied to audio channels
    repetition_window: int = 32  # frames looked back for the repetition penalty
    seed: int | None = None  # None: a random seed is drawn at submit
    max_frames: int | None = None  # further cap on top of the text-length guard
    ignore_eos: bool = False  # benchmarks and tests that need a fixed length

    def validate(self) -> None:
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError("max_frames must be >= 1")


@dataclass(frozen=True)
class AdaptConfig:
    """Per-voice codec adaptation at registration (engine.voice_adapt); codecs without it ignore this."""

    steps: int = 100  # gradient steps for the decoder, then as many for the vocoder; 0 turns adaptation off
    lr: float = 3e-3
    crop_seconds: float = 2.0  # each step fits a random crop: the time per step stays flat for long clips
    seed: int = 0  # the same clip always adapts to the same numbers

    @property
    def identity(self) -> str:
        """What a voice's stored adapter depends on besides the clip and the codec."""
        return f"adapt{self.steps}x{self.lr:g}x{self.crop_seconds:g}" if self.steps else "noadapt"


@dataclass(frozen=True)
class EngineConfig:
    cache: CacheConfig = field(default_factory=CacheConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    device: str = "auto"  # "auto" picks CUDA when present
    dtype: str = "auto"  # "auto": float32 on CPU, bfloat16 on CUDA
    num_threads: int | None = None  # torch threads for the engine thread on CPU (default 1)
    packed_weights: bool = True  # CPU float32: LM and codec decoder on pre-packed kernels (engine.packed)
    # dtype of those packed weights: "float32", "bfloat16", or "int8": the LM's linears on
    # int8 weights (fastest for a few streams; slower prefill and large batches, see
    # engine.packed), the codec on bfloat16. "auto" is int8 where the CPU multiplies
    # bfloat16 natively (AVX512-BF16, AMX), float32 elsewhere. Activations and the KV
    # cache stay float32.
    packed_dtype: str = "auto"
    # Decode attention on CPU. "shared_prefix": the streams of a voice read its prefix
    # blocks once per step between them; "per_row": each stream reads its whole context
    # on its own (in place where its blocks are consecutive, as the block manager keeps
    # them), in fewer calls: ~1 ms less per one-stream step here, but from 4 streams on
    # it copies every stream's prefix and is slower (README, "How the engine is built").
    # A row gets the same bits alone or batched either way. "auto": per_row where
    # scheduler.max_running <= 2 (an engine sized for one or two streams, say one
    # player's NPCs), shared_prefix otherwise.
    decode_attention: str = "auto"

    def __post_init__(self) -> None:
        # Checked here, not where the weights are packed, so a bad value fails on CUDA too.
        if self.packed_dtype not in ("auto", "float32", "bfloat16", "int8"):
            raise ValueError(f"packed_dtype must be auto, float32, bfloat16 or int8, got {self.packed_dtype!r}")
        if self.decode_attention not in ("auto", "shared_prefix", "per_row"):
            raise ValueError(f"decode_attention must be auto, shared_prefix or per_row, got {self.decode_attention!r}")
